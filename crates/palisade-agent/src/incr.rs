//! The incremental path: pod, NetworkPolicy, Namespace and Node changes
//! become element changes through [`palisade_nft::incr::Incremental`],
//! without rebuilding the engine or compiling the node. This module only
//! remembers what changed since the last sync, maps the store's origins
//! onto the compiler's objects and refuses what would make the mapping
//! ambiguous (an object that several origins define) and admin policy
//! changes.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use palisade_engine::Engine;
use palisade_k8s::{Located, Object};
use palisade_nft::incr::{Change, Incremental, Key};
use palisade_nft::{Element, Ruleset};

use crate::delta::SetDelta;
use crate::input::Input;
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
        Object::AdminPolicy(_) | Object::Workload(_) => None,
    }
}

/// Origins changed since the last sync, with their objects then.
type Pending = BTreeMap<String, Option<Vec<Located<Object>>>>;

/// What the next sync asks of the incremental compiler.
enum Next {
    /// The changes of these origins.
    Changes(Pending),
    /// Nothing: an input since the last sync needs a full rebuild (a
    /// resync). The state is kept until then for idle collection only.
    Rebuild,
}

pub(crate) struct Incr {
    inner: Incremental,
    origin_of: HashMap<ObjectKey, String>,
    duplicated: HashSet<ObjectKey>,
    next: Next,
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
            next: Next::Changes(Pending::new()),
        })
    }

    /// Remembers what `input` changes; called before `store` applies it.
    pub(crate) fn note(&mut self, input: &Input, store: &Store) {
        let Next::Changes(pending) = &mut self.next else {
            return;
        };
        match input {
            Input::Upsert(crate::Entry { origin, .. }) | Input::Delete { origin } => {
                if !pending.contains_key(origin) {
                    let before = store.get(origin).map(<[_]>::to_vec);
                    pending.insert(origin.clone(), before);
                }
            }
            Input::Resync { .. } => self.next = Next::Rebuild,
            Input::SourceDown { .. } | Input::NodeFacts(_) => {}
        }
    }

    /// The element changes that bring `applied` to the store's state after
    /// the changes noted since the last plan. On `Err` this state is
    /// spent: the caller drops it and rebuilds.
    pub(crate) fn plan(
        &mut self,
        store: &Store,
        applied: &Ruleset,
    ) -> Result<Vec<SetDelta>, String> {
        let pending = match std::mem::replace(&mut self.next, Next::Changes(Pending::new())) {
            Next::Changes(pending) => pending,
            Next::Rebuild => return Err("a resync".into()),
        };
        let changes = self.changes(store, &pending)?;
        let delta = self.inner.apply(changes).map_err(|r| r.0)?;
        set_deltas(delta.into_changes(), applied)
    }

    /// The compiler's changes for `pending`.
    fn changes(&mut self, store: &Store, pending: &Pending) -> Result<Vec<Change>, String> {
        let mut changes = Vec::new();
        for (origin, before) in pending {
            let after = store.get(origin).unwrap_or_default();
            let before = before.as_deref().unwrap_or_default();
            if before == after {
                continue;
            }
            let mut keys = Vec::new();
            // A workload changes nothing the node enforces (see
            // `Store::cluster`).
            let enforced = |o: &&Located<Object>| !matches!(o.value, Object::Workload(_));
            for o in before.iter().chain(after).filter(enforced) {
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
        Ok(changes)
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
        set_deltas(self.inner.collect(max).into_changes(), applied)
    }
}

/// Element changes by set as set deltas in the table's set order, checked against the table: a removal of an
/// absent element or an addition of a present one means the incremental
/// state and the table disagree.
fn set_deltas(mut by_set: Vec<SetDelta>, applied: &Ruleset) -> Result<Vec<SetDelta>, String> {
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
