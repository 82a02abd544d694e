//! Policies an attacker would probe for gaps, each compared with the
//! engine on every pair, port and family: IPv6 around an IPv4-only
//! ipBlock policy, and ports at the edges of their range and of `endPort`.

use palisade_engine::PortProto;
use palisade_lab::raw;
use palisade_lab::CniPlugin;
use palisade_model::Protocol;
use palisade_testkit::assert_agrees;

use super::engine_of;
use crate::{harness, plugins, root, run, tag};

/// ipBlocks of IPv4 only: an allow (v4 from node-a's pods), an allow with
/// an except (everything IPv4 but a2), an egress allow to IPv4 only, and an
/// admin Deny of IPv4 networks. Their pods' IPv6 traffic is whatever the
/// engine says, never what the IPv4 rule would say.
const IPV4_ONLY: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: s, labels: {app: allow4}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.1.10}, {ip: "fd79::1:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a2, namespace: s, labels: {app: except4}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.1.11}, {ip: "fd79::1:11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, namespace: s, labels: {app: egress4}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.2.10}, {ip: "fd79::2:10"}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: t, labels: {ns: t}}
---
apiVersion: v1
kind: Pod
metadata: {name: b2, namespace: t, labels: {app: open}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.2.11}, {ip: "fd79::2:11"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow4, namespace: s}
spec:
  podSelector: {matchLabels: {app: allow4}}
  ingress: [{from: [{ipBlock: {cidr: 10.79.1.0/24}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: except4, namespace: s}
spec:
  podSelector: {matchLabels: {app: except4}}
  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.79.1.10/32]}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress4, namespace: s}
spec:
  podSelector: {matchLabels: {app: egress4}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.79.0.0/16}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: deny4}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {ns: t}}}
  egress:
  - name: no-v4-node-a
    action: Deny
    to: [{networks: [10.79.1.0/24]}]
"#;

fn ipv6_bypass(plugin: CniPlugin) {
    if !root() || !plugins().contains(&plugin) {
        return;
    }
    let engine = engine_of(IPV4_ONLY);
    let ports = vec![
        PortProto {
            port: 7000,
            protocol: Protocol::Udp,
        },
        PortProto {
            port: 7000,
            protocol: Protocol::Tcp,
        },
    ];
    let what = format!("IPv4-only policies ({})", tag(&plugin));
    let bad = run(
        &format!("cnihv{}", tag(&plugin)),
        &what,
        &engine,
        plugin,
        &ports,
    );
    assert_agrees(&bad);
}

per_plugin!(
    ipv6_bypass,
    ipv6_traffic_under_ipv4_only_policies_is_decided_by_the_engine_routed,
    ipv6_traffic_under_ipv4_only_policies_is_decided_by_the_engine_bridged
);

/// Ports 1 and 65535, and a range 5000-5010: each edge, one inside and one
/// outside, TCP, UDP and SCTP.
const EDGES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: s, labels: {app: client}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.80.1.10}, {ip: "fd80::1:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: x, namespace: s, labels: {app: server}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.80.1.11}, {ip: "fd80::1:11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: y, namespace: s, labels: {app: server}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.80.2.10}, {ip: "fd80::2:10"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: edges, namespace: s}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports:
    - {port: 1, protocol: TCP}
    - {port: 65535, protocol: UDP}
    - {port: 65535, protocol: SCTP}
    - {port: 5000, endPort: 5010, protocol: TCP}
    - {port: 5000, endPort: 5010, protocol: UDP}
    - {port: 5000, endPort: 5010, protocol: SCTP}
"#;

fn port_edges(plugin: CniPlugin) {
    if !root() || !plugins().contains(&plugin) {
        return;
    }
    let engine = engine_of(EDGES);
    let mut ports = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for port in [1, 2, 4999, 5000, 5001, 5010, 5011, 65534, 65535] {
            ports.push(PortProto { port, protocol });
        }
    }
    let what = format!("port edges ({})", tag(&plugin));
    let bad = run(
        &format!("cnihe{}", tag(&plugin)),
        &what,
        &engine,
        plugin,
        &ports,
    );
    assert_agrees(&bad);
}

per_plugin!(
    port_edges,
    ports_at_range_edges_agree_with_the_engine_routed,
    ports_at_range_edges_agree_with_the_engine_bridged
);

/// Port 0, which no socket can send to: crafted TCP SYN, UDP and SCTP INIT
/// from a2 to a3 and a1 (targets allow only port 7000 from trusted; a1
/// accepts anything), compared with the engine; port 7000 alongside.
fn port_zero(plugin: CniPlugin) {
    let Some(h) = super::up("z", &plugin) else {
        return;
    };
    let engine = engine_of(super::CLUSTER);
    let cluster = engine.cluster();
    let idx = |name: &str| cluster.pods.iter().position(|p| p.name == name).unwrap();
    let mut bad = Vec::new();
    let mut n = 0;
    for v4 in [true, false] {
        for (to, pod) in [(&h.a3, "a3"), (&h.a1, "a1")] {
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                for port in [0u16, 7000] {
                    n += 1;
                    let f = engine
                        .flow_in_family(
                            palisade_engine::Endpoint::Pod(idx("a2")),
                            palisade_engine::Endpoint::Pod(idx(pod)),
                            protocol,
                            port,
                            v4,
                        )
                        .unwrap();
                    let expected = engine.allowed(&f);
                    let (src, dst) = (h.a2.ip(v4), to.ip(v4));
                    let m = super::marker("port0", n);
                    let l4 = match protocol {
                        Protocol::Tcp => {
                            raw::tcp((src, 43000 + n as u16), (dst, port), raw::SYN, n, 0, &m)
                        }
                        Protocol::Udp => super::datagram(src, dst, 43000 + n as u16, port, &m),
                        // An INIT as it is: conntrack drops SCTP with a
                        // bad checksum, so no marker is appended.
                        Protocol::Sctp => raw::sctp(43000 + n as u16, port, n),
                    };
                    let proto = match protocol {
                        Protocol::Tcp => raw::TCP,
                        Protocol::Udp => raw::UDP,
                        Protocol::Sctp => raw::SCTP,
                    };
                    let (watch, sender) = (to.link(), h.a2.link());
                    h.a2.send_ip(&sender, dst, &raw::ip(src, dst, proto, &l4));
                    let wait = if expected {
                        super::WAIT * 3
                    } else {
                        super::WAIT
                    };
                    let seen = watch.received(wait).iter().any(|fr| raw::contains(fr, &l4));
                    if seen != expected {
                        bad.push(format!(
                            "{src} -> {dst} {port}/{protocol:?}: engine {expected}, kernel {seen}"
                        ));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{} mode: {bad:#?}", tag(&plugin));
    h.down();
}

per_plugin!(
    port_zero,
    port_zero_agrees_with_the_engine_routed,
    port_zero_agrees_with_the_engine_bridged
);
