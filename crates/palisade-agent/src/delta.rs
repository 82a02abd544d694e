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
//! The full table carries an empty marker set, [`MARKER_SET`], whose
//! comment is `palisade structure <hash>` ([`structure_hash`]), so that an
//! agent starting against an existing table can tell whether only elements
//! differ ([`crate::kernel`]). (nft 1.0.6 does not list table or chain
//! comments back; set comments it does.)
//!
//! nft 1.0.6 deletes a single value from a concatenated interval set only
//! when it is written as a range (`80-80`); deletions are rendered so.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use palisade_nft::{
    element_lines, Element, Ruleset, Set, Value, Verdict, ELEMENT_CHUNK, FAMILY, TABLE,
};

/// Element changes of one set or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDelta {
    pub set: String,
    pub remove: Vec<Element>,
    pub add: Vec<Element>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// Nothing to do.
    Noop,
    /// Same structure: element changes only (removals first).
    Elements(Vec<SetDelta>),
    /// New structure (or no known table): replace the table atomically.
    Replace(Box<Ruleset>),
}

/// The prefix of the marker set's comment that records the structure hash.
pub const STRUCTURE_COMMENT: &str = "palisade structure ";

/// The name of the marker set (never referenced by a rule).
pub const MARKER_SET: &str = "agent_structure";

/// A hash of everything but the elements: chains, and each set's name, key
/// and data types, flags and comment, in order.
pub fn structure_hash(rs: &Ruleset) -> String {
    let mut h = palisade_nft::Fnv::new();
    for s in &rs.sets {
        format!(
            "{:?}{:?}{:?}{}{}",
            s.name, s.key, s.data, s.interval, s.comment
        )
        .hash(&mut h);
    }
    format!("{:?}", rs.chains).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether two rulesets differ in elements only.
pub fn same_structure(a: &Ruleset, b: &Ruleset) -> bool {
    a.chains == b.chains
        && a.sets.len() == b.sets.len()
        && a.sets.iter().zip(&b.sets).all(|(x, y)| {
            x.name == y.name
                && x.key == y.key
                && x.data == y.data
                && x.interval == y.interval
                && x.comment == y.comment
        })
}

fn sorted(v: &[Element]) -> std::borrow::Cow<'_, [Element]> {
    if v.windows(2).all(|w| w[0] <= w[1]) {
        std::borrow::Cow::Borrowed(v)
    } else {
        let mut v = v.to_vec();
        v.sort();
        std::borrow::Cow::Owned(v)
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

/// What brings set `name` from `old` to `new` elements, if anything.
pub fn set_delta(name: &str, old: &[Element], new: &[Element]) -> Option<SetDelta> {
    let (remove, add) = diff_elements(old, new);
    (!remove.is_empty() || !add.is_empty()).then(|| SetDelta {
        set: name.to_string(),
        remove,
        add,
    })
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

/// The full table with its structure marker, replacing any existing one.
pub fn replace_text(rs: &Ruleset) -> String {
    let table = rs.to_nft_text();
    let head = format!("table {FAMILY} {TABLE} {{\n");
    let body = table.strip_prefix(&head).unwrap_or(&table);
    format!(
        "table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n{head}\tset {MARKER_SET} {{\n\t\ttype mark\n\t\tcomment \"{STRUCTURE_COMMENT}{}\"\n\t}}\n{body}",
        structure_hash(rs)
    )
}

/// One value as nft reads it; with `ranges`, single-value ranges are
/// written `a-a`.
fn value_text(v: &Value, ranges: bool) -> String {
    match v {
        Value::Ifname(s) => format!("\"{s}\""),
        Value::Ether(m) => palisade_nft::mac_text(m),
        Value::Ipv4(a) => a.to_string(),
        Value::Ipv6(a) => a.to_string(),
        Value::Ipv4Range(a, b) if a == b && !ranges => a.to_string(),
        Value::Ipv4Range(a, b) => format!("{a}-{b}"),
        Value::Ipv6Range(a, b) if a == b && !ranges => a.to_string(),
        Value::Ipv6Range(a, b) => format!("{a}-{b}"),
        Value::Mark(m) => m.to_string(),
        Value::Proto(p) => p.to_string(),
        Value::Port(p) => p.to_string(),
        Value::PortRange(a, b) if a == b && !ranges => a.to_string(),
        Value::PortRange(a, b) => format!("{a}-{b}"),
        Value::Verdict(Verdict::Return) => "return".into(),
        Value::Verdict(Verdict::Drop) => "drop".into(),
    }
}

/// The keys of `elements`, for `delete element`.
fn key_lines(template: &Set, elements: &[Element]) -> String {
    let ranges = template.interval && template.key.len() > 1;
    let mut s = String::new();
    for (i, e) in elements.iter().enumerate() {
        let key: Vec<String> = e.key.iter().map(|v| value_text(v, ranges)).collect();
        let sep = if i + 1 < elements.len() { "," } else { "" };
        let _ = writeln!(s, "\t\t\t{}{sep}", key.join(" . "));
    }
    s
}

impl Delta {
    /// The transaction for `nft -f`; `new` is the desired ruleset (for the
    /// set types).
    pub fn to_nft_text(&self, new: &Ruleset) -> String {
        match self {
            Delta::Noop => String::new(),
            Delta::Replace(rs) => replace_text(rs),
            Delta::Elements(sets) => {
                let mut s = String::new();
                // In statements of at most ELEMENT_CHUNK elements (see
                // there), all in this one transaction.
                for d in sets {
                    let Some(t) = new.set(&d.set) else { continue };
                    for chunk in d.remove.chunks(ELEMENT_CHUNK) {
                        let _ = write!(
                            s,
                            "delete element {FAMILY} {TABLE} {} {{\n{}}}\n",
                            d.set,
                            key_lines(t, chunk)
                        );
                    }
                }
                for d in sets {
                    if new.set(&d.set).is_none() {
                        continue;
                    }
                    for chunk in d.add.chunks(ELEMENT_CHUNK) {
                        let _ = write!(
                            s,
                            "add element {FAMILY} {TABLE} {} {{\n{}}}\n",
                            d.set,
                            element_lines(chunk)
                        );
                    }
                }
                s
            }
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
/// deleting a missing element or adding a key that is present fails, and a
/// failed transaction changes nothing.
pub fn apply_to(table: &mut Option<Ruleset>, delta: &Delta) -> Result<(), String> {
    match delta {
        Delta::Noop => Ok(()),
        Delta::Replace(rs) => {
            *table = Some((**rs).clone());
            Ok(())
        }
        Delta::Elements(sets) => {
            let mut t = table.clone().ok_or("no table")?;
            for d in sets {
                let s = t
                    .sets
                    .iter_mut()
                    .find(|s| s.name == d.set)
                    .ok_or_else(|| format!("no set {}", d.set))?;
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
                let s = t
                    .sets
                    .iter_mut()
                    .find(|s| s.name == d.set)
                    .ok_or_else(|| format!("no set {}", d.set))?;
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
