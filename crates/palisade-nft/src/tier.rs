//! The admin tiers: ordered Allow / Deny / Pass rules (AdminNetworkPolicy,
//! and the baseline tier) become verdict maps whose elements are disjoint,
//! each carrying the action of the earliest rule that covers it. Priority is
//! resolved here, at compile time; the kernel does one lookup per map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use palisade_engine::first_match::{first_match, first_match_2d, AddrBox, PortVerdict};
use palisade_engine::index::{FlatPort, FlatPortKind, FlatRule, PeerMatch};
use palisade_engine::{Direction, Engine, IdentityId};
use palisade_model::AdminAction;

use crate::numbering::{self, Numbering};
use crate::{addr_value, block_ranges_of, proto_value, Element, PortItem, Value, Verdict};

/// The tiers evaluated around NetworkPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Before NetworkPolicy: Allow and Deny are final, Pass hands over.
    Admin,
    /// After NetworkPolicy, for pods it does not isolate.
    Baseline,
}

impl Tier {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::Baseline => "baseline",
        }
    }
}

/// A tier of one direction, compiled.
#[derive(Default)]
pub(crate) struct Compiled {
    /// Local identity → tier group (from 1).
    pub of: BTreeMap<usize, u32>,
    /// `group . peer identity mark . l4proto . port range : verdict`, per
    /// family (the address matchers a pod peer falls in depend on it).
    pub peer: [Vec<Element>; 2],
    /// `group . address range . l4proto . port range : verdict`, per family,
    /// for peers that are not pods.
    pub cidr: [Vec<Element>; 2],
}

/// Named container ports as the engine interns them: (name, protocol, port).
type Named = Vec<(u32, u8, u16)>;

/// The ports of a rule, resolved on the destination's named ports.
fn rule_ports(ports: &Option<Vec<FlatPort>>, named: &[(u32, u8, u16)]) -> Vec<PortItem> {
    match ports {
        None => crate::every_port(),
        Some(list) => {
            let mut out = Vec::new();
            for p in list {
                match p.kind {
                    FlatPortKind::Range(proto, a, b) => out.push((proto.number(), a, b)),
                    FlatPortKind::Named(proto, name) => out.extend(
                        named
                            .iter()
                            .filter(|&&(n, q, _)| n == name && q == proto.number())
                            .map(|&(_, q, v)| (q, v, v)),
                    ),
                    FlatPortKind::NamedAnyProtocol(name) => out.extend(
                        named
                            .iter()
                            .filter(|&&(n, _, _)| n == name)
                            .map(|&(_, q, v)| (q, v, v)),
                    ),
                }
            }
            out
        }
    }
}

/// Names a rule list refers to by named port.
fn port_names(rules: &[FlatRule]) -> BTreeSet<u32> {
    rules
        .iter()
        .flat_map(|r| r.ports.iter().flatten())
        .filter_map(|p| match p.kind {
            FlatPortKind::Named(_, n) | FlatPortKind::NamedAnyProtocol(n) => Some(n),
            FlatPortKind::Range(..) => None,
        })
        .collect()
}

pub(crate) fn verdict(a: AdminAction, dir: crate::Dir) -> Option<Value> {
    match a {
        AdminAction::Allow => Some(Value::Verdict(Verdict::Return)),
        AdminAction::Deny => Some(Value::Verdict(Verdict::Deny(dir))),
        // Pass hands the flow to the next stage, as no match would: its
        // ranges are left out, after having shadowed later rules.
        AdminAction::Pass => None,
    }
}

fn rules_of(engine: &Engine, id: usize, dir: Direction, tier: Tier) -> &[FlatRule] {
    let ident = &engine.index().identities()[id];
    let plan = match dir {
        Direction::Ingress => &ident.ingress_plan,
        Direction::Egress => &ident.egress_plan,
    };
    match tier {
        Tier::Admin => &plan.admin,
        Tier::Baseline => &plan.baseline,
    }
}

fn named_of(engine: &Engine, id: usize) -> Named {
    engine.index().identities()[id]
        .named_ports
        .iter()
        .map(|&(n, p, v)| (n, p.number(), v))
        .collect()
}

/// A tier group's key: its rules (admin policy, rule) in order and, for
/// ingress, how the named ports they use resolve on the local pod.
type Key = (Vec<(usize, usize)>, Named);

/// The identities a peer address can map to, with what the tier needs of
/// each: its first address of each family and (egress) its named ports.
struct Peers<'a> {
    ids: &'a [usize],
    addrs: Vec<[Option<IpAddr>; 2]>,
    named: Vec<Named>,
}

impl Peers<'_> {
    fn new<'a>(engine: &Engine, dir: Direction, ids: &'a [usize]) -> Peers<'a> {
        let (idx, cluster) = (engine.index(), engine.cluster());
        let addrs = ids
            .iter()
            .map(|&pid| {
                let pod = &cluster.pods[idx.identities()[pid].members[0].index()];
                let first = |v4: bool| pod.ips.iter().copied().find(|ip| ip.is_ipv4() == v4);
                [first(true), first(false)]
            })
            .collect();
        let named = match dir {
            Direction::Egress => ids.iter().map(|&pid| named_of(engine, pid)).collect(),
            Direction::Ingress => Vec::new(),
        };
        Peers { ids, addrs, named }
    }
}

/// Compiles one tier of one direction for the local identities `local`;
/// `peers` are the identities a peer address can map to.
pub(crate) fn compile(
    engine: &Engine,
    dir: Direction,
    tier: Tier,
    local: &BTreeSet<usize>,
    peers: &[usize],
    mark_of: &dyn Fn(usize) -> u32,
    numbering: Numbering,
) -> Compiled {
    let (groups, of) = tier_groups(engine, dir, tier, local, numbering);
    let peers = Peers::new(engine, dir, peers);
    let mut out = Compiled {
        of,
        ..Compiled::default()
    };
    for ((_, local_named), &(g, rep)) in &groups {
        let rules = rules_of(engine, rep, dir, tier);
        peer_elements(
            engine,
            dir,
            rules,
            &peers,
            local_named,
            g,
            mark_of,
            &mut out.peer,
        );
        address_elements(engine, dir, rules, local_named, g, &mut out.cidr);
    }
    out
}

/// The tier groups of the local identities, numbered (with their
/// representatives), and each local identity's group.
fn tier_groups(
    engine: &Engine,
    dir: Direction,
    tier: Tier,
    local: &BTreeSet<usize>,
    numbering: Numbering,
) -> (BTreeMap<Key, (u32, usize)>, BTreeMap<usize, u32>) {
    let idx = engine.index();
    // Groups: local identities with the same rules (and, for ingress, the
    // same resolution of the named ports the rules use: they resolve on the
    // destination, the local pod) share one.
    let mut keys: BTreeMap<Key, usize> = BTreeMap::new();
    let mut key_of: BTreeMap<usize, Key> = BTreeMap::new();
    for &id in local {
        let rules = rules_of(engine, id, dir, tier);
        if rules.is_empty() {
            continue;
        }
        let names = port_names(rules);
        let named: Named = match dir {
            Direction::Ingress => named_of(engine, id)
                .into_iter()
                .filter(|(n, _, _)| names.contains(n))
                .collect(),
            Direction::Egress => Vec::new(),
        };
        let key: Key = (rules.iter().map(|r| (r.owner, r.rule)).collect(), named);
        keys.entry(key.clone()).or_insert(id);
        key_of.insert(id, key);
    }
    // Group ids: by content (policy kinds and names, rule positions, named
    // ports by name) when numbering is stable.
    let keys: Vec<(Key, usize)> = keys.into_iter().collect();
    let port_name: BTreeMap<u32, &str> = idx
        .port_names()
        .iter()
        .map(|(n, &i)| (i, n.as_str()))
        .collect();
    let ids = numbering::assign(numbering, keys.len(), |i| {
        let ((rules, named), _) = &keys[i];
        let rules: Vec<(&str, &str, usize)> = rules
            .iter()
            .map(|&(owner, rule)| {
                let p = &idx.admin()[owner].policy;
                (p.kind.as_str(), p.name.as_str(), rule)
            })
            .collect();
        let named: Vec<(&str, u8, u16)> = named
            .iter()
            .map(|&(n, q, v)| (port_name.get(&n).copied().unwrap_or(""), q, v))
            .collect();
        (rules, named)
    });
    let mut groups: BTreeMap<Key, (u32, usize)> = BTreeMap::new();
    for ((key, rep), g) in keys.into_iter().zip(ids) {
        groups.insert(key, (g, rep));
    }
    let of = key_of
        .into_iter()
        .map(|(id, key)| (id, groups[&key].0))
        .collect();
    (groups, of)
}

/// A group's elements for pod peers: which rules match is a property of
/// the peer identity (selectors, and address matchers over its address of
/// the family).
#[allow(clippy::too_many_arguments)]
fn peer_elements(
    engine: &Engine,
    dir: Direction,
    rules: &[FlatRule],
    peers: &Peers,
    local_named: &[(u32, u8, u16)],
    g: u32,
    mark_of: &dyn Fn(usize) -> u32,
    out: &mut [Vec<Element>; 2],
) {
    let idx = engine.index();
    // Pod peers: which rules match is a property of the peer identity
    // (selectors, and address matchers over its address of the family).
    let mut memo: HashMap<(Vec<usize>, usize), Vec<PortVerdict>> = HashMap::new();
    for (k, &pid) in peers.ids.iter().enumerate() {
        for (fam, addr) in peers.addrs[k].iter().enumerate() {
            let Some(addr) = *addr else {
                continue;
            };
            let matched: Vec<usize> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| match &r.peers {
                    None => true,
                    Some(ps) => ps.iter().any(|m| match *m {
                        PeerMatch::Set(s) => idx.set(s).contains(IdentityId::new(pid)),
                        PeerMatch::Addr(x) => idx.matcher(x).contains(&addr),
                    }),
                })
                .map(|(i, _)| i)
                .collect();
            if matched.is_empty() {
                continue;
            }
            // Named ports resolve on the destination: the peer for
            // egress (memoized per peer), the local pod for ingress.
            let (named, memo_key): (&[(u32, u8, u16)], usize) = match dir {
                Direction::Egress => (&peers.named[k], k),
                Direction::Ingress => (local_named, usize::MAX),
            };
            let uses_names = rules_use_names(rules, &matched);
            let memo_key = (matched, if uses_names { memo_key } else { usize::MAX });
            let resolved = memo.entry(memo_key).or_insert_with_key(|(m, _)| {
                let list: Vec<(AdminAction, Vec<PortItem>)> = m
                    .iter()
                    .map(|&i| (rules[i].action, rule_ports(&rules[i].ports, named)))
                    .collect();
                first_match(&list)
            });
            for &(p, lo, hi, action) in resolved.iter() {
                let Some(v) = verdict(action, crate::Dir::of(dir)) else {
                    continue;
                };
                out[fam].push(Element {
                    key: vec![
                        Value::Mark(g),
                        Value::Mark(mark_of(pid)),
                        proto_value(p),
                        Value::PortRange(lo, hi),
                    ],
                    data: Some(v),
                });
            }
        }
    }
}

/// A group's elements for peers that are not pods.
fn address_elements(
    engine: &Engine,
    dir: Direction,
    rules: &[FlatRule],
    local_named: &[(u32, u8, u16)],
    g: u32,
    out: &mut [Vec<Element>; 2],
) {
    let idx = engine.index();
    // Other peers: only address matchers (and rules without peers)
    // match them; a named port resolves only on a pod destination.
    let dest_named: &[(u32, u8, u16)] = match dir {
        Direction::Ingress => local_named,
        Direction::Egress => &[],
    };
    let resolved: Vec<(AdminAction, Vec<PortItem>)> = rules
        .iter()
        .map(|r| (r.action, rule_ports(&r.ports, dest_named)))
        .collect();
    for (fam, out) in out.iter_mut().enumerate() {
        let v4 = fam == 0;
        let mut boxes = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let ranges: Vec<(u128, u128)> = match &r.peers {
                None => vec![(0, if v4 { u128::from(u32::MAX) } else { u128::MAX })],
                Some(ps) => ps
                    .iter()
                    .filter_map(|m| match *m {
                        PeerMatch::Addr(x) => Some(x),
                        PeerMatch::Set(_) => None,
                    })
                    .flat_map(|x| block_ranges_of(idx.matcher(x), v4))
                    .collect(),
            };
            boxes.extend(
                ranges
                    .into_iter()
                    .map(|(lo, hi)| AddrBox { lo, hi, rule: i }),
            );
        }
        if boxes.is_empty() {
            continue;
        }
        for (lo, hi, ports) in first_match_2d(&boxes, &resolved) {
            for (p, plo, phi, action) in ports {
                let Some(v) = verdict(action, crate::Dir::of(dir)) else {
                    continue;
                };
                out.push(Element {
                    key: vec![
                        Value::Mark(g),
                        addr_value(v4, lo, hi),
                        proto_value(p),
                        Value::PortRange(plo, phi),
                    ],
                    data: Some(v),
                });
            }
        }
    }
}

fn rules_use_names(rules: &[FlatRule], matched: &[usize]) -> bool {
    matched.iter().any(|&i| rules[i].names_ports())
}

#[cfg(test)]
mod tests {
    use super::*;
    use AdminAction::{Allow, Deny, Pass};

    #[test]
    fn earliest_rule_wins_on_overlaps() {
        let r = first_match(&[
            (Pass, vec![(6, 80, 80)]),
            (Deny, vec![(6, 0, 1000), (17, 53, 53)]),
            (Allow, vec![(6, 0, u16::MAX)]),
        ]);
        assert_eq!(
            r,
            vec![
                (6, 0, 79, Deny),
                (6, 80, 80, Pass),
                (6, 81, 1000, Deny),
                (6, 1001, u16::MAX, Allow),
                (17, 53, 53, Deny),
            ]
        );
    }

    #[test]
    fn address_slices_take_the_earliest_covering_rule() {
        let rules = vec![(Deny, vec![(6, 80, 80)]), (Allow, vec![(6, 0, u16::MAX)])];
        let boxes = [
            AddrBox {
                lo: 10,
                hi: 19,
                rule: 0,
            },
            AddrBox {
                lo: 0,
                hi: 99,
                rule: 1,
            },
        ];
        let r = first_match_2d(&boxes, &rules);
        assert_eq!(
            r,
            vec![
                (0, 9, vec![(6, 0, u16::MAX, Allow)]),
                (
                    10,
                    19,
                    vec![
                        (6, 0, 79, Allow),
                        (6, 80, 80, Deny),
                        (6, 81, u16::MAX, Allow)
                    ]
                ),
                (20, 99, vec![(6, 0, u16::MAX, Allow)]),
            ]
        );
    }
}
