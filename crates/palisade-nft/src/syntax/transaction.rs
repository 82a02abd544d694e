//! Transactions the agent sends: element changes, and the replacement of
//! the whole table with its structure marker.
//!
//! The full table carries an empty marker set ([`SetId::Structure`]) whose
//! comment is `palisade structure <hash>` ([`structure_hash`]), so that an
//! agent starting against an existing table can tell whether only
//! elements differ ([`super::KernelTable`]). (nft 1.0.6 does not list table
//! or chain comments back; set comments it does.)

use std::fmt::Write as _;

use super::render::{element_lines, value_text, Spelling, ELEMENT_CHUNK};
use crate::delta::SetDelta;
use crate::ir::{Element, Ruleset, Set, FAMILY, TABLE};
use crate::schema::SetId;
use crate::structure::structure_hash;

/// The prefix of the marker set's comment that records the structure hash.
pub const STRUCTURE_COMMENT: &str = "palisade structure ";

/// The full table with its structure marker, replacing any existing one
/// in one transaction (`flush table` would keep old elements).
pub fn replace_text(rs: &Ruleset) -> String {
    let table = rs.to_nft_text();
    let head = format!("table {FAMILY} {TABLE} {{\n");
    let body = table.strip_prefix(&head).unwrap_or(&table);
    format!(
        "table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n{head}\tset {} {{\n\t\ttype mark\n\t\tcomment \"{STRUCTURE_COMMENT}{}\"\n\t}}\n{body}",
        SetId::Structure.name(),
        structure_hash(rs)
    )
}

/// The keys of `elements`, for `delete element`: protocols as numbers, and
/// in concatenated interval sets single values as ranges (`80-80`), the
/// only form nft 1.0.6 deletes.
fn key_lines(template: &Set, elements: &[Element]) -> String {
    let sp = Spelling {
        proto_names: false,
        singleton_ranges: template.interval && template.key.len() > 1,
    };
    let mut s = String::new();
    for (i, e) in elements.iter().enumerate() {
        let key: Vec<String> = e.key.iter().map(|v| value_text(v, sp)).collect();
        let sep = if i + 1 < elements.len() { "," } else { "" };
        let _ = writeln!(s, "\t\t\t{}{sep}", key.join(" . "));
    }
    s
}

/// One transaction of element changes, removals first, in statements of
/// at most [`ELEMENT_CHUNK`] elements (see there). `table` gives the set
/// definitions; changes to sets it lacks are left out.
pub fn element_transaction(sets: &[SetDelta], table: &Ruleset) -> String {
    let mut s = String::new();
    for d in sets {
        let Some(t) = table.set(&d.set) else { continue };
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
        if table.set(&d.set).is_none() {
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
