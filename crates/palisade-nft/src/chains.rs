//! The chains: hooks, anti-spoofing, conntrack, and the lookups of each
//! direction's stages.

use super::*;

pub(crate) fn rule(stmts: Vec<Stmt>) -> Rule {
    Rule {
        stmts,
        comment: None,
    }
}

pub(crate) fn commented(stmts: Vec<Stmt>, c: &str) -> Rule {
    Rule {
        stmts,
        comment: Some(c.to_string()),
    }
}

pub(crate) fn nfproto(v4: bool) -> Stmt {
    Stmt::is(
        Expr::Meta(MetaKey::Nfproto),
        Expr::Symbol(if v4 { "ipv4" } else { "ipv6" }),
    )
}

pub(crate) fn addr(v4: bool, field: &'static str) -> Expr {
    Expr::payload(if v4 { "ip" } else { "ip6" }, field)
}

pub(crate) fn l4() -> Expr {
    Expr::Meta(MetaKey::L4proto)
}

pub(crate) fn dport() -> Expr {
    Expr::payload("th", "dport")
}

/// `meta mark set 0`, then the peer's identity mark by address.
pub(crate) fn peer_identity(rules: &mut Vec<Rule>, peer_field: &'static str) {
    rules.push(rule(vec![Stmt::Assign {
        key: Expr::Meta(MetaKey::Mark),
        value: Expr::Int(0),
    }]));
    for v4 in [true, false] {
        rules.push(rule(vec![
            nfproto(v4),
            Stmt::Assign {
                key: Expr::Meta(MetaKey::Mark),
                value: Expr::Map {
                    key: Box::new(addr(v4, peer_field)),
                    map: SetId::Identity(Family::of_v4(v4)).name().into(),
                },
            },
        ]));
    }
}

/// `ct mark set 0`, then the local pod's group by address in `map4/6`.
pub(crate) fn local_group(
    rules: &mut Vec<Rule>,
    own_field: &'static str,
    map: impl Fn(Family) -> SetId,
) {
    rules.push(rule(vec![Stmt::Assign {
        key: Expr::CtMark,
        value: Expr::Int(0),
    }]));
    for v4 in [true, false] {
        rules.push(rule(vec![
            nfproto(v4),
            Stmt::Assign {
                key: Expr::CtMark,
                value: Expr::Map {
                    key: Box::new(addr(v4, own_field)),
                    map: map(Family::of_v4(v4)).name().into(),
                },
            },
        ]));
    }
}

pub(crate) fn fields(dir: Dir) -> (&'static str, &'static str) {
    match dir {
        Dir::Egress => ("saddr", "daddr"),
        Dir::Ingress => ("daddr", "saddr"),
    }
}

/// One admin tier: the local pod's tier group, then one verdict map lookup
/// for a pod peer (by identity) and one for any other peer (by address).
/// No element matches: the flow goes on to the next stage.
pub(crate) fn tier_stage(rules: &mut Vec<Rule>, dir: Dir, t: tier::Tier) {
    let (own_field, peer_field) = fields(dir);
    let at = match t {
        tier::Tier::Admin => AdminTier::Admin,
        tier::Tier::Baseline => AdminTier::Baseline,
    };
    local_group(rules, own_field, |f| SetId::TierGroup(dir, at, f));
    for v4 in [true, false] {
        rules.push(commented(
            vec![
                nfproto(v4),
                Stmt::Vmap {
                    key: Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark), l4(), dport()]),
                    map: SetId::TierPeer(dir, at, Family::of_v4(v4)).name().into(),
                },
            ],
            &format!("{} tier, pod peer", t.name()),
        ));
    }
    for v4 in [true, false] {
        rules.push(commented(
            vec![
                Stmt::is(Expr::Meta(MetaKey::Mark), Expr::Int(0)),
                Stmt::Vmap {
                    key: Expr::Concat(vec![Expr::CtMark, addr(v4, peer_field), l4(), dport()]),
                    map: SetId::TierCidr(dir, at, Family::of_v4(v4)).name().into(),
                },
            ],
            &format!("{} tier, other peer", t.name()),
        ));
    }
}

/// The policy check of one direction: admin tier, NetworkPolicy (in
/// `{dir}_np`, entered with `goto`: its verdict is final), baseline tier;
/// falling off the end allows.
///
/// The NetworkPolicy stage is one rule per family: the group lookup writes
/// `ct mark` and jumps in the same rule, and a miss (not isolated) ends the
/// rule before either happens, so no reset of `ct mark` is needed.
pub(crate) fn direction_chain(dir: Dir, stages: Stages) -> Chain {
    let name = dir.name();
    let (own_field, peer_field) = fields(dir);
    let mut rules = Vec::new();
    if stages.admin || stages.baseline {
        peer_identity(&mut rules, peer_field);
    }
    if stages.admin {
        tier_stage(&mut rules, dir, tier::Tier::Admin);
    }
    for v4 in [true, false] {
        rules.push(commented(
            vec![
                nfproto(v4),
                Stmt::Assign {
                    key: Expr::CtMark,
                    value: Expr::Map {
                        key: Box::new(addr(v4, own_field)),
                        map: SetId::Group(dir, Family::of_v4(v4)).name().into(),
                    },
                },
                Stmt::Goto(format!("{name}_np")),
            ],
            &format!("isolated for {name}"),
        ));
    }
    if stages.baseline {
        tier_stage(&mut rules, dir, tier::Tier::Baseline);
    }
    Chain {
        name: name.to_string(),
        hook: None,
        rules,
    }
}

/// The chain every denial of a direction ends in: NetworkPolicy's default
/// deny and admin Deny verdicts alike, so that each is reported once and
/// counted (`nft list chain inet palisade egress_denied`).
pub(crate) const fn denied_chain(dir: Dir) -> &'static str {
    match dir {
        Dir::Egress => "egress_denied",
        Dir::Ingress => "ingress_denied",
    }
}

/// The report of a decision to the flow log: TCP, UDP and SCTP only (the
/// policies' protocols), with the policy generation in the packet's mark
/// (it is dropped, or its mark is the scratch register of the policy
/// chains anyway).
fn report(log: &FlowLog, allowed: bool, dir: Dir) -> Vec<Stmt> {
    vec![
        Stmt::is(l4(), Expr::AnonSet(vec!["tcp", "udp", "sctp"])),
        Stmt::Assign {
            key: Expr::Meta(MetaKey::Mark),
            value: Expr::Map {
                key: Box::new(l4()),
                map: SetId::Generation.name().into(),
            },
        },
        Stmt::Log {
            prefix: log_prefix(allowed, dir).into(),
            group: log.group,
        },
    ]
}

/// A sampled report of an allowed direction, on the connection's first
/// packet only: later packets of an unanswered connection are still `new`
/// to conntrack, but their entry is confirmed.
fn allowed_report(log: &FlowLog, dir: Dir) -> Option<Rule> {
    if log.sample_ppm == 0 {
        return None;
    }
    let mut stmts = vec![Stmt::Match {
        left: Expr::CtStatus,
        op: Op::NotIn,
        right: Expr::Flags(vec!["confirmed"]),
    }];
    if log.sample_ppm < FlowLog::SAMPLE_ALL {
        stmts.push(Stmt::Match {
            left: Expr::Random(FlowLog::SAMPLE_ALL),
            op: Op::Lt,
            right: Expr::Int(log.sample_ppm),
        });
    }
    stmts.extend(report(log, true, dir));
    Some(commented(stmts, &format!("{} allowed", dir.name())))
}

pub(crate) fn denied_chains(log: Option<&FlowLog>) -> Vec<Chain> {
    [Dir::Egress, Dir::Ingress]
        .into_iter()
        .map(|dir| {
            let mut rules = Vec::new();
            if let Some(log) = log {
                rules.push(rule(report(log, false, dir)));
            }
            rules.push(commented(
                vec![Stmt::Counter, Stmt::Drop],
                &format!("{} denied", dir.name()),
            ));
            Chain {
                name: denied_chain(dir).into(),
                hook: None,
                rules,
            }
        })
        .collect()
}

/// `return` when `key` is in set `set`.
fn returns_if_in(key: Expr, set: SetId) -> Rule {
    rule(vec![
        Stmt::is(key, Expr::SetRef(set.name().into())),
        Stmt::Return,
    ])
}

/// The NetworkPolicy check of one direction, for an isolated pod whose
/// group is in `ct mark`: allowed (`return`) or dropped. Three chains:
/// `{dir}_np` looks the peer's identity up into `meta mark` and, for a pod
/// peer, goes to `{dir}_np_pod` (the identity-keyed sets, then the address
/// checks); any other peer goes straight to `{dir}_np_addr` (own node,
/// ipBlocks, rules without peers, else drop). Identity marks are never 0,
/// so a non-pod peer could not match an identity-keyed set anyway.
pub(crate) fn np_chains(dir: Dir) -> Vec<Chain> {
    let name = dir.name();
    let (_, peer_field) = fields(dir);
    let mut np = Vec::new();
    for v4 in [true, false] {
        np.push(commented(
            vec![
                nfproto(v4),
                Stmt::Assign {
                    key: Expr::Meta(MetaKey::Mark),
                    value: Expr::Map {
                        key: Box::new(addr(v4, peer_field)),
                        map: SetId::Identity(Family::of_v4(v4)).name().into(),
                    },
                },
                Stmt::Goto(format!("{name}_np_pod")),
            ],
            "pod peer",
        ));
    }
    np.push(rule(vec![Stmt::Goto(format!("{name}_np_addr"))]));

    let mut pod = Vec::new();
    let peer_port = || Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark), l4(), dport()]);
    pod.push(rule(vec![
        Stmt::is(l4(), Expr::AnonSet(vec!["tcp", "udp", "sctp"])),
        Stmt::is(
            Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark)]),
            Expr::SetRef(SetId::PeerAll(dir).name().into()),
        ),
        Stmt::Return,
    ]));
    let mark = || vec![Expr::CtMark, Expr::Meta(MetaKey::Mark)];
    pod.push(returns_if_in(peer_port(), SetId::PeerPort(dir)));
    pod.push(returns_if_in(
        Expr::Concat([mark(), vec![l4()]].concat()),
        SetId::PeerProto(dir),
    ));
    pod.push(returns_if_in(peer_port(), SetId::PeerRange(dir)));
    for v4 in [true, false] {
        pod.push(rule(vec![
            nfproto(v4),
            Stmt::is(
                peer_port(),
                Expr::SetRef(SetId::PeerFamily(dir, Family::of_v4(v4)).name().into()),
            ),
            Stmt::Return,
        ]));
    }
    pod.push(rule(vec![Stmt::Goto(format!("{name}_np_addr"))]));

    let mut by_addr = Vec::new();
    if dir == Dir::Ingress {
        for v4 in [true, false] {
            by_addr.push(commented(
                vec![
                    Stmt::is(
                        addr(v4, "saddr"),
                        Expr::SetRef(SetId::OwnNode(Family::of_v4(v4)).name().into()),
                    ),
                    Stmt::Return,
                ],
                "own node",
            ));
        }
    }
    for v4 in [true, false] {
        by_addr.push(rule(vec![
            Stmt::is(
                Expr::Concat(vec![Expr::CtMark, addr(v4, peer_field), l4(), dport()]),
                Expr::SetRef(SetId::Cidr(dir, Family::of_v4(v4)).name().into()),
            ),
            Stmt::Return,
        ]));
    }
    by_addr.push(rule(vec![
        Stmt::is(
            Expr::Concat(vec![Expr::CtMark, l4(), dport()]),
            Expr::SetRef(SetId::Any(dir).name().into()),
        ),
        Stmt::Return,
    ]));
    by_addr.push(rule(vec![Stmt::Goto(denied_chain(dir).into())]));
    let chain = |suffix: &str, rules| Chain {
        name: format!("{name}{suffix}"),
        hook: None,
        rules,
    };
    vec![
        chain("_np", np),
        chain("_np_pod", pod),
        chain("_np_addr", by_addr),
    ]
}

pub(crate) fn src(v4: bool) -> Expr {
    addr(v4, "saddr")
}

/// `iifname . ip saddr` is (`Op::Eq`) or is not (`Op::Ne`) a local pod's,
/// as the wiring says.
pub(crate) fn pod_source(v4: bool, op: Op) -> Stmt {
    Stmt::Match {
        left: Expr::Concat(vec![Expr::Meta(MetaKey::Iifname), src(v4)]),
        op,
        right: Expr::SetRef(SetId::PodSrc(Family::of_v4(v4)).name().into()),
    }
}

pub(crate) fn on_pod_interface() -> Stmt {
    Stmt::is(
        Expr::Meta(MetaKey::Iifname),
        Expr::SetRef(SetId::PodIfaces.name().into()),
    )
}

/// IPv6 link-local and unspecified sources (neighbour discovery) are
/// exempt from anti-spoofing: the kernel never forwards them. Shared by
/// the bridge table.
pub(crate) fn not_link_local() -> Vec<Stmt> {
    vec![
        Stmt::is_not(src(false), Expr::Prefix("fe80::".into(), 10)),
        Stmt::is_not(src(false), Expr::Prefix("::".into(), 128)),
    ]
}

/// What fails closed, for packets that are not a known local pod's: from
/// a pod interface (a pod whose address is not known, or a spoofed
/// source), or with a local pod's address from anywhere else (a pod whose
/// interface is not known yet, or a spoofer elsewhere).
pub(crate) fn unknown_source_rules(input: bool) -> Vec<Rule> {
    let mut rules = Vec::new();
    for v4 in [true, false] {
        let mut stmts = vec![nfproto(v4), on_pod_interface()];
        if !v4 {
            stmts.extend(not_link_local());
        }
        if input {
            stmts.push(pod_source(v4, Op::Ne));
        }
        stmts.push(Stmt::Drop);
        rules.push(commented(stmts, "unknown source on a pod interface"));
    }
    for v4 in [true, false] {
        let mut stmts = vec![Stmt::is(
            src(v4),
            Expr::SetRef(SetId::Local(Family::of_v4(v4)).name().into()),
        )];
        if input {
            stmts.push(pod_source(v4, Op::Ne));
        }
        stmts.push(Stmt::Drop);
        rules.push(commented(stmts, "local pod address on another interface"));
    }
    rules
}

/// A new connection to a local pod meets its ingress check, found by
/// destination address whatever interface it leaves on; one to a pod
/// interface that no local pod's address explains (a pod the agent does
/// not know) is dropped.
pub(crate) fn to_pod_rules(ingress: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    for v4 in [true, false] {
        rules.push(rule(vec![
            Stmt::is(
                addr(v4, "daddr"),
                Expr::SetRef(SetId::Local(Family::of_v4(v4)).name().into()),
            ),
            Stmt::Goto(ingress.into()),
        ]));
    }
    for v4 in [true, false] {
        let mut stmts = vec![
            nfproto(v4),
            Stmt::is(
                Expr::Meta(MetaKey::Oifname),
                Expr::SetRef(SetId::PodIfaces.name().into()),
            ),
        ];
        if !v4 {
            // Bridged pods' link-local and multicast traffic (neighbour
            // discovery, MLD) passes this hook too; it is no pod's.
            for (a, l) in [("fe80::", 10), ("ff00::", 8)] {
                stmts.push(Stmt::is_not(
                    addr(false, "daddr"),
                    Expr::Prefix(a.into(), l),
                ));
            }
        }
        stmts.push(Stmt::Drop);
        rules.push(commented(stmts, "unknown pod"));
    }
    rules
}

/// Neighbour discovery between pods of one bridge reaches the `inet`
/// forward hook (bridge netfilter) with its hop limit intact, 255, which
/// no routed packet has here: accepted before any policy, as the API
/// does not govern it; so is neighbour discovery to the node. Its sources
/// are the bridge table's to check.
pub(crate) fn neighbour_discovery() -> Rule {
    let mut stmts = on_link(vec![
        "nd-router-solicit",
        "nd-router-advert",
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "nd-redirect",
    ]);
    stmts.push(Stmt::Accept);
    commented(stmts, "neighbour discovery between bridged pods")
}

/// ICMPv6 of these types with hop limit 255: sent on the link, never
/// routed. Shared by the bridge table.
pub(crate) fn on_link(types: Vec<&'static str>) -> Vec<Stmt> {
    vec![
        Stmt::is(Expr::payload("icmpv6", "type"), Expr::AnonSet(types)),
        Stmt::is(Expr::payload("ip6", "hoplimit"), Expr::Int(255)),
    ]
}

/// The base chains.
///
/// `forward` first recognizes a local pod's packets by `iifname . saddr`
/// (one lookup per family: the wiring's `pod_src`, which is also the
/// anti-spoofing check) and sends them to `from_pod`: conntrack, then
/// (`from_pod_check`) egress, and ingress when the destination is local
/// too. Anything else from a pod interface, or with a local pod's address,
/// is dropped (see [`unknown_source_rules`]); the rest meets conntrack and,
/// if new and bound for a local pod address, the ingress check
/// (`to_local`). Both checks are entered through [`keeping_marks`].
///
/// Anti-spoofing stays *before* conntrack, on every packet from a pod,
/// established or not. Skipping it for established packets would be
/// unsound: conntrack matches a packet to an entry by its addresses,
/// protocol and ports only, never by the interface it came in on, so a pod
/// that sends a packet with exactly the tuple of another pod's connection
/// (either direction: as that pod, or as its peer answering it) would ride
/// that entry as `established` and be forwarded. For UDP nothing more is
/// needed (e.g. a forged DNS answer to a neighbour's query); for TCP
/// conntrack's window tracking makes it harder, not impossible.
///
/// Policy is keyed by address only (groups, identities), never by
/// interface: bridged pods all reach the IP layer on their bridge, and a
/// pod's interface may appear after the pod.
///
/// A TCP segment that would start a connection without SYN: conntrack
/// takes an ACK (and data) it has no entry for as the middle of an unknown
/// connection and tracks it as new (`nf_conntrack_tcp_loose`, on by
/// default), so it would meet policy and, allowed, leave an entry that no
/// handshake made. Only a SYN opens a connection here; everything else
/// without an entry is dropped before an entry exists.
fn not_a_first_segment() -> Rule {
    commented(
        vec![
            Stmt::Match {
                left: Expr::CtState,
                op: Op::In,
                right: Expr::Flags(vec!["new"]),
            },
            Stmt::Match {
                left: Expr::Masked(
                    Box::new(Expr::payload("tcp", "flags")),
                    vec!["fin", "syn", "rst", "ack"],
                ),
                op: Op::Ne,
                right: Expr::Symbol("syn"),
            },
            Stmt::Drop,
        ],
        "TCP without SYN for no connection",
    )
}

/// With a flow log, denials are reported in `{dir}_denied`, and allowed
/// directions after their check: egress in `from_pod`, ingress in
/// `to_pod`, which wraps the ingress check so that there is an "after".
pub(crate) fn chains(stages: Stages, log: Option<&FlowLog>, kept: KeptMark) -> Vec<Chain> {
    let allowed_in = log.and_then(|l| allowed_report(l, Dir::Ingress));
    let ingress = if allowed_in.is_some() {
        "to_pod"
    } else {
        "ingress"
    };
    let conntrack = vec![
        rule(vec![
            Stmt::Match {
                left: Expr::CtState,
                op: Op::In,
                right: Expr::Flags(vec!["established", "related"]),
            },
            Stmt::Accept,
        ]),
        rule(vec![
            Stmt::Match {
                left: Expr::CtState,
                op: Op::In,
                right: Expr::Flags(vec!["invalid"]),
            },
            Stmt::Drop,
        ]),
        not_a_first_segment(),
    ];
    let mut forward = vec![neighbour_discovery()];
    forward.extend([true, false].into_iter().map(|v4| {
        rule(vec![
            nfproto(v4),
            pod_source(v4, Op::Eq),
            Stmt::Goto("from_pod".into()),
        ])
    }));
    forward.extend(unknown_source_rules(false));
    forward.extend(conntrack.clone());
    forward.extend(to_pod_rules("to_local"));
    // Past conntrack, a new connection's checks write the marks: entered
    // through the chains that give the packet its mark back (marks.rs).
    let (to_local, to_local_marks) = keeping_marks("to_local", ingress, kept);
    let (pod_dispatch, pod_marks) = keeping_marks("from_pod", "from_pod_check", kept);
    let mut pod = conntrack;
    pod.extend(pod_dispatch);
    let mut check = vec![rule(vec![Stmt::Jump("egress".into())])];
    check.extend(log.and_then(|l| allowed_report(l, Dir::Egress)));
    check.extend(to_pod_rules(ingress));
    // A bridged pod that is not bound yet answers the node's neighbour
    // solicitation from its own address: how it gets bound.
    let mut input = vec![neighbour_discovery()];
    input.extend(unknown_source_rules(true));
    let mut out = vec![
        Chain {
            name: "forward".into(),
            hook: Some(Hook {
                hook: "forward",
                priority: 0,
            }),
            rules: forward,
        },
        Chain {
            name: "input".into(),
            hook: Some(Hook {
                hook: "input",
                priority: 0,
            }),
            rules: input,
        },
        Chain {
            name: "from_pod".into(),
            hook: None,
            rules: pod,
        },
        Chain {
            name: "from_pod_check".into(),
            hook: None,
            rules: check,
        },
        Chain {
            name: "to_local".into(),
            hook: None,
            rules: to_local,
        },
    ];
    out.extend(pod_marks);
    out.extend(to_local_marks);
    out.push(direction_chain(Dir::Egress, stages));
    out.extend(np_chains(Dir::Egress));
    out.push(direction_chain(Dir::Ingress, stages));
    out.extend(np_chains(Dir::Ingress));
    out.extend(denied_chains(log));
    if let Some(r) = allowed_in {
        out.push(Chain {
            name: "to_pod".into(),
            hook: None,
            rules: vec![rule(vec![Stmt::Jump("ingress".into())]), r],
        });
    }
    out
}
