//! Writing manifests to etcd (`palisade datastore apply|delete|get`).
//!
//! Every object is validated with `palisade-k8s` first; if any file has an
//! error nothing is written. Writes go in transactions of at most 128
//! operations (etcd's default limit), so up to 128 objects land atomically.
//! `apply --staged` writes the policy objects with
//! [`palisade_k8s::STAGED_ANNOTATION`] set to `"true"`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Txn, TxnOp};
use palisade_k8s::{Diagnostic, ObjectKey};
use serde_json::Value;

use crate::etcd::{connect, describe, key_of, read_prefix, MESSAGE_LIMIT, PREFIX};

#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// The manifests are invalid; nothing was written.
    #[error("{} problem(s) in the manifests; nothing was written", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    /// etcd failed, as one sentence that names etcd.
    #[error("{0}")]
    Etcd(String),
    /// The Kubernetes API failed, as one sentence.
    #[error("{0}")]
    Kube(String),
    /// What `promote` was asked for cannot be done (names not found or not
    /// staged, an edit that cannot be made); nothing was written. One line
    /// per problem.
    #[error("{}; nothing was written", .0.join("; "))]
    Refused(Vec<String>),
    #[error("{path}: {message}")]
    Write { path: String, message: String },
}

/// Objects of the manifests as (key, JSON), validated.
pub fn objects(files: &[PathBuf]) -> Result<Vec<(ObjectKey, Value)>, DatastoreError> {
    let mut out: Vec<(ObjectKey, Value)> = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| DatastoreError::Read {
            path: f.display().to_string(),
            message: e.to_string(),
        })?;
        let name = f.display().to_string();
        // Line-accurate diagnostics from the decoder itself.
        let (_, diags) = palisade_k8s::decode(&name, &bytes);
        let errors: Vec<Diagnostic> = diags.into_iter().filter(Diagnostic::is_error).collect();
        if !errors.is_empty() {
            problems.extend(errors);
            continue;
        }
        for v in raw_documents(f, &bytes)? {
            let (objs, _) = palisade_k8s::decode_value(&name, v.clone());
            if let [o] = objs.as_slice() {
                let key = o.value.key();
                let mut v = v;
                if let (Some(ns), Some(meta)) = (&key.namespace, v.get_mut("metadata")) {
                    if let Some(m) = meta.as_object_mut() {
                        m.insert("namespace".into(), Value::String(ns.clone()));
                    }
                }
                out.push((key, v));
            }
        }
    }
    let loaded = palisade_k8s::assemble(
        files
            .iter()
            .flat_map(|f| {
                let bytes = std::fs::read(f).unwrap_or_default();
                palisade_k8s::decode(&f.display().to_string(), &bytes).0
            })
            .collect(),
    );
    problems.extend(loaded.diagnostics.into_iter().filter(Diagnostic::is_error));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(DatastoreError::Invalid(problems))
    }
}

/// The objects of one file as JSON values, lists expanded.
fn raw_documents(path: &Path, bytes: &[u8]) -> Result<Vec<Value>, DatastoreError> {
    let err = |m: String| DatastoreError::Read {
        path: path.display().to_string(),
        message: m,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| err(e.to_string()))?;
    let mut docs = Vec::new();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        docs.push(serde_json::from_str::<Value>(text).map_err(|e| err(e.to_string()))?);
    } else {
        use serde::Deserialize;
        for d in serde_norway::Deserializer::from_str(text) {
            let v = Value::deserialize(d).map_err(|e| err(e.to_string()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    let mut out = Vec::new();
    while let Some(d) = docs.pop() {
        let is_list = d
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"));
        match (is_list, d.get("items").and_then(Value::as_array)) {
            (true, Some(items)) => docs.extend(items.iter().rev().cloned()),
            _ => out.push(d),
        }
    }
    out.reverse();
    Ok(out)
}

pub(crate) fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// How long one transaction may take before the command gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn txn(endpoints: &[String], ops: Vec<TxnOp>) -> Result<(), DatastoreError> {
    let mut c = connect(endpoints)
        .await
        .map_err(|e| DatastoreError::Etcd(e.to_string()))?;
    let mut ops = ops;
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(128));
        tokio::time::timeout(CALL_TIMEOUT, c.txn(Txn::new().and_then(ops)))
            .await
            .map_err(|_| {
                DatastoreError::Etcd(format!(
                    "etcd write timed out after {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| DatastoreError::Etcd(describe(endpoints, "write", &e)))?;
        ops = rest;
    }
    Ok(())
}

/// Validates and writes the objects of `files`; returns their keys.
pub fn apply(endpoints: &[String], files: &[PathBuf]) -> Result<Vec<String>, DatastoreError> {
    apply_objects(endpoints, objects(files)?)
}

/// What `apply --staged` wrote: every key, and those of the policies it
/// staged (none: the files held no policy, which the caller should say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedApply {
    pub keys: Vec<String>,
    pub staged: Vec<String>,
}

/// [`apply`], with every policy object staged; other kinds are written as
/// they are.
pub fn apply_staged(
    endpoints: &[String],
    files: &[PathBuf],
) -> Result<StagedApply, DatastoreError> {
    let mut objs = objects(files)?;
    let mut staged = Vec::new();
    for (k, v) in &mut objs {
        if palisade_k8s::is_policy_kind(&k.kind) {
            stage(v);
            staged.push(key_of(k));
        }
    }
    let keys = apply_objects(endpoints, objs)?;
    Ok(StagedApply { keys, staged })
}

/// Sets the staging annotation of an object (validated: `metadata` and its
/// `annotations`, where present, are mappings).
pub fn stage(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if ann.is_null() {
        *ann = Value::Object(Default::default());
    }
    if let Some(ann) = ann.as_object_mut() {
        ann.insert(
            palisade_k8s::STAGED_ANNOTATION.into(),
            Value::String("true".into()),
        );
    }
}

/// Removes the staging annotation of an object; whether it had one.
pub fn unstage(v: &mut Value) -> bool {
    v.get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
        .is_some_and(|a| a.remove(palisade_k8s::STAGED_ANNOTATION).is_some())
}

fn apply_objects(
    endpoints: &[String],
    objs: Vec<(ObjectKey, Value)>,
) -> Result<Vec<String>, DatastoreError> {
    let keys: Vec<String> = objs.iter().map(|(k, _)| key_of(k)).collect();
    let ops = objs
        .iter()
        .map(|(k, v)| TxnOp::put(key_of(k), v.to_string(), None))
        .collect();
    block_on(txn(endpoints, ops))?;
    Ok(keys)
}

/// Deletes the objects `files` name; returns their keys.
pub fn delete(endpoints: &[String], files: &[PathBuf]) -> Result<Vec<String>, DatastoreError> {
    let objs = objects(files)?;
    let keys: Vec<String> = objs.iter().map(|(k, _)| key_of(k)).collect();
    let ops = keys
        .iter()
        .map(|k| TxnOp::delete(k.as_str(), None))
        .collect();
    block_on(txn(endpoints, ops))?;
    Ok(keys)
}

/// Every stored object (of `kind`, if given), as a `List`.
pub fn get(endpoints: &[String], kind: Option<&str>) -> Result<Value, DatastoreError> {
    let prefix = match kind {
        Some(k) => format!("{PREFIX}{k}/"),
        None => PREFIX.to_string(),
    };
    block_on(async {
        let c = connect(endpoints)
            .await
            .map_err(|e| DatastoreError::Etcd(e.to_string()))?;
        let mut kv = c.kv_client().max_decoding_message_size(MESSAGE_LIMIT);
        let mut items = Vec::new();
        let mut too_large = Vec::new();
        read_prefix(&mut kv, endpoints, &prefix, |key, value| match value {
            Some(v) => items.push(serde_json::from_slice(v).unwrap_or(Value::Null)),
            None => too_large.push(key.to_string()),
        })
        .await
        .map_err(|e| match e {
            crate::Error::Compacted => {
                DatastoreError::Etcd("etcd compacted the revision being read; try again".into())
            }
            other => DatastoreError::Etcd(other.to_string()),
        })?;
        if !too_large.is_empty() {
            return Err(DatastoreError::Etcd(format!(
                "the value of {} is larger than the {} MiB that Palisade reads from etcd",
                too_large.join(", "),
                MESSAGE_LIMIT >> 20
            )));
        }
        Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
    })
}
