//! The difference between the applied ruleset and the desired one, as one
//! `nft -f` transaction.
//!
//! When the two rulesets have the same *structure* (chains, and the name,
//! type and flags of every set and map), only elements differ, and the delta
//! is `delete element` / `add element` statements: a pod added, removed or
//! relabelled touches a few elements, never a chain. Otherwise the table is
//! replaced: `table inet palisade {}` + `delete table inet palisade` + the
//! full table, in one transaction (`flush table` would keep old elements).
//! Either way a reader sees the old or the new table, never a mix.
//!
//! The syntax of both, and the structure marker that lets an agent starting
//! against an existing table recognise it ([`crate::kernel`]), are
//! palisade-nft's ([`palisade_nft::syntax`]); this module decides which of
//! the two a change is.

use palisade_nft::{Element, Ruleset, SetId};

use crate::backend::BackendError;

pub use palisade_nft::syntax::{replace_text, STRUCTURE_COMMENT};
pub use palisade_nft::{same_structure, structure_hash, SetDelta};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// Nothing to do.
    Noop,
    /// Same structure: element changes only (removals first).
    Elements(Vec<SetDelta>),
    /// New structure (or no known table): replace the table atomically.
    Replace(Box<Ruleset>),
}

/// The name of the marker set (never referenced by a rule).
pub const MARKER_SET: &str = SetId::Structure.name();

/// What brings set `name` from `old` to `new` elements, if anything.
pub fn set_delta(name: &str, old: &[Element], new: &[Element]) -> Option<SetDelta> {
    SetDelta::between(name, old, new)
}

/// How many elements `sets` remove from interval sets of `table` (each
/// costs the kernel far more than an addition).
pub fn interval_removals(sets: &[SetDelta], table: &Ruleset) -> usize {
    sets.iter()
        .filter(|d| table.set(&d.set).is_some_and(|s| s.interval))
        .map(|d| d.remove.len())
        .sum()
}

/// The delta from `old` (what the kernel has, if known) to `new`.
pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Delta {
    let Some(old) = old else {
        return Delta::Replace(Box::new(new.clone()));
    };
    if !same_structure(old, new) {
        return Delta::Replace(Box::new(new.clone()));
    }
    let out: Vec<SetDelta> = old
        .sets
        .iter()
        .zip(&new.sets)
        .filter_map(|(a, b)| set_delta(&b.name, &a.elements, &b.elements))
        .collect();
    if out.is_empty() {
        Delta::Noop
    } else {
        Delta::Elements(out)
    }
}

impl Delta {
    /// The transaction for `nft -f`; `new` is the desired ruleset (for the
    /// set types).
    pub fn to_nft_text(&self, new: &Ruleset) -> String {
        match self {
            Delta::Noop => String::new(),
            Delta::Replace(rs) => replace_text(rs),
            Delta::Elements(sets) => palisade_nft::syntax::element_transaction(sets, new),
        }
    }

    /// (elements added, elements removed); a replacement counts every
    /// element as added.
    pub fn counts(&self) -> (usize, usize) {
        match self {
            Delta::Noop => (0, 0),
            Delta::Replace(rs) => (rs.sets.iter().map(|s| s.elements.len()).sum(), 0),
            Delta::Elements(v) => (
                v.iter().map(|d| d.add.len()).sum(),
                v.iter().map(|d| d.remove.len()).sum(),
            ),
        }
    }

    pub fn is_replace(&self) -> bool {
        matches!(self, Delta::Replace(_))
    }
}

/// Applies a delta to an in-memory table with the kernel's strictness:
/// deleting a missing element or adding a key that is present fails
/// ([`BackendError::Rejected`]), and a failed transaction changes nothing.
pub fn apply_to(table: &mut Option<Ruleset>, delta: &Delta) -> Result<(), BackendError> {
    apply_elements(table, delta).map_err(BackendError::Rejected)
}

fn set_mut<'t>(t: &'t mut Ruleset, name: &str) -> Result<&'t mut palisade_nft::Set, String> {
    t.sets
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no set {name}"))
}

fn apply_elements(table: &mut Option<Ruleset>, delta: &Delta) -> Result<(), String> {
    match delta {
        Delta::Noop => Ok(()),
        Delta::Replace(rs) => {
            *table = Some((**rs).clone());
            Ok(())
        }
        Delta::Elements(sets) => {
            let mut t = table.clone().ok_or("no table")?;
            for d in sets {
                let s = set_mut(&mut t, &d.set)?;
                for e in &d.remove {
                    let pos = s
                        .elements
                        .iter()
                        .position(|x| x.key == e.key)
                        .ok_or_else(|| format!("{}: delete of a missing element {e:?}", d.set))?;
                    s.elements.remove(pos);
                }
            }
            for d in sets {
                let s = set_mut(&mut t, &d.set)?;
                for e in &d.add {
                    if s.elements.iter().any(|x| x.key == e.key) {
                        return Err(format!("{}: element exists {e:?}", d.set));
                    }
                    s.elements.push(e.clone());
                }
                s.elements.sort();
            }
            *table = Some(t);
            Ok(())
        }
    }
}
