//! Element changes: what the incremental compiler produces, what the diff
//! of two compiled rulesets produces, and what an element transaction
//! ([`crate::syntax::element_transaction`]) writes.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::ir::Element;

/// Whether an element is added to a set or removed from it: the engine's
/// selection deltas and the element deltas share one operation type.
pub use palisade_engine::live::Op as ElementOp;

/// Element changes of one set or map, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDelta {
    pub set: String,
    pub remove: Vec<Element>,
    pub add: Vec<Element>,
}

impl SetDelta {
    /// What brings set `name` from `old` to `new` elements, if anything.
    pub fn between(name: &str, old: &[Element], new: &[Element]) -> Option<SetDelta> {
        let (remove, add) = diff_elements(old, new);
        (!remove.is_empty() || !add.is_empty()).then(|| SetDelta {
            set: name.to_string(),
            remove,
            add,
        })
    }
}

/// Element changes being accumulated, per set name: removals and
/// additions. An operation cancels a pending opposite one on the same
/// element, so contributions removed and added again leave nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElementDelta {
    pub sets: BTreeMap<String, (BTreeSet<Element>, BTreeSet<Element>)>,
}

impl ElementDelta {
    pub fn add(&mut self, set: &str, e: Element) {
        let (remove, add) = self.entry(set);
        if !remove.remove(&e) {
            add.insert(e);
        }
    }

    pub fn remove(&mut self, set: &str, e: Element) {
        let (remove, add) = self.entry(set);
        if !add.remove(&e) {
            remove.insert(e);
        }
    }

    pub fn put(&mut self, set: &str, e: Element, op: ElementOp) {
        match op {
            ElementOp::Add => self.add(set, e),
            ElementOp::Remove => self.remove(set, e),
        }
    }

    fn entry(&mut self, set: &str) -> &mut (BTreeSet<Element>, BTreeSet<Element>) {
        if !self.sets.contains_key(set) {
            self.sets.insert(set.to_string(), Default::default());
        }
        self.sets.get_mut(set).expect("inserted")
    }

    /// The changes per set, by set name; sets without changes left out.
    pub fn into_changes(self) -> Vec<SetDelta> {
        self.sets
            .into_iter()
            .filter(|(_, (r, a))| !r.is_empty() || !a.is_empty())
            .map(|(set, (r, a))| SetDelta {
                set,
                remove: r.into_iter().collect(),
                add: a.into_iter().collect(),
            })
            .collect()
    }
}

fn sorted(v: &[Element]) -> Cow<'_, [Element]> {
    if v.windows(2).all(|w| w[0] <= w[1]) {
        Cow::Borrowed(v)
    } else {
        let mut v = v.to_vec();
        v.sort();
        Cow::Owned(v)
    }
}

/// Elements only in `old`, and only in `new` (both sorted, linear merge).
fn diff_elements(old: &[Element], new: &[Element]) -> (Vec<Element>, Vec<Element>) {
    let (old, new) = (sorted(old), sorted(new));
    let (mut i, mut j) = (0, 0);
    let (mut remove, mut add) = (Vec::new(), Vec::new());
    while i < old.len() || j < new.len() {
        let ord = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
            Ordering::Less => {
                remove.push(old[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                add.push(new[j].clone());
                j += 1;
            }
        }
    }
    (remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Value;

    fn el(m: u32) -> Element {
        Element {
            key: vec![Value::Mark(m)],
            data: None,
        }
    }

    #[test]
    fn opposite_operations_cancel() {
        let mut d = ElementDelta::default();
        d.put("s", el(1), ElementOp::Add);
        d.put("s", el(1), ElementOp::Remove);
        d.put("s", el(2), ElementOp::Remove);
        d.put("t", el(3), ElementOp::Remove);
        d.put("t", el(3), ElementOp::Add);
        assert_eq!(
            d.into_changes(),
            vec![SetDelta {
                set: "s".into(),
                remove: vec![el(2)],
                add: vec![],
            }]
        );
    }

    #[test]
    fn between_is_the_difference() {
        let d = SetDelta::between("s", &[el(3), el(1)], &[el(2), el(3)]).unwrap();
        assert_eq!((d.remove, d.add), (vec![el(1)], vec![el(2)]));
        assert_eq!(SetDelta::between("s", &[el(1)], &[el(1)]), None);
    }
}
