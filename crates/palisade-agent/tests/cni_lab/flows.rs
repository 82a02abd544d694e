//! The flow log on real wiring: every denied attempt is reported by the
//! node that denied it, with the deciding policy and rule; allowed
//! connections sampled at rate 1 once per connection and direction; a
//! burst beyond what the agent can take is counted, never silent.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use palisade_agent::flowlog::{Filter, FlowLogConfig};
use palisade_engine::flowlog::{FlowRecord, FlowVerdict};
use palisade_engine::{Direction, Engine, PortProto};
use palisade_lab::{in_netns, CniPlugin, Lab, Observation, ProbeOptions};

use crate::harness::{lab_up, root, wait_settled, NodeAgent};

/// node-a: c1 (client, may send only to web on TCP 80, UDP 53 and SCTP
/// 7000), o1 (other, not isolated); node-b: w1 (web: only from clients),
/// d1 (db: an admin policy allows web and denies others, rule 1).
pub const CLUSTER: &str = r#"
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
metadata: {name: c1, namespace: s, labels: {app: client}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.1.10}, {ip: "fd79::1:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: o1, namespace: s, labels: {app: other}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.1.11}, {ip: "fd79::1:11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: w1, namespace: s, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.2.10}, {ip: "fd79::2:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d1, namespace: s, labels: {app: db}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.79.2.11}, {ip: "fd79::2:11"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client, namespace: s}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80}, {port: 53, protocol: UDP}, {port: 7000, protocol: SCTP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: s}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - name: allow-web
    action: Allow
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]
  - name: deny-other
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: other}}}}]
"#;

pub fn engine() -> Engine {
    let loaded = palisade_k8s::load(&[("flows.yaml".into(), CLUSTER.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    Engine::new(loaded.cluster)
}

fn ports() -> Vec<PortProto> {
    ["80/TCP", "53/UDP", "7000/SCTP"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// The lab with one logging agent per node, settled.
fn logged_lab(name: &str, plugin: CniPlugin, cfg: &FlowLogConfig) -> (Lab, Vec<NodeAgent>) {
    let e = engine();
    let lab = lab_up(name, &e, plugin, &ports());
    let agents: Vec<NodeAgent> = lab
        .state
        .nodes
        .iter()
        .map(|n| {
            let node = n.node.clone().expect("the pods name their nodes");
            NodeAgent::start_logged(&node, &n.netns, e.cluster(), Some(cfg.clone()))
        })
        .collect();
    wait_settled(&agents, name);
    (lab, agents)
}

/// Every record of every agent so far.
fn records(agents: &[NodeAgent]) -> Vec<FlowRecord> {
    agents
        .iter()
        .flat_map(|a| a.flows.as_ref().unwrap().snapshot(&Filter::default()).0)
        .collect()
}

fn same_packet(r: &FlowRecord, o: &Observation, dir: Direction) -> bool {
    r.src_ip == Some(o.src_ip)
        && r.dst_ip == Some(o.dst_ip)
        && r.port == o.port
        && r.protocol.as_str() == o.protocol
        && r.direction == dir
}

/// The node a direction of a lab flow is enforced on.
fn node_of(e: &Engine, ip: IpAddr) -> String {
    let c = e.cluster();
    let p = c.pods.iter().find(|p| p.ips.contains(&ip)).unwrap();
    p.node.clone().unwrap()
}

/// What the record of a denied observation must say, from the engine's
/// explanation: the denying direction, its node, policy, rule, reason.
fn expected_denial(
    e: &Engine,
    o: &Observation,
) -> (Direction, String, Option<String>, Option<usize>, String) {
    let proto = o.protocol.parse().unwrap();
    let f = e.packet_flow(o.src_ip, o.dst_ip, proto, o.port);
    let eg = e.attribute(&f, Direction::Egress);
    let (dir, a, ip) = if eg.allowed {
        (
            Direction::Ingress,
            e.attribute(&f, Direction::Ingress),
            o.dst_ip,
        )
    } else {
        (Direction::Egress, eg, o.src_ip)
    };
    (dir, node_of(e, ip), a.policy, a.rule, a.reason)
}

/// Waits for `done` to hold, up to 5 s after the probes: on a quiet
/// machine records come within milliseconds (the kernel flushes reports
/// after 10 ms at the latest), a loaded one may take longer, and no test
/// asserts a wall-clock time.
fn soon(agents: &[NodeAgent], done: impl Fn(&[FlowRecord]) -> bool) -> Vec<FlowRecord> {
    let t = Instant::now();
    loop {
        let recs = records(agents);
        if done(&recs) || t.elapsed() > Duration::from_secs(5) {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn denials(plugin: CniPlugin, tag: &str) {
    if !root() {
        return;
    }
    let e = engine();
    let (lab, agents) = logged_lab(&format!("fld{tag}"), plugin, &FlowLogConfig::new(7));
    let obs = palisade_lab::probe(&lab.state, &e, &ports(), &ProbeOptions::default()).unwrap();
    let bad: Vec<String> = obs
        .iter()
        .filter(|o| !o.agrees())
        .map(|o| o.to_string())
        .collect();
    assert!(bad.is_empty(), "kernel and engine disagree: {bad:#?}");
    let denied: Vec<&Observation> = obs.iter().filter(|o| !o.observed).collect();
    assert!(
        denied.len() >= 24,
        "the case denies in both directions, both families, all protocols"
    );
    let want: Vec<_> = denied.iter().map(|o| (o, expected_denial(&e, o))).collect();
    let mut recs = soon(&agents, |recs| {
        want.iter()
            .all(|(o, (dir, ..))| recs.iter().any(|r| same_packet(r, o, *dir)))
    });
    // Bridged labs sometimes drop a pod's first packets before any policy
    // (the kernel then denies without a report, and the probe still
    // agrees); a missing TCP or UDP record gets one more real attempt,
    // which must be reported. The cause of those drops is not found yet.
    let missing: Vec<&Observation> = want
        .iter()
        .filter(|(o, (dir, ..))| !recs.iter().any(|r| same_packet(r, o, *dir)))
        .map(|(o, _)| **o)
        .filter(|o| o.protocol != "SCTP")
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "{} denials without a record; trying them again",
            missing.len()
        );
        for o in &missing {
            let proto = o.protocol.parse().unwrap();
            let to = SocketAddr::new(o.dst_ip, o.port);
            let through =
                palisade_lab::connect(&lab.state, &o.src, to, proto, Duration::from_millis(300))
                    .unwrap();
            assert!(!through, "{o}: denied by the probe, allowed now");
        }
        recs = soon(&agents, |recs| {
            want.iter()
                .all(|(o, (dir, ..))| recs.iter().any(|r| same_packet(r, o, *dir)))
        });
    }
    let mut problems = Vec::new();
    for (o, (dir, node, policy, rule, reason)) in &want {
        let found: Vec<&FlowRecord> = recs.iter().filter(|r| same_packet(r, o, *dir)).collect();
        // A retried denial may have its first attempt's record too.
        let found = if missing.iter().any(|m| std::ptr::eq(*m, **o)) {
            found.into_iter().take(1).collect()
        } else {
            found
        };
        match found.as_slice() {
            [r] => {
                let got = (&r.node, &r.policy, r.rule, &r.reason, r.verdict);
                if got != (node, policy, *rule, reason, FlowVerdict::Denied) {
                    problems.push(format!(
                        "{o}: record {got:?}, want {:?}",
                        (node, policy, rule, reason)
                    ));
                }
            }
            other => problems.push(format!(
                "{o}: {} {} records, want 1",
                other.len(),
                dir.as_str()
            )),
        }
    }
    // Nothing allowed is reported as denied (sampling is off).
    for r in &recs {
        if r.verdict != FlowVerdict::Denied {
            problems.push(format!("unexpected record {r:?}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Pinned by hand, so that the attribution itself is checked too.
    let one = |src: &str, dst: &str, proto: &str, port: u16| -> &FlowRecord {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        recs.iter()
            .find(|r| {
                r.src_ip == Some(ip(src))
                    && r.dst_ip == Some(ip(dst))
                    && r.protocol.as_str() == proto
                    && r.port == port
            })
            .unwrap_or_else(|| panic!("no record of {src} -> {dst} {port}/{proto}"))
    };
    let r = one("10.79.1.10", "10.79.2.11", "TCP", 80);
    assert_eq!(
        (r.node.as_str(), r.direction, r.policy.as_deref(), r.rule),
        ("node-a", Direction::Egress, None, None)
    );
    assert_eq!((r.src.as_str(), r.dst.as_str()), ("s/c1", "s/d1"));
    assert!(
        r.reason
            .starts_with("egress denied: s/c1 is isolated for egress by s/client"),
        "{}",
        r.reason
    );
    let r = one("fd79::1:11", "fd79::2:10", "SCTP", 7000);
    assert_eq!(
        (r.node.as_str(), r.direction, r.policy.as_deref()),
        ("node-b", Direction::Ingress, None)
    );
    assert!(
        r.reason
            .starts_with("ingress denied: s/w1 is isolated for ingress by s/web"),
        "{}",
        r.reason
    );
    let r = one("10.79.1.11", "10.79.2.11", "UDP", 53);
    assert_eq!(
        (r.node.as_str(), r.direction, r.policy.as_deref(), r.rule),
        (
            "node-b",
            Direction::Ingress,
            Some("AdminNetworkPolicy/guard"),
            Some(1)
        )
    );
    drop(agents);
    lab.down().unwrap();
}

pub fn sampled(plugin: CniPlugin, tag: &str) {
    if !root() {
        return;
    }
    let e = engine();
    let mut cfg = FlowLogConfig::new(7);
    cfg.sample_ppm = palisade_nft::FlowLog::SAMPLE_ALL;
    let (lab, agents) = logged_lab(&format!("fls{tag}"), plugin, &cfg);
    // A long timeout: an allowed probe that sees no answer in time is
    // made again, which would be a second connection.
    let opts = ProbeOptions {
        timeout: Duration::from_secs(1),
        ..ProbeOptions::default()
    };
    let obs = palisade_lab::probe(&lab.state, &e, &ports(), &opts).unwrap();
    assert!(obs.iter().all(Observation::agrees));
    let allowed: Vec<&Observation> = obs.iter().filter(|o| o.observed).collect();
    assert!(allowed.len() >= 24);
    let dirs = [Direction::Egress, Direction::Ingress];
    let recs = soon(&agents, |recs| {
        allowed.iter().all(|o| {
            dirs.iter()
                .all(|&d| recs.iter().any(|r| same_packet(r, o, d)))
        })
    });
    let mut problems = Vec::new();
    for o in &allowed {
        for d in dirs {
            let n = recs
                .iter()
                .filter(|r| same_packet(r, o, d) && r.verdict == FlowVerdict::Allowed)
                .count();
            // A probe is one connection: its reply and later packets are
            // established and never reported.
            if n != 1 {
                problems.push(format!("{o}: {n} {} records, want 1", d.as_str()));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    drop(agents);
    lab.down().unwrap();
}

/// More denials at once than the socket and the queue hold: every one is
/// either a record or counted as lost, in the metrics and in the records.
pub fn burst(plugin: CniPlugin, tag: &str) {
    if !root() {
        return;
    }
    let mut cfg = FlowLogConfig::new(7);
    cfg.receive_buffer = 8192;
    cfg.queue = 16;
    cfg.ring = 100_000;
    let (lab, agents) = logged_lab(&format!("flb{tag}"), plugin, &cfg);
    let ns = lab.pod("s/c1").unwrap().netns.clone();
    let (src, dst): (IpAddr, IpAddr) =
        ("10.79.1.10".parse().unwrap(), "10.79.2.11".parse().unwrap());
    const SENT: u64 = 20_000;
    let send = |n: u64| {
        in_netns(&ns, move || {
            let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
            // Paced so that every datagram reaches the node's forward
            // hook: the veth's backlog (1,000 packets) must not overflow,
            // while the flow log's socket and queue do.
            for i in 0..n {
                let _ = s.send_to(b"burst", SocketAddr::new(dst, 9999));
                if i % 200 == 199 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            Ok(())
        })
        .unwrap()
    };
    send(SENT);
    // One more after the burst: the sequence gap before it counts what
    // the kernel could not deliver.
    std::thread::sleep(Duration::from_millis(300));
    send(1);
    let a = &agents[lab
        .state
        .nodes
        .iter()
        .position(|n| n.node.as_deref() == Some("node-a"))
        .unwrap()];
    let lost = |cause: &str| {
        a.metrics
            .flow_lost
            .get_or_create(&palisade_agent::metrics::label("cause", cause))
            .get()
    };
    let count = || {
        records(std::slice::from_ref(a))
            .into_iter()
            .filter(|r| r.dst_ip == Some(dst) && r.port == 9999)
            .collect::<Vec<_>>()
    };
    // What reached the policy, as the kernel counts it (a veth's backlog
    // may drop some of the burst before the node sees it).
    let node_a = lab
        .state
        .nodes
        .iter()
        .find(|n| n.node.as_deref() == Some("node-a"))
        .unwrap();
    // A report lost at the very end shows as a gap only when a later one
    // arrives: one more attempt every 200 ms until everything the kernel
    // denied is accounted for.
    let t = Instant::now();
    let mut denied = denied_count(&node_a.netns);
    while (count().len() as u64) + lost("kernel") + lost("queue") < denied
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(200));
        send(1);
        denied = denied_count(&node_a.netns);
    }
    assert!(
        denied > SENT / 2,
        "most of the burst reached the node: {denied}"
    );
    let recs = count();
    let in_records: u64 = recs.iter().map(|r| r.lost).sum();
    let (kernel, queue) = (lost("kernel"), lost("queue"));
    eprintln!(
        "burst: {} records, lost {kernel} in the kernel and {queue} in the queue",
        recs.len()
    );
    assert!(kernel + queue > 0, "the burst fit: make it bigger");
    assert_eq!(
        recs.len() as u64 + kernel + queue,
        denied,
        "every report is a record or counted as lost"
    );
    assert_eq!(
        in_records,
        kernel + queue,
        "the records say what was lost before them"
    );
    drop(agents);
    lab.down().unwrap();
}

/// A staged lockdown of the client's ingress that forgets the other pod.
const LOCKDOWN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: client-lockdown
  namespace: s
  annotations: {palisade.dev/staged: "true"}
spec:
  podSelector: {matchLabels: {app: client}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
"#;

fn cluster_with(extra: &str) -> palisade_model::Cluster {
    let loaded = palisade_k8s::load(&[
        ("flows.yaml".into(), CLUSTER.as_bytes().to_vec()),
        ("lockdown.yaml".into(), extra.as_bytes().to_vec()),
    ]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded.cluster
}

/// A staged policy that would block an active connection: `would-deny`
/// records and metrics, and nothing blocked; once promoted (the same
/// policy without the annotation), the connection is denied and logged as
/// denied by it.
pub fn staged(plugin: CniPlugin, tag: &str) {
    if !root() {
        return;
    }
    let staged = cluster_with(LOCKDOWN);
    let e = Engine::new(staged.clone());
    let mut cfg = FlowLogConfig::new(7);
    cfg.sample_ppm = palisade_nft::FlowLog::SAMPLE_ALL;
    let lab = lab_up(&format!("flg{tag}"), &e, plugin, &ports());
    let agents: Vec<NodeAgent> = lab
        .state
        .nodes
        .iter()
        .map(|n| {
            let node = n.node.clone().unwrap();
            NodeAgent::start_logged(&node, &n.netns, &staged, Some(cfg.clone()))
        })
        .collect();
    wait_settled(&agents, "staged");
    let (src, dst): (IpAddr, IpAddr) =
        ("10.79.1.11".parse().unwrap(), "10.79.1.10".parse().unwrap());
    let to = SocketAddr::new(dst, 80);
    let connect = || {
        palisade_lab::connect(
            &lab.state,
            "s/o1",
            to,
            palisade_model::Protocol::Tcp,
            Duration::from_millis(500),
        )
        .unwrap()
    };
    assert!(connect(), "a staged policy blocks nothing");
    let ingress = |recs: &[FlowRecord]| -> Vec<FlowRecord> {
        recs.iter()
            .filter(|r| {
                r.src_ip == Some(src)
                    && r.dst_ip == Some(dst)
                    && r.port == 80
                    && r.direction == Direction::Ingress
            })
            .cloned()
            .collect()
    };
    let recs = soon(&agents, |r| !ingress(r).is_empty());
    let got = ingress(&recs);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].verdict, FlowVerdict::Allowed);
    assert_eq!(
        got[0].staged,
        Some(palisade_engine::flowlog::StagedVerdict::WouldDeny),
        "{:#?}",
        got[0]
    );
    assert_eq!(got[0].staged_policy.as_deref(), Some("s/client-lockdown"));
    let a = &agents[lab
        .state
        .nodes
        .iter()
        .position(|n| n.node.as_deref() == Some("node-a"))
        .unwrap()];
    let metric = a
        .metrics
        .flow_staged
        .get_or_create(&vec![
            ("policy".to_string(), "s/client-lockdown".to_string()),
            ("verdict".to_string(), "would-deny".to_string()),
        ])
        .get();
    assert_eq!(metric, 1);

    // Promoted: the same objects, the lockdown without its annotation.
    let promoted =
        cluster_with(&LOCKDOWN.replace("  annotations: {palisade.dev/staged: \"true\"}\n", ""));
    assert!(promoted.policies.iter().all(|p| !p.staged));
    for ag in &agents {
        ag.tx
            .send(palisade_agent::Input::Resync {
                scope: palisade_bench::agent::SCOPE.into(),
                entries: palisade_bench::agent::entries(&promoted),
            })
            .unwrap();
    }
    let t = Instant::now();
    while connect() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the promoted policy is never enforced"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recs = soon(&agents, |r| {
        ingress(r).iter().any(|x| x.verdict == FlowVerdict::Denied)
    });
    let denied: Vec<FlowRecord> = ingress(&recs)
        .into_iter()
        .filter(|r| r.verdict == FlowVerdict::Denied)
        .collect();
    assert!(!denied.is_empty(), "{recs:#?}");
    let d = &denied[0];
    assert_eq!(
        (d.node.as_str(), d.policy.as_deref(), d.staged),
        ("node-a", None, None)
    );
    assert!(
        d.reason
            .starts_with("ingress denied: s/c1 is isolated for ingress by s/client-lockdown"),
        "{}",
        d.reason
    );
    drop(agents);
    lab.down().unwrap();
}

/// Packets the node's `egress_denied` chain dropped (its counter).
fn denied_count(netns: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "-j",
            "list",
            "chain",
            "inet",
            "palisade",
            "egress_denied",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap().clone())
        .filter_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
        .sum()
}
