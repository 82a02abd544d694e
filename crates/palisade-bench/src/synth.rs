//! A deterministic synthetic cluster generator, shared by benchmarks and
//! property tests, so that both exercise the same shapes: namespaces with
//! team labels, apps with tiers, named ports, dual-stack pods on several
//! nodes, and policies using every peer and port form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use palisade_engine::{Endpoint, Engine, Flow};
use palisade_model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject, AdminTier, Cluster,
    ContainerPort, IpBlock, LabelSelector, Labels, Namespace, NamespaceScope, NetworkPolicy, Node,
    Peer, Pod, PodPhase, PodSource, PortSpec, Protocol, Requirement, Rule, NAMESPACE_NAME_LABEL,
};

#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub namespaces: usize,
    pub apps_per_namespace: usize,
    pub pods: usize,
    pub nodes: usize,
    pub policies: usize,
    /// AdminNetworkPolicies (a BaselineAdminNetworkPolicy is added when > 0).
    pub admin_policies: usize,
    /// Whether pods also get an IPv6 address.
    pub dual_stack: bool,
}

impl Params {
    /// The benchmark shape: 10,000 pods and 1,000 policies.
    pub fn large() -> Params {
        Params {
            seed: 1,
            namespaces: 100,
            apps_per_namespace: 8,
            pods: 10_000,
            nodes: 20,
            policies: 1_000,
            admin_policies: 0,
            dual_stack: true,
        }
    }

    pub fn small(seed: u64) -> Params {
        Params::sized(seed, 0, 12, 5)
    }

    /// The property tests' shape: three namespaces of three apps on two
    /// dual-stack nodes, with the counts the test draws.
    pub fn sized(seed: u64, admin_policies: usize, pods: usize, policies: usize) -> Params {
        Params {
            seed,
            namespaces: 3,
            apps_per_namespace: 3,
            pods,
            nodes: 2,
            policies,
            admin_policies,
            dual_stack: true,
        }
    }
}

/// xorshift64*: deterministic, dependency-free, good enough for shapes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

const TEAMS: [&str; 4] = ["red", "blue", "green", "ops"];
const TIERS: [&str; 3] = ["web", "api", "db"];

fn labels(kv: &[(&str, String)]) -> Labels {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

pub fn pod_ipv4(i: usize) -> IpAddr {
    let i = i as u32 + 2;
    IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8))
}

pub fn pod_ipv6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0,
        0,
        0,
        0,
        0,
        (i >> 16) as u16,
        i as u16 + 2,
    ))
}

fn ns_name(i: usize) -> String {
    format!("ns{i}")
}

fn app_selector(r: &mut Rng, apps: usize) -> LabelSelector {
    match r.below(5) {
        0 => LabelSelector::everything(),
        1 => LabelSelector::new(vec![Requirement::In {
            key: "tier".into(),
            values: vec![TIERS[r.below(3)].into(), TIERS[r.below(3)].into()],
        }]),
        2 => LabelSelector::new(vec![Requirement::NotIn {
            key: "app".into(),
            values: vec![format!("app{}", r.below(apps))],
        }]),
        _ => LabelSelector::from_labels([("app", format!("app{}", r.below(apps)).as_str())]),
    }
}

fn peer(r: &mut Rng, p: &Params, own_ns: &str) -> Peer {
    match r.below(6) {
        0 => Peer::Pods {
            namespaces: NamespaceScope::Selector(LabelSelector::from_labels([(
                "team",
                TEAMS[r.below(TEAMS.len())],
            )])),
            pods: app_selector(r, p.apps_per_namespace),
        },
        1 => Peer::Pods {
            namespaces: NamespaceScope::Selector(LabelSelector::everything()),
            pods: LabelSelector::from_labels([("tier", TIERS[r.below(3)])]),
        },
        2 => Peer::IpBlock(match r.below(4) {
            // The shapes users write: the whole pod range, everything but
            // private ranges, one partner's network, a node's /24.
            0 => IpBlock {
                cidr: "10.0.0.0/8".parse().unwrap(),
                except: vec![],
            },
            1 => IpBlock {
                cidr: "0.0.0.0/0".parse().unwrap(),
                except: vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "172.16.0.0/12".parse().unwrap(),
                    "192.168.0.0/16".parse().unwrap(),
                ],
            },
            2 => IpBlock {
                cidr: format!("203.0.{}.0/24", r.below(256)).parse().unwrap(),
                except: vec![],
            },
            _ => IpBlock {
                cidr: "192.168.0.0/24".parse().unwrap(),
                except: vec![format!("192.168.0.{}/32", 1 + r.below(p.nodes.max(1)))
                    .parse()
                    .unwrap()],
            },
        }),
        _ => Peer::Pods {
            namespaces: NamespaceScope::Own(own_ns.to_string()),
            pods: app_selector(r, p.apps_per_namespace),
        },
    }
}

fn port(r: &mut Rng) -> PortSpec {
    match r.below(6) {
        0 => PortSpec::Named {
            protocol: Protocol::Tcp,
            name: "http".into(),
        },
        1 => PortSpec::Range {
            protocol: Protocol::Tcp,
            start: 8000,
            end: 8100,
        },
        2 => PortSpec::Range {
            protocol: Protocol::Udp,
            start: 53,
            end: 53,
        },
        3 => PortSpec::AllPorts(Protocol::Sctp),
        _ => {
            let port = [80, 443, 8080, 9090][r.below(4)];
            PortSpec::Range {
                protocol: Protocol::Tcp,
                start: port,
                end: port,
            }
        }
    }
}

fn rules(r: &mut Rng, p: &Params, ns: &str) -> Vec<Rule> {
    (0..r.below(3))
        .map(|_| Rule {
            peers: if r.chance(15) {
                None
            } else {
                Some((0..1 + r.below(2)).map(|_| peer(r, p, ns)).collect())
            },
            ports: if r.chance(20) {
                None
            } else {
                Some((0..1 + r.below(2)).map(|_| port(r)).collect())
            },
        })
        .collect()
}

pub fn cluster(p: &Params) -> Cluster {
    let mut r = Rng::new(p.seed);
    let mut c = Cluster::default();
    for i in 0..p.namespaces {
        let name = ns_name(i);
        let mut l = labels(&[("team", TEAMS[i % TEAMS.len()].to_string())]);
        l.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
        c.namespaces
            .insert(name.clone(), Namespace { name, labels: l });
    }
    for n in 0..p.nodes {
        c.nodes.push(Node {
            name: format!("node{n}"),
            labels: labels(&[("zone", format!("z{}", n % 3))]),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, n as u8 + 1))],
        });
    }
    for i in 0..p.pods {
        let ns = ns_name(i % p.namespaces.max(1));
        let app = r.below(p.apps_per_namespace);
        let mut ips = vec![pod_ipv4(i)];
        if p.dual_stack {
            ips.push(pod_ipv6(i));
        }
        let mut ports = vec![ContainerPort {
            name: Some("http".into()),
            port: [80, 8080][app % 2],
            protocol: Protocol::Tcp,
        }];
        if app.is_multiple_of(3) {
            ports.push(ContainerPort {
                name: Some("dns".into()),
                port: 53,
                protocol: Protocol::Udp,
            });
        }
        c.pods.push(Pod {
            namespace: ns,
            name: format!("pod{i}"),
            labels: labels(&[
                ("app", format!("app{app}")),
                ("tier", TIERS[app % 3].to_string()),
            ]),
            ips,
            node: (p.nodes > 0).then(|| format!("node{}", i % p.nodes)),
            host_network: false,
            source: PodSource::Live {
                phase: PodPhase::Running,
                owner: None,
            },
            ports,
        });
    }
    for i in 0..p.policies {
        let ns = ns_name(r.below(p.namespaces.max(1)));
        let selector = if r.chance(10) {
            LabelSelector::everything()
        } else {
            app_selector(&mut r, p.apps_per_namespace)
        };
        let (ingress, egress) = match r.below(4) {
            0 => (Some(rules(&mut r, p, &ns)), None),
            1 => (None, Some(rules(&mut r, p, &ns))),
            _ => (Some(rules(&mut r, p, &ns)), Some(rules(&mut r, p, &ns))),
        };
        c.policies.push(NetworkPolicy {
            namespace: ns,
            name: format!("pol{i}"),
            pod_selector: selector,
            ingress,
            egress,
            staged: false,
        });
    }
    for i in 0..p.admin_policies {
        c.admin_policies
            .push(admin_policy(&mut r, p, i, AdminTier::Admin));
    }
    if p.admin_policies > 0 {
        let mut b = admin_policy(&mut r, p, 0, AdminTier::Baseline);
        b.name = "default".into();
        c.admin_policies.push(b);
    }
    c.complete_namespaces();
    c
}

fn admin_policy(r: &mut Rng, p: &Params, i: usize, tier: AdminTier) -> AdminPolicy {
    let team = |r: &mut Rng| LabelSelector::from_labels([("team", TEAMS[r.below(TEAMS.len())])]);
    let actions: &[AdminAction] = match tier {
        AdminTier::Admin => &[AdminAction::Allow, AdminAction::Deny, AdminAction::Pass],
        AdminTier::Baseline => &[AdminAction::Allow, AdminAction::Deny],
    };
    let rule = |r: &mut Rng, egress: bool, k: usize| AdminRule {
        name: format!("rule{k}"),
        action: actions[r.below(actions.len())],
        peers: vec![match r.below(if egress { 4 } else { 2 }) {
            0 => AdminPeer::Namespaces(team(r)),
            1 => AdminPeer::Pods {
                namespaces: team(r),
                pods: app_selector(r, p.apps_per_namespace),
            },
            2 => AdminPeer::Networks(vec![if r.chance(50) {
                "169.254.169.254/32".parse::<IpNet>().unwrap()
            } else {
                format!("203.0.{}.0/24", r.below(256))
                    .parse::<IpNet>()
                    .unwrap()
            }]),
            _ => AdminPeer::Nodes(LabelSelector::from_labels([("zone", "z1")])),
        }],
        ports: match r.below(4) {
            0 => None,
            1 => Some(vec![AdminPort::Named("http".into())]),
            2 => Some(vec![AdminPort::Range {
                protocol: Protocol::Tcp,
                start: 8000,
                end: 8100,
            }]),
            _ => Some(vec![AdminPort::Number {
                protocol: Protocol::Tcp,
                port: 80,
            }]),
        },
    };
    let ingress = (0..1 + r.below(3)).map(|k| rule(r, false, k)).collect();
    let egress = (0..r.below(3)).map(|k| rule(r, true, k)).collect();
    AdminPolicy {
        kind: match tier {
            AdminTier::Admin => "AdminNetworkPolicy".into(),
            AdminTier::Baseline => "BaselineAdminNetworkPolicy".into(),
        },
        name: format!("anp{i}"),
        tier,
        priority: match tier {
            AdminTier::Admin => (i * 7 % 1000) as u32,
            AdminTier::Baseline => 0,
        },
        subject: if r.chance(50) {
            AdminSubject::Namespaces(team(r))
        } else {
            AdminSubject::Pods {
                namespaces: LabelSelector::everything(),
                pods: app_selector(r, p.apps_per_namespace),
            }
        },
        ingress,
        egress,
        staged: false,
    }
}

/// The ports the benchmarks' flows use: the synthetic policies' common
/// ports, one of each protocol.
pub const BENCH_PORTS: [(u16, Protocol); 5] = [
    (80, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (443, Protocol::Tcp),
    (53, Protocol::Udp),
    (9000, Protocol::Sctp),
];

/// `n` random flows between endpoint pods of `engine`'s cluster over
/// [`BENCH_PORTS`], deterministic for a seed (fewer if the cluster has
/// almost no endpoint pods).
pub fn pod_flows(engine: &Engine, n: usize, seed: u64) -> Vec<Flow> {
    let mut r = Rng::new(seed);
    let pods = engine.cluster().pods.len();
    let idx = engine.index();
    let endpoint = |p: usize| idx.identity_of(palisade_engine::PodId::new(p)).is_some();
    let mut out = Vec::with_capacity(n);
    if pods == 0 {
        return out;
    }
    // Bounded: a cluster with too few usable pods yields fewer flows.
    for _ in 0..n.saturating_mul(100) {
        if out.len() == n {
            break;
        }
        let (s, d) = (r.below(pods), r.below(pods));
        let (port, proto) = BENCH_PORTS[r.below(BENCH_PORTS.len())];
        if !endpoint(s) || !endpoint(d) {
            continue;
        }
        let (s, d) = (Endpoint::Pod(s), Endpoint::Pod(d));
        if let Ok(f) = engine.flow(s, d, proto, port) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_flows_are_deterministic_pod_to_pod_flows() {
        let engine = Engine::new(cluster(&Params::small(3)));
        let a = pod_flows(&engine, 500, 9);
        assert_eq!(a.len(), 500);
        assert_eq!(a, pod_flows(&engine, 500, 9));
        assert_ne!(a, pod_flows(&engine, 500, 10));
        for f in &a {
            for e in [f.src, f.dst] {
                let Endpoint::Pod(p) = e else {
                    panic!("not a pod: {e:?}");
                };
                assert!(engine
                    .index()
                    .identity_of(palisade_engine::PodId::new(p))
                    .is_some());
            }
            assert!(BENCH_PORTS.contains(&(f.port, f.protocol)));
        }
        let none = Engine::new(Cluster::default());
        assert!(pod_flows(&none, 10, 1).is_empty());
    }
}
