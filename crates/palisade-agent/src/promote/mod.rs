//! `palisade promote`: staged policies become enforced. Every name is
//! checked first (it exists once and is staged) and every new version is
//! prepared and decoded again before anything is written, so a mistake
//! writes nothing. Then one write per source:
//!
//! - a directory: the annotation's line (or flow-mapping entry) is removed
//!   from the files that hold the objects, everything else kept; each file
//!   is replaced by a rename of a hidden temporary file in its directory
//!   (atomic per file; the agent's watcher ignores hidden names);
//! - etcd: one transaction that puts every promoted value if no key's
//!   `mod_revision` changed since it was read, retried on a lost race;
//! - the Kubernetes API: one JSON patch per object (the API has no write of
//!   several objects), each refused by the server if the object changed
//!   since it was checked.

mod kube;
mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use palisade_k8s::{is_policy_kind, ObjectKey};
use serde_json::Value;

use crate::datastore::{unstage, DatastoreError};
use crate::etcd::{connect, describe, key_of, MESSAGE_LIMIT};
use crate::manifests::{self, Found};

pub use self::kube::kube;
pub use text::unstage as unstage_text;

/// What `promote` names: `namespace/name` (a NetworkPolicy) or `Kind/name`
/// (an admin policy), as flow records, `diff` and `staged` name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyName {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyName {
    pub fn parse(s: &str) -> Result<PolicyName, String> {
        let bad = || {
            format!("{s:?}: expected namespace/name (a NetworkPolicy) or Kind/name (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)")
        };
        let (a, b) = s.split_once('/').ok_or_else(bad)?;
        if a.is_empty() || b.is_empty() || b.contains('/') {
            return Err(bad());
        }
        if a.starts_with(|c: char| c.is_ascii_uppercase()) {
            if a == "NetworkPolicy" || !is_policy_kind(a) {
                return Err(bad());
            }
            return Ok(PolicyName {
                kind: a.to_string(),
                namespace: None,
                name: b.to_string(),
            });
        }
        Ok(PolicyName {
            kind: "NetworkPolicy".into(),
            namespace: Some(a.to_string()),
            name: b.to_string(),
        })
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// The names in order, each once (a name given twice is promoted once).
fn distinct(names: &[PolicyName]) -> Vec<PolicyName> {
    let mut v = names.to_vec();
    v.sort();
    v.dedup();
    v
}

/// One promoted policy and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promoted {
    pub name: String,
    pub place: String,
}

/// Whether a decoded object (of `decode_value` on one object) is a valid,
/// staged policy: `Ok(true)` staged, `Ok(false)` enforced, `Err` invalid.
fn staged_state(origin: &str, v: &Value) -> Result<bool, String> {
    let (objects, diags) = palisade_k8s::decode_value(origin, v.clone());
    if let Some(d) = diags.iter().find(|d| d.is_error()) {
        return Err(d.to_string());
    }
    match objects.as_slice() {
        [o] => Ok(text::is_staged(&o.value)),
        _ => Err(format!("{origin}: not one policy object")),
    }
}

/// The promoted version of a stored object, checked to decode and to be
/// enforced.
fn promoted_value(origin: &str, name: &PolicyName, v: &Value) -> Result<Value, String> {
    match staged_state(origin, v) {
        Err(e) => return Err(format!("{name}: invalid where stored: {e}")),
        Ok(false) => return Err(format!("{name}: not staged")),
        Ok(true) => {}
    }
    let mut new = v.clone();
    unstage(&mut new);
    match staged_state(origin, &new) {
        Ok(false) => Ok(new),
        Ok(true) => Err(format!("{name}: still staged after the edit")),
        Err(e) => Err(format!("{name}: invalid after the edit: {e}")),
    }
}

/// Promotes the named policies of the manifests under `root`.
pub fn dir(root: &Path, names: &[PolicyName]) -> Result<Vec<Promoted>, DatastoreError> {
    let names = &distinct(names);
    let found = manifests::walk(&[root.to_path_buf()]).map_err(|(p, e)| DatastoreError::Read {
        path: p.display().to_string(),
        message: e.to_string(),
    })?;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut unreadable = Vec::new();
    let mut rejected: BTreeMap<String, String> = BTreeMap::new();
    // Where each object is defined: file index, once per definition.
    let mut at: BTreeMap<ObjectKey, Vec<(usize, bool)>> = BTreeMap::new();
    for f in found {
        let path = match f {
            Found::File { path, .. } => path,
            Found::Unreadable { path, .. } => {
                unreadable.push(path.display().to_string());
                continue;
            }
            Found::Skipped { .. } => continue,
        };
        let Ok(bytes) = manifests::read(&path) else {
            unreadable.push(path.display().to_string());
            continue;
        };
        let label = path.display().to_string();
        let (objects, diags) = palisade_k8s::decode(&label, &bytes);
        // A policy rejected by the decoder (a bad annotation value, for
        // one) is named by its error rather than reported missing.
        for d in diags.into_iter().filter(|d| d.is_error()) {
            if let Some(o) = d.object.clone() {
                rejected.entry(o).or_insert(d.to_string());
            }
        }
        let i = files.len();
        for o in objects {
            let staged = text::is_staged(&o.value);
            at.entry(o.value.key()).or_default().push((i, staged));
        }
        match String::from_utf8(bytes) {
            Ok(t) => files.push((path, t)),
            // Not text: it decoded to nothing, and there is nothing to edit.
            Err(_) => files.push((path, String::new())),
        }
    }
    let mut problems = Vec::new();
    let mut targets: BTreeMap<usize, Vec<(ObjectKey, String)>> = BTreeMap::new();
    for n in names {
        match at.get(&n.key()).map(Vec::as_slice) {
            None | Some([]) if rejected.contains_key(&n.key().to_string()) => {
                problems.push(format!("{n}: invalid: {}", rejected[&n.key().to_string()]));
            }
            None | Some([]) => {
                let mut p = format!("{n}: not found under {}", root.display());
                if !unreadable.is_empty() {
                    p += &format!(" (unreadable: {})", unreadable.join(", "));
                }
                problems.push(p);
            }
            Some([(_, false)]) => problems.push(format!("{n}: not staged")),
            Some([(i, true)]) => targets
                .entry(*i)
                .or_default()
                .push((n.key(), n.to_string())),
            Some(several) => {
                let places: Vec<String> = several
                    .iter()
                    .map(|(i, _)| files[*i].0.display().to_string())
                    .collect();
                problems.push(format!(
                    "{n}: defined more than once ({})",
                    places.join(", ")
                ));
            }
        }
    }
    let mut edits = Vec::new();
    for (i, keys) in &targets {
        let (path, text) = &files[*i];
        let label = path.display().to_string();
        let only: Vec<ObjectKey> = keys.iter().map(|(k, _)| k.clone()).collect();
        match text::unstage(&label, text, &only) {
            Ok(new) => edits.push((path.clone(), new, keys)),
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(DatastoreError::Refused(problems));
    }
    write_all(
        &edits
            .iter()
            .map(|(p, t, _)| (p.clone(), t.clone()))
            .collect::<Vec<_>>(),
    )?;
    let mut done: Vec<Promoted> = edits
        .iter()
        .flat_map(|(p, _, keys)| {
            keys.iter().map(move |(_, n)| Promoted {
                name: n.clone(),
                place: p.display().to_string(),
            })
        })
        .collect();
    done.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(done)
}

/// The hidden temporary file beside `real` that replaces it.
fn temporary(real: &Path) -> PathBuf {
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    real.with_file_name(format!(".{name}.promote-{}", std::process::id()))
}

/// Writes every file by temporary file and rename: first all temporary
/// files (nothing is replaced if one cannot be written), then the renames.
fn write_all(files: &[(PathBuf, String)]) -> Result<(), DatastoreError> {
    let fail = |p: &Path, e: std::io::Error| DatastoreError::Write {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let mut ready: Vec<(PathBuf, PathBuf)> = Vec::new();
    let cleanup = |ready: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in ready {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (path, text) in files {
        // A link is followed: the file it names is replaced, not the link.
        let real = match std::fs::canonicalize(path) {
            Ok(r) => r,
            Err(e) => {
                cleanup(&ready);
                return Err(fail(path, e));
            }
        };
        let tmp = temporary(&real);
        let written = (|| {
            let perms = std::fs::metadata(&real)?.permissions();
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.set_permissions(perms)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            cleanup(&ready);
            return Err(fail(path, e));
        }
        ready.push((tmp, real));
    }
    for (i, (tmp, real)) in ready.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, real) {
            cleanup(&ready[i..]);
            let done: Vec<String> = ready[..i]
                .iter()
                .map(|(_, r)| r.display().to_string())
                .collect();
            return Err(DatastoreError::Write {
                path: real.display().to_string(),
                message: format!(
                    "{e} (already replaced: {})",
                    if done.is_empty() {
                        "none".to_string()
                    } else {
                        done.join(", ")
                    }
                ),
            });
        }
    }
    Ok(())
}

/// How often a transaction that lost a race is tried again.
const ETCD_ATTEMPTS: usize = 5;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// Promotes the named policies stored in etcd, in one transaction.
pub fn etcd(endpoints: &[String], names: &[PolicyName]) -> Result<Vec<Promoted>, DatastoreError> {
    let names = &distinct(names);
    if names.len() > MAX_TXN_OPS {
        return Err(DatastoreError::Refused(vec![format!(
            "{} policies named; one etcd transaction holds at most {MAX_TXN_OPS}",
            names.len()
        )]));
    }
    let etcd_err =
        |doing: &str, e: &etcd_client::Error| DatastoreError::Etcd(describe(endpoints, doing, e));
    crate::datastore::block_on(async {
        let c = connect(endpoints)
            .await
            .map_err(|e| DatastoreError::Etcd(e.to_string()))?;
        let mut kv = c.kv_client().max_decoding_message_size(MESSAGE_LIMIT);
        for _ in 0..ETCD_ATTEMPTS {
            let mut problems = Vec::new();
            let (mut when, mut then) = (Vec::new(), Vec::new());
            for n in names {
                let key = key_of(&n.key());
                let r = kv
                    .get(key.as_str(), None)
                    .await
                    .map_err(|e| etcd_err("read", &e))?;
                let Some(stored) = r.kvs().first() else {
                    problems.push(format!("{n}: not found in etcd ({key})"));
                    continue;
                };
                let value: Value = match serde_json::from_slice(stored.value()) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(format!("{n}: {key} is not JSON: {e}"));
                        continue;
                    }
                };
                match promoted_value(&key, n, &value) {
                    Ok(new) => {
                        when.push(Compare::mod_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            stored.mod_revision(),
                        ));
                        then.push(TxnOp::put(key.as_str(), new.to_string(), None));
                    }
                    Err(p) => problems.push(p),
                }
            }
            if !problems.is_empty() {
                return Err(DatastoreError::Refused(problems));
            }
            let r = kv
                .txn(Txn::new().when(when).and_then(then))
                .await
                .map_err(|e| etcd_err("write", &e))?;
            if r.succeeded() {
                return Ok(names
                    .iter()
                    .map(|n| Promoted {
                        name: n.to_string(),
                        place: key_of(&n.key()),
                    })
                    .collect());
            }
        }
        Err(DatastoreError::Etcd(format!(
            "the named policies kept changing in etcd while being promoted ({ETCD_ATTEMPTS} attempts); nothing was written"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_file_is_one_the_watcher_ignores() {
        let t = temporary(Path::new("/m/policies/web.yaml"));
        assert_eq!(t.parent(), Some(Path::new("/m/policies")));
        assert!(manifests::is_hidden_name(t.file_name().unwrap()));
        assert!(manifests::is_hidden(&t));
    }

    #[test]
    fn names_are_read_as_flow_records_print_them() {
        let ok = |s: &str| PolicyName::parse(s).map(|n| (n.key(), n.to_string()));
        let key = |kind: &str, ns: Option<&str>, name: &str| ObjectKey {
            kind: kind.into(),
            namespace: ns.map(Into::into),
            name: name.into(),
        };
        assert_eq!(
            ok("shop/web"),
            Ok((key("NetworkPolicy", Some("shop"), "web"), "shop/web".into()))
        );
        assert_eq!(
            ok("BaselineAdminNetworkPolicy/default"),
            Ok((
                key("BaselineAdminNetworkPolicy", None, "default"),
                "BaselineAdminNetworkPolicy/default".into()
            ))
        );
        for bad in [
            "web",
            "shop/",
            "/web",
            "a/b/c",
            "NetworkPolicy/web",
            "Pod/web",
        ] {
            assert!(PolicyName::parse(bad).is_err(), "{bad}");
        }
    }
}
