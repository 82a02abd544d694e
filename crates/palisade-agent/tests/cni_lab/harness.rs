//! A CNI lab enforced by agents: one agent per lab node, running the
//! agent's own loop with its node source (netlink in the node's namespace)
//! and the nft backend, fed the cluster's objects as one resync, as a
//! datastore source would.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_agent::agent::NODE_SCOPE;
use palisade_agent::node::NodeSource;
use palisade_agent::{netlink, node, Agent, AgentConfig, Health, Input, Nft};
use palisade_bench::agent::{entries, SCOPE};
use palisade_engine::{Engine, PortProto};
use palisade_lab::{Cni, CniPlugin, Config, Lab, Observation, ProbeOptions, Serve};

/// One lab test at a time. Side by side they interfere: the burst test
/// fills the kernel's per-CPU backlog, which every network namespace
/// shares, and two bridged labs at once lost the first datagrams between
/// bridged pods (cause not found; each passes alone, and with any routed
/// test beside it).
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn root() -> bool {
    if palisade_lab::sys::is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the CNI lab tests need root, and CI runs as root"
    );
    eprintln!("skipped: the CNI lab needs root");
    false
}

pub fn lab_up(name: &str, engine: &Engine, plugin: CniPlugin, ports: &[PortProto]) -> Lab {
    let _ = palisade_lab::down(name);
    palisade_lab::up(
        engine,
        &Config {
            name: name.into(),
            serve: Serve::Threads,
            ports: ports.to_vec(),
            sources: Vec::new(),
            cni: Some(Cni::new(plugin)),
        },
    )
    .unwrap_or_else(|e| panic!("lab {name}: {e}"))
}

pub struct NodeAgent {
    pub node: String,
    /// The flow log's records, when started with one.
    #[allow(dead_code)]
    pub flows: Option<Arc<palisade_agent::flowlog::Ring>>,
    #[allow(dead_code)]
    pub metrics: Arc<palisade_agent::metrics::Metrics>,
    #[allow(dead_code)]
    pub netns: String,
    pub tx: Sender<Input>,
    pub health: Arc<Mutex<Health>>,
    source: Option<NodeSource>,
    thread: Option<JoinHandle<()>>,
}

impl NodeAgent {
    pub fn start(node: &str, netns: &str, engine: &Engine) -> NodeAgent {
        NodeAgent::start_logged(node, netns, engine.cluster(), None)
    }

    /// [`NodeAgent::start`] told `cluster` (staged policies included, which
    /// an engine leaves out), with a flow log when `flows` is given.
    pub fn start_logged(
        node: &str,
        netns: &str,
        cluster: &palisade_model::Cluster,
        flows: Option<palisade_agent::flowlog::FlowLogConfig>,
    ) -> NodeAgent {
        let cfg = AgentConfig::new(node, vec![SCOPE.into(), NODE_SCOPE.into()]);
        let mut agent = Agent::new(cfg, Nft::new(Some(netns.to_string())));
        let metrics = agent.metrics();
        metrics.watch_conntrack(Some(netns.to_string()));
        let flows = flows.map(|fc| {
            let log =
                palisade_agent::flowlog::FlowLog::start(fc, node, Some(netns), agent.metrics())
                    .unwrap_or_else(|e| panic!("flow log in {netns}: {e}"));
            let ring = log.ring();
            agent.set_flow_log(log);
            ring
        });
        let ns = netns.to_string();
        agent.set_poke(Box::new(move |stale, ips| {
            let _ = netlink::refresh_neighbours(Some(&ns), stale, ips);
        }));
        let health = agent.health();
        let (tx, rx) = channel();
        let source = node::spawn(Some(netns.to_string()), tx.clone())
            .unwrap_or_else(|e| panic!("node source in {netns}: {e}"));
        tx.send(Input::Resync {
            scope: SCOPE.into(),
            entries: entries(cluster),
        })
        .unwrap();
        let thread = std::thread::spawn(move || agent.run(rx));
        NodeAgent {
            node: node.into(),
            flows,
            metrics,
            netns: netns.into(),
            tx,
            health,
            source: Some(source),
            thread: Some(thread),
        }
    }

    /// Applied, with every local pod's interface known.
    pub fn settled(&self) -> bool {
        let h = self.health.lock().unwrap();
        h.ready && h.unwired.is_empty() && !h.is_degraded()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        // The loop ends when every sender is gone: ours and the source's.
        drop(self.source.take());
        let (dead, _) = channel();
        drop(std::mem::replace(&mut self.tx, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One agent per lab node.
pub fn agents(lab: &Lab, engine: &Engine) -> Vec<NodeAgent> {
    lab.state
        .nodes
        .iter()
        .map(|n| {
            let node = n.node.clone().expect("the cases' pods name their nodes");
            NodeAgent::start(&node, &n.netns, engine)
        })
        .collect()
}

pub fn wait_settled(agents: &[NodeAgent], what: &str) {
    let t = Instant::now();
    while !agents.iter().all(NodeAgent::settled) {
        if t.elapsed() > Duration::from_secs(30) {
            let states: Vec<String> = agents
                .iter()
                .map(|a| {
                    let h = a.health.lock().unwrap();
                    format!(
                        "{}: ready {}, unwired {:?}, {}",
                        a.node,
                        h.ready,
                        h.unwired,
                        h.status().trim()
                    )
                })
                .collect();
            panic!("{what}: agents never settled: {states:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn disagreements(obs: &[Observation], what: &str) -> Vec<String> {
    obs.iter()
        .filter(|o| !o.agrees())
        .map(|o| format!("{what}: {o}"))
        .collect()
}

/// Probes every pair until the kernel agrees with the engine (the agents'
/// last transaction may still be in flight) or 10 s pass; the
/// disagreements of the last probe, and how many probes it made.
pub fn probe(lab: &Lab, engine: &Engine, ports: &[PortProto], what: &str) -> (Vec<String>, usize) {
    let t = Instant::now();
    loop {
        let obs = palisade_lab::probe(&lab.state, engine, ports, &ProbeOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let bad = disagreements(&obs, what);
        if bad.is_empty() || t.elapsed() > Duration::from_secs(10) {
            return (bad, obs.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
