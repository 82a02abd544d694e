//! `diff` against the definition: on random clusters and random edits, a
//! connection is reported changed exactly when the BASE and HEAD engines
//! disagree on it, for every ordered pair of endpoints, probe ports at
//! every range edge of every protocol, and outside addresses at every
//! ipBlock, `networks` and node address edge; endpoints present in one
//! version have exactly their allowed connections reported, as added or
//! removed.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_bench::synth::{self, Params, Rng};
use palisade_engine::diff::{self, Change, ChangeKind, Diff, DiffEndpoint};
use palisade_engine::{Endpoint, Engine, PodId};
use palisade_model::{
    AdminAction, AdminPeer, AdminPort, Cluster, ContainerPort, IpBlock, LabelSelector,
    NamespaceScope, NetworkPolicy, Peer, PodPhase, PodSource, PortSpec, Protocol, Requirement,
    Rule,
};
use proptest::prelude::*;

fn sel(r: &mut Rng) -> LabelSelector {
    match r.below(4) {
        0 => LabelSelector::everything(),
        1 => LabelSelector::from_labels([("tier", ["web", "api", "db"][r.below(3)])]),
        2 => LabelSelector::new(vec![Requirement::NotIn {
            key: "app".into(),
            values: vec![format!("app{}", r.below(3))],
        }]),
        _ => LabelSelector::from_labels([("app", format!("app{}", r.below(3)).as_str())]),
    }
}

fn net(r: &mut Rng) -> IpNet {
    const NETS: [&str; 10] = [
        "10.0.0.0/8",
        "10.0.0.0/30",
        "10.0.0.4/31",
        "192.168.0.0/24",
        "192.168.0.1/32",
        "203.0.113.0/24",
        "0.0.0.0/0",
        "fd00::/8",
        "fd00::/126",
        "::/0",
    ];
    NETS[r.below(NETS.len())].parse().unwrap()
}

fn ip_block(r: &mut Rng) -> IpBlock {
    let cidr = net(r);
    let except = [net(r), net(r)]
        .into_iter()
        .filter(|e| cidr.contains(e) && *e != cidr)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    IpBlock { cidr, except }
}

fn peer(r: &mut Rng, ns: &str) -> Peer {
    match r.below(4) {
        0 => Peer::IpBlock(ip_block(r)),
        1 => Peer::Pods {
            namespaces: NamespaceScope::Selector(LabelSelector::from_labels([(
                "team",
                ["red", "blue", "green"][r.below(3)],
            )])),
            pods: sel(r),
        },
        _ => Peer::Pods {
            namespaces: NamespaceScope::Own(ns.into()),
            pods: sel(r),
        },
    }
}

fn port(r: &mut Rng) -> PortSpec {
    let protocol = Protocol::ALL[r.below(3)];
    match r.below(5) {
        0 => PortSpec::AllPorts(protocol),
        1 => PortSpec::Named {
            protocol,
            name: ["http", "dns"][r.below(2)].into(),
        },
        2 => {
            let start = [1, 53, 79, 80, 8000][r.below(5)];
            let end = [80, 81, 8080, 65535][r.below(4)].max(start);
            PortSpec::Range {
                protocol,
                start,
                end,
            }
        }
        _ => {
            let p = [53, 80, 443, 8080, 65535][r.below(5)];
            PortSpec::Range {
                protocol,
                start: p,
                end: p,
            }
        }
    }
}

fn rule(r: &mut Rng, ns: &str) -> Rule {
    Rule {
        peers: (!r.chance(20)).then(|| (0..1 + r.below(2)).map(|_| peer(r, ns)).collect()),
        ports: (!r.chance(25)).then(|| (0..1 + r.below(2)).map(|_| port(r)).collect()),
    }
}

/// The rules of one direction of a random policy, if it has any.
fn some_rules<'a>(r: &mut Rng, c: &'a mut Cluster) -> Option<(String, &'a mut Vec<Rule>)> {
    if c.policies.is_empty() {
        return None;
    }
    let n = c.policies.len();
    let p = &mut c.policies[r.below(n)];
    let ns = p.namespace.clone();
    let dir = if r.chance(50) {
        &mut p.ingress
    } else {
        &mut p.egress
    };
    Some((ns, dir.get_or_insert_with(Vec::new)))
}

/// One random edit of the kinds a change to a repository makes.
fn edit(r: &mut Rng, c: &mut Cluster, serial: usize) {
    let pods = c.pods.len();
    match r.below(16) {
        0 => {
            if let Some((ns, rules)) = some_rules(r, c) {
                rules.push(rule(r, &ns));
            }
        }
        1 => {
            if let Some((_, rules)) = some_rules(r, c) {
                if !rules.is_empty() {
                    let i = r.below(rules.len());
                    rules.remove(i);
                }
            }
        }
        2 => {
            if let Some((_, rules)) = some_rules(r, c) {
                if let Some(x) = rules.first_mut() {
                    x.ports = Some(vec![port(r)]);
                }
            }
        }
        3 => {
            if let Some((ns, rules)) = some_rules(r, c) {
                if let Some(x) = rules.last_mut() {
                    x.peers = Some(vec![peer(r, &ns)]);
                }
            }
        }
        4 => {
            if let Some((_, rules)) = some_rules(r, c) {
                if let Some(x) = rules.first_mut() {
                    x.peers = Some(vec![Peer::IpBlock(ip_block(r))]);
                }
            }
        }
        5 if !c.policies.is_empty() => {
            let i = r.below(c.policies.len());
            c.policies[i].pod_selector = sel(r);
        }
        6 if !c.policies.is_empty() => {
            let i = r.below(c.policies.len());
            c.policies.remove(i);
        }
        7 => {
            let ns = format!("ns{}", r.below(3));
            let (ingress, egress) = match r.below(3) {
                0 => (Some(vec![rule(r, &ns)]), None),
                1 => (None, Some(vec![])),
                _ => (Some(vec![]), Some(vec![rule(r, &ns)])),
            };
            c.policies.push(NetworkPolicy {
                namespace: ns,
                name: format!("edit{serial}"),
                pod_selector: sel(r),
                ingress,
                egress,
                staged: false,
            });
        }
        8 if pods > 0 => {
            let i = r.below(pods);
            c.pods[i]
                .labels
                .insert("app".into(), format!("app{}", r.below(4)));
        }
        9 => {
            let ns = format!("ns{}", r.below(3));
            if let Some(n) = c.namespaces.get_mut(&ns) {
                n.labels
                    .insert("team".into(), ["red", "blue", "green"][r.below(3)].into());
            }
        }
        10 if pods > 0 => match r.below(3) {
            0 => {
                c.pods.remove(r.below(pods));
            }
            1 => {
                c.pods[r.below(pods)].source = PodSource::Live {
                    phase: PodPhase::Succeeded,
                    owner: None,
                }
            }
            _ => {
                let mut p = c.pods[r.below(pods)].clone();
                p.name = format!("new{serial}");
                p.ips = vec![
                    format!("10.9.0.{}", serial + 1).parse().unwrap(),
                    format!("fd00:9::{}", serial + 1).parse().unwrap(),
                ];
                c.pods.push(p);
            }
        },
        11 if pods > 0 => {
            let p = &mut c.pods[r.below(pods)];
            match r.below(3) {
                0 => p.node = Some(format!("node{}", r.below(2))),
                1 => {
                    p.ports = vec![ContainerPort {
                        name: Some("http".into()),
                        port: [81, 443, 8080][r.below(3)],
                        protocol: Protocol::Tcp,
                    }]
                }
                // Only the IPv4 address, moved into (or out of) the
                // blocks the edits use.
                _ => p.ips = vec![format!("10.0.0.{}", 200 + serial).parse().unwrap()],
            }
        }
        // A pod on a node's address: traffic from it counts as from the node.
        12 if pods > 0 => c.pods[r.below(pods)].ips = vec!["192.168.0.2".parse().unwrap()],
        13 if !c.nodes.is_empty() => {
            let n = r.below(c.nodes.len());
            c.nodes[n].addresses = vec![format!("192.168.0.{}", 5 + r.below(3)).parse().unwrap()];
        }
        14 if !c.admin_policies.is_empty() => {
            let n = r.below(c.admin_policies.len());
            let a = &mut c.admin_policies[n];
            match r.below(3) {
                0 => a.priority = r.below(20) as u32,
                1 => {
                    if let Some(x) = a.ingress.first_mut() {
                        x.action = if x.action == AdminAction::Allow {
                            AdminAction::Deny
                        } else {
                            AdminAction::Allow
                        };
                    }
                }
                _ => a.egress.push(palisade_model::AdminRule {
                    name: format!("edit{serial}"),
                    action: [AdminAction::Allow, AdminAction::Deny][r.below(2)],
                    peers: vec![AdminPeer::Networks(vec![net(r)])],
                    ports: Some(vec![AdminPort::Range {
                        protocol: Protocol::Tcp,
                        start: 8000,
                        end: 8090,
                    }]),
                }),
            }
        }
        _ => {}
    }
}

/// Distinct addresses only: the decoder refuses a cluster that shares one.
fn dedupe_addresses(c: &mut Cluster) {
    let mut seen = std::collections::HashSet::new();
    for p in c.pods.iter_mut() {
        p.ips.retain(|a| seen.insert(*a));
    }
}

/// Ports around every edge of both versions, per protocol.
fn probe_ports(cs: [&Cluster; 2]) -> Vec<(Protocol, u16)> {
    let mut ports: BTreeSet<u16> = [1, 2, 1000, 65534, 65535].into();
    let mut edge = |a: u16, b: u16| {
        for p in [a.saturating_sub(1), a, b, b.saturating_add(1)] {
            ports.insert(p.max(1));
        }
    };
    for c in cs {
        for p in &c.pods {
            p.ports.iter().for_each(|cp| edge(cp.port, cp.port));
        }
        let specs = c
            .policies
            .iter()
            .flat_map(|p| p.ingress.iter().chain(&p.egress).flatten())
            .flat_map(|r| r.ports.iter().flatten());
        for s in specs {
            if let PortSpec::Range { start, end, .. } = *s {
                edge(start, end);
            }
        }
        let admin = c
            .admin_policies
            .iter()
            .flat_map(|a| a.ingress.iter().chain(&a.egress))
            .flat_map(|r| r.ports.iter().flatten());
        for p in admin {
            match *p {
                AdminPort::Number { port, .. } => edge(port, port),
                AdminPort::Range { start, end, .. } => edge(start, end),
                AdminPort::Named(_) => {}
            }
        }
    }
    Protocol::ALL
        .into_iter()
        .flat_map(|proto| ports.iter().map(move |&p| (proto, p)))
        .collect()
}

fn step(ip: IpAddr, up: bool) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let x = u32::from(a);
            IpAddr::V4(
                (if up {
                    x.wrapping_add(1)
                } else {
                    x.wrapping_sub(1)
                })
                .into(),
            )
        }
        IpAddr::V6(a) => {
            let x = u128::from(a);
            IpAddr::V6(
                (if up {
                    x.wrapping_add(1)
                } else {
                    x.wrapping_sub(1)
                })
                .into(),
            )
        }
    }
}

/// Outside addresses around every edge of both versions (no pod's).
fn probe_addresses(es: [&Engine; 2]) -> Vec<IpAddr> {
    let mut nets: Vec<IpNet> = Vec::new();
    let mut out: BTreeSet<IpAddr> = ["0.0.0.0", "255.255.255.255", "::", "8.8.8.8", "2001:db8::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for e in es {
        let c = e.cluster();
        let peers = c
            .policies
            .iter()
            .flat_map(|p| p.ingress.iter().chain(&p.egress).flatten())
            .flat_map(|r| r.peers.iter().flatten());
        for p in peers {
            if let Peer::IpBlock(b) = p {
                nets.push(b.cidr);
                nets.extend(&b.except);
            }
        }
        for r in c
            .admin_policies
            .iter()
            .flat_map(|a| a.ingress.iter().chain(&a.egress))
        {
            for p in &r.peers {
                if let AdminPeer::Networks(n) = p {
                    nets.extend(n);
                }
            }
        }
        for n in &c.nodes {
            out.extend(&n.addresses);
        }
    }
    for n in nets {
        for a in [n.network(), n.broadcast()] {
            out.extend([step(a, false), a, step(a, true)]);
        }
    }
    out.into_iter()
        .filter(|a| es.iter().all(|e| e.index().pod_at(a).is_none()))
        .collect()
}

/// Whether `src → dst` on one port is allowed (an absent endpoint or no
/// common address family: not).
fn allowed(
    e: &Engine,
    src: Option<Endpoint>,
    dst: Option<Endpoint>,
    proto: Protocol,
    port: u16,
) -> bool {
    let (Some(s), Some(d)) = (src, dst) else {
        return false;
    };
    e.flow(s, d, proto, port).is_ok_and(|f| e.allowed(&f))
}

struct Reported<'a> {
    d: &'a Diff,
    by_pair: HashMap<(u32, u32, Protocol), Vec<&'a Change>>,
    /// Endpoint id of each (BASE pod, HEAD pod).
    pods: HashMap<(Option<usize>, Option<usize>), u32>,
}

impl<'a> Reported<'a> {
    fn new(d: &'a Diff) -> Reported<'a> {
        let mut by_pair: HashMap<_, Vec<&Change>> = HashMap::new();
        for c in &d.changes {
            by_pair
                .entry((c.src, c.dst, c.protocol))
                .or_default()
                .push(c);
        }
        let pods = d
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match *e {
                DiffEndpoint::Pod { base, head } => Some(((base, head), i as u32)),
                DiffEndpoint::Outside(_) => None,
            })
            .collect();
        Reported { d, by_pair, pods }
    }

    fn outside(&self, ip: &IpAddr) -> Option<u32> {
        self.d
            .endpoints
            .iter()
            .position(|e| matches!(e, DiffEndpoint::Outside(r) if r.contains(ip)))
            .map(|i| i as u32)
    }

    fn find(&self, s: u32, d: u32, proto: Protocol, port: u16) -> Option<&Change> {
        let v = self.by_pair.get(&(s, d, proto))?;
        let hits: Vec<_> = v.iter().filter(|c| c.ports.contains(port)).collect();
        assert!(hits.len() <= 1, "overlapping changes {hits:?}");
        hits.first().map(|c| **c)
    }
}

/// The endpoints of a version (endpoint pods off the host network).
fn endpoints(e: &Engine) -> Vec<usize> {
    (0..e.cluster().pods.len())
        .filter(|&p| {
            e.index()
                .identity_of(PodId::new(p))
                .is_some_and(|i| !e.index().identity(i).host_network)
        })
        .collect()
}

fn check(base: &Engine, head: &Engine) -> Result<(), TestCaseError> {
    let d = diff::diff(base, head);
    let rep = Reported::new(&d);
    let key = |e: &Engine, p: usize| {
        let pod = &e.cluster().pods[p];
        (pod.namespace.clone(), pod.name.clone())
    };
    let head_by_key: HashMap<_, usize> = endpoints(head)
        .into_iter()
        .map(|p| (key(head, p), p))
        .collect();
    let base_by_key: HashMap<_, usize> = endpoints(base)
        .into_iter()
        .map(|p| (key(base, p), p))
        .collect();
    let mut eps: Vec<(Option<usize>, Option<usize>)> = base_by_key
        .iter()
        .map(|(k, &b)| (Some(b), head_by_key.get(k).copied()))
        .collect();
    eps.extend(
        head_by_key
            .iter()
            .filter(|(k, _)| !base_by_key.contains_key(*k))
            .map(|(_, &h)| (None, Some(h))),
    );
    let ports = probe_ports([base.cluster(), head.cluster()]);
    let addrs = probe_addresses([base, head]);
    let pod = |p: Option<usize>| p.map(Endpoint::Pod);
    let expect = |sb: Option<Endpoint>,
                  db,
                  sh: Option<Endpoint>,
                  dh,
                  proto,
                  port,
                  s: u32,
                  t: u32,
                  what: &str| {
        let before = allowed(base, sb, db, proto, port);
        let after = allowed(head, sh, dh, proto, port);
        let got = rep.find(s, t, proto, port);
        let kind = match (sb.is_some() && db.is_some(), sh.is_some() && dh.is_some()) {
            (true, true) => ChangeKind::Changed,
            (false, true) => ChangeKind::Added,
            (true, false) => ChangeKind::Removed,
            (false, false) => return Ok(()),
        };
        prop_assert_eq!(
            got.map(|c| (c.before, c.after, c.kind)),
            (before != after).then_some((before, after, kind)),
            "{} {} -> {} {} {}",
            what,
            d.name(s),
            d.name(t),
            proto,
            port
        );
        Ok(())
    };
    for &(sb, sh) in &eps {
        let s = rep.pods[&(sb, sh)];
        for &(db, dh) in &eps {
            let t = rep.pods[&(db, dh)];
            if s == t {
                continue;
            }
            for &(proto, port) in &ports {
                expect(
                    pod(sb),
                    pod(db),
                    pod(sh),
                    pod(dh),
                    proto,
                    port,
                    s,
                    t,
                    "pods",
                )?;
            }
        }
        for a in &addrs {
            let Some(o) = rep.outside(a) else {
                prop_assert!(false, "no outside piece holds {}", a);
                unreachable!();
            };
            let ip = Some(Endpoint::Ip(*a));
            for &(proto, port) in &ports {
                expect(pod(sb), ip, pod(sh), ip, proto, port, s, o, "egress")?;
                expect(ip, pod(sb), ip, pod(sh), proto, port, o, s, "ingress")?;
            }
        }
    }
    // Every reported change holds at both ends of its range.
    for c in &d.changes {
        let side = |i: u32| match d.endpoints[i as usize] {
            DiffEndpoint::Pod { base, head } => (pod(base), pod(head)),
            DiffEndpoint::Outside(r) => {
                let a = addrs
                    .iter()
                    .find(|a| r.contains(a))
                    .copied()
                    .unwrap_or(r.start);
                (Some(Endpoint::Ip(a)), Some(Endpoint::Ip(a)))
            }
        };
        let ((sb, sh), (db, dh)) = (side(c.src), side(c.dst));
        for port in [c.ports.start, c.ports.end] {
            let (b, h) = (
                allowed(base, sb, db, c.protocol, port),
                allowed(head, sh, dh, c.protocol, port),
            );
            let b = b && c.kind != ChangeKind::Added;
            let h = h && c.kind != ChangeKind::Removed;
            prop_assert_eq!(
                (b, h),
                (c.before, c.after),
                "{} -> {} {} {}",
                d.name(c.src),
                d.name(c.dst),
                c.protocol,
                port
            );
        }
        prop_assert!(
            !d.policies_of(c).is_empty() || c.kind != ChangeKind::Changed,
            "{:?} names no policy",
            c
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn diff_reports_exactly_the_flows_whose_verdict_changed(
        seed in any::<u64>(),
        admin in 0usize..3,
        pods in 2usize..14,
        policies in 0usize..8,
        edits in 1usize..4,
    ) {
        let mut base = synth::cluster(&Params::sized(seed, admin, pods, policies));
        let mut head = base.clone();
        let mut r = Rng::new(seed ^ 0xd1ff);
        for i in 0..edits {
            edit(&mut r, &mut head, i);
        }
        dedupe_addresses(&mut base);
        dedupe_addresses(&mut head);
        head.complete_namespaces();
        let (b, h) = (Engine::new(base), Engine::new(head));
        check(&b, &h)?;
        // The same diff read backwards: every change swaps sides.
        check(&h, &b)?;
    }
}

/// Two equal versions have no change, however many pods and policies.
#[test]
fn equal_versions_have_no_change() {
    let c = synth::cluster(&Params::sized(7, 2, 30, 12));
    let d = diff::diff(&Engine::new(c.clone()), &Engine::new(c));
    assert_eq!(d.changes, vec![]);
}
