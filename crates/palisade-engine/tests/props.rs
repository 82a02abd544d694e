//! Property tests over random synthetic clusters, against the naive
//! oracle of `palisade_testkit::oracle`, so that the indexed engine is
//! checked against the specification rather than against itself.

use std::net::IpAddr;

use palisade_bench::synth::{self, Params, Rng};
use palisade_engine::{Endpoint, Engine, Flow, PodId};
use palisade_model::{AdminAction, AdminTier, Cluster, Pod, PortSpec, Protocol, Rule};
use proptest::prelude::*;

const PORTS: [(u16, Protocol); 7] = [
    (80, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (8050, Protocol::Tcp),
    (443, Protocol::Tcp),
    (53, Protocol::Udp),
    (80, Protocol::Udp),
    (80, Protocol::Sctp),
];

/// Random flows between pods, external addresses and node addresses.
/// The engine decides each of `flows` as the oracle does, and its verdict
/// says the same as its plain answer.
fn agrees_with_oracle(
    engine: &Engine,
    c: &Cluster,
    flows: impl IntoIterator<Item = Flow>,
) -> Result<(), TestCaseError> {
    for f in flows {
        prop_assert_eq!(
            engine.allowed(&f),
            palisade_testkit::oracle::allowed(c, &f),
            "flow {:?}: {:?}",
            f,
            engine.verdict(&f).reasons
        );
        prop_assert_eq!(engine.verdict(&f).allowed, engine.allowed(&f));
    }
    Ok(())
}

fn flows(engine: &Engine, seed: u64, n: usize) -> Vec<Flow> {
    let c = engine.cluster();
    let mut r = Rng::new(seed);
    let externals: Vec<IpAddr> = [
        "203.0.113.9",
        "10.0.0.77",
        "2001:db8::1",
        "fd00::1:99",
        "192.168.0.1",
        "192.168.0.2",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let pick = |r: &mut Rng| {
            if r.chance(80) && !c.pods.is_empty() {
                Endpoint::Pod(r.below(c.pods.len()))
            } else {
                engine.endpoint_for_ip(externals[r.below(externals.len())])
            }
        };
        let (s, d) = (pick(&mut r), pick(&mut r));
        let (port, proto) = PORTS[r.below(PORTS.len())];
        let v4 = r.chance(50);
        if let Some(f) = engine.flow_in_family(s, d, proto, port, v4) {
            out.push(f);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The indexed engine decides exactly as the naive reading of the API,
    /// with and without admin policies.
    #[test]
    fn engine_matches_naive_oracle(seed in any::<u64>(), admin in 0usize..4, pods in 2usize..30, policies in 0usize..12) {
        let c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        let engine = Engine::new(c.clone());
        for f in flows(&engine, seed ^ 0x55, 300) {
            agrees_with_oracle(&engine, &c, [f])?;
            for dir in [palisade_engine::Direction::Ingress, palisade_engine::Direction::Egress] {
                prop_assert_eq!(engine.outcome(dir, &f).allowed(), engine.allowed_in(dir, &f));
            }
        }
    }

    /// Workloads' pod templates among the pods: flows from and to them
    /// (they have no address, so no ipBlock, `networks` or node address
    /// matches them) are decided as the oracle decides them, in any family,
    /// between two templates too.
    #[test]
    fn templates_match_naive_oracle(seed in any::<u64>(), admin in 0usize..4, pods in 2usize..30, policies in 0usize..12) {
        let mut c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        for p in c.pods.iter_mut().step_by(3) {
            *p = Pod::template(
                palisade_model::WorkloadKind::Deployment,
                p.namespace.clone(),
                p.name.clone(),
                p.labels.clone(),
                p.host_network,
                p.ports.clone(),
            );
        }
        let engine = Engine::new(c.clone());
        let fs = flows(&engine, seed ^ 0x3c, 300);
        prop_assert!(fs.len() > 100, "{} flows", fs.len());
        for f in fs {
            agrees_with_oracle(&engine, &c, [f])?;
            for dir in [palisade_engine::Direction::Ingress, palisade_engine::Direction::Egress] {
                prop_assert_eq!(engine.outcome(dir, &f).allowed(), engine.allowed_in(dir, &f));
            }
        }
    }

    /// Pods with a second address of a family: flows from or to it are
    /// classified by that address (not by the identity's first address),
    /// and the engine still agrees with the oracle. The addresses fall
    /// inside and outside the generated ipBlocks.
    #[test]
    fn secondary_addresses_match_naive_oracle(seed in any::<u64>(), admin in 0usize..3, pods in 2usize..20, policies in 0usize..12) {
        let mut c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        for (i, p) in c.pods.iter_mut().enumerate() {
            if i % 2 == 0 {
                let extra: [IpAddr; 2] = [
                    format!("{}.{}.0.{}", [10, 192, 203][i % 3], [0, 168, 0][i % 3], 200 + i % 50).parse().unwrap(),
                    format!("fd00:ffff::{}", i + 1).parse().unwrap(),
                ];
                p.ips.extend(extra);
            }
        }
        // Distinct addresses only: a shared one would make the cluster invalid.
        let mut seen = std::collections::HashSet::new();
        for p in c.pods.iter_mut() {
            p.ips.retain(|a| seen.insert(*a));
        }
        let engine = Engine::new(c.clone());
        let mut r = Rng::new(seed ^ 0xa5);
        for _ in 0..300 {
            if c.pods.is_empty() {
                break;
            }
            let (s, d) = (&c.pods[r.below(c.pods.len())], &c.pods[r.below(c.pods.len())]);
            let v4 = r.chance(50);
            let pick = |p: &Pod, r: &mut Rng| {
                let of: Vec<&IpAddr> = p.ips.iter().filter(|a| a.is_ipv4() == v4).collect();
                (!of.is_empty()).then(|| of[r.below(of.len())].to_string())
            };
            let (Some(sa), Some(da)) = (pick(s, &mut r), pick(d, &mut r)) else {
                continue;
            };
            let (port, proto) = PORTS[r.below(PORTS.len())];
            let Ok(f) = engine.flow_between(&sa, &da, proto, port) else {
                continue;
            };
            agrees_with_oracle(&engine, &c, [f])?;
        }
    }

    /// Enough admin policies that their rules take several 64-rule words
    /// of the classifier, and enough NetworkPolicies that the baseline's
    /// rules fall anywhere in a word, also across two: the first admin
    /// match (a Pass among them) and the first baseline match are still
    /// found in evaluation order.
    #[test]
    fn many_admin_rules_match_naive_oracle(seed in any::<u64>(), admin in 30usize..50, pods in 2usize..16, policies in 0usize..60) {
        let c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        let engine = Engine::new(c.clone());
        agrees_with_oracle(&engine, &c, flows(&engine, seed ^ 0x99, 200))?;
    }

    /// Pods that give one port number several names, and some pods named
    /// ports on more distinct numbers than the engine's branch-free scan of
    /// a destination's named ports holds, with rules naming each of them:
    /// the engine still agrees with the oracle.
    #[test]
    fn several_names_for_one_port_match_naive_oracle(seed in any::<u64>(), pods in 2usize..25, policies in 1usize..12) {
        const ALIASES: [&str; 6] = ["web", "alt", "svc", "main", "app", "api"];
        // Names on other numbers the flows use: with `http` and `dns`, up
        // to six distinct named port numbers on one pod.
        const OTHERS: [(&str, u16, Protocol); 4] = [
            ("main", 443, Protocol::Tcp),
            ("app", 8050, Protocol::Tcp),
            ("api", 80, Protocol::Udp),
            ("svc", 80, Protocol::Sctp),
        ];
        let mut c = synth::cluster(&Params::sized(seed, 0, pods, policies));
        let mut r = Rng::new(seed ^ 0x3c);
        for p in c.pods.iter_mut() {
            let base = p.ports[0].clone();
            if r.chance(30) {
                for &(name, port, protocol) in OTHERS.iter().skip(r.below(2)) {
                    p.ports.push(palisade_model::ContainerPort {
                        name: Some(name.into()),
                        port,
                        protocol,
                    });
                }
                continue;
            }
            for name in ALIASES.iter().take(r.below(ALIASES.len() + 1)) {
                p.ports.push(palisade_model::ContainerPort {
                    name: Some((*name).into()),
                    port: base.port,
                    protocol: base.protocol,
                });
            }
        }
        for np in c.policies.iter_mut() {
            for rule in np.ingress.iter_mut().chain(np.egress.iter_mut()).flatten() {
                if let Some(ports) = rule.ports.as_mut() {
                    if r.chance(60) {
                        *ports = (0..1 + r.below(3))
                            .map(|_| PortSpec::Named {
                                protocol: [Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                                    [r.below(4)],
                                name: ALIASES[r.below(ALIASES.len())]
                                    .replace("web", "dns")
                                    .replace("alt", "http"),
                            })
                            .collect();
                    }
                }
            }
        }
        // One policy that names every one of those ports, so that pods
        // with all of them overflow the branch-free scan.
        if let Some(ns) = c.pods.first().map(|p| p.namespace.clone()) {
            let named = |name: &str, protocol| PortSpec::Named { protocol, name: name.into() };
            c.policies.push(palisade_model::NetworkPolicy {
                namespace: ns,
                name: "all-named-ports".into(),
                pod_selector: palisade_model::LabelSelector::everything(),
                ingress: Some(vec![Rule {
                    peers: None,
                    ports: Some(vec![
                        named("http", Protocol::Tcp),
                        named("dns", Protocol::Udp),
                        named("main", Protocol::Tcp),
                        named("app", Protocol::Tcp),
                        named("api", Protocol::Udp),
                        named("svc", Protocol::Sctp),
                    ]),
                }]),
                egress: None,
                staged: false,
            });
        }
        let engine = Engine::new(c.clone());
        agrees_with_oracle(&engine, &c, flows(&engine, seed ^ 0x77, 300))?;
    }

    /// Adding a NetworkPolicy never removes an allowed ingress to a pod that
    /// was already isolated for ingress (policies only add allows).
    #[test]
    fn adding_a_policy_never_revokes_an_isolated_pods_allow(seed in any::<u64>(), pods in 2usize..25, policies in 1usize..10) {
        let full = synth::cluster(&Params::sized(seed, 0, pods, policies));
        let mut fewer = full.clone();
        fewer.policies.pop();
        let before = Engine::new(fewer);
        let after = Engine::new(full);
        for f in flows(&before, seed, 300) {
            let isolated = before.outcome(palisade_engine::Direction::Ingress, &f).decision != palisade_engine::Decision::NotIsolated
                && matches!(f.dst, Endpoint::Pod(_));
            let was = before.outcome(palisade_engine::Direction::Ingress, &f);
            if isolated && was.allowed() {
                prop_assert!(after.outcome(palisade_engine::Direction::Ingress, &f).allowed(), "{:?}", f);
            }
        }
    }

    /// A pod selected by no policy accepts everything.
    #[test]
    fn unselected_pods_accept_everything(seed in any::<u64>(), pods in 2usize..25, policies in 0usize..10) {
        let c = synth::cluster(&Params::sized(seed, 0, pods, policies));
        let engine = Engine::new(c.clone());
        for f in flows(&engine, seed, 300) {
            if let Endpoint::Pod(d) = f.dst {
                let p = &c.pods[d];
                let selected = c.policies.iter().any(|np| np.ingress.is_some() && np.namespace == p.namespace && np.pod_selector.matches(&p.labels));
                if !selected {
                    prop_assert!(engine.outcome(palisade_engine::Direction::Ingress, &f).allowed());
                }
            }
        }
    }

    /// Admin policies whose every rule passes change nothing: with no
    /// baseline, verdicts equal the NetworkPolicy-only verdicts.
    #[test]
    fn pass_only_admin_policies_equal_networkpolicy_only(seed in any::<u64>(), pods in 2usize..25, policies in 0usize..10) {
        let plain = synth::cluster(&Params::sized(seed, 0, pods, policies));
        let mut passing = synth::cluster(&Params::sized(seed, 3, pods, policies));
        passing.admin_policies.retain(|a| a.tier == AdminTier::Admin);
        for a in &mut passing.admin_policies {
            for r in a.ingress.iter_mut().chain(a.egress.iter_mut()) {
                r.action = AdminAction::Pass;
            }
        }
        let mut plain_with_same_pods = passing.clone();
        plain_with_same_pods.admin_policies.clear();
        let _ = plain;
        let a = Engine::new(plain_with_same_pods);
        let b = Engine::new(passing);
        for f in flows(&a, seed, 300) {
            prop_assert_eq!(a.allowed(&f), b.allowed(&f));
        }
    }

    /// Pods of one identity are indistinguishable: same row, same column.
    #[test]
    fn identity_members_are_indistinguishable(seed in any::<u64>(), pods in 2usize..40, policies in 0usize..12, admin in 0usize..3) {
        let engine = Engine::new(synth::cluster(&Params::sized(seed, admin, pods, policies)));
        let idx = engine.index();
        let reps: Vec<usize> = idx.identities().iter().map(|i| i.members[0].index()).collect();
        for id in idx.identities() {
            let first = id.members[0].index();
            for m in id.members[1..].iter().map(|m| m.index()) {
                for &other in &reps {
                    for (port, proto) in PORTS {
                        let a = engine.flow(Endpoint::Pod(first), Endpoint::Pod(other), proto, port);
                        let b = engine.flow(Endpoint::Pod(m), Endpoint::Pod(other), proto, port);
                        if let (Ok(a), Ok(b)) = (a, b) {
                            prop_assert_eq!(engine.allowed(&a), engine.allowed(&b));
                        }
                        let a = engine.flow(Endpoint::Pod(other), Endpoint::Pod(first), proto, port);
                        let b = engine.flow(Endpoint::Pod(other), Endpoint::Pod(m), proto, port);
                        if let (Ok(a), Ok(b)) = (a, b) {
                            prop_assert_eq!(engine.allowed(&a), engine.allowed(&b));
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// `identity_for` places every pod of the cluster in its own identity.
    #[test]
    fn identity_for_finds_each_pods_identity(seed in any::<u64>(), pods in 1usize..40, policies in 0usize..12, admin in 0usize..3) {
        let engine = Engine::new(synth::cluster(&Params::sized(seed, admin, pods, policies)));
        for (i, pod) in engine.cluster().pods.iter().enumerate() {
            prop_assert_eq!(engine.index().identity_for(pod), engine.index().identity_of(PodId::new(i)));
        }
        let mut stranger = engine.cluster().pods[0].clone();
        stranger.labels.insert("unseen".into(), "label".into());
        prop_assert_eq!(engine.index().identity_for(&stranger), None);
    }
}
