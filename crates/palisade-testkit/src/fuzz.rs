//! Fuzz inputs read as a cluster and flows, shared by the fuzz targets
//! (`engine`, `compile`) and by the lab test that replays the `compile`
//! corpus through the kernel, so that one corpus entry is the same cluster
//! everywhere.
//!
//! An input that starts with `M` is `M`, a count `n`, `n` bytes that
//! choose flows, then manifests (what `tests/cases` holds, so that the
//! corpus is seeded from the cases). Any other input chooses a synthetic
//! cluster (`palisade_bench::synth`: the property tests' shapes), then edits
//! of it towards the edges the generator never reaches (ports at range
//! ends, address blocks around pod addresses, empty and catch-all rules,
//! host-network, finished and template pods, relabelled pods and
//! namespaces), then flows.

use std::net::IpAddr;

use arbitrary::Unstructured;
use palisade_bench::synth::{self, Params};
use palisade_engine::{Endpoint, Engine, Flow};
use palisade_model::{
    AdminAction, AdminPort, Cluster, ContainerPort, IpBlock, LabelSelector, NetworkPolicy, Peer,
    Pod, PodPhase, PodSource, PortSpec, Protocol, Rule, WorkloadKind,
};

/// How large a synthetic cluster may get.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub max_pods: usize,
    pub max_policies: usize,
    pub max_admin: usize,
}

/// The engine target's clusters: the property tests' sizes.
pub const ENGINE: Shape = Shape {
    max_pods: 24,
    max_policies: 12,
    max_admin: 3,
};

/// The compiler's clusters: small enough that the lab replays every corpus
/// entry with real packets in seconds.
pub const COMPILE: Shape = Shape {
    max_pods: 8,
    max_policies: 8,
    max_admin: 2,
};

/// A cluster and the flows to ask about.
#[derive(Clone, Debug)]
pub struct Input {
    pub cluster: Cluster,
    pub flows: Vec<FlowSpec>,
}

/// A flow by position, resolved against an engine by [`flows`].
#[derive(Clone, Copy, Debug)]
pub struct FlowSpec {
    src: Pick,
    dst: Pick,
    protocol: Protocol,
    port: u16,
    v4: bool,
}

#[derive(Clone, Copy, Debug)]
enum Pick {
    Pod(usize),
    Address(usize),
}

/// Outside addresses, node addresses and addresses next to pod ones.
const ADDRESSES: [&str; 10] = [
    "203.0.113.9",
    "203.0.113.10",
    "10.0.0.77",
    "10.0.0.1",
    "192.168.0.1",
    "192.168.0.2",
    "0.0.0.0",
    "2001:db8::1",
    "fd00::1:99",
    "fd00::1",
];

/// Ports at the edges of the ranges rules use, and of the port space.
const PORTS: [u16; 16] = [
    1, 2, 52, 53, 54, 79, 80, 81, 443, 7999, 8000, 8080, 8100, 8101, 65534, 65535,
];

const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
const PORT_NAMES: [&str; 4] = ["http", "dns", "web", "metrics"];
const LABEL_KEYS: [&str; 4] = ["app", "tier", "team", "x"];
const LABEL_VALUES: [&str; 7] = ["app0", "app1", "web", "db", "red", "blue", ""];

/// `(cidr, except)`: blocks that cut through pod, node and outside
/// addresses, in both families.
const BLOCKS: [(&str, &[&str]); 10] = [
    ("10.0.0.0/8", &[]),
    ("10.0.0.2/32", &[]),
    ("10.0.0.2/31", &["10.0.0.3/32"]),
    ("0.0.0.0/0", &["10.0.0.0/16"]),
    ("192.168.0.0/30", &["192.168.0.1/32"]),
    ("203.0.113.0/24", &["203.0.113.9/32"]),
    ("fd00::/64", &[]),
    ("fd00::2/128", &[]),
    ("::/0", &["fd00::/48"]),
    ("2001:db8::/32", &[]),
];

/// Reads `data` as a cluster and flows; `None` when it is not one (a
/// manifest with errors: the `decode` target covers those).
pub fn input(data: &[u8], shape: &Shape) -> Option<Input> {
    match data.split_first() {
        Some((b'M', rest)) => manifest_input(rest),
        _ => synthetic_input(data, shape).ok(),
    }
}

fn manifest_input(rest: &[u8]) -> Option<Input> {
    let (&n, rest) = rest.split_first()?;
    let (choices, manifest) = rest.split_at(usize::from(n).min(rest.len()));
    let loaded = palisade_k8s::load(&[("fuzz.yaml".to_string(), manifest.to_vec())]);
    if loaded.has_errors() {
        return None;
    }
    let mut u = Unstructured::new(choices);
    let flows = flow_specs(&mut u).ok()?;
    Some(Input {
        cluster: loaded.cluster,
        flows,
    })
}

fn synthetic_input(data: &[u8], shape: &Shape) -> arbitrary::Result<Input> {
    let mut u = Unstructured::new(data);
    let seed: u64 = u.arbitrary()?;
    let admin = u.int_in_range(0..=shape.max_admin)?;
    let pods = u.int_in_range(1..=shape.max_pods)?;
    let policies = u.int_in_range(0..=shape.max_policies)?;
    let mut cluster = synth::cluster(&Params::sized(seed, admin, pods, policies));
    for _ in 0..u.int_in_range(0..=12u8)? {
        edit(&mut u, &mut cluster)?;
    }
    cluster.complete_namespaces();
    let flows = flow_specs(&mut u)?;
    Ok(Input { cluster, flows })
}

fn flow_specs(u: &mut Unstructured) -> arbitrary::Result<Vec<FlowSpec>> {
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < 64 {
        let pick = |u: &mut Unstructured| -> arbitrary::Result<Pick> {
            let b: u8 = u.arbitrary()?;
            Ok(if b < 200 {
                Pick::Pod(usize::from(b))
            } else {
                Pick::Address(usize::from(b - 200))
            })
        };
        let (src, dst) = (pick(u)?, pick(u)?);
        let protocol = *u.choose(&PROTOCOLS)?;
        let port = if u.ratio(1, 3)? {
            u.arbitrary()?
        } else {
            *u.choose(&PORTS)?
        };
        let v4 = u.arbitrary()?;
        out.push(FlowSpec {
            src,
            dst,
            protocol,
            port,
            v4,
        });
    }
    Ok(out)
}

/// The flows of `specs` that `engine`'s cluster has (a pick past the last
/// pod wraps around; a pair without a common family is left out).
pub fn flows(engine: &Engine, specs: &[FlowSpec]) -> Vec<Flow> {
    let pods = engine.cluster().pods.len();
    let endpoint = |p: Pick| -> Option<Endpoint> {
        Some(match p {
            Pick::Pod(i) if pods > 0 => {
                let pod = &engine.cluster().pods[i % pods];
                if pod.is_endpoint() {
                    Endpoint::Pod(i % pods)
                } else {
                    // A finished pod sends nothing; its address may be
                    // anyone's.
                    engine.endpoint_for_ip(*pod.ips.first()?)
                }
            }
            Pick::Pod(i) | Pick::Address(i) => {
                let ip: IpAddr = ADDRESSES[i % ADDRESSES.len()].parse().ok()?;
                engine.endpoint_for_ip(ip)
            }
        })
    };
    specs
        .iter()
        .filter_map(|s| {
            let (src, dst) = (endpoint(s.src)?, endpoint(s.dst)?);
            engine.flow_in_family(src, dst, s.protocol, s.port, s.v4)
        })
        .collect()
}

fn port_spec(u: &mut Unstructured) -> arbitrary::Result<PortSpec> {
    let protocol = *u.choose(&PROTOCOLS)?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => PortSpec::AllPorts(protocol),
        1 => PortSpec::Named {
            protocol,
            name: (*u.choose(&PORT_NAMES)?).to_string(),
        },
        _ => {
            let (a, b) = (*u.choose(&PORTS)?, *u.choose(&PORTS)?);
            PortSpec::Range {
                protocol,
                start: a.min(b),
                end: a.max(b),
            }
        }
    })
}

fn block(u: &mut Unstructured) -> arbitrary::Result<Option<IpBlock>> {
    let (cidr, except) = *u.choose(&BLOCKS)?;
    let (Ok(cidr), Ok(except)) = (
        cidr.parse(),
        except.iter().map(|e| e.parse()).collect::<Result<_, _>>(),
    ) else {
        return Ok(None);
    };
    Ok(Some(IpBlock { cidr, except }))
}

/// One rule of some NetworkPolicy, if there is one.
fn some_rule<'a>(
    u: &mut Unstructured,
    policies: &'a mut [NetworkPolicy],
) -> arbitrary::Result<Option<&'a mut Rule>> {
    if policies.is_empty() {
        return Ok(None);
    }
    let i = u.choose_index(policies.len())?;
    let ingress = u.arbitrary()?;
    let p = &mut policies[i];
    let rules = if ingress {
        &mut p.ingress
    } else {
        &mut p.egress
    };
    let Some(rules) = rules.as_mut().filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let j = u.choose_index(rules.len())?;
    Ok(rules.get_mut(j))
}

fn edit(u: &mut Unstructured, c: &mut Cluster) -> arbitrary::Result<()> {
    let pods = c.pods.len();
    match u.int_in_range(0..=9u8)? {
        0 if pods > 0 => {
            let i = u.choose_index(pods)?;
            let port = ContainerPort {
                name: Some((*u.choose(&PORT_NAMES)?).to_string()),
                port: *u.choose(&PORTS)?,
                protocol: *u.choose(&PROTOCOLS)?,
            };
            c.pods[i].ports.push(port);
        }
        1 => {
            let spec = port_spec(u)?;
            if let Some(rule) = some_rule(u, &mut c.policies)? {
                rule.ports.get_or_insert_with(Vec::new).push(spec);
            }
        }
        2 => {
            let b = block(u)?;
            if let (Some(rule), Some(b)) = (some_rule(u, &mut c.policies)?, b) {
                rule.peers
                    .get_or_insert_with(Vec::new)
                    .push(Peer::IpBlock(b));
            }
        }
        3 if pods > 0 => {
            let i = u.choose_index(pods)?;
            let (k, v) = (*u.choose(&LABEL_KEYS)?, *u.choose(&LABEL_VALUES)?);
            c.pods[i].labels.insert(k.into(), v.into());
        }
        4 if pods > 0 => {
            let i = u.choose_index(pods)?;
            let p = &mut c.pods[i];
            match u.int_in_range(0..=2u8)? {
                0 => p.host_network = true,
                1 => {
                    p.source = PodSource::Live {
                        phase: PodPhase::Succeeded,
                        owner: None,
                    }
                }
                _ => {
                    *p = Pod::template(
                        WorkloadKind::Deployment,
                        p.namespace.clone(),
                        p.name.clone(),
                        p.labels.clone(),
                        p.host_network,
                        p.ports.clone(),
                    )
                }
            }
        }
        5 if !c.policies.is_empty() => {
            let i = u.choose_index(c.policies.len())?;
            let rules = match u.int_in_range(0..=2u8)? {
                0 => vec![],
                1 => vec![Rule {
                    peers: None,
                    ports: None,
                }],
                _ => vec![Rule {
                    peers: Some(vec![]),
                    ports: Some(vec![]),
                }],
            };
            let p = &mut c.policies[i];
            if u.arbitrary()? {
                p.ingress = Some(rules);
            } else {
                p.egress = Some(rules);
            }
            if u.arbitrary()? {
                p.pod_selector = LabelSelector::everything();
            }
        }
        6 => {
            let names: Vec<String> = c.namespaces.keys().cloned().collect();
            if !names.is_empty() {
                let n = &names[u.choose_index(names.len())?];
                let v = *u.choose(&LABEL_VALUES)?;
                if let Some(ns) = c.namespaces.get_mut(n) {
                    ns.labels.insert("team".into(), v.into());
                }
            }
        }
        7 if !c.admin_policies.is_empty() => {
            let i = u.choose_index(c.admin_policies.len())?;
            let a = &mut c.admin_policies[i];
            let rules = if u.arbitrary()? {
                &mut a.ingress
            } else {
                &mut a.egress
            };
            if !rules.is_empty() {
                let j = u.choose_index(rules.len())?;
                let (x, y) = (*u.choose(&PORTS)?, *u.choose(&PORTS)?);
                let protocol = *u.choose(&PROTOCOLS)?;
                let r = &mut rules[j];
                if u.arbitrary()? && r.action != AdminAction::Pass {
                    r.action = match r.action {
                        AdminAction::Allow => AdminAction::Deny,
                        _ => AdminAction::Allow,
                    };
                }
                r.ports = Some(vec![if x == y {
                    AdminPort::Number { protocol, port: x }
                } else {
                    AdminPort::Range {
                        protocol,
                        start: x.min(y),
                        end: x.max(y),
                    }
                }]);
            }
        }
        8 if pods > 0 => {
            // A second address of a family, unless some pod has it.
            let i = u.choose_index(pods)?;
            // Not .0 nor ::: a subnet's first address is its routers'
            // anycast address in IPv6, which no pod is given.
            let n: u8 = u.arbitrary::<u8>()?.max(1);
            let ip: IpAddr = if u.arbitrary()? {
                IpAddr::from([10, 0, 0, n])
            } else {
                IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)])
            };
            if c.pods[i].is_endpoint() && !c.pods.iter().any(|p| p.ips.contains(&ip)) {
                c.pods[i].ips.push(ip);
            }
        }
        9 if !c.nodes.is_empty() => {
            // A node address next to pod addresses, unless a pod has it.
            let i = u.choose_index(c.nodes.len())?;
            let n: u8 = u.arbitrary()?;
            let ip = IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 1, u16::from(n)]);
            if !c.pods.iter().any(|p| p.ips.contains(&ip))
                && !c.nodes.iter().any(|n| n.addresses.contains(&ip))
            {
                c.nodes[i].addresses.push(ip);
            }
        }
        _ => {}
    }
    Ok(())
}
