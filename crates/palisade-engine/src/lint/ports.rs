//! Port sets: what a rule allows on one destination, as disjoint,
//! merged ranges per protocol (the form `first_match` works in).

use palisade_model::Protocol;

use crate::first_match::PortItem;
use crate::index::{FlatPort, FlatPortKind};

/// Sorted by protocol and start; no two ranges overlap or touch.
pub(crate) type PortSet = Vec<PortItem>;

pub(crate) fn all() -> PortSet {
    Protocol::ALL
        .iter()
        .map(|p| (p.number(), 0, u16::MAX))
        .collect()
}

pub(crate) fn normalize(v: &mut PortSet) {
    v.sort_unstable();
    let mut out: PortSet = Vec::with_capacity(v.len());
    for &(p, a, b) in v.iter() {
        match out.last_mut() {
            Some(last) if last.0 == p && u32::from(a) <= u32::from(last.2) + 1 => {
                last.2 = last.2.max(b);
            }
            _ => out.push((p, a, b)),
        }
    }
    *v = out;
}

/// Whether every port of `small` is in `big` (both normalized): each of
/// `small`'s ranges must then lie inside one of `big`'s.
pub(crate) fn covers(big: &PortSet, small: &PortSet) -> bool {
    small
        .iter()
        .all(|&(p, a, b)| big.iter().any(|&(q, c, d)| p == q && c <= a && b <= d))
}

/// Whether two port sets share a port.
pub(crate) fn overlaps(a: &PortSet, b: &PortSet) -> bool {
    a.iter()
        .any(|&(p, x, y)| b.iter().any(|&(q, u, v)| p == q && x <= v && u <= y))
}

/// The ports a flattened rule allows to a destination with these named
/// ports (interned names, as identities hold them; empty for an address).
pub(crate) fn of_rule(ports: &Option<Vec<FlatPort>>, named: &[(u32, Protocol, u16)]) -> PortSet {
    let Some(ports) = ports else { return all() };
    let mut out = PortSet::new();
    for p in ports {
        match p.kind {
            FlatPortKind::Range(proto, a, b) => out.push((proto.number(), a, b)),
            FlatPortKind::Named(proto, name) => out.extend(
                named
                    .iter()
                    .filter(|&&(n, q, _)| n == name && q == proto)
                    .map(|&(_, q, v)| (q.number(), v, v)),
            ),
            FlatPortKind::NamedAnyProtocol(name) => out.extend(
                named
                    .iter()
                    .filter(|&&(n, _, _)| n == name)
                    .map(|&(_, q, v)| (q.number(), v, v)),
            ),
        }
    }
    normalize(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_merges_touching_ranges_per_protocol() {
        let mut v = vec![(6, 10, 20), (17, 1, 2), (6, 21, 30), (6, 5, 12)];
        normalize(&mut v);
        assert_eq!(v, vec![(6, 5, 30), (17, 1, 2)]);
        assert!(covers(&v, &vec![(6, 6, 29)]));
        assert!(!covers(&v, &vec![(6, 4, 29)]));
        assert!(!covers(&v, &vec![(17, 1, 3)]));
    }
}
