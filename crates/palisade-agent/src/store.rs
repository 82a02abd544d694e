//! The last good version of every object, by origin.

use std::collections::{BTreeMap, BTreeSet};

use palisade_k8s::{Diagnostic, Located, Object};
use palisade_model::Cluster;

use crate::input::{Entry, Input};

/// Objects by origin. An origin whose update had errors keeps the previous
/// version of every object the errors name (and all of its previous objects
/// when an error names no object, as for a syntax error); the problem is
/// recorded in [`Store::rejected`] until the origin is fixed or deleted.
#[derive(Clone, Debug, Default)]
pub struct Store {
    good: BTreeMap<String, Vec<Located<Object>>>,
    rejected: BTreeMap<String, Vec<String>>,
    /// Good objects by kind, kept as `good` changes (counting 10,000
    /// objects on every event would cost more than the event).
    counts: BTreeMap<&'static str, usize>,
}

fn kind_of(o: &Object) -> &'static str {
    match o {
        Object::Namespace(_) => "Namespace",
        Object::Pod(_) => "Pod",
        Object::Node(_) => "Node",
        Object::NetworkPolicy(_) => "NetworkPolicy",
        Object::AdminPolicy(p) => match p.kind.as_str() {
            "AdminNetworkPolicy" => "AdminNetworkPolicy",
            "BaselineAdminNetworkPolicy" => "BaselineAdminNetworkPolicy",
            "ClusterNetworkPolicy" => "ClusterNetworkPolicy",
            _ => "AdminPolicy",
        },
        Object::Workload(w) => w
            .endpoint
            .template_kind()
            .map_or("Workload", |k| k.as_str()),
    }
}

/// What applying one input did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The set of good objects changed.
    pub changed: bool,
    /// Problems found in this input (already logged into `rejected`).
    pub rejected: Vec<String>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn apply(&mut self, input: Input) -> Applied {
        match input {
            Input::Upsert(entry) => {
                let origin = entry.origin.clone();
                let before = self.good.get(&origin).cloned();
                let rejected = self.upsert(entry, before.as_deref());
                Applied {
                    changed: self.good.get(&origin) != before.as_ref(),
                    rejected,
                }
            }
            Input::Delete { origin } => {
                self.rejected.remove(&origin);
                Applied {
                    changed: self.remove(&origin).is_some(),
                    rejected: Vec::new(),
                }
            }
            Input::Resync { scope, entries } => {
                let old: BTreeMap<String, Vec<Located<Object>>> = self
                    .good
                    .iter()
                    .filter(|(k, _)| k.starts_with(&scope))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for k in old.keys() {
                    self.remove(k);
                }
                self.rejected.retain(|k, _| !k.starts_with(&scope));
                let mut rejected = Vec::new();
                for e in entries {
                    let prev = old.get(&e.origin).cloned();
                    rejected.extend(self.upsert(e, prev.as_deref()));
                }
                let new: BTreeMap<&String, &Vec<Located<Object>>> = self
                    .good
                    .iter()
                    .filter(|(k, _)| k.starts_with(&scope))
                    .collect();
                let changed = new.len() != old.len()
                    || new.iter().any(|(k, v)| old.get(k.as_str()) != Some(*v));
                Applied { changed, rejected }
            }
            Input::SourceDown { .. } | Input::NodeFacts(_) => Applied::default(),
        }
    }

    /// Stores `entry`, keeping from `previous` what its errors reject.
    fn upsert(&mut self, entry: Entry, previous: Option<&[Located<Object>]>) -> Vec<String> {
        let Entry {
            origin,
            mut objects,
            errors,
        } = entry;
        if errors.is_empty() {
            self.rejected.remove(&origin);
            self.put(origin, objects);
            return Vec::new();
        }
        let messages: Vec<String> = errors.iter().map(Diagnostic::to_string).collect();
        self.rejected.insert(origin.clone(), messages.clone());
        let named: BTreeSet<&str> = errors.iter().filter_map(|d| d.object.as_deref()).collect();
        if errors.iter().any(|d| d.object.is_none()) {
            // The origin could not be read as a whole: keep all of it.
            if let Some(prev) = previous {
                self.put(origin, prev.to_vec());
            }
            return messages;
        }
        let present: BTreeSet<String> = objects.iter().map(|o| o.value.key().to_string()).collect();
        let known: BTreeSet<String> = previous
            .into_iter()
            .flatten()
            .map(|p| p.value.key().to_string())
            .chain(present.iter().cloned())
            .collect();
        // An error that names no object we know (a broken object whose name
        // is itself missing or wrong) could stand for any previous object:
        // keep every previous object the new version does not replace.
        let keep_all = named.iter().any(|n| !known.contains(*n));
        for p in previous.into_iter().flatten() {
            let k = p.value.key().to_string();
            if (keep_all || named.contains(k.as_str())) && !present.contains(&k) {
                objects.push(p.clone());
            }
        }
        self.put(origin, objects);
        messages
    }

    fn put(&mut self, origin: String, objects: Vec<Located<Object>>) {
        self.remove(&origin);
        if !objects.is_empty() {
            self.count(&objects, true);
            self.good.insert(origin, objects);
        }
    }

    fn remove(&mut self, origin: &str) -> Option<Vec<Located<Object>>> {
        let old = self.good.remove(origin)?;
        self.count(&old, false);
        Some(old)
    }

    fn count(&mut self, objects: &[Located<Object>], add: bool) {
        for o in objects {
            let n = self.counts.entry(kind_of(&o.value)).or_insert(0);
            if add {
                *n += 1;
            } else {
                *n -= 1;
            }
        }
    }

    /// Origins whose last update was rejected, with the problems.
    pub fn rejected(&self) -> &BTreeMap<String, Vec<String>> {
        &self.rejected
    }

    /// The good objects of one origin.
    pub fn get(&self, origin: &str) -> Option<&[Located<Object>]> {
        self.good.get(origin).map(Vec::as_slice)
    }

    /// Every origin with its good objects, in origin order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[Located<Object>])> {
        self.good.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.good.keys().map(String::as_str)
    }

    pub fn objects(&self) -> impl Iterator<Item = &Located<Object>> {
        self.good.values().flatten()
    }

    /// Object counts by kind.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.counts
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (k.to_string(), n))
            .collect()
    }

    /// The cluster the good objects describe, with merge problems
    /// (duplicates across origins: the first origin in name order wins).
    /// Workloads are left out: their pod templates have no address, so
    /// there is nothing of them to enforce; their live pods are enforced.
    pub fn cluster(&self) -> (Cluster, Vec<Diagnostic>) {
        let live = self
            .objects()
            .filter(|o| !matches!(o.value, Object::Workload(_)))
            .cloned()
            .collect();
        let loaded = palisade_k8s::assemble(live);
        (loaded.cluster, loaded.diagnostics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &[u8] = b"apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nstatus: {phase: Running, podIP: 10.9.0.1}\n";

    /// Regression: an object so broken that its name is missing (as written
    /// straight into etcd) named no known object, and the previous version
    /// of the origin was dropped instead of kept.
    #[test]
    fn a_nameless_broken_object_keeps_the_previous_version() {
        let mut store = Store::new();
        let origin = "etcd:/palisade/v1/Pod/shop/web".to_string();
        let good = Entry::decode_bytes(origin.clone(), "web.yaml", WEB);
        assert!(good.errors.is_empty());
        store.apply(Input::Upsert(good));
        let bad = Entry::decode_json(
            origin.clone(),
            "web.json",
            serde_json::json!({"kind": "Pod"}),
        );
        assert!(!bad.errors.is_empty() && bad.objects.is_empty());
        let applied = store.apply(Input::Upsert(bad));
        assert!(!applied.rejected.is_empty());
        assert!(!applied.changed, "the previous version must stay");
        let kept = store.get(&origin).expect("previous version kept");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].value.key().to_string(), "Pod shop/web");
    }

    /// The counts kept on the way equal a recount after upserts, an
    /// invalid update, a delete and a resync that drops origins.
    #[test]
    fn counts_follow_every_change() {
        let recount = |store: &Store| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for o in store.objects() {
                *m.entry(kind_of(&o.value).to_string()).or_default() += 1;
            }
            m
        };
        let pod = |name: &str, ip: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nstatus: {{phase: Running, podIP: {ip}}}\n")
        };
        let mut store = Store::new();
        let ns = b"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n".to_vec();
        for (origin, body) in [
            (
                "dir:a",
                [ns.clone(), pod("a", "10.9.0.1").into_bytes()].concat(),
            ),
            ("dir:b", pod("b", "10.9.0.2").into_bytes()),
            ("dir:c", pod("c", "10.9.0.3").into_bytes()),
            ("dir:b", b"kind: Pod\nmetadata: [".to_vec()),
        ] {
            store.apply(Input::Upsert(Entry::decode_bytes(
                origin.into(),
                "x.yaml",
                &body,
            )));
            assert_eq!(store.counts(), recount(&store));
        }
        assert_eq!(store.counts()["Pod"], 3);
        store.apply(Input::Delete {
            origin: "dir:c".into(),
        });
        assert_eq!(store.counts(), recount(&store));
        let keep = Entry::decode_bytes("dir:b".into(), "b.yaml", pod("b", "10.9.0.2").as_bytes());
        store.apply(Input::Resync {
            scope: "dir:".into(),
            entries: vec![keep],
        });
        assert_eq!(store.counts(), recount(&store));
        assert_eq!(store.counts().get("Pod"), Some(&1));
        assert_eq!(store.counts().get("Namespace"), None);
    }
}
