//! The dataplane benchmark: what enforcing a large cluster's ruleset costs
//! a real connection, measured against no ruleset in the same run.
//!
//! A synthetic cluster ([`palisade_bench::synth`]) is indexed and compiled;
//! two of its pods, on different nodes, whose TCP flow its policies allow by
//! rule in both directions (egress of the client, ingress of the server),
//! become a lab of their own. Their nodes then run in turn with no table,
//! with a conntrack-only table, with the ruleset compiled from the
//! *whole* synthetic cluster for that node (every pod of the node in its
//! sets, every policy in its allow sets), and with that ruleset reporting
//! to the agent's flow log (denials only, and every new connection), and
//! each time we measure:
//!
//! - the new-connection rate: sequential connect and close (RST, no
//!   TIME_WAIT) from the client pod to a listener in the server pod;
//! - the same with one request and response per connection (connect, send
//!   one byte, receive the server's one byte, close), as netperf's TCP_CRR
//!   and the CNI benchmarks built on it measure it: the handshake alone is
//!   the cheapest connection there is, so it shows the per-connection cost
//!   of tracking at its largest, and this shows it for a connection that
//!   carries something;
//! - TCP throughput: one bulk stream client → server across both nodes and
//!   the fabric.
//!
//! The setups are interleaved: every round measures each once, in an
//! order that rotates from round to round ([`round_order`]), and
//! the report gives per setup the median over rounds and the range, the
//! ratio of medians against no table, and the median of the per-round
//! (paired) ratios. On a small shared machine single measurements vary by
//! ±15 %: only medians over several interleaved rounds are worth comparing.
//!
//! Compile time (index build, compile, render) and `nft -f` load time are
//! measured on the way. Nothing here asserts on wall-clock numbers.

mod report;
mod traffic;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_engine::{Decision, Endpoint, Engine, PodId, PortProto};
use palisade_lab::{in_netns, sys, Config, Error, Lab, Result, Serve};
use palisade_model::Protocol;
use palisade_nft::{compile_with, interface_name, named_wiring, Local, Options};

use crate::synth;
pub use report::{median, round_order, Measure, NodeRuleset, Report, Setup, Summary};
use traffic::{measure, Listener};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub params: synth::Params,
    /// Length of each measurement.
    pub duration: Duration,
    /// Rounds over (no table, conntrack only, full ruleset), each in the
    /// order [`round_order`] gives.
    pub rounds: usize,
    /// Pause after each table swap, before measuring: replacing a table of
    /// tens of thousands of elements leaves the kernel deferred work (the
    /// old table's elements are freed after an RCU grace period, hash sets
    /// are resized by a worker) that would otherwise run on the same cores
    /// as the measurement and be charged to whichever setup comes next.
    pub settle: Duration,
    /// Lab name.
    pub lab: String,
}

/// Picks a client and a server pod on different nodes whose TCP flow to
/// the server's first container port both directions allow *by a rule*
/// (so the measured first packets walk the allow path), preferring
/// NetworkPolicy rules on both sides.
fn pick_pair(engine: &Engine) -> Option<(usize, usize, u16, u8)> {
    let c = engine.cluster();
    let idx = engine.index();
    let endpoints: Vec<usize> = (0..c.pods.len())
        .filter(|&i| idx.identity_of(PodId::new(i)).is_some() && !c.pods[i].host_network)
        .collect();
    let score = |d: Decision| match d {
        Decision::Allowed { .. } => 2,
        Decision::Admin { .. } => 1,
        _ => 0,
    };
    let mut best: Option<(usize, usize, u16, u8)> = None;
    let mut budget: u64 = 5_000_000;
    for &s in &endpoints {
        let Some(port) = c.pods[s]
            .ports
            .iter()
            .find(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
        else {
            continue;
        };
        for &cl in &endpoints {
            if budget == 0 {
                return best;
            }
            budget -= 1;
            if cl == s || c.pods[cl].node == c.pods[s].node {
                continue;
            }
            let Some(f) = engine.flow_in_family(
                Endpoint::Pod(cl),
                Endpoint::Pod(s),
                Protocol::Tcp,
                port,
                true,
            ) else {
                continue;
            };
            let e = engine.explain(&f);
            if !e.allowed() {
                continue;
            }
            let sc = score(e.egress.decision) + score(e.ingress.decision);
            if best.is_none_or(|b| sc > b.3) {
                best = Some((cl, s, port, sc));
                if sc == 4 {
                    return best;
                }
            }
        }
    }
    best
}

/// The NFLOG group of the logging setups.
const FLOW_GROUP: u16 = 1729;

/// A table that only tracks connections: what conntrack alone costs.
const CONNTRACK_ONLY: &str = "table inet palisade {}\ndelete table inet palisade\n\
table inet palisade {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\
\t\tct state established,related accept\n\t\tct state invalid drop\n\t}\n}\n";

/// Runs the benchmark (root only).
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    if !sys::is_root() {
        return Err(Error::Msg(
            "the dataplane benchmark builds network namespaces and loads nftables rulesets: run it as root".into(),
        ));
    }
    progress("generating and indexing the synthetic cluster");
    let cluster = synth::cluster(&cfg.params);
    let t = Instant::now();
    let engine = Engine::new(cluster);
    let index_build = t.elapsed();
    let c = engine.cluster();

    let (cl, sv, port, _) = pick_pair(&engine).ok_or_else(|| {
        Error::Msg("no pod pair on two nodes whose TCP flow the policies allow".into())
    })?;
    let flow = engine
        .flow_in_family(
            Endpoint::Pod(cl),
            Endpoint::Pod(sv),
            Protocol::Tcp,
            port,
            true,
        )
        .expect("picked with an IPv4 flow");
    let why = engine.verdict(&flow).reasons;
    let dst_ip = flow.dst_ip.expect("a synthetic pod has addresses");
    let dst = SocketAddr::new(dst_ip, port);
    // A port the engine denies for the pair, to check enforcement.
    let denied = (1..1024u16).find(|&p| {
        engine
            .flow_in_family(Endpoint::Pod(cl), Endpoint::Pod(sv), Protocol::Tcp, p, true)
            .is_some_and(|f| !engine.allowed(&f))
    });

    progress("building the lab");
    let lab = two_pod_lab(&engine, cl, sv, &cfg.lab)?;
    let client = c.pods[cl].key();
    let server = c.pods[sv].key();

    progress("compiling the nodes' rulesets");
    let (mut nodes, texts) = compile_nodes(&engine, &lab, None)?;
    let logged = |sample_ppm| palisade_nft::FlowLog {
        group: FLOW_GROUP,
        sample_ppm,
        generation: 1,
    };
    let (_, denial_texts) = compile_nodes(&engine, &lab, Some(logged(0)))?;
    let (_, all_texts) = compile_nodes(
        &engine,
        &lab,
        Some(logged(palisade_nft::FlowLog::SAMPLE_ALL)),
    )?;
    // The agent's own flow log reads and attributes the reports, on the
    // same machine, as it would on a node.
    progress("starting the nodes' flow logs");
    let mut flow_logs = Vec::new();
    for n in &lab.state.nodes {
        let name = n.node.clone().unwrap_or_default();
        let log = palisade_agent::flowlog::FlowLog::start(
            palisade_agent::flowlog::FlowLogConfig::new(FLOW_GROUP),
            &name,
            Some(&n.netns),
            std::sync::Arc::new(palisade_agent::metrics::Metrics::new()),
        )
        .map_err(|e| Error::Msg(e.to_string()))?;
        log.publish(1, palisade_agent::flowlog::Snapshot::Cluster(c.clone()));
        flow_logs.push(log);
    }
    let texts_of = |s: Setup| match s {
        Setup::LogDenials => &denial_texts,
        Setup::LogAll => &all_texts,
        _ => &texts,
    };

    let server_ns = lab
        .pod(&server)
        .ok_or_else(|| Error::Msg("server pod missing from the lab".into()))?
        .netns
        .clone();
    let listener = Listener::start(&server_ns, port)?;
    let mut measures: Vec<(Setup, Vec<Measure>)> =
        Setup::ALL.iter().map(|&s| (s, Vec::new())).collect();
    let mut denied_blocked = None;
    for round in 0..cfg.rounds.max(1) {
        for setup in round_order(round) {
            let k = Setup::ALL
                .iter()
                .position(|&s| s == setup)
                .expect("a known setup");
            progress(&format!("round {}: {}", round + 1, setup.label()));
            load_setup(&lab, setup, texts_of(setup), &mut nodes)?;
            if setup == Setup::Full && denied_blocked.is_none() {
                if let Some(p) = denied {
                    let reached = reaches(&lab, &client, SocketAddr::new(dst_ip, p))?;
                    denied_blocked = Some((p, !reached));
                }
            }
            std::thread::sleep(cfg.settle);
            let m = measure(&lab, &client, &listener, dst, cfg.duration)?;
            measures[k].1.push(m);
        }
    }
    drop(listener);
    let recorded: usize = flow_logs
        .iter()
        .map(|l| l.ring().snapshot(&Default::default()).0.len())
        .sum();
    progress(&format!(
        "flow log records made while measuring: {recorded}"
    ));
    drop(flow_logs);
    lab.down()?;
    Ok(Report {
        pods: c.pods.len(),
        policies: c.policies.len(),
        admin_policies: c.admin_policies.len(),
        identities: engine.index().identities().len(),
        index_build,
        client,
        server,
        dst,
        why,
        nodes,
        measures,
        denied_blocked,
        duration: cfg.duration,
        settle: cfg.settle,
    })
}

/// A lab of the client pod `cl` and the server pod `sv` alone; their
/// nodes get the whole cluster's rulesets later.
fn two_pod_lab(engine: &Engine, cl: usize, sv: usize, name: &str) -> Result<Lab> {
    let c = engine.cluster();
    let mut small = c.clone();
    small.pods = vec![c.pods[cl].clone(), c.pods[sv].clone()];
    small.policies.clear();
    small.admin_policies.clear();
    let small = Engine::new(small);
    let _ = palisade_lab::down(name);
    let lab = palisade_lab::up(
        &small,
        &Config {
            name: name.to_string(),
            serve: Serve::Threads,
            ports: vec![PortProto {
                port: 9,
                protocol: Protocol::Udp,
            }],
            sources: Vec::new(),
            cni: None,
        },
    )?;
    for p in lab.state.pods.clone() {
        in_netns(&p.netns, || {
            sys::write_sysctls(&[("net.ipv4.ip_local_port_range", "1024 65535")])
        })?;
    }
    Ok(lab)
}

/// Each lab node's ruleset for the whole cluster, with its sizes and
/// compile and render times, and its `nft -f` text.
fn compile_nodes(
    engine: &Engine,
    lab: &Lab,
    flow_log: Option<palisade_nft::FlowLog>,
) -> Result<(Vec<NodeRuleset>, Vec<String>)> {
    let c = engine.cluster();
    let mut nodes = Vec::new();
    let mut texts = Vec::new();
    for n in &lab.state.nodes {
        let name = n.node.clone().unwrap_or_default();
        let t = Instant::now();
        let rs = compile_with(
            engine,
            &Options {
                local: Local::Node(name.clone()),
                wiring: named_wiring(engine, &Local::Node(name.clone()), interface_name),
                flow_log,
                kept_mark: Default::default(),
            },
        )?;
        let compile = t.elapsed();
        let t = Instant::now();
        let text = rs.to_nft_replace_text();
        let render = t.elapsed();
        let mut sizes: Vec<(String, usize)> = rs
            .sets
            .iter()
            .map(|s| (s.name.clone(), s.elements.len()))
            .collect();
        let elements = sizes.iter().map(|x| x.1).sum();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sizes.truncate(4);
        nodes.push(NodeRuleset {
            local_pods: c
                .pods
                .iter()
                .filter(|p| p.node.as_deref() == Some(name.as_str()) && p.is_endpoint())
                .count(),
            node: name,
            compile,
            render,
            text_bytes: text.len(),
            elements,
            largest: sizes,
            loads: Vec::new(),
        });
        texts.push(text);
    }
    Ok((nodes, texts))
}

/// Puts every lab node in `setup` (timing the full ruleset's loads) and
/// forgets the connections tracked under the previous one.
fn load_setup(lab: &Lab, setup: Setup, texts: &[String], nodes: &mut [NodeRuleset]) -> Result<()> {
    for n in 0..lab.state.nodes.len() {
        match setup {
            Setup::NoTable => lab
                .load_table(n, "table inet palisade {}\ndelete table inet palisade\n")
                .map(|_| ())?,
            Setup::ConntrackOnly => lab.load_table(n, CONNTRACK_ONLY).map(|_| ())?,
            Setup::Full => {
                let d = lab.load_table(n, &texts[n])?;
                nodes[n].loads.push(d);
            }
            Setup::LogDenials | Setup::LogAll => lab.load_table(n, &texts[n]).map(|_| ())?,
        }
    }
    // Old conntrack entries belong to the previous setup. Best effort: a
    // node without the conntrack tool only measures with warmer tables.
    for node in &lab.state.nodes {
        let _ = Command::new("ip")
            .args(["netns", "exec", &node.netns, "conntrack", "-F"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

/// Whether a TCP connection from lab pod `client` to `dst` gets through
/// (refused counts: the packet arrived).
fn reaches(lab: &Lab, client: &str, dst: SocketAddr) -> Result<bool> {
    let ns = lab.pod(client).expect("in the lab").netns.clone();
    in_netns(&ns, move || {
        Ok(
            match TcpStream::connect_timeout(&dst, Duration::from_millis(500)) {
                Ok(_) => true,
                Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
            },
        )
    })
}
