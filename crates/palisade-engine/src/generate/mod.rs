//! Least-privilege NetworkPolicies from observed connections: one policy
//! per workload of the cluster, allowing exactly the observed peers and
//! ports in each direction (plus DNS), and the check that proves it with
//! this engine before anything is printed (`check`).
//!
//! The rules (docs/generate.md): selectors from a workload's stable labels
//! (`workloads`), peers by namespace name and pod selector, outside peers
//! as one-address ipBlocks, named ports where every destination pod names
//! the number alike, consecutive observed ports as one range, and every
//! egress section allowing UDP and TCP 53 to the cluster's DNS pods.

mod check;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_model::{
    IpBlock, IpNet, LabelSelector, NamespaceScope, NetworkPolicy, Peer, Pod, PortSpec, Protocol,
    Rule, NAMESPACE_NAME_LABEL,
};

pub use check::{check, with_generated, Check};
pub use workloads::{workloads, Workload, VOLATILE_LABELS};

use crate::{Endpoint, Engine};

/// The namespace and label of the cluster's DNS pods.
pub const DNS_NAMESPACE: &str = "kube-system";
pub const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
pub const DNS_PORT: u16 = 53;

/// One observed connection attempt between two endpoints of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Observed {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub protocol: Protocol,
    pub port: u16,
}

/// Where DNS egress goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsTarget {
    /// Pods of kube-system labelled `k8s-app: kube-dns` (indexes into
    /// `Cluster::pods`).
    Pods(Vec<usize>),
    /// The cluster has none: every pod of kube-system.
    Namespace,
}

/// What `generate` made: the workloads, one policy each (same order), and
/// what the reader should know.
#[derive(Clone, Debug)]
pub struct Generated {
    pub workloads: Vec<Workload>,
    pub policies: Vec<NetworkPolicy>,
    pub dns: DnsTarget,
    pub warnings: Vec<String>,
}

/// One side of an observed connection as a policy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Workload(usize),
    Addr(IpAddr),
}

type PortSet = BTreeSet<(Protocol, u16)>;

/// Maps each selectable pod to its workload.
pub(crate) fn workload_of(engine: &Engine, ws: &[Workload]) -> Vec<Option<usize>> {
    let mut of = vec![None; engine.cluster().pods.len()];
    for (w, wl) in ws.iter().enumerate() {
        for &p in &wl.pods {
            of[p] = Some(w);
        }
    }
    of
}

/// The side an endpoint is on: its workload, or its address (an outside
/// address, or a host-network pod's, whose traffic is its node's).
fn side(engine: &Engine, of: &[Option<usize>], e: Endpoint, v4: bool) -> Option<Side> {
    match e {
        Endpoint::Ip(ip) => Some(Side::Addr(ip)),
        Endpoint::Pod(i) => match of.get(i).copied().flatten() {
            Some(w) => Some(Side::Workload(w)),
            None => engine.cluster().pods[i]
                .ips
                .iter()
                .find(|ip| ip.is_ipv4() == v4)
                .map(|ip| Side::Addr(*ip)),
        },
    }
}

fn family_of(o: &Observed) -> bool {
    match (o.src, o.dst) {
        (Endpoint::Ip(ip), _) | (_, Endpoint::Ip(ip)) => ip.is_ipv4(),
        _ => true,
    }
}

/// The DNS pods of the cluster, if it has any.
pub fn dns_target(engine: &Engine) -> DnsTarget {
    let pods: Vec<usize> = engine
        .cluster()
        .pods
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.namespace == DNS_NAMESPACE
                && p.labels.get(DNS_LABEL.0).map(String::as_str) == Some(DNS_LABEL.1)
                && workloads::selectable(engine, *i)
        })
        .map(|(i, _)| i)
        .collect();
    if pods.is_empty() {
        DnsTarget::Namespace
    } else {
        DnsTarget::Pods(pods)
    }
}

/// The policies that allow exactly `observed` (and DNS) between the
/// workloads of `engine`'s cluster. Its own NetworkPolicies play no part.
pub fn generate(engine: &Engine, observed: &[Observed]) -> Generated {
    let mut warnings = Vec::new();
    let ws = workloads(engine, &mut warnings);
    let of = workload_of(engine, &ws);
    let mut ingress: Vec<BTreeMap<Side, PortSet>> = vec![BTreeMap::new(); ws.len()];
    let mut egress: Vec<BTreeMap<Side, PortSet>> = vec![BTreeMap::new(); ws.len()];
    let dns = dns_target(engine);
    for o in observed {
        let v4 = family_of(o);
        let (Some(s), Some(d)) = (side(engine, &of, o.src, v4), side(engine, &of, o.dst, v4))
        else {
            continue;
        };
        // What the DNS rules allow anyway is not repeated as a rule of its own.
        let dns_port = o.port == DNS_PORT && o.protocol != Protocol::Sctp;
        let (to_dns, from_pod) = match (o.dst, &dns) {
            (Endpoint::Pod(p), DnsTarget::Pods(d)) => (d.contains(&p), true),
            (Endpoint::Pod(p), DnsTarget::Namespace) => {
                (engine.cluster().pods[p].namespace == DNS_NAMESPACE, false)
            }
            (Endpoint::Ip(_), _) => (false, false),
        };
        let covered = dns_port && to_dns;
        if let Side::Workload(w) = s {
            if !covered {
                egress[w].entry(d).or_default().insert((o.protocol, o.port));
            }
        }
        if let Side::Workload(w) = d {
            // The DNS pods' ingress rule admits every pod, not addresses.
            if !(covered && from_pod && matches!(s, Side::Workload(_))) {
                ingress[w]
                    .entry(s)
                    .or_default()
                    .insert((o.protocol, o.port));
            }
        }
    }
    let names = policy_names(&ws);
    let pods = &engine.cluster().pods;
    let policies = ws
        .iter()
        .enumerate()
        .map(|(w, wl)| {
            let own: Vec<&Pod> = wl.pods.iter().map(|&i| &pods[i]).collect();
            let mut ing: Vec<Rule> = ingress[w]
                .iter()
                .map(|(s, ports)| rule(&ws, &wl.namespace, *s, ports, &own))
                .collect();
            if let DnsTarget::Pods(d) = &dns {
                if wl.pods.iter().any(|p| d.contains(p)) {
                    ing.push(dns_ingress_rule());
                }
            }
            let mut eg: Vec<Rule> = egress[w]
                .iter()
                .map(|(d, ports)| {
                    let dst: Vec<&Pod> = match d {
                        Side::Workload(dw) => ws[*dw].pods.iter().map(|&i| &pods[i]).collect(),
                        Side::Addr(_) => Vec::new(),
                    };
                    rule(&ws, &wl.namespace, *d, ports, &dst)
                })
                .collect();
            eg.push(dns_egress_rule(&dns, &wl.namespace));
            NetworkPolicy {
                namespace: wl.namespace.clone(),
                name: names[w].clone(),
                pod_selector: wl.selector.clone(),
                ingress: Some(ing),
                egress: Some(eg),
                staged: false,
            }
        })
        .collect();
    Generated {
        workloads: ws,
        policies,
        dns,
        warnings,
    }
}

fn namespace_scope(own: &str, ns: &str) -> NamespaceScope {
    if own == ns {
        NamespaceScope::Own(own.to_string())
    } else {
        NamespaceScope::Selector(LabelSelector::from_labels([(NAMESPACE_NAME_LABEL, ns)]))
    }
}

fn rule(ws: &[Workload], own_ns: &str, side: Side, ports: &PortSet, dst_pods: &[&Pod]) -> Rule {
    let peer = match side {
        Side::Workload(w) => Peer::Pods {
            namespaces: namespace_scope(own_ns, &ws[w].namespace),
            pods: ws[w].selector.clone(),
        },
        Side::Addr(ip) => Peer::IpBlock(IpBlock {
            cidr: IpNet::from(ip),
            except: Vec::new(),
        }),
    };
    Rule {
        peers: Some(vec![peer]),
        ports: Some(port_specs(ports, dst_pods)),
    }
}

/// The name every destination pod gives `port` of `protocol`, if they all
/// give it one and the same (and the name resolves back to that port).
fn common_name(dst: &[&Pod], protocol: Protocol, port: u16) -> Option<String> {
    let mut name: Option<&str> = None;
    for p in dst {
        let mut of_port = p
            .ports
            .iter()
            .filter(|c| c.protocol == protocol && c.port == port);
        let n = of_port.next()?.name.as_deref()?;
        if of_port.next().is_some() || p.named_port(n, protocol) != [port] {
            return None;
        }
        match name {
            Some(m) if m != n => return None,
            _ => name = Some(n),
        }
    }
    name.map(str::to_string)
}

/// Named ports where the destination names them, the other numbers with
/// runs of consecutive observed ports as one range.
fn port_specs(ports: &PortSet, dst: &[&Pod]) -> Vec<PortSpec> {
    let mut out = Vec::new();
    let mut run: Option<(Protocol, u16, u16)> = None;
    let flush = |run: &mut Option<(Protocol, u16, u16)>, out: &mut Vec<PortSpec>| {
        if let Some((protocol, start, end)) = run.take() {
            out.push(PortSpec::Range {
                protocol,
                start,
                end,
            });
        }
    };
    for &(protocol, port) in ports {
        if let Some(name) = common_name(dst, protocol, port) {
            flush(&mut run, &mut out);
            out.push(PortSpec::Named { protocol, name });
            continue;
        }
        match &mut run {
            Some((p, _, end)) if *p == protocol && u32::from(*end) + 1 == u32::from(port) => {
                *end = port
            }
            _ => {
                flush(&mut run, &mut out);
                run = Some((protocol, port, port));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

fn dns_ports() -> Vec<PortSpec> {
    [Protocol::Udp, Protocol::Tcp]
        .into_iter()
        .map(|protocol| PortSpec::Range {
            protocol,
            start: DNS_PORT,
            end: DNS_PORT,
        })
        .collect()
}

fn dns_egress_rule(dns: &DnsTarget, own_ns: &str) -> Rule {
    let pods = match dns {
        DnsTarget::Pods(_) => LabelSelector::from_labels([DNS_LABEL]),
        DnsTarget::Namespace => LabelSelector::everything(),
    };
    Rule {
        peers: Some(vec![Peer::Pods {
            namespaces: namespace_scope(own_ns, DNS_NAMESPACE),
            pods,
        }]),
        ports: Some(dns_ports()),
    }
}

/// The DNS pods' side of the DNS exception: every pod may ask them.
fn dns_ingress_rule() -> Rule {
    Rule {
        peers: Some(vec![Peer::Pods {
            namespaces: NamespaceScope::Selector(LabelSelector::everything()),
            pods: LabelSelector::everything(),
        }]),
        ports: Some(dns_ports()),
    }
}

const SUFFIX: &str = "-generated";
/// `metadata.name` is a DNS-1123 subdomain: at most 253 characters.
const MAX_NAME: usize = 253;

/// FNV-1a, 32 bits: a short, stable tag for truncated names.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `<workload>-generated`, with the kind added where two workloads of a
/// namespace share a name, cut to 253 characters with a hash of the whole
/// name where longer.
fn policy_names(ws: &[Workload]) -> Vec<String> {
    let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for w in ws {
        *count.entry((&w.namespace, &w.base_name)).or_default() += 1;
    }
    let mut names: Vec<String> = ws
        .iter()
        .map(|w| {
            let mut base = w.base_name.clone();
            if count[&(w.namespace.as_str(), w.base_name.as_str())] > 1 {
                // `ns/web[StatefulSet]` → `web-statefulset`.
                let kind = w.names[0]
                    .rsplit_once('[')
                    .map_or("pod", |(_, k)| k.trim_end_matches(']'));
                base = format!("{base}-{}", kind.to_ascii_lowercase());
            }
            let full = format!("{base}{SUFFIX}");
            if full.len() <= MAX_NAME {
                return full;
            }
            let tag = format!("-{:08x}", fnv(&full));
            let keep = MAX_NAME - SUFFIX.len() - tag.len();
            let cut = base[..keep].trim_end_matches(['-', '.']);
            format!("{cut}{tag}{SUFFIX}")
        })
        .collect();
    // A name made above can still meet another workload's own (`web` of
    // two kinds beside a `web-deployment`): the later one gets a tag.
    let mut taken: BTreeSet<(&str, String)> = BTreeSet::new();
    for (w, name) in ws.iter().zip(&mut names) {
        if !taken.insert((&w.namespace, name.clone())) {
            let base = name.trim_end_matches(SUFFIX);
            let keep = base.len().min(MAX_NAME - SUFFIX.len() - 9);
            let tagged = format!(
                "{}-{:08x}{SUFFIX}",
                base[..keep].trim_end_matches(['-', '.']),
                fnv(&w.display())
            );
            taken.insert((&w.namespace, tagged.clone()));
            *name = tagged;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::ContainerPort;

    fn pod(ports: &[(Option<&str>, u16, Protocol)]) -> Pod {
        let mut p = Pod::template(
            palisade_model::WorkloadKind::Deployment,
            "ns".into(),
            "w".into(),
            Default::default(),
            false,
            Vec::new(),
        );
        p.ports = ports
            .iter()
            .map(|&(name, port, protocol)| ContainerPort {
                name: name.map(str::to_string),
                port,
                protocol,
            })
            .collect();
        p
    }

    #[test]
    fn ports_are_named_only_where_every_destination_names_them_alike() {
        let a = pod(&[
            (Some("http"), 80, Protocol::Tcp),
            (Some("dns"), 53, Protocol::Udp),
        ]);
        let b = pod(&[
            (Some("web"), 80, Protocol::Tcp),
            (Some("dns"), 53, Protocol::Udp),
        ]);
        let ports: PortSet = [
            (Protocol::Tcp, 80),
            (Protocol::Udp, 53),
            (Protocol::Tcp, 81),
        ]
        .into_iter()
        .collect();
        let specs: Vec<String> = port_specs(&ports, &[&a, &b])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(specs, ["80-81/TCP", "dns/UDP"]);
        let specs: Vec<String> = port_specs(&ports, &[&a])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(specs, ["http/TCP", "81/TCP", "dns/UDP"]);
        // No destination pod (an outside address): numbers only.
        let specs: Vec<String> = port_specs(&ports, &[])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(specs, ["80-81/TCP", "53/UDP"]);
    }

    #[test]
    fn long_names_are_cut_with_a_stable_tag_and_kinds_tell_namesakes_apart() {
        let w = |kind: &str, name: &str| Workload {
            namespace: "ns".into(),
            names: vec![format!("ns/{name}[{kind}]")],
            base_name: name.into(),
            pods: vec![],
            parts: vec![vec![]],
            selector: LabelSelector::everything(),
        };
        let long = "a".repeat(250);
        let names = policy_names(&[
            w("Deployment", "web"),
            w("StatefulSet", "web"),
            w("Deployment", &long),
        ]);
        assert_eq!(names[0], "web-deployment-generated");
        assert_eq!(names[1], "web-statefulset-generated");
        assert_eq!(names[2].len(), 253);
        assert!(names[2].ends_with("-generated"), "{}", names[2]);
        assert_eq!(names[2], policy_names(&[w("Deployment", &long)])[0]);
        let names = policy_names(&[
            w("Deployment", "web"),
            w("Deployment", "web-statefulset"),
            w("StatefulSet", "web"),
        ]);
        assert_eq!(names[0], "web-deployment-generated");
        assert_eq!(names[1], "web-statefulset-generated");
        assert!(
            names[2].starts_with("web-statefulset-") && names[2] != names[1],
            "{names:?}"
        );
    }
}
