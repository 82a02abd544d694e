//! A deliberately naive reading of the API (no index, no identities,
//! every selector evaluated from scratch), so that the indexed engine is
//! checked against the specification rather than against itself: by the
//! engine's property tests and by the fuzz targets.

use std::net::IpAddr;

use palisade_engine::{Endpoint, Flow};
use palisade_model::{
    AdminAction, AdminPeer, AdminPort, AdminSubject, AdminTier, Cluster, Labels, NamespaceScope,
    Peer, Pod, PortSpec, Protocol, Rule,
};

fn ns_labels<'a>(c: &'a Cluster, ns: &str) -> &'a Labels {
    &c.namespaces[ns].labels
}

fn pod_of(c: &Cluster, e: Endpoint) -> Option<&Pod> {
    match e {
        Endpoint::Pod(i) => Some(&c.pods[i]),
        Endpoint::Ip(_) => None,
    }
}

/// A pod that selectors can see: an endpoint not on the host network.
fn selectable(p: Option<&Pod>) -> Option<&Pod> {
    p.filter(|p| p.is_endpoint() && !p.host_network)
}

fn np_peer(
    c: &Cluster,
    policy_ns: &str,
    peer: &Peer,
    other: Option<&Pod>,
    ip: Option<IpAddr>,
) -> bool {
    match peer {
        // A workload's pod template has no address: no ipBlock holds it.
        Peer::IpBlock(b) => ip.is_some_and(|ip| b.contains(&ip)),
        Peer::Pods { namespaces, pods } => selectable(other).is_some_and(|o| {
            let ns_ok = match namespaces {
                NamespaceScope::Own(_) => o.namespace == policy_ns,
                NamespaceScope::Selector(s) => s.matches(ns_labels(c, &o.namespace)),
            };
            ns_ok && pods.matches(&o.labels)
        }),
    }
}

fn np_port(spec: &PortSpec, dst: Option<&Pod>, proto: Protocol, port: u16) -> bool {
    match spec {
        PortSpec::AllPorts(p) => *p == proto,
        PortSpec::Range {
            protocol,
            start,
            end,
        } => *protocol == proto && (*start..=*end).contains(&port),
        PortSpec::Named { protocol, name } => {
            *protocol == proto
                && selectable(dst).is_some_and(|d| {
                    d.ports.iter().any(|cp| {
                        cp.name.as_deref() == Some(name.as_str())
                            && cp.protocol == proto
                            && cp.port == port
                    })
                })
        }
    }
}

/// A flow's destination port, with the pod whose named ports can match it.
#[derive(Clone, Copy)]
struct DstPort<'a> {
    pod: Option<&'a Pod>,
    proto: Protocol,
    port: u16,
}

fn rule_allows(
    c: &Cluster,
    ns: &str,
    r: &Rule,
    other: Option<&Pod>,
    ip: Option<IpAddr>,
    to: DstPort,
) -> bool {
    let peer_ok = r
        .peers
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| np_peer(c, ns, p, other, ip)));
    let port_ok = r
        .ports
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|s| np_port(s, to.pod, to.proto, to.port)));
    peer_ok && port_ok
}

fn admin_peer(c: &Cluster, p: &AdminPeer, other: Option<&Pod>, ip: Option<IpAddr>) -> bool {
    match p {
        AdminPeer::Namespaces(s) => {
            selectable(other).is_some_and(|o| s.matches(ns_labels(c, &o.namespace)))
        }
        AdminPeer::Pods { namespaces, pods } => selectable(other).is_some_and(|o| {
            namespaces.matches(ns_labels(c, &o.namespace)) && pods.matches(&o.labels)
        }),
        AdminPeer::Nodes(s) => c
            .nodes
            .iter()
            .any(|n| s.matches(&n.labels) && ip.is_some_and(|ip| n.addresses.contains(&ip))),
        AdminPeer::Networks(ns) => ns.iter().any(|n| ip.is_some_and(|ip| n.contains(&ip))),
    }
}

fn admin_port(p: &AdminPort, dst: Option<&Pod>, proto: Protocol, port: u16) -> bool {
    match p {
        AdminPort::Number { protocol, port: q } => *protocol == proto && *q == port,
        AdminPort::Range {
            protocol,
            start,
            end,
        } => *protocol == proto && (*start..=*end).contains(&port),
        AdminPort::Named(n) => selectable(dst).is_some_and(|d| {
            d.ports.iter().any(|cp| {
                cp.name.as_deref() == Some(n.as_str()) && cp.protocol == proto && cp.port == port
            })
        }),
    }
}

/// One direction: `subject` is the pod the policies apply to, `other` the
/// peer with address `ip`.
fn direction(
    c: &Cluster,
    ingress: bool,
    subject: Option<&Pod>,
    other: Option<&Pod>,
    ip: Option<IpAddr>,
    to: DstPort,
) -> bool {
    let Some(s) = selectable(subject) else {
        return true;
    };
    let nsl = ns_labels(c, &s.namespace);
    let applies = |subj: &AdminSubject| match subj {
        AdminSubject::Namespaces(n) => n.matches(nsl),
        AdminSubject::Pods { namespaces, pods } => {
            namespaces.matches(nsl) && pods.matches(&s.labels)
        }
    };
    let tier_decision = |tier: AdminTier| -> Option<AdminAction> {
        let mut ps: Vec<_> = c
            .admin_policies
            .iter()
            .filter(|a| a.tier == tier && applies(&a.subject))
            .collect();
        ps.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        for a in ps {
            let rules = if ingress { &a.ingress } else { &a.egress };
            for r in rules {
                let peer = r.peers.iter().any(|p| admin_peer(c, p, other, ip));
                let port_ok = r
                    .ports
                    .as_ref()
                    .is_none_or(|ps| ps.iter().any(|p| admin_port(p, to.pod, to.proto, to.port)));
                if peer && port_ok {
                    return Some(r.action);
                }
            }
        }
        None
    };
    match tier_decision(AdminTier::Admin) {
        Some(AdminAction::Allow) => return true,
        Some(AdminAction::Deny) => return false,
        _ => {}
    }
    let isolating: Vec<_> = c
        .policies
        .iter()
        .filter(|p| p.namespace == s.namespace && p.pod_selector.matches(&s.labels))
        .filter(|p| {
            if ingress {
                p.ingress.is_some()
            } else {
                p.egress.is_some()
            }
        })
        .collect();
    if !isolating.is_empty() {
        // The node's traffic: from its addresses, or from a host-network
        // pod running on it (that pod's traffic is the node's), whether
        // the flow names the pod or its address.
        let on_node = |p: &Pod| p.host_network && p.is_endpoint() && p.node == s.node;
        if ingress && s.node.is_some() {
            let node_addrs: Vec<IpAddr> = c
                .nodes
                .iter()
                .filter(|n| Some(&n.name) == s.node.as_ref())
                .flat_map(|n| n.addresses.clone())
                .chain(
                    c.pods
                        .iter()
                        .filter(|p| on_node(p))
                        .flat_map(|p| p.ips.clone()),
                )
                .collect();
            if ip.is_some_and(|ip| node_addrs.contains(&ip)) || other.is_some_and(on_node) {
                return true;
            }
        }
        return isolating.iter().any(|p| {
            let rules = if ingress { &p.ingress } else { &p.egress };
            rules
                .iter()
                .flatten()
                .any(|r| rule_allows(c, &p.namespace, r, other, ip, to))
        });
    }
    !matches!(tier_decision(AdminTier::Baseline), Some(AdminAction::Deny))
}

/// Whether `f` is allowed in `c`, read straight from the API text.
pub fn allowed(c: &Cluster, f: &Flow) -> bool {
    let (src, dst) = (pod_of(c, f.src), pod_of(c, f.dst));
    let to = DstPort {
        pod: dst,
        proto: f.protocol,
        port: f.port,
    };
    direction(c, false, src, dst, f.dst_ip, to) && direction(c, true, dst, src, f.src_ip, to)
}
