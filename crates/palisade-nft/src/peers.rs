//! A rule's peers resolved on the index: address matchers as ranges, and
//! pod peers as identity marks with their ports.

use super::*;

pub(crate) fn ip_value(ip: IpAddr) -> (usize, Value) {
    match ip {
        IpAddr::V4(a) => (0, Value::Ipv4(a)),
        IpAddr::V6(a) => (1, Value::Ipv6(a)),
    }
}

/// An address matcher as address blocks.
pub(crate) fn matcher_blocks(m: &AddressMatcher) -> Vec<IpBlock> {
    match m {
        AddressMatcher::Block(b) => vec![b.clone()],
        AddressMatcher::Networks(ns) => ns
            .iter()
            .map(|n| IpBlock {
                cidr: *n,
                except: Vec::new(),
            })
            .collect(),
        AddressMatcher::Nodes(addrs) => addrs
            .iter()
            .map(|ip| IpBlock {
                cidr: palisade_model::IpNet::from(*ip),
                except: Vec::new(),
            })
            .collect(),
    }
}

/// The addresses of one family an address matcher contains, as ranges
/// (possibly overlapping).
pub(crate) fn block_ranges_of(m: &AddressMatcher, v4: bool) -> Vec<Span> {
    matcher_blocks(m)
        .iter()
        .map(block_ranges)
        .filter(|(f, _)| *f == v4)
        .flat_map(|(_, r)| r)
        .collect()
}

/// The identities of a selector set that the kernel can know: those with
/// an address (a workload's pod template has none, so nothing of it goes
/// into the ruleset).
fn addressed(
    idx: &palisade_engine::Index,
    s: palisade_engine::SetId,
) -> impl Iterator<Item = usize> + '_ {
    idx.set(s)
        .iter()
        .filter(|&i| idx.identity(i).has_address())
        .map(IdentityId::index)
}

/// Adds the allows of one peer whose ports do not depend on it (ingress, or
/// egress numeric ports).
pub(crate) fn peer_allows(
    a: &mut Allows,
    engine: &Engine,
    g: u32,
    m: &PeerMatch,
    items: &[PortItem],
    mark_of: &dyn Fn(usize) -> u32,
) {
    let idx = engine.index();
    match *m {
        PeerMatch::Set(s) => {
            for id in addressed(idx, s) {
                for &item in items {
                    a.peer(0, g, mark_of(id), item);
                    a.peer(1, g, mark_of(id), item);
                }
            }
        }
        PeerMatch::Addr(x) => {
            let blocks = matcher_blocks(idx.matcher(x));
            for b in &blocks {
                let (v4, ranges) = block_ranges(b);
                let fam = if v4 { 0 } else { 1 };
                for &(lo, hi) in &ranges {
                    for &(p, pa, pb) in items {
                        a.cidr[fam]
                            .entry((g, p))
                            .or_default()
                            .push((lo, hi, pa.into(), pb.into()));
                    }
                }
            }
        }
    }
}

pub(crate) fn egress_rule<'c>(
    a: &mut Allows,
    engine: &Engine,
    g: u32,
    rule: &ResolvedRule,
    pod_ids: &[usize],
    rep: &dyn Fn(usize) -> &'c Pod,
    mark_of: &dyn Fn(usize) -> u32,
) {
    let idx = engine.index();
    // Ports that do not depend on the destination.
    let numeric = port_items(&rule.ports, None);
    let named = has_named(&rule.ports);
    match &rule.peers {
        None => {
            for &(p, lo, hi) in &numeric {
                a.any
                    .entry((g, p))
                    .or_default()
                    .push((lo.into(), hi.into()));
            }
            if named {
                for &id in pod_ids {
                    for item in named_items(&rule.ports, rep(id)) {
                        a.peer(0, g, mark_of(id), item);
                        a.peer(1, g, mark_of(id), item);
                    }
                }
            }
        }
        Some(peers) => {
            for m in peers {
                match *m {
                    PeerMatch::Set(s) => {
                        for id in addressed(idx, s) {
                            for item in port_items(&rule.ports, Some(rep(id))) {
                                a.peer(0, g, mark_of(id), item);
                                a.peer(1, g, mark_of(id), item);
                            }
                        }
                    }
                    PeerMatch::Addr(x) => {
                        peer_allows(a, engine, g, m, &numeric, mark_of);
                        if named {
                            // A named port only matches a pod destination:
                            // the pods inside the block, by family.
                            for &id in pod_ids {
                                let fams = matcher_families(idx.matcher(x), rep(id));
                                for item in named_items(&rule.ports, rep(id)) {
                                    for (fam, inside) in fams.iter().enumerate() {
                                        if *inside {
                                            a.peer(fam, g, mark_of(id), item);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The named ports of a rule, resolved on one destination pod.
pub(crate) fn named_items(ports: &Option<Vec<PortSpec>>, holder: &Pod) -> Vec<PortItem> {
    ports
        .iter()
        .flatten()
        .flat_map(|s| match s {
            PortSpec::Named { protocol, name } => holder
                .named_port(name, *protocol)
                .into_iter()
                .map(|p| (protocol.number(), p, p))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}
