//! Deferred removals: interval elements nothing can reach any more stay in
//! the table until idle time, because the kernel takes 20-50 ms to remove
//! one from a large concatenated interval set.

use std::collections::{BTreeMap, BTreeSet};

use super::{ElementDelta, Incremental};
use crate::schema;
use crate::{Dir, Element, Value};

/// Whose group ids an element of a deferrable set starts with.
#[derive(Clone, Copy, Debug)]
enum Domain {
    Np(Dir),
    Tier(usize),
}

impl Incremental {
    /// The interval sets whose removals may wait ([`schema::SetId::deferrable`]),
    /// whose group ids they start with, and whether their second field is
    /// a peer's mark.
    fn deferrable(&self) -> Vec<(String, Domain, bool)> {
        let mut out = Vec::new();
        for d in [Dir::Egress, Dir::Ingress] {
            for s in schema::allow_sets(d).into_iter().filter(|s| s.deferrable()) {
                out.push((s.name().to_string(), Domain::Np(d), s.peer_keyed()));
            }
        }
        for (t, ts) in self.tiers.iter().enumerate() {
            for s in schema::tier_sets(ts.dir, ts.tier) {
                if s.deferrable() {
                    out.push((s.name().to_string(), Domain::Tier(t), s.peer_keyed()));
                }
            }
        }
        out
    }

    /// Whether a packet can reach an element of a deferrable set: its
    /// group is some local pod's and, in a peer set, its mark some pod's.
    fn reachable(&self, domain: Domain, peer: bool, e: &Element) -> bool {
        let mark = |i: usize| match e.key.get(i) {
            Some(Value::Mark(m)) => Some(*m),
            _ => None,
        };
        let Some(g) = mark(0) else {
            return true;
        };
        let group = match domain {
            Domain::Np(Dir::Egress) => self.used_egress.contains(&g),
            Domain::Np(Dir::Ingress) => self.used_ingress.contains(&g),
            Domain::Tier(t) => self.tiers[t].used.contains(&g),
        };
        group && (!peer || mark(1).is_none_or(|m| self.used_marks.contains(&m)))
    }

    /// Removing an element from a large concatenated interval set costs the
    /// kernel 20-50 ms, adding one a few microseconds. An element nothing
    /// can reach allows nothing, so its removal waits (it becomes garbage);
    /// garbage that a change makes reachable again is either wanted again
    /// (kept) or removed in the same transaction, before anything can match
    /// it.
    pub(super) fn defer(&mut self, out: &mut ElementDelta) {
        let sets = self.deferrable();
        for (set, domain, peer) in &sets {
            let Some((remove, add)) = out.sets.get_mut(set) else {
                continue;
            };
            let garbage = self.garbage.entry(set.clone()).or_default();
            add.retain(|e| !garbage.remove(e));
            let removed = std::mem::take(remove);
            for e in removed {
                if self.reachable(*domain, *peer, &e) {
                    remove.insert(e);
                } else {
                    self.garbage
                        .get_mut(set)
                        .expect("entry made above")
                        .insert(e);
                }
            }
        }
        for (set, domain, peer) in &sets {
            let Some(garbage) = self.garbage.get(set) else {
                continue;
            };
            let live: Vec<Element> = garbage
                .iter()
                .filter(|e| self.reachable(*domain, *peer, e))
                .cloned()
                .collect();
            for e in live {
                self.garbage.get_mut(set).expect("present").remove(&e);
                out.remove(set, e);
            }
        }
        self.garbage.retain(|_, g| !g.is_empty());
    }

    /// How many unreachable interval elements the table still holds.
    pub fn garbage_len(&self) -> usize {
        self.garbage.values().map(BTreeSet::len).sum()
    }

    /// Unreachable interval elements the table still holds, by set.
    pub fn garbage(&self) -> &BTreeMap<String, BTreeSet<Element>> {
        &self.garbage
    }

    /// Forgets every unreachable element (the caller replaces the table
    /// with one without them) and returns them.
    pub fn take_garbage(&mut self) -> BTreeMap<String, BTreeSet<Element>> {
        std::mem::take(&mut self.garbage)
    }

    /// Up to `max` unreachable elements to remove now (the caller removes
    /// them when idle, a few per transaction, so that no event waits long
    /// behind a removal).
    pub fn collect(&mut self, max: usize) -> ElementDelta {
        let mut out = ElementDelta::default();
        let mut n = 0;
        for (set, garbage) in &mut self.garbage {
            while n < max {
                let Some(e) = garbage.pop_first() else {
                    break;
                };
                out.remove(set, e);
                n += 1;
            }
        }
        self.garbage.retain(|_, g| !g.is_empty());
        out
    }
}
