//! Admin-tier precedence: within a tier the earliest rule that covers a
//! flow decides. Compilers that must present a tier as disjoint pieces (a
//! verdict map with non-overlapping keys) resolve the overlaps here, so the
//! order of evaluation is decided in one place.

use std::collections::{BTreeSet, HashMap};

use palisade_model::{AdminAction, Protocol};

/// A protocol (IANA number) and an inclusive port range.
pub type PortItem = (u8, u16, u16);

/// An action over a disjoint port range of one protocol.
pub type PortVerdict = (u8, u16, u16, AdminAction);

/// First match over ports: `rules` in evaluation order, each an action and
/// the port ranges it covers; the result partitions what any rule covers
/// into disjoint ranges labelled with the earliest covering rule's action.
pub fn first_match(rules: &[(AdminAction, Vec<PortItem>)]) -> Vec<PortVerdict> {
    let mut out: Vec<PortVerdict> = Vec::new();
    for proto in Protocol::ALL.map(|p| p.number()) {
        let mut cuts: BTreeSet<u32> = BTreeSet::new();
        for (_, items) in rules {
            for &(p, a, b) in items {
                if p == proto && a <= b {
                    cuts.insert(u32::from(a));
                    cuts.insert(u32::from(b) + 1);
                }
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        for w in cuts.windows(2) {
            let (lo, hi) = (w[0], w[1] - 1);
            let action = rules.iter().find_map(|(action, items)| {
                items
                    .iter()
                    .any(|&(p, a, b)| p == proto && u32::from(a) <= lo && hi <= u32::from(b))
                    .then_some(*action)
            });
            let Some(action) = action else { continue };
            let (lo, hi) = (lo as u16, hi as u16);
            match out.last_mut() {
                Some(last)
                    if last.0 == proto && last.3 == action && last.2 as u32 + 1 == lo as u32 =>
                {
                    last.2 = hi;
                }
                _ => out.push((proto, lo, hi, action)),
            }
        }
    }
    out
}

/// A box of the address × port space claimed by rule `rule`.
pub struct AddrBox {
    pub lo: u128,
    pub hi: u128,
    pub rule: usize,
}

/// First match over addresses and ports: cut the address axis at every box
/// edge, resolve the ports of each slice by the rules covering it, and join
/// adjacent slices that resolve alike.
pub fn first_match_2d(
    boxes: &[AddrBox],
    rules: &[(AdminAction, Vec<PortItem>)],
) -> Vec<(u128, u128, Vec<PortVerdict>)> {
    let mut cuts: BTreeSet<u128> = BTreeSet::new();
    for b in boxes {
        cuts.insert(b.lo);
        if b.hi < u128::MAX {
            cuts.insert(b.hi + 1);
        }
    }
    let cuts: Vec<u128> = cuts.into_iter().collect();
    let mut memo: HashMap<Vec<usize>, Vec<PortVerdict>> = HashMap::new();
    let mut out: Vec<(u128, u128, Vec<PortVerdict>)> = Vec::new();
    for (i, &lo) in cuts.iter().enumerate() {
        let hi = cuts.get(i + 1).map_or(u128::MAX, |n| n - 1);
        let covering: Vec<usize> = boxes
            .iter()
            .filter(|b| b.lo <= lo && hi <= b.hi)
            .map(|b| b.rule)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if covering.is_empty() {
            continue;
        }
        let ports = memo
            .entry(covering)
            .or_insert_with_key(|c| {
                let list: Vec<(AdminAction, Vec<PortItem>)> =
                    c.iter().map(|&r| rules[r].clone()).collect();
                first_match(&list)
            })
            .clone();
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(lo) && last.2 == ports => last.1 = hi,
            _ => out.push((lo, hi, ports)),
        }
    }
    out
}
