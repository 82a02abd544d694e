//! `palisade agent bench`: event-to-kernel latency of the agent against a
//! full rebuild and reload of the same state, on the shared synthetic
//! cluster, in a scratch network namespace (root).

use std::process::Command;
use std::time::{Duration, Instant};

use palisade_engine::synth::{self, Params};
use palisade_k8s::{Located, Object};
use palisade_model::{Cluster, LabelSelector, NetworkPolicy, Peer, Rule};

use crate::agent::{Agent, AgentConfig};
use crate::backend::{Backend, Nft};
use crate::delta::{self, Delta};
use crate::input::{Entry, Input};

pub const SCOPE: &str = "synth:";

/// One object as an input entry (origin `synth:<key>`).
pub fn entry(o: Object) -> Entry {
    Entry {
        origin: format!("{SCOPE}{}", o.key()),
        objects: vec![Located {
            file: "synth".into(),
            line: None,
            value: o,
        }],
        errors: Vec::new(),
    }
}

/// Every object of a cluster as entries.
pub fn entries(c: &Cluster) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    out.extend(
        c.namespaces
            .values()
            .map(|n| entry(Object::Namespace(n.clone()))),
    );
    out.extend(c.nodes.iter().map(|n| entry(Object::Node(n.clone()))));
    out.extend(c.pods.iter().map(|p| entry(Object::Pod(p.clone()))));
    out.extend(
        c.policies
            .iter()
            .map(|p| entry(Object::NetworkPolicy(p.clone()))),
    );
    out.extend(
        c.admin_policies
            .iter()
            .map(|p| entry(Object::AdminPolicy(p.clone()))),
    );
    out
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the benchmark; prints a report. `events` per event type.
pub fn run(params: Params, events: usize) -> Result<(), String> {
    let ns = format!("palisade-bench-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .map_err(|e| format!("ip netns add: {e}"))?;
    if !ok.success() {
        return Err("cannot create a network namespace (root needed)".into());
    }
    let r = measure(params, events, &ns);
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    r
}

fn measure(params: Params, events: usize, ns: &str) -> Result<(), String> {
    let mut cluster = synth::cluster(&params);
    let node = "node0".to_string();
    println!(
        "cluster: {} pods, {} policies, {} namespaces, {} nodes; agent for {node}; {events} events per kind",
        cluster.pods.len(),
        cluster.policies.len(),
        cluster.namespaces.len(),
        cluster.nodes.len()
    );
    let mut cfg = AgentConfig::new(&node, vec![SCOPE.to_string()]);
    cfg.debounce = Duration::ZERO;
    let mut agent = Agent::new(
        cfg,
        Nft {
            netns: Some(ns.to_string()),
        },
    );
    let t = Instant::now();
    agent.handle(Input::Resync {
        scope: SCOPE.into(),
        entries: entries(&cluster),
    });
    let first = agent.sync().map_err(|e| format!("{e:?}"))?;
    println!(
        "initial sync: {:.0} ms ({} elements loaded in one transaction)",
        ms(t.elapsed()),
        first.added
    );

    // Baseline: rebuild everything and reload the whole table.
    let mut full = Vec::new();
    let mut compile_only = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let rs = agent.desired()?;
        compile_only.push(t.elapsed());
        let d = Delta::Replace(Box::new(rs.clone()));
        Nft {
            netns: Some(ns.to_string()),
        }
        .apply(&d, &delta::replace_text(&rs))
        .map_err(|e| e.to_string())?;
        full.push(t.elapsed());
    }
    let full_p50 = percentile(&mut full, 0.5);
    println!(
        "full rebuild + reload: p50 {:.0} ms (of which rebuild {:.0} ms)",
        ms(full_p50),
        ms(percentile(&mut compile_only, 0.5))
    );

    let local: Vec<usize> = (0..cluster.pods.len())
        .filter(|&i| cluster.pods[i].node.as_deref() == Some(node.as_str()))
        .collect();
    let mut results = Vec::new();
    for kind in ["pod add", "pod relabel", "policy add"] {
        let mut lat = Vec::new();
        let mut changed = Vec::new();
        let mut replaced = 0;
        for k in 0..events {
            let obj = match kind {
                "pod add" => {
                    let mut p = cluster.pods[local[k % local.len()]].clone();
                    p.name = format!("bench-{k}");
                    let i = 200_000 + k;
                    p.ips = vec![synth::pod_ipv4(i), synth::pod_ipv6(i)];
                    Object::Pod(p)
                }
                "pod relabel" => {
                    let i = local[(k * 7) % local.len()];
                    let p = &mut cluster.pods[i];
                    let app = format!("app{}", (k + 1) % params.apps_per_namespace.max(1));
                    p.labels.insert("app".into(), app);
                    Object::Pod(p.clone())
                }
                _ => {
                    let target = &cluster.pods[local[(k * 13) % local.len()]];
                    Object::NetworkPolicy(NetworkPolicy {
                        namespace: target.namespace.clone(),
                        name: format!("bench-{k}"),
                        pod_selector: LabelSelector::from_labels([(
                            "app",
                            target.labels.get("app").map_or("x", String::as_str),
                        )]),
                        ingress: Some(vec![Rule {
                            peers: Some(vec![Peer::Pods {
                                namespaces: palisade_model::NamespaceScope::Own(
                                    target.namespace.clone(),
                                ),
                                pods: LabelSelector::from_labels([("tier", "frontend")]),
                            }]),
                            ports: None,
                        }]),
                        egress: None,
                    })
                }
            };
            let t = Instant::now();
            agent.handle(Input::Upsert(entry(obj)));
            let r = agent.sync().map_err(|e| format!("{e:?}"))?;
            lat.push(t.elapsed());
            changed.push(r.added + r.removed);
            replaced += usize::from(r.replaced);
        }
        let p50 = percentile(&mut lat, 0.5);
        let p99 = percentile(&mut lat, 0.99);
        changed.sort();
        results.push((kind, p50, p99, changed[changed.len() / 2], replaced));
    }
    println!();
    println!(
        "| event | p50 | p99 | elements changed (median) | table replaced | full rebuild / p50 |"
    );
    println!("|---|---|---|---|---|---|");
    for (kind, p50, p99, ch, rep) in &results {
        println!(
            "| {kind} | {:.1} ms | {:.1} ms | {ch} | {rep} of {events} | {:.1}x |",
            ms(*p50),
            ms(*p99),
            full_p50.as_secs_f64() / p50.as_secs_f64().max(1e-9)
        );
    }
    println!();
    println!(
        "agent memory: RSS {} MiB now, peak {} MiB",
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
    Ok(())
}
