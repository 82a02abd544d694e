//! `generate` against its definition, on random clusters and random
//! observed connections: the generated policies (in place of the
//! cluster's) allow every observed connection, and between workloads, and
//! between workloads and outside addresses, allow exactly what was
//! observed on every probed protocol and port, plus DNS to the DNS pods;
//! every workload's selector selects exactly its pods; and the engine's
//! own check agrees.

use std::collections::BTreeSet;
use std::net::IpAddr;

use palisade_bench::synth::{self, Params, Rng};
use palisade_engine::generate::{self, Observed};
use palisade_engine::{Endpoint, Engine, PodId};
use palisade_model::{
    Cluster, ContainerPort, Labels, Peer, Pod, PodPhase, PodSource, Protocol, Workload,
    WorkloadKind,
};
use proptest::prelude::*;

const PORTS: [u16; 7] = [53, 80, 81, 443, 8080, 9000, 65535];
const OUTSIDE: [&str; 4] = ["203.0.113.7", "203.0.113.8", "2001:db8::5", "198.51.100.1"];

/// synth's pods as workloads' pods: apps become Deployments (with a
/// rollout's two pod-template-hash values) or StatefulSets (with a
/// per-pod name label), plus a template with no live pod and the DNS pod.
fn workload_cluster(seed: u64, pods: usize, policies: usize) -> Cluster {
    let mut c = synth::cluster(&Params::sized(seed, 0, pods, policies));
    let mut r = Rng::new(seed ^ 0x5eed);
    for p in &mut c.pods {
        let app = p.labels["app"].clone();
        let stateful = app.ends_with('1');
        let (kind, volatile) = if stateful {
            (
                WorkloadKind::StatefulSet,
                ("statefulset.kubernetes.io/pod-name", p.name.clone()),
            )
        } else {
            (
                WorkloadKind::Deployment,
                ("pod-template-hash", format!("h{}", r.below(2))),
            )
        };
        p.labels.insert(volatile.0.into(), volatile.1);
        p.source = PodSource::Live {
            phase: PodPhase::Running,
            owner: Some(Workload { kind, name: app }),
        };
    }
    let labels = |kv: &[(&str, &str)]| -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    c.pods.push(Pod::template(
        WorkloadKind::Deployment,
        "ns0".into(),
        "idle".into(),
        labels(&[("app", "idle")]),
        false,
        vec![ContainerPort {
            name: Some("http".into()),
            port: 80,
            protocol: Protocol::Tcp,
        }],
    ));
    c.pods.push(Pod {
        namespace: "kube-system".into(),
        name: "coredns-1".into(),
        labels: labels(&[("k8s-app", "kube-dns")]),
        ips: vec!["10.255.0.2".parse().unwrap()],
        node: Some("node0".into()),
        host_network: false,
        source: PodSource::Live {
            phase: PodPhase::Running,
            owner: Some(Workload {
                kind: WorkloadKind::Deployment,
                name: "coredns".into(),
            }),
        },
        ports: vec![],
    });
    c.complete_namespaces();
    c
}

fn endpoints(engine: &Engine) -> Vec<Endpoint> {
    let mut v: Vec<Endpoint> = (0..engine.cluster().pods.len())
        .filter(|&i| engine.index().identity_of(PodId::new(i)).is_some())
        .map(Endpoint::Pod)
        .collect();
    v.extend(OUTSIDE.iter().map(|a| Endpoint::Ip(a.parse().unwrap())));
    v
}

fn observed(engine: &Engine, n: usize, seed: u64) -> Vec<Observed> {
    let eps = endpoints(engine);
    let mut r = Rng::new(seed);
    let mut out = Vec::new();
    for _ in 0..n {
        let (src, dst) = (eps[r.below(eps.len())], eps[r.below(eps.len())]);
        if matches!((src, dst), (Endpoint::Ip(_), Endpoint::Ip(_))) || src == dst {
            continue;
        }
        let protocol = Protocol::ALL[r.below(3)];
        let port = PORTS[r.below(PORTS.len())];
        if engine.flow(src, dst, protocol, port).is_ok() {
            out.push(Observed {
                src,
                dst,
                protocol,
                port,
            });
        }
    }
    out
}

/// Who a side is for the definition: a workload (the union generate made
/// for it) or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    W(usize),
    A(IpAddr),
}

fn who(of: &[Option<usize>], e: Endpoint) -> Who {
    match e {
        Endpoint::Pod(i) => Who::W(of[i].expect("every endpoint pod has a workload")),
        Endpoint::Ip(ip) => Who::A(ip),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_policies_allow_exactly_what_was_observed(
        seed in any::<u64>(),
        pods in 2usize..16,
        policies in 0usize..6,
        flows in 0usize..40,
    ) {
        let engine = Engine::new(workload_cluster(seed, pods, policies));
        let obs = observed(&engine, flows, seed);
        let g = generate::generate(&engine, &obs);
        let checked = generate::with_generated(&engine, &g);
        let pods = &engine.cluster().pods;

        // Each selector selects exactly its workloads' pods in its namespace,
        // and a workload is never split.
        let mut of = vec![None; pods.len()];
        for (w, wl) in g.workloads.iter().enumerate() {
            for (i, p) in pods.iter().enumerate() {
                if p.namespace == wl.namespace && engine.index().identity_of(PodId::new(i)).is_some() {
                    prop_assert_eq!(wl.selector.matches(&p.labels), wl.pods.contains(&i), "{} {}", wl.display(), p.key());
                }
            }
            for &i in &wl.pods {
                of[i] = Some(w);
            }
        }
        // No selector names a label that changes with a rollout or per pod.
        for p in &g.policies {
            let peers = p.ingress.iter().chain(&p.egress).flatten().flat_map(|r| r.peers.iter().flatten());
            let selectors = std::iter::once(&p.pod_selector).chain(peers.filter_map(|peer| match peer {
                Peer::Pods { pods, .. } => Some(pods),
                Peer::IpBlock(_) => None,
            }));
            for sel in selectors {
                for r in &sel.requirements {
                    prop_assert!(!generate::VOLATILE_LABELS.contains(&r.key()), "{}: {}", p.key(), sel);
                }
            }
        }
        for (i, p) in pods.iter().enumerate() {
            for (j, q) in pods.iter().enumerate() {
                if p.namespace == q.namespace && p.workload().is_some() && p.workload() == q.workload() {
                    prop_assert_eq!(of[i], of[j], "{} {}", p.key(), q.key());
                }
            }
        }

        let seen: BTreeSet<(Who, Who, Protocol, u16)> = obs
            .iter()
            .map(|o| (who(&of, o.src), who(&of, o.dst), o.protocol, o.port))
            .collect();
        // Every pod may ask the DNS pods; addresses may not.
        let dns = |s: Who, d: Who, protocol: Protocol, port: u16| {
            matches!(s, Who::W(_))
                && matches!(d, Who::W(w) if g.workloads[w].base_name == "coredns")
                && port == 53
                && protocol != Protocol::Sctp
        };
        for o in &obs {
            let f = checked.flow(o.src, o.dst, o.protocol, o.port).unwrap();
            prop_assert!(checked.allowed(&f), "observed {:?} denied: {:?}", o, checked.verdict(&f).reasons);
        }
        let eps = endpoints(&engine);
        for &s in &eps {
            for &d in &eps {
                if s == d || matches!((s, d), (Endpoint::Ip(_), Endpoint::Ip(_))) {
                    continue;
                }
                for protocol in Protocol::ALL {
                    for port in PORTS.iter().copied().chain([1, 52, 54, 8081]) {
                        let Ok(f) = checked.flow(s, d, protocol, port) else { continue };
                        let (ws, wd) = (who(&of, s), who(&of, d));
                        let expected = seen.contains(&(ws, wd, protocol, port)) || dns(ws, wd, protocol, port);
                        prop_assert_eq!(
                            checked.allowed(&f),
                            expected,
                            "{} => {} {} {}: {:?}",
                            checked.who(s), checked.who(d), protocol, port, checked.verdict(&f).reasons
                        );
                    }
                }
            }
        }
        let c = generate::check(&checked, &g, &obs);
        prop_assert!(c.passed(), "{}\n{:?}\n{:?}", c.summary(), c.not_allowed, c.beyond);
    }
}

/// The check is no rubber stamp: a set widened by one allow-all rule, or
/// narrowed by dropping every rule, fails it, naming what is wrong.
#[test]
fn the_check_fails_a_widened_or_a_narrowed_set() {
    let engine = Engine::new(workload_cluster(7, 12, 0));
    let obs = observed(&engine, 30, 7);
    assert!(!obs.is_empty());
    let g = generate::generate(&engine, &obs);
    let c = generate::check(&generate::with_generated(&engine, &g), &g, &obs);
    assert!(c.passed(), "{c:?}");
    assert_eq!(c.observed, obs.iter().collect::<BTreeSet<_>>().len());

    let mut wide = g.clone();
    let victim = wide
        .policies
        .iter_mut()
        .find(|p| !p.name.starts_with("coredns"))
        .unwrap();
    victim
        .ingress
        .get_or_insert_with(Vec::new)
        .push(palisade_model::Rule {
            peers: None,
            ports: None,
        });
    let c = generate::check(&generate::with_generated(&engine, &wide), &wide, &obs);
    assert!(
        !c.passed() && c.not_allowed.is_empty() && !c.beyond.is_empty(),
        "{c:?}"
    );
    assert!(
        c.summary().starts_with("check failed: 0 of "),
        "{}",
        c.summary()
    );

    let mut narrow = g.clone();
    for p in &mut narrow.policies {
        p.ingress = Some(Vec::new());
        p.egress = Some(Vec::new());
    }
    let c = generate::check(&generate::with_generated(&engine, &narrow), &narrow, &obs);
    assert_eq!(c.not_allowed.len(), c.observed, "{c:?}");
    assert!(c.beyond.is_empty(), "{c:?}");
}
