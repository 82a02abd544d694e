//! Staged policies: enforced nowhere by `Engine::new`, enforced by
//! `Engine::with_staged` exactly as if they were ordinary policies, and
//! compared connection by connection with the staged policy to blame.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_bench::synth::{self, Params, Rng};
use palisade_engine::flowlog::StagedVerdict;
use palisade_engine::staged::{
    compare, effects, staged_policies, Difference, Effects, Observed, Place, PolicyEffect,
};
use palisade_engine::{Direction, Endpoint, Engine, Error, Flow};
use palisade_model::{Cluster, Protocol};
use proptest::prelude::*;

const SHOP: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: shop, labels: {app: cache}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.3, podIPs: [{ip: 10.0.0.3}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-egress
  namespace: shop
  annotations: {palisade.dev/staged: "true"}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-lockdown
  namespace: shop
  annotations: {palisade.dev/staged: "true"}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-metrics
  namespace: shop
  annotations: {palisade.dev/staged: "true"}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - ports: [{port: 9090}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: lockdown}
spec:
  priority: 50
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: cache}}}}
  ingress:
  - name: deny-all
    action: Deny
    from: [{namespaces: {}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: exempt
  annotations: {palisade.dev/staged: "true"}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: cache}}}}
  ingress:
  - name: pass-web
    action: Pass
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: deny-dns
  annotations: {palisade.dev/staged: "true"}
spec:
  priority: 20
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
  egress:
  - name: no-dns
    action: Deny
    to: [{networks: [10.0.0.53/32]}]
    ports: [{portNumber: {protocol: UDP, port: 53}}]
"#;

fn shop() -> Cluster {
    let loaded = palisade_k8s::load(&[("shop.yaml".to_string(), SHOP.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded.cluster
}

fn ip(s: &str) -> Place<'static> {
    Place::Addr(s.parse().unwrap())
}

fn obs<'a>(
    src: Place<'a>,
    dst: Place<'a>,
    proto: Protocol,
    port: u16,
    dir: Direction,
) -> Observed<'a> {
    Observed {
        src,
        dst,
        protocol: proto,
        port,
        direction: dir,
    }
}

fn observed() -> Vec<Observed<'static>> {
    use Direction::{Egress, Ingress};
    use Protocol::{Tcp, Udp};
    vec![
        obs(ip("10.0.0.1"), ip("203.0.113.9"), Tcp, 443, Egress),
        obs(ip("10.0.0.1"), ip("10.0.0.2"), Tcp, 5432, Egress),
        obs(ip("10.0.0.1"), ip("10.0.0.2"), Tcp, 5432, Ingress),
        obs(ip("10.0.0.1"), ip("10.0.0.53"), Udp, 53, Egress),
        obs(ip("203.0.113.9"), ip("10.0.0.2"), Tcp, 9090, Ingress),
        obs(ip("10.0.0.1"), ip("10.0.0.3"), Tcp, 80, Ingress),
        obs(ip("10.0.0.2"), ip("10.0.0.3"), Tcp, 80, Ingress),
        obs(
            Place::Name("shop/web"),
            Place::Name("shop/cache"),
            Tcp,
            80,
            Egress,
        ),
    ]
}

fn diff(verdict: StagedVerdict, policy: &str) -> Option<Difference> {
    Some(Difference {
        verdict,
        policy: Some(policy.to_string()),
    })
}

#[test]
fn the_enforced_engine_holds_no_staged_policy() {
    let e = Engine::new(shop());
    let names: Vec<String> = e.cluster().policies.iter().map(|p| p.key()).collect();
    assert_eq!(names, ["shop/db-from-web"]);
    let admin: Vec<String> = e.cluster().admin_policies.iter().map(|p| p.key()).collect();
    assert_eq!(admin, ["AdminNetworkPolicy/lockdown"]);
    assert!(staged_policies(&e).is_empty());
    assert_eq!(
        staged_policies(&Engine::with_staged(shop())),
        [
            "AdminNetworkPolicy/deny-dns",
            "AdminNetworkPolicy/exempt",
            "shop/db-metrics",
            "shop/web-egress",
            "shop/web-lockdown"
        ]
    );
}

#[test]
fn each_difference_names_the_staged_policy_that_makes_it() {
    use StagedVerdict::{WouldAllow, WouldDeny};
    let (e, s) = (Engine::new(shop()), Engine::with_staged(shop()));
    let got: Vec<Option<Difference>> = observed()
        .iter()
        .map(|o| compare(&e, &s, o.src, o.dst, o.protocol, o.port, o.direction).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            // Isolated for egress by two staged policies: the first by name.
            diff(WouldDeny, "shop/web-egress"),
            None,
            None,
            // The deciding admin rule, although isolation would deny too.
            diff(WouldDeny, "AdminNetworkPolicy/deny-dns"),
            diff(WouldAllow, "shop/db-metrics"),
            // Passed on by a staged admin rule, then not isolated.
            diff(WouldAllow, "AdminNetworkPolicy/exempt"),
            None,
            diff(WouldDeny, "shop/web-egress"),
        ]
    );
}

#[test]
fn effects_are_grouped_by_staged_policy() {
    let (e, s) = (Engine::new(shop()), Engine::with_staged(shop()));
    let got = effects(&e, &s, &observed());
    let effect = |deny: &[usize], allow: &[usize]| PolicyEffect {
        would_deny: deny.to_vec(),
        would_allow: allow.to_vec(),
    };
    let by_policy: BTreeMap<String, PolicyEffect> = [
        ("AdminNetworkPolicy/deny-dns", effect(&[3], &[])),
        ("AdminNetworkPolicy/exempt", effect(&[], &[5])),
        ("shop/db-metrics", effect(&[], &[4])),
        ("shop/web-egress", effect(&[0, 7], &[])),
        ("shop/web-lockdown", effect(&[], &[])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got.by_policy, by_policy);
    assert_eq!(got.unattributed, Vec::<usize>::new());
    assert_eq!(got.flows.len(), 8);
    assert_eq!(got.flows[1], Ok(None));
}

#[test]
fn an_unknown_name_is_an_error_for_that_flow_only() {
    let (e, s) = (Engine::new(shop()), Engine::with_staged(shop()));
    let list = [
        obs(
            Place::Name("shop/nope"),
            ip("10.0.0.2"),
            Protocol::Tcp,
            1,
            Direction::Egress,
        ),
        obs(
            ip("10.0.0.1"),
            ip("203.0.113.9"),
            Protocol::Tcp,
            443,
            Direction::Egress,
        ),
    ];
    let got = effects(&e, &s, &list);
    assert_eq!(got.flows[0], Err(Error::PodNotFound("shop/nope".into())));
    assert_eq!(got.by_policy["shop/web-egress"].would_deny, [1]);
}

#[test]
fn without_staged_policies_nothing_differs() {
    let mut c = shop();
    c.policies.retain(|p| !p.staged);
    c.admin_policies.retain(|p| !p.staged);
    let (e, s) = (Engine::new(c.clone()), Engine::with_staged(c));
    let got = effects(&e, &s, &observed());
    assert_eq!(
        got,
        Effects {
            flows: vec![Ok(None); 8],
            ..Effects::default()
        }
    );
}

/// Marks about a third of the policies of each kind staged.
fn stage_some(c: &mut Cluster, seed: u64) {
    let mut r = Rng::new(seed);
    for p in &mut c.policies {
        p.staged = r.chance(35);
    }
    for p in &mut c.admin_policies {
        p.staged = r.chance(35);
    }
}

fn cleared(c: &Cluster) -> Cluster {
    let mut c = c.clone();
    for p in &mut c.policies {
        p.staged = false;
    }
    for p in &mut c.admin_policies {
        p.staged = false;
    }
    c
}

const PORTS: [(u16, Protocol); 5] = [
    (80, Protocol::Tcp),
    (443, Protocol::Tcp),
    (53, Protocol::Udp),
    (5432, Protocol::Tcp),
    (9090, Protocol::Sctp),
];

const OUTSIDE: [&str; 3] = ["203.0.113.9", "2001:db8::1", "10.0.0.77"];

/// Flows between every pair of endpoints (pods and outside addresses), in
/// both families, on a few ports.
fn all_flows(e: &Engine) -> Vec<Flow> {
    let mut ends: Vec<Endpoint> = (0..e.cluster().pods.len()).map(Endpoint::Pod).collect();
    ends.extend(
        OUTSIDE
            .iter()
            .map(|s| e.endpoint_for_ip(s.parse().unwrap())),
    );
    let mut out = Vec::new();
    for &s in &ends {
        for &d in &ends {
            for &(port, proto) in &PORTS {
                for v4 in [true, false] {
                    out.extend(e.flow_in_family(s, d, proto, port, v4));
                }
            }
        }
    }
    out
}

/// The addresses flows come from in packets: pods' and outside ones.
fn addresses(c: &Cluster) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = c.pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
    out.extend(OUTSIDE.iter().map(|s| s.parse::<IpAddr>().unwrap()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A staged policy changes no verdict and no reason of `Engine::new`:
    /// it is the engine of the cluster without them.
    #[test]
    fn staged_policies_change_no_enforced_verdict(seed in any::<u64>(), admin in 0usize..4, pods in 2usize..14, policies in 0usize..10) {
        let mut c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        stage_some(&mut c, seed ^ 0x5a);
        let mut without = c.clone();
        without.policies.retain(|p| !p.staged);
        without.admin_policies.retain(|p| !p.staged);
        let (e, base) = (Engine::new(c), Engine::new(without));
        prop_assert_eq!(e.cluster(), base.cluster());
        for f in all_flows(&base) {
            prop_assert_eq!(e.explain(&f), base.explain(&f));
            prop_assert_eq!(e.verdict(&f), base.verdict(&f));
        }
    }

    /// `with_staged` enforces the staged policies exactly as ordinary ones.
    #[test]
    fn with_staged_equals_the_cluster_with_the_flags_cleared(seed in any::<u64>(), admin in 0usize..4, pods in 2usize..14, policies in 0usize..10) {
        let mut c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        stage_some(&mut c, seed ^ 0xa5);
        let (s, plain) = (Engine::with_staged(c.clone()), Engine::new(cleared(&c)));
        for f in all_flows(&plain) {
            prop_assert_eq!(s.explain(&f), plain.explain(&f));
            prop_assert_eq!(s.verdict(&f), plain.verdict(&f));
        }
    }

    /// `compare` reports exactly the directions whose verdict differs, the
    /// right way round, and always names one of the staged policies.
    #[test]
    fn compare_reports_exactly_the_directions_that_differ(seed in any::<u64>(), admin in 0usize..4, pods in 2usize..12, policies in 0usize..10) {
        let mut c = synth::cluster(&Params::sized(seed, admin, pods, policies));
        stage_some(&mut c, seed ^ 0x3c);
        let (e, s) = (Engine::new(c.clone()), Engine::with_staged(c.clone()));
        let names = staged_policies(&s);
        let addrs = addresses(&c);
        for &a in &addrs {
            for &b in addrs.iter().filter(|b| b.is_ipv4() == a.is_ipv4()) {
                for &(port, proto) in &PORTS {
                    for dir in [Direction::Egress, Direction::Ingress] {
                        let got = compare(&e, &s, Place::Addr(a), Place::Addr(b), proto, port, dir).unwrap();
                        let before = e.allowed_in(dir, &e.flow_between_addresses(a, b, proto, port).unwrap());
                        let after = s.allowed_in(dir, &s.flow_between_addresses(a, b, proto, port).unwrap());
                        match got {
                            None => prop_assert_eq!(before, after),
                            Some(d) => {
                                prop_assert_ne!(before, after);
                                prop_assert_eq!(d.verdict == StagedVerdict::WouldAllow, after);
                                let p = d.policy.expect("a staged policy to blame");
                                prop_assert!(names.contains(&p), "{} not staged", p);
                            }
                        }
                    }
                }
            }
        }
    }
}
