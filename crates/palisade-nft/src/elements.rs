//! Resolved allows (per group, peer, protocol and port range) rendered as
//! the set elements the chains look up; address and port ranges.

use super::*;

pub(crate) const ALL_PROTOCOLS: [Protocol; 3] = Protocol::ALL;

/// A port item after resolution: protocol and inclusive range.
pub(crate) type PortItem = (u8, u16, u16);

/// Every port of every protocol: what a rule without ports allows.
pub(crate) fn every_port() -> Vec<PortItem> {
    ALL_PROTOCOLS
        .iter()
        .map(|p| (p.number(), 0, u16::MAX))
        .collect()
}

pub(crate) fn port_items(ports: &Option<Vec<PortSpec>>, holder: Option<&Pod>) -> Vec<PortItem> {
    match ports {
        None => every_port(),
        Some(list) => list
            .iter()
            .flat_map(|s| match s {
                PortSpec::AllPorts(p) => vec![(p.number(), 0, u16::MAX)],
                PortSpec::Range {
                    protocol,
                    start,
                    end,
                } => vec![(protocol.number(), *start, *end)],
                PortSpec::Named { protocol, name } => holder
                    .map(|h| h.named_port(name, *protocol))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| (protocol.number(), p, p))
                    .collect(),
            })
            .collect(),
    }
}

pub(crate) fn has_named(ports: &Option<Vec<PortSpec>>) -> bool {
    ports
        .iter()
        .flatten()
        .any(|s| matches!(s, PortSpec::Named { .. }))
}

/// Merges inclusive ranges into sorted disjoint ones.
/// An inclusive range of addresses or ports, widened to u128.
pub(crate) type Span = (u128, u128);
/// An address range × a port range.
pub(crate) type Box4 = (u128, u128, u128, u128);
/// An address range and the port ranges allowed over all of it.
pub(crate) type Slice = (u128, u128, Vec<Span>);
/// (isolating policies, resolved named ports) → (group id, members).
pub(crate) type IngressGroups = BTreeMap<(Vec<usize>, Vec<Vec<u16>>), (u32, usize)>;

pub(crate) fn merge_ranges(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (a, b) in v {
        if let Some(last) = out.last_mut() {
            if a <= last.1.saturating_add(1) {
                last.1 = last.1.max(b);
                continue;
            }
        }
        out.push((a, b));
    }
    out
}

pub(crate) fn net_range(n: &palisade_model::IpNet) -> (bool, u128, u128) {
    match n {
        palisade_model::IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        palisade_model::IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// `cidr` minus every `except`, as disjoint ranges (and the family).
pub(crate) fn block_ranges(b: &IpBlock) -> (bool, Vec<(u128, u128)>) {
    let (v4, lo, hi) = net_range(&b.cidr);
    let excepts = merge_ranges(
        b.except
            .iter()
            .map(net_range)
            .filter(|(f, _, _)| *f == v4)
            .map(|(_, a, b)| (a, b))
            .collect(),
    );
    let mut out = Vec::new();
    let mut cur = lo;
    let mut done = false;
    for (a, b) in excepts {
        let (a, b) = (a.max(lo), b.min(hi));
        if a > b {
            continue;
        }
        if a > cur {
            out.push((cur, a - 1));
        }
        if b == u128::MAX || b >= hi {
            done = true;
            break;
        }
        cur = cur.max(b + 1);
    }
    if !done && cur <= hi {
        out.push((cur, hi));
    }
    (v4, out)
}

pub(crate) fn addr_value(v4: bool, a: u128, b: u128) -> Value {
    if v4 {
        Value::Ipv4Range(Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32))
    } else {
        Value::Ipv6Range(Ipv6Addr::from(a), Ipv6Addr::from(b))
    }
}

/// (group, peer mark, proto) → allowed port ranges.
pub(crate) type PeerAllows = BTreeMap<(u32, u32, u8), Vec<Span>>;

/// Allowed elements of one direction, before rendering.
#[derive(Default)]
pub(crate) struct Allows {
    /// (group, peer mark, proto) → port ranges; per family (0: v4, 1: v6).
    pub(crate) peer: [PeerAllows; 2],
    /// (group, proto) → boxes (address range, port range); per family.
    pub(crate) cidr: [BTreeMap<(u32, u8), Vec<Box4>>; 2],
    /// (group, proto) → port ranges.
    pub(crate) any: BTreeMap<(u32, u8), Vec<(u128, u128)>>,
}

impl Allows {
    pub(crate) fn peer(&mut self, fam: usize, g: u32, mark: u32, (p, a, b): PortItem) {
        self.peer[fam]
            .entry((g, mark, p))
            .or_default()
            .push((a.into(), b.into()));
    }
}

/// Which families an address matcher contains a pod's addresses in.
pub(crate) fn matcher_families(m: &AddressMatcher, pod: &Pod) -> [bool; 2] {
    let first = |v4: bool| pod.ips.iter().copied().find(|ip| ip.is_ipv4() == v4);
    [
        first(true).is_some_and(|a| m.contains(&a)),
        first(false).is_some_and(|a| m.contains(&a)),
    ]
}

/// Disjoint boxes from possibly overlapping (address range × port range)
/// boxes: cut the address axis at every box edge, union the port ranges over
/// each slice, then join adjacent slices with the same ports.
///
/// One sweep over the edges, keeping the port ranges of the boxes that
/// cover the current slice: asking every box at every edge was quadratic
/// (one rule with 50,000 distinct `ipBlock`s took over a minute).
pub(crate) fn disjoint_boxes(boxes: &[Box4]) -> Vec<Slice> {
    // (edge, opens?, port range): a box opens at its first address and
    // closes just past its last.
    let mut edges: Vec<(u128, bool, Span)> = Vec::with_capacity(boxes.len() * 2);
    for &(a, b, p, q) in boxes {
        edges.push((a, true, (p, q)));
        if b < u128::MAX {
            edges.push((b + 1, false, (p, q)));
        }
    }
    edges.sort_unstable();
    let mut covering: BTreeMap<Span, usize> = BTreeMap::new();
    let mut slices: Vec<Slice> = Vec::new();
    let mut i = 0;
    while i < edges.len() {
        let start = edges[i].0;
        while i < edges.len() && edges[i].0 == start {
            let (_, opens, span) = edges[i];
            if opens {
                *covering.entry(span).or_default() += 1;
            } else if let Some(n) = covering.get_mut(&span) {
                *n -= 1;
                if *n == 0 {
                    covering.remove(&span);
                }
            }
            i += 1;
        }
        if covering.is_empty() {
            continue;
        }
        let end = edges.get(i).map_or(u128::MAX, |e| e.0 - 1);
        let ports = merge_ranges(covering.keys().copied().collect());
        match slices.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(start) && last.2 == ports => {
                last.1 = end;
            }
            _ => slices.push((start, end, ports)),
        }
    }
    slices
}

pub(crate) fn port_value(a: u128, b: u128) -> Value {
    Value::PortRange(a as u16, b as u16)
}

pub(crate) fn proto_value(p: u8) -> Value {
    Value::Proto(p)
}

/// The peer allows, split by what the kernel looks them up with: most
/// elements hold for both families and one port (`{dir}_peer_port`, a hash
/// set) or every port of a protocol (`{dir}_peer_proto`, hash); true port
/// ranges go to the interval set `{dir}_peer_range`; what holds for one
/// family only (a named port of a pod inside an `ipBlock`) to
/// `{dir}_peer4` / `{dir}_peer6`. Hash sets load faster than interval sets
/// and their lookup cost does not grow with their size.
pub(crate) fn peer_sets(dir: Dir, peer: &[PeerAllows; 2]) -> Vec<Set> {
    let key = |g: u32, mark: u32, p: u8| vec![Value::Mark(g), Value::Mark(mark), proto_value(p)];
    let (mut by_port, mut by_proto, mut by_range) = (Vec::new(), Vec::new(), Vec::new());
    let mut fam_only = [Vec::new(), Vec::new()];
    let mut by_peer = Vec::new();
    let keys: BTreeSet<(u32, u32, u8)> = peer[0].keys().chain(peer[1].keys()).copied().collect();
    let merged: BTreeMap<(u32, u32, u8), [Vec<Span>; 2]> = keys
        .iter()
        .map(|k| {
            let r = [0, 1].map(|f| merge_ranges(peer[f].get(k).cloned().unwrap_or_default()));
            (*k, r)
        })
        .collect();
    // Peers allowed every port of every protocol (a rule without ports):
    // one element instead of one per protocol.
    let every = vec![(0, u128::from(u16::MAX))];
    let all_protocols = |g: u32, mark: u32| {
        ALL_PROTOCOLS.iter().all(|p| {
            merged
                .get(&(g, mark, p.number()))
                .is_some_and(|[r4, r6]| *r4 == every && *r6 == every)
        })
    };
    for (&(g, mark, p), [r4, r6]) in &merged {
        if all_protocols(g, mark) {
            if p == ALL_PROTOCOLS[0].number() {
                by_peer.push(Element {
                    key: vec![Value::Mark(g), Value::Mark(mark)],
                    data: None,
                });
            }
            continue;
        }
        if r4 == r6 {
            for &(lo, hi) in r4 {
                let mut e = key(g, mark, p);
                if lo == 0 && hi == u128::from(u16::MAX) {
                    by_proto.push(Element { key: e, data: None });
                } else if lo == hi {
                    e.push(Value::Port(lo as u16));
                    by_port.push(Element { key: e, data: None });
                } else {
                    e.push(port_value(lo, hi));
                    by_range.push(Element { key: e, data: None });
                }
            }
        } else {
            for (fam, ranges) in [r4, r6].into_iter().enumerate() {
                for &(lo, hi) in ranges {
                    let mut e = key(g, mark, p);
                    e.push(port_value(lo, hi));
                    fam_only[fam].push(Element { key: e, data: None });
                }
            }
        }
    }
    let [only4, only6] = fam_only;
    vec![
        SetId::PeerAll(dir).set(by_peer),
        SetId::PeerPort(dir).set(by_port),
        SetId::PeerProto(dir).set(by_proto),
        SetId::PeerRange(dir).set(by_range),
        SetId::PeerFamily(dir, Family::V4).set(only4),
        SetId::PeerFamily(dir, Family::V6).set(only6),
    ]
}

pub(crate) fn allow_sets(dir: Dir, a: Allows) -> Vec<Set> {
    let mut sets = peer_sets(dir, &a.peer);
    for fam in [0usize, 1] {
        let mut elems = Vec::new();
        for (&(g, p), boxes) in &a.cidr[fam] {
            for (lo, hi, ports) in disjoint_boxes(boxes) {
                for (plo, phi) in ports {
                    elems.push(Element {
                        key: vec![
                            Value::Mark(g),
                            addr_value(fam == 0, lo, hi),
                            proto_value(p),
                            port_value(plo, phi),
                        ],
                        data: None,
                    });
                }
            }
        }
        sets.push(SetId::Cidr(dir, Family::of_index(fam)).set(elems));
    }
    let mut elems = Vec::new();
    for (&(g, p), ranges) in &a.any {
        for (lo, hi) in merge_ranges(ranges.clone()) {
            elems.push(Element {
                key: vec![Value::Mark(g), proto_value(p), port_value(lo, hi)],
                data: None,
            });
        }
    }
    sets.push(SetId::Any(dir).set(elems));
    sets
}

/// The verdict maps of one admin tier in one direction
/// ([`schema::tier_sets`]).
pub(crate) fn tier_sets(
    dir: Dir,
    tier: tier::Tier,
    c: tier::Compiled,
    groups: [Vec<Element>; 2],
) -> Vec<Set> {
    let [g4, g6] = groups;
    let [p4, p6] = c.peer;
    let [c4, c6] = c.cidr;
    let tier = match tier {
        tier::Tier::Admin => AdminTier::Admin,
        tier::Tier::Baseline => AdminTier::Baseline,
    };
    schema::tier_sets(dir, tier)
        .into_iter()
        .zip([g4, g6, p4, p6, c4, c6])
        .map(|(id, elements)| id.set(elements))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: every slice between two edges asks every box.
    fn every_box_per_slice(boxes: &[Box4]) -> Vec<Slice> {
        let mut points: BTreeSet<u128> = BTreeSet::new();
        for &(a, b, _, _) in boxes {
            points.insert(a);
            if b < u128::MAX {
                points.insert(b + 1);
            }
        }
        let points: Vec<u128> = points.into_iter().collect();
        let mut slices: Vec<Slice> = Vec::new();
        for (i, &start) in points.iter().enumerate() {
            let end = points.get(i + 1).map_or(u128::MAX, |n| n - 1);
            let ports = merge_ranges(
                boxes
                    .iter()
                    .filter(|&&(a, b, _, _)| a <= start && end <= b)
                    .map(|&(_, _, p, q)| (p, q))
                    .collect(),
            );
            if ports.is_empty() {
                continue;
            }
            match slices.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(start) && last.2 == ports => {
                    last.1 = end;
                }
                _ => slices.push((start, end, ports)),
            }
        }
        slices
    }

    fn boxes() -> impl Strategy<Value = Vec<Box4>> {
        // Small coordinates so boxes meet, share edges and nest; the top
        // of the address space too, where a box has no edge past its end.
        let addr = prop_oneof![0u128..40, Just(u128::MAX - 1), Just(u128::MAX)];
        let b = (addr.clone(), addr, 0u128..8, 0u128..8)
            .prop_map(|(a, b, p, q)| (a.min(b), a.max(b), p.min(q), p.max(q)));
        proptest::collection::vec(b, 0..12)
    }

    proptest! {
        #[test]
        fn the_sweep_is_the_definition(b in boxes()) {
            prop_assert_eq!(disjoint_boxes(&b), every_box_per_slice(&b));
        }
    }
}
