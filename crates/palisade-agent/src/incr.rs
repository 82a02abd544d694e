//! The incremental path: pod, NetworkPolicy, Namespace and Node changes
//! become element changes through [`palisade_nft::incr::Incremental`],
//! without rebuilding the engine or compiling the node. This module only
//! maps the store's origins onto it and refuses what would make the mapping
//! ambiguous (an object that several origins define) and admin policy
//! changes.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use palisade_engine::Engine;
use palisade_k8s::{Located, Object};
use palisade_nft::incr::{Change, ElementDelta, Incremental, Key};
use palisade_nft::{Element, Ruleset};

use crate::delta::SetDelta;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Pod,
    Policy,
    Namespace,
    Node,
}

/// The objects the incremental path takes, by kind and `(namespace,
/// name)` (cluster-scoped ones with an empty namespace).
type ObjectKey = (Kind, Key);

fn key_of(o: &Object) -> Option<ObjectKey> {
    match o {
        Object::Pod(p) => Some((Kind::Pod, (p.namespace.clone(), p.name.clone()))),
        Object::NetworkPolicy(p) => Some((Kind::Policy, (p.namespace.clone(), p.name.clone()))),
        Object::Namespace(n) => Some((Kind::Namespace, (String::new(), n.name.clone()))),
        Object::Node(n) => Some((Kind::Node, (String::new(), n.name.clone()))),
        Object::AdminPolicy(_) => None,
    }
}

pub(crate) struct Incr {
    inner: Incremental,
    origin_of: HashMap<ObjectKey, String>,
    duplicated: HashSet<ObjectKey>,
}

impl Incr {
    /// The state of a full build: `engine` compiled from `store`'s objects.
    /// `None` when the cluster holds what the incremental compiler refuses.
    pub(crate) fn new(engine: &Engine, store: &Store, node: &str) -> Option<Incr> {
        let inner = Incremental::new(engine, node)?;
        let mut origin_of = HashMap::new();
        let mut duplicated = HashSet::new();
        for (origin, objects) in store.entries() {
            for o in objects {
                if let Some(k) = key_of(&o.value) {
                    match origin_of.entry(k) {
                        Entry::Occupied(e) => {
                            duplicated.insert(e.key().clone());
                        }
                        Entry::Vacant(e) => {
                            e.insert(origin.to_string());
                        }
                    }
                }
            }
        }
        Some(Incr {
            inner,
            origin_of,
            duplicated,
        })
    }

    /// The element changes that bring `applied` to the store's state after
    /// the changes of `pending` (origins with their objects before). On
    /// `Err` this state is spent: the caller drops it and rebuilds.
    pub(crate) fn plan(
        &mut self,
        store: &Store,
        pending: &BTreeMap<String, Option<Vec<Located<Object>>>>,
        applied: &Ruleset,
    ) -> Result<Vec<SetDelta>, String> {
        let mut changes = Vec::new();
        for (origin, before) in pending {
            let after = store.get(origin).unwrap_or_default();
            let before = before.as_deref().unwrap_or_default();
            if before == after {
                continue;
            }
            let mut keys = Vec::new();
            for o in before.iter().chain(after) {
                let k = key_of(&o.value).ok_or("an admin policy")?;
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for k in keys {
                if self.duplicated.contains(&k) {
                    return Err("object defined by several origins".into());
                }
                let new = after
                    .iter()
                    .find(|o| key_of(&o.value).as_ref() == Some(&k))
                    .map(|o| o.value.clone());
                match (self.origin_of.get(&k), &new) {
                    (Some(o), _) if o != origin => {
                        return Err("object defined by another origin".into());
                    }
                    (_, Some(_)) => {
                        self.origin_of.insert(k.clone(), origin.clone());
                    }
                    (_, None) => {
                        self.origin_of.remove(&k);
                    }
                }
                let (kind, key) = k;
                changes.push(match (kind, new) {
                    (Kind::Pod, Some(Object::Pod(p))) => Change::Pod { key, new: Some(p) },
                    (Kind::Pod, _) => Change::Pod { key, new: None },
                    (Kind::Policy, Some(Object::NetworkPolicy(p))) => {
                        Change::Policy { key, new: Some(p) }
                    }
                    (Kind::Policy, _) => Change::Policy { key, new: None },
                    (Kind::Namespace, Some(Object::Namespace(n))) => Change::Namespace {
                        name: key.1,
                        new: Some(n),
                    },
                    (Kind::Namespace, _) => Change::Namespace {
                        name: key.1,
                        new: None,
                    },
                    (Kind::Node, Some(Object::Node(n))) => Change::Node {
                        name: key.1,
                        new: Some(n),
                    },
                    (Kind::Node, _) => Change::Node {
                        name: key.1,
                        new: None,
                    },
                });
            }
        }
        let delta = self.inner.apply(changes).map_err(|r| r.0)?;
        set_deltas(delta, applied)
    }

    /// How many unreachable interval elements the table still holds.
    pub(crate) fn garbage_len(&self) -> usize {
        self.inner.garbage_len()
    }

    pub(crate) fn garbage(&self) -> &BTreeMap<String, BTreeSet<Element>> {
        self.inner.garbage()
    }

    /// Forgets them all (the table is being replaced without them).
    pub(crate) fn take_garbage(&mut self) -> BTreeMap<String, BTreeSet<Element>> {
        self.inner.take_garbage()
    }

    /// The removal of up to `max` of them.
    pub(crate) fn collect(
        &mut self,
        max: usize,
        applied: &Ruleset,
    ) -> Result<Vec<SetDelta>, String> {
        set_deltas(self.inner.collect(max), applied)
    }
}

/// `delta` as set deltas in the table's set order, checked against the
/// table: a removal of an absent element or an addition of a present one
/// means the incremental state and the table disagree.
fn set_deltas(delta: ElementDelta, applied: &Ruleset) -> Result<Vec<SetDelta>, String> {
    let mut by_set = delta.into_changes();
    let mut out = Vec::new();
    for s in &applied.sets {
        let Some(i) = by_set.iter().position(|d| d.set == s.name) else {
            continue;
        };
        let d = by_set.swap_remove(i);
        let has = |e| s.elements.binary_search(e).is_ok();
        if !d.remove.iter().all(has) || d.add.iter().any(has) {
            return Err(format!(
                "set {} disagrees with the incremental state",
                d.set
            ));
        }
        out.push(d);
    }
    if let Some(d) = by_set.first() {
        return Err(format!("no set {} in the table", d.set));
    }
    Ok(out)
}
