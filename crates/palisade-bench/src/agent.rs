//! `palisade agent bench`: event-to-kernel latency of the agent against a
//! full rebuild and reload of the same state, on the shared synthetic
//! cluster, in a scratch network namespace (root).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_agent::delta::{self, Delta};
use palisade_agent::{Agent, AgentConfig, Backend, Entry, Input, Nft, SyncPath};
use palisade_k8s::{Located, Object};
use palisade_model::{Cluster, LabelSelector, NetworkPolicy, Peer, Rule};

use crate::synth::{self, Params};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ReplicaHere,
    ReplicaThere,
    RelabelHere,
    RelabelThere,
    NewWorkload,
    PolicyAdd,
}

const KINDS: [Kind; 6] = [
    Kind::ReplicaHere,
    Kind::ReplicaThere,
    Kind::RelabelHere,
    Kind::RelabelThere,
    Kind::NewWorkload,
    Kind::PolicyAdd,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ReplicaHere => "pod add: replica of a workload, on this node",
            Kind::ReplicaThere => "pod add: replica of a workload, on another node",
            Kind::RelabelHere => "pod relabel to another workload's labels, this node",
            Kind::RelabelThere => "pod relabel to another workload's labels, another node",
            Kind::NewWorkload => "pod add: new workload, on this node",
            Kind::PolicyAdd => "policy add",
        }
    }
}

struct Row {
    kind: &'static str,
    p50: Duration,
    p99: Duration,
    fast: usize,
    fast_p50: Duration,
    fast_p99: Duration,
    full_p50: Duration,
    changed: usize,
    replaced: usize,
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
    let cluster = synth::cluster(&params);
    let node = "node0".to_string();
    println!(
        "cluster: {} pods, {} policies, {} admin policies, {} namespaces, {} nodes; agent for {node}; {events} events per kind",
        cluster.pods.len(),
        cluster.policies.len(),
        cluster.admin_policies.len(),
        cluster.namespaces.len(),
        cluster.nodes.len()
    );
    let mut cfg = AgentConfig::new(&node, vec![SCOPE.to_string()]);
    cfg.debounce = Duration::ZERO;
    let mut agent = Agent::new(cfg, Nft::new(Some(ns.to_string())));
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
    let full_p50 = full_rebuild(&agent, ns)?;

    let mut source = Events::new(cluster, node, params.seed);
    let mut totals = Totals::default();
    let mut rows = Vec::new();
    for kind in KINDS {
        rows.push(run_kind(
            &mut agent,
            &mut source,
            kind,
            events,
            &mut totals,
        )?);
    }
    print_rows(&rows, events, full_p50);
    totals.print(full_p50);
    println!();
    println!(
        "agent memory: RSS {} MiB now, peak {} MiB",
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
    Ok(())
}

/// The baseline: rebuild everything and reload the whole table; prints
/// and returns the median of three.
fn full_rebuild<B: Backend>(agent: &Agent<B>, ns: &str) -> Result<Duration, String> {
    let mut full = Vec::new();
    let mut compile_only = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let rs = agent.desired().map_err(|e| e.to_string())?;
        compile_only.push(t.elapsed());
        let d = Delta::Replace(Box::new(rs.clone()));
        Nft::new(Some(ns.to_string()))
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
    Ok(full_p50)
}

/// Makes the benchmark's events, keeping `cluster` equal to what the agent
/// was sent so that later events pick from the current state.
struct Events {
    cluster: Cluster,
    node: String,
    others: Vec<String>,
    rng: synth::Rng,
    fresh: usize,
}

impl Events {
    fn new(cluster: Cluster, node: String, seed: u64) -> Events {
        let others = cluster
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| *n != node)
            .collect();
        Events {
            cluster,
            node,
            others,
            rng: synth::Rng::new(seed ^ 0xbe7c),
            fresh: 200_000,
        }
    }

    /// The `k`-th event of `kind`.
    fn next(&mut self, kind: Kind, k: usize) -> Object {
        match kind {
            Kind::ReplicaHere | Kind::ReplicaThere => self.replica(kind == Kind::ReplicaHere),
            Kind::NewWorkload => self.new_workload(k),
            Kind::RelabelHere | Kind::RelabelThere => self.relabel(kind == Kind::RelabelHere, k),
            Kind::PolicyAdd => self.policy_add(k),
        }
    }

    /// One more replica of a random workload, scheduled here or on another
    /// node.
    fn replica(&mut self, here: bool) -> Object {
        let (c, r) = (&mut self.cluster, &mut self.rng);
        let mut p = c.pods[r.below(c.pods.len())].clone();
        p.name = format!("{}-bench{}", p.name, self.fresh);
        p.ips = vec![synth::pod_ipv4(self.fresh), synth::pod_ipv6(self.fresh)];
        p.node = Some(if here || self.others.is_empty() {
            self.node.clone()
        } else {
            self.others[r.below(self.others.len())].clone()
        });
        self.fresh += 1;
        c.pods.push(p.clone());
        Object::Pod(p)
    }

    fn new_workload(&mut self, k: usize) -> Object {
        let (c, r) = (&mut self.cluster, &mut self.rng);
        let mut p = c.pods[r.below(c.pods.len())].clone();
        p.name = format!("bench-new{k}");
        p.labels.insert("app".into(), format!("bench-new{k}"));
        p.ips = vec![synth::pod_ipv4(self.fresh), synth::pod_ipv6(self.fresh)];
        p.node = Some(self.node.clone());
        self.fresh += 1;
        c.pods.push(p.clone());
        Object::Pod(p)
    }

    /// A pod takes the labels of another workload of its namespace with
    /// the same container ports.
    fn relabel(&mut self, here: bool, k: usize) -> Object {
        let (c, r, node) = (&mut self.cluster, &mut self.rng, self.node.as_str());
        let i = loop {
            let i = r.below(c.pods.len());
            if (c.pods[i].node.as_deref() == Some(node)) == here {
                break i;
            }
        };
        let p = &c.pods[i];
        let like = c
            .pods
            .iter()
            .filter(|q| q.namespace == p.namespace && q.ports == p.ports && q.labels != p.labels)
            .map(|q| q.labels.clone())
            .nth(r.below(4));
        let p = &mut c.pods[i];
        match like {
            Some(l) => p.labels = l,
            None => {
                p.labels.insert("app".into(), format!("bench-relabel{k}"));
            }
        }
        Object::Pod(p.clone())
    }

    /// Isolates a workload that has a pod on this node.
    fn policy_add(&mut self, k: usize) -> Object {
        let local: Vec<&palisade_model::Pod> = self
            .cluster
            .pods
            .iter()
            .filter(|p| p.node.as_deref() == Some(self.node.as_str()))
            .collect();
        let target = local[self.rng.below(local.len())];
        Object::NetworkPolicy(NetworkPolicy {
            namespace: target.namespace.clone(),
            name: format!("bench-{k}"),
            pod_selector: LabelSelector::from_labels([(
                "app",
                target.labels.get("app").map_or("x", String::as_str),
            )]),
            ingress: Some(vec![Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: palisade_model::NamespaceScope::Own(target.namespace.clone()),
                    pods: LabelSelector::from_labels([("tier", "frontend")]),
                }]),
                ports: None,
            }]),
            egress: None,
            staged: false,
        })
    }
}

/// What every event of every kind adds to the closing summary.
#[derive(Default)]
struct Totals {
    all: Vec<Duration>,
    fast_all: Vec<Duration>,
    fast_apply: Vec<Duration>,
    collected: usize,
    collect_time: Duration,
    paths: BTreeMap<&'static str, usize>,
}

/// Sends `events` events of `kind`, one sync each, and times them.
fn run_kind<B: Backend>(
    agent: &mut Agent<B>,
    source: &mut Events,
    kind: Kind,
    events: usize,
    totals: &mut Totals,
) -> Result<Row, String> {
    let mut lat = Vec::new();
    let mut lat_fast = Vec::new();
    let mut lat_full = Vec::new();
    let mut changed = Vec::new();
    let mut replaced = 0;
    for k in 0..events {
        let obj = source.next(kind, k);
        let t = Instant::now();
        agent.handle(Input::Upsert(entry(obj)));
        let r = agent.sync().map_err(|e| format!("{e:?}"))?;
        let d = t.elapsed();
        lat.push(d);
        totals.all.push(d);
        *totals.paths.entry(r.path.name()).or_insert(0usize) += 1;
        if r.path != SyncPath::Full {
            lat_fast.push(d);
            totals.fast_all.push(d);
            totals.fast_apply.push(r.apply);
        } else {
            lat_full.push(d);
        }
        changed.push(r.added + r.removed);
        // What the idle agent does between events: remove unreachable
        // interval elements, a batch per transaction (not timed as
        // event latency; reported below).
        let t = Instant::now();
        let before = agent.garbage_len();
        while agent.collect_garbage().map_err(|e| format!("{e:?}"))? > 0 {}
        if before > 0 {
            totals.collected += before;
            totals.collect_time += t.elapsed();
        }
        replaced += usize::from(r.replaced);
    }
    changed.sort();
    Ok(Row {
        kind: kind.name(),
        p50: percentile(&mut lat, 0.5),
        p99: percentile(&mut lat, 0.99),
        fast: lat_fast.len(),
        fast_p50: percentile(&mut lat_fast, 0.5),
        fast_p99: percentile(&mut lat_fast, 0.99),
        full_p50: percentile(&mut lat_full, 0.5),
        changed: changed[changed.len() / 2],
        replaced,
    })
}

fn print_rows(rows: &[Row], events: usize, full_p50: Duration) {
    let opt = |n: usize, d: Duration| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1} ms", ms(d))
        }
    };
    println!();
    println!(
        "| event | p50 | p99 | without rebuild | those p50 | those p99 | full-path p50 | elements changed (median) | table replaced | full rebuild / p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {} of {events} | {} | {} | {} | {} | {} of {events} | {:.0}x |",
            r.kind,
            ms(r.p50),
            ms(r.p99),
            r.fast,
            opt(r.fast, r.fast_p50),
            opt(r.fast, r.fast_p99),
            opt(events - r.fast, r.full_p50),
            r.changed,
            r.replaced,
            full_p50.as_secs_f64() / r.p50.as_secs_f64().max(1e-9)
        );
    }
    println!();
}

impl Totals {
    fn print(&mut self, full_p50: Duration) {
        let all = &mut self.all;
        let paths: Vec<String> = self.paths.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let p50 = percentile(all, 0.5);
        println!(
            "all {} events ({}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; full rebuild + reload / p50 = {:.0}x, / p99 = {:.0}x",
            all.len(),
            paths.join(", "),
            ms(p50),
            ms(percentile(all, 0.99)),
            ms(percentile(all, 1.0)),
            full_p50.as_secs_f64() / p50.as_secs_f64().max(1e-9),
            full_p50.as_secs_f64() / percentile(all, 0.99).as_secs_f64().max(1e-9),
        );
        let (fast_all, fast_apply) = (&mut self.fast_all, &mut self.fast_apply);
        let n = fast_all.len();
        if n > 0 {
            let p50 = percentile(fast_all, 0.5);
            println!(
                "events without rebuild: {n}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; full rebuild + reload / p50 = {:.0}x",
                ms(p50),
                ms(percentile(fast_all, 0.99)),
                ms(percentile(fast_all, 1.0)),
                full_p50.as_secs_f64() / p50.as_secs_f64().max(1e-9)
            );
            println!(
                "of which the kernel transaction: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms(percentile(fast_apply, 0.5)),
                ms(percentile(fast_apply, 0.99)),
                ms(percentile(fast_apply, 1.0)),
            );
        }
        println!(
            "unreachable interval elements removed while idle: {}, in {:.0} ms ({} per transaction, or one table replacement above {})",
            self.collected,
            ms(self.collect_time),
            AgentConfig::new("", vec![]).collect_batch,
            AgentConfig::new("", vec![]).collect_replace_above
        );
    }
}
