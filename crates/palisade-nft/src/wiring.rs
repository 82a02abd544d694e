//! How the node's kernel reaches its local pods, as the caller learned it
//! (the agent from the node's routes, links and bridges; the lab from how
//! it built its namespaces). The compiler keys policy by address and uses
//! this only to recognize a local pod's packets and to drop spoofed ones:
//! whatever the CNI plugin names its interfaces.
//!
//! Two tables consume it:
//!
//! - `inet palisade`: `pod_ifaces` (every interface behind which pods sit:
//!   one veth per routed pod, the bridge of bridged pods) and `pod_src4/6`
//!   (`interface . address` as a local pod's packets reach the IP layer).
//!   A packet from a pod interface that no `pod_src` element owns is
//!   dropped, and so is a local pod's address arriving on any other
//!   interface: a pod whose interface is not known yet is not a hole.
//! - `bridge palisade` ([`compile_bridge`]): for bridged pods, whose
//!   packets all reach the IP layer on the bridge, the stateless per-port
//!   check that the bridge port, MAC and address belong together.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ir::{Chain, Element, Expr, Hook, MetaKey, Rule, Ruleset, Set, Stmt, Value};
use crate::schema::{Family, SetId};

pub type Mac = [u8; 6];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wiring {
    /// Interfaces that lead to pods (known or not).
    pub pod_interfaces: BTreeSet<String>,
    /// `(interface, address)`: a local pod's packets with this source
    /// arrive on this interface.
    pub sources: BTreeSet<(String, IpAddr)>,
    pub bridge: BridgeWiring,
}

/// Bridged pods: what each bridge port may send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeWiring {
    /// Every port of a pod bridge: frames from one meet the check.
    pub ports: BTreeSet<String>,
    /// `(port, MAC, address)` of each bridged pod whose port is known.
    pub bindings: BTreeSet<(String, Mac, IpAddr)>,
}

impl Wiring {
    /// Routed pods, one interface each: what a namer gives every pod of
    /// `pods` (the lab's own wiring; tests).
    pub fn routed<'a>(pods: impl IntoIterator<Item = (String, &'a [IpAddr])>) -> Wiring {
        let mut w = Wiring::default();
        for (iface, ips) in pods {
            w.pod_interfaces.insert(iface.clone());
            for ip in ips {
                w.sources.insert((iface.clone(), *ip));
            }
        }
        w
    }

    /// The `inet palisade` sets this wiring fills, as (name, elements).
    pub fn inet_elements(&self) -> [(&'static str, Vec<Element>); 3] {
        let ifaces = self
            .pod_interfaces
            .iter()
            .map(|i| Element {
                key: vec![Value::Ifname(i.clone())],
                data: None,
            })
            .collect();
        let mut src = [Vec::new(), Vec::new()];
        for (i, ip) in &self.sources {
            let (fam, v) = crate::ip_value(*ip);
            src[fam].push(Element {
                key: vec![Value::Ifname(i.clone()), v],
                data: None,
            });
        }
        let [s4, s6] = src.map(|mut v| {
            v.sort();
            v
        });
        let [i, v4, v6] = crate::WIRING_SETS;
        [(i, ifaces), (v4, s4), (v6, s6)]
    }
}

/// The bridge table's elements come sorted (from sorted wiring and
/// `BTreeSet`s): unlike [`SetId::set`], kept in the order given.
fn set(id: SetId, elements: Vec<Element>) -> Set {
    Set {
        name: id.name().into(),
        key: id.key(),
        data: id.data(),
        interval: id.interval(),
        comment: id.comment().into(),
        elements,
    }
}

fn set_ref(id: SetId) -> Expr {
    Expr::SetRef(id.name().into())
}

fn rule(stmts: Vec<Stmt>, comment: &str) -> Rule {
    Rule {
        stmts,
        comment: Some(comment.into()),
    }
}

/// `nft -f` text that replaces the bridge table with `table` (from
/// [`compile_bridge`]), or removes it when `None`.
pub fn bridge_text(table: Option<&Ruleset>) -> String {
    match table {
        Some(t) => t.to_bridge_replace_text(),
        None => format!(
            "table {f} {n} {{}}\ndelete table {f} {n}\n",
            f = crate::BRIDGE_FAMILY,
            n = crate::TABLE
        ),
    }
}

/// The `bridge palisade` table for bridged pods, or `None` when the node
/// has none (the table is then removed).
///
/// - `prerouting`: a MAC that belongs to a known pod is accepted only from
///   that pod's port, before the bridge learns it: no pod can steal
///   another's frames by poisoning the forwarding database. Unknown MACs
///   pass, so the bridge and the node's neighbour table learn new pods.
/// - `forward` and `input` (frames to other ports and to the node): an
///   IPv4 or IPv6 frame from a known pod port must carry its bound `port
///   . MAC . address`; from any port (a port that appeared a moment ago
///   included: bridge-family rules cannot name the bridge), a bound
///   address only with its binding; ARP may not claim a bound address
///   either. IPv6 link-local and unspecified sources (neighbour discovery)
///   are exempt, as in the `inet` table. An unbound address passes here
///   and meets the `inet` table, which knows bridged pods only once bound
///   ([`Wiring::sources`]): fail closed.
/// - What a pod announces to its neighbours: ARP to other ports only for
///   the port's own binding (in the ARP body: `port . sender MAC . sender
///   address`; an ARP probe from 0.0.0.0 claims nothing); a neighbour
///   advertisement to other ports only for the port's own binding (its
///   target, `@th,64,128`, which is what a neighbour learns, whatever the
///   source), to the node never for another pod's bound address; no router
///   advertisement or redirect from a port. Neighbour discovery from an
///   unbound address passes to the node only (how a new pod is learned),
///   never to other pods: a pod could otherwise claim the gateway's or a
///   remote pod's address, and its neighbours would send it their traffic.
///   Link-local targets stay exempt (no binding holds them).
///
/// Stateless: bridge-family tables have no conntrack here, and need none.
pub fn compile_bridge(w: &BridgeWiring) -> Option<Ruleset> {
    if w.ports.is_empty() {
        return None;
    }
    let sets = bridge_sets(w);
    let prerouting = bridge_prerouting();
    let check = bridge_check();
    let mut forward = bridge_forward();
    let mut input = vec![advertisement(false), bridge_learning()];
    let hooked = |name: &str, hook: &'static str, priority: i32, rules| Chain {
        name: name.into(),
        hook: Some(Hook { hook, priority }),
        rules,
    };
    let jump = || {
        vec![Rule {
            stmts: vec![Stmt::Jump("check".into())],
            comment: None,
        }]
    };
    Some(Ruleset {
        sets,
        chains: vec![
            hooked("prerouting", "prerouting", -200, prerouting),
            hooked("forward", "forward", 0, {
                forward.extend(jump());
                forward
            }),
            hooked("input", "input", 0, {
                input.extend(jump());
                input
            }),
            Chain {
                name: "check".into(),
                hook: None,
                rules: check,
            },
        ],
    })
}

/// The bridge table's sets: pod ports, bindings, bound addresses and MACs.
fn bridge_sets(w: &BridgeWiring) -> Vec<Set> {
    let port = |p: &str| Value::Ifname(p.to_string());
    let ports = w
        .ports
        .iter()
        .map(|p| Element {
            key: vec![port(p)],
            data: None,
        })
        .collect();
    let mut src = [Vec::new(), Vec::new()];
    let mut bound = [BTreeSet::new(), BTreeSet::new()];
    let mut macs = BTreeSet::new();
    let mut port_macs = BTreeSet::new();
    let (mut nd_src, mut nd_bound) = (BTreeSet::new(), BTreeSet::new());
    for (p, mac, ip) in &w.bindings {
        if let IpAddr::V6(a) = ip {
            nd_src.insert((p.clone(), *mac, *a));
            nd_bound.insert(*a);
        }
        let (fam, v) = crate::ip_value(*ip);
        src[fam].push(Element {
            key: vec![port(p), Value::Ether(*mac), v.clone()],
            data: None,
        });
        bound[fam].insert(v);
        macs.insert(*mac);
        port_macs.insert((p.clone(), *mac));
    }
    let [bound4, bound6] = bound;
    let [s4, s6] = src.map(|mut v| {
        v.sort();
        v
    });
    let el = |key: Vec<Value>| Element { key, data: None };
    use Family::{V4, V6};
    vec![
        set(SetId::BridgePorts, ports),
        set(SetId::BridgePortSrc(V4), s4),
        set(SetId::BridgePortSrc(V6), s6),
        set(
            SetId::BridgeBound(V4),
            bound4.into_iter().map(|v| el(vec![v])).collect(),
        ),
        set(
            SetId::BridgeBound(V6),
            bound6.into_iter().map(|v| el(vec![v])).collect(),
        ),
        set(
            SetId::BridgeBoundMacs,
            macs.into_iter()
                .map(|m| el(vec![Value::Ether(m)]))
                .collect(),
        ),
        set(
            SetId::BridgePortMacs,
            port_macs
                .into_iter()
                .map(|(p, m)| el(vec![port(&p), Value::Ether(m)]))
                .collect(),
        ),
        set(
            SetId::BridgeNdSrc,
            nd_src
                .into_iter()
                .map(|(p, m, a)| el(vec![port(&p), Value::Ether(m), Value::NdTarget(a)]))
                .collect(),
        ),
        set(
            SetId::BridgeNdBound,
            nd_bound
                .into_iter()
                .map(|a| el(vec![Value::NdTarget(a)]))
                .collect(),
        ),
    ]
}

/// `prerouting`: a bound MAC only from its own port.
fn bridge_prerouting() -> Vec<Rule> {
    let iif = || Expr::Meta(MetaKey::Iifname);
    let esrc = || Expr::payload("ether", "saddr");
    vec![rule(
        vec![
            Stmt::is(esrc(), set_ref(SetId::BridgeBoundMacs)),
            Stmt::is_not(
                Expr::Concat(vec![iif(), esrc()]),
                set_ref(SetId::BridgePortMacs),
            ),
            Stmt::Drop,
        ],
        "MAC of another pod",
    )]
}

/// `input`, before the checks: a new pod answers the node's neighbour
/// solicitation from its unbound address, and that answer is how its port
/// is learned. To the node only: between pods, neighbour discovery meets
/// the checks like any frame (a pod could otherwise announce itself as any
/// unbound address, the gateway's included, to its neighbours).
fn bridge_learning() -> Rule {
    let mut nd = vec![Stmt::is(
        Expr::payload("ether", "type"),
        Expr::Symbol("ip6"),
    )];
    nd.extend(crate::on_link(vec![
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
    ]));
    nd.push(Stmt::is_not(
        Expr::payload("ip6", "saddr"),
        set_ref(SetId::BridgeBound(Family::V6)),
    ));
    nd.push(Stmt::Accept);
    rule(nd, "neighbour discovery of an unbound address")
}

/// A neighbour advertisement from a pod port for a target that is not the
/// port's own binding: to other pods (`to_pods`) any such target, to the
/// node a target bound to another port (an unbound one is how a new pod is
/// learned). The target, not the source, is what a neighbour learns: a pod
/// may send from its own or its link-local address and still claim
/// another's. Link-local targets are exempt (bindings hold none), as they
/// are as sources.
fn advertisement(to_pods: bool) -> Rule {
    let target = || Expr::Raw {
        base: "th",
        offset: 64,
        len: 128,
    };
    let mut stmts = vec![
        Stmt::is(Expr::Meta(MetaKey::Iifname), set_ref(SetId::BridgePorts)),
        Stmt::is(Expr::payload("ether", "type"), Expr::Symbol("ip6")),
        Stmt::is(
            Expr::payload("icmpv6", "type"),
            Expr::Symbol("nd-neighbor-advert"),
        ),
        // fe80::/10: the first ten bits 1111111010.
        Stmt::is_not(
            Expr::Raw {
                base: "th",
                offset: 64,
                len: 10,
            },
            Expr::Int(0x3fa),
        ),
    ];
    if !to_pods {
        stmts.push(Stmt::is(target(), set_ref(SetId::BridgeNdBound)));
    }
    stmts.extend([
        Stmt::is_not(
            Expr::Concat(vec![
                Expr::Meta(MetaKey::Iifname),
                Expr::payload("ether", "saddr"),
                target(),
            ]),
            set_ref(SetId::BridgeNdSrc),
        ),
        Stmt::Drop,
    ]);
    let what = if to_pods {
        "advertisement of another address than the port's"
    } else {
        "advertisement of another pod's address"
    };
    rule(stmts, what)
}

/// `forward`, before the checks: ARP from a pod port only for the port's
/// own binding (an ARP probe, from 0.0.0.0, claims nothing). What a
/// neighbour learns from ARP is the sender's addresses in the ARP body, not
/// the frame's: a pod announcing the gateway's address, or its own with
/// another pod's MAC, would redirect its neighbours' traffic.
fn bridge_forward() -> Vec<Rule> {
    let spa = || Expr::payload("arp", "saddr ip");
    vec![
        advertisement(true),
        rule(
            vec![
                Stmt::is(Expr::Meta(MetaKey::Iifname), set_ref(SetId::BridgePorts)),
                Stmt::is(Expr::payload("ether", "type"), Expr::Symbol("arp")),
                Stmt::is_not(spa(), Expr::Symbol("0.0.0.0")),
                Stmt::is_not(
                    Expr::Concat(vec![
                        Expr::Meta(MetaKey::Iifname),
                        Expr::payload("arp", "saddr ether"),
                        spa(),
                    ]),
                    set_ref(SetId::BridgePortSrc(Family::V4)),
                ),
                Stmt::Drop,
            ],
            "ARP for another address than the port's",
        ),
    ]
}

/// The `check` chain of `forward` and `input`: bindings, bound addresses,
/// router messages and ARP.
fn bridge_check() -> Vec<Rule> {
    let iif = || Expr::Meta(MetaKey::Iifname);
    let esrc = || Expr::payload("ether", "saddr");
    let from_port = || Stmt::is(iif(), set_ref(SetId::BridgePorts));
    let ether_type = |t: &'static str| Stmt::is(Expr::payload("ether", "type"), Expr::Symbol(t));
    let mut check = Vec::new();
    for (v4, proto) in [(true, "ip"), (false, "ip6")] {
        let f = Family::of_v4(v4);
        let (srcset, boundset) = (SetId::BridgePortSrc(f), SetId::BridgeBound(f));
        let saddr = || Expr::payload(proto, "saddr");
        let binding = || Stmt::is_not(Expr::Concat(vec![iif(), esrc(), saddr()]), set_ref(srcset));
        let mut own = vec![from_port(), ether_type(proto)];
        if !v4 {
            own.extend(crate::not_link_local());
        }
        own.extend([binding(), Stmt::Drop]);
        if !v4 {
            // Pods are hosts: a router advertisement or redirect from one
            // (from a link-local source, which no binding covers) would
            // make it its neighbours' router.
            check.push(rule(
                vec![
                    from_port(),
                    ether_type(proto),
                    Stmt::is(
                        Expr::payload("icmpv6", "type"),
                        Expr::AnonSet(vec!["nd-router-advert", "nd-redirect"]),
                    ),
                    Stmt::Drop,
                ],
                "router messages from a pod",
            ));
        }
        check.push(rule(own, "spoofed source"));
        check.push(rule(
            vec![
                ether_type(proto),
                Stmt::is(saddr(), set_ref(boundset)),
                binding(),
                Stmt::Drop,
            ],
            "another pod's address",
        ));
    }
    check.push(rule(
        vec![
            ether_type("arp"),
            Stmt::is(
                Expr::payload("arp", "saddr ip"),
                set_ref(SetId::BridgeBound(Family::V4)),
            ),
            Stmt::is_not(
                Expr::Concat(vec![iif(), esrc(), Expr::payload("arp", "saddr ip")]),
                set_ref(SetId::BridgePortSrc(Family::V4)),
            ),
            Stmt::Drop,
        ],
        "ARP for another pod's address",
    ));
    check
}
