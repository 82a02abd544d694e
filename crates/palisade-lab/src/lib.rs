//! A network-namespace lab: the cluster's nodes and pods as real network
//! namespaces, each node enforcing the ruleset Palisade compiles for it, and
//! probes that send real packets and compare what arrives with the engine.
//!
//! Edge crate: it runs `ip` and `nft`, enters namespaces and needs root.
//!
//! # Layout
//!
//! Every name starts with `pl-<lab>-`, so several labs and the host never
//! clash; nothing is created in the host namespace.
//!
//! - `pl-<lab>-fab`: the fabric, a router with one veth to each node; it
//!   routes every pod address to its node.
//! - `pl-<lab>-n<i>`: one per node (or one node when no pod names a node).
//!   Its `fab0` leads to the fabric; one veth per local pod, named as
//!   [`palisade_nft::interface_name`] names it, carries `169.254.1.1` and
//!   `fe80::1` as the pods' gateway. The node forwards and loads the
//!   compiled `inet palisade` table.
//! - `pl-<lab>-p<j>`: one per endpoint pod (host-network pods are node
//!   traffic and get none), `eth0` with the pod's IPv4 and IPv6 addresses.
//!
//! In CNI mode ([`Config::cni`]) a standard CNI plugin wires each pod
//! instead, run in the node's namespace as a container runtime runs it; the
//! pods keep the cluster's addresses, each node also routes every remote
//! pod's address via `fab0`, and the lab loads no ruleset (the node agents
//! do). The [`cni`] module describes it.
//!
//! TCP and UDP listeners echo on the probed ports in every pod namespace;
//! the kernel has no SCTP sockets, so SCTP is probed with a raw INIT whose
//! arrival a raw socket in the destination namespace observes.
//!
//! The state of a lab (`/run/palisade-lab/<lab>.json`) lists what it made;
//! [`down`] removes that and nothing else.

pub mod cni;
mod serve;
pub mod sys;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_engine::{Endpoint, Engine, PortProto};
use palisade_model::Protocol;
use palisade_nft::{compile_with, Local, Options};
use serde::{Deserialize, Serialize};

pub use cni::{Cni, CniPlugin};
pub use serve::{bind as bind_listeners, Listeners};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Compile(#[from] palisade_nft::CompileError),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |error| Error::Io { context, error }
}

/// Where lab state files live.
pub const STATE_DIR: &str = "/run/palisade-lab";

fn state_path(name: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{name}.json"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 16
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::Msg(format!(
            "lab name {name:?}: use 1-16 lowercase letters and digits"
        )));
    }
    Ok(())
}

fn prefix(name: &str) -> String {
    format!("pl-{name}-")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    pub netns: String,
    /// The cluster node, or `None` for the lab's node of pods that name none.
    pub node: Option<String>,
    /// Keys (`namespace/name`) of the pods on this node.
    pub pods: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodState {
    pub key: String,
    pub netns: String,
    pub node: usize,
    pub ips: Vec<IpAddr>,
    /// CNI mode: the addresses (with prefixes) the plugin's result gave
    /// `eth0`.
    #[serde(default)]
    pub addresses: Vec<ipnet::IpNet>,
    /// CNI mode: the pod's host-side interface, as the plugin's result
    /// names it.
    #[serde(default)]
    pub host_interface: Option<String>,
    /// CNI mode: what DEL needs.
    #[serde(default)]
    pub cni: Option<cni::PodCni>,
}

/// What a lab made: enough to probe it from another process and to remove
/// exactly it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// Every namespace the lab made (or was about to make).
    pub netns: Vec<String>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// Listener processes (pid, expected command line fragment).
    pub pids: Vec<u32>,
    /// Opaque to the lab: what the caller built the cluster from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Ports the listeners serve.
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// The CNI plugin that wired the pods; `None`: the lab's own veths.
    #[serde(default)]
    pub cni: Option<CniPlugin>,
    /// Where the CNI plugins are (CNI mode).
    #[serde(default)]
    pub cni_bin_dir: Option<PathBuf>,
}

impl State {
    fn save(&self) -> Result<()> {
        std::fs::create_dir_all(STATE_DIR).map_err(io_err(STATE_DIR))?;
        let p = state_path(&self.name);
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&p, text).map_err(io_err(p.display().to_string()))
    }
}

/// How listeners run.
#[derive(Clone, Debug)]
pub enum Serve {
    /// Threads of this process (the lab lives as long as the [`Lab`]).
    Threads,
    /// Separate processes, `PROGRAM lab serve --tcp .. --udp ..` started with
    /// `ip netns exec`, which outlive this process (until [`down`]).
    Spawn(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub serve: Serve,
    /// Ports the listeners serve; empty: the engine's default ports.
    pub ports: Vec<PortProto>,
    pub sources: Vec<String>,
    /// Wire pods with a CNI plugin (and load no ruleset); `None`: the lab's
    /// own veths and the compiled rulesets.
    pub cni: Option<Cni>,
}

/// A running lab. Dropping it stops in-process listeners and removes the
/// lab unless [`Lab::keep`] was called.
pub struct Lab {
    pub state: State,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    keep: bool,
}

/// Runs `cmd` with `input` on stdin and collects its output, whatever its
/// exit status (a command that exits without reading its input is no
/// error here: its status and output tell).
fn run_output(cmd: &mut Command, input: Option<&str>) -> std::io::Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(i) = input {
        let mut stdin = child.stdin.take().expect("piped");
        match stdin.write_all(i.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            _ => {}
        }
    }
    child.wait_with_output()
}

fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = run_output(cmd, input).map_err(io_err(what.clone()))?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            input
                .map(|i| format!("\ninput:\n{}", i.chars().take(4000).collect::<String>()))
                .unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_batch(netns: Option<&str>, lines: &str) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    c.args(["-batch", "-"]);
    run(&mut c, Some(lines)).map(|_| ())
}

/// Runs `f` on a (new) thread inside the namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let ns = netns.to_string();
    std::thread::spawn(move || {
        sys::enter_netns(&ns)?;
        f()
    })
    .join()
    .map_err(|_| Error::Msg("namespace thread panicked".into()))?
    .map_err(io_err(format!("in namespace {netns}")))
}

const NS_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
];

fn ns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the namespaces of lab `name` that exist now.
pub fn existing_netns(name: &str) -> Vec<String> {
    let p = prefix(name);
    let mut v: Vec<String> = ns_list()
        .into_iter()
        .filter(|n| n.starts_with(&p))
        .collect();
    v.sort();
    v
}

fn listener_ports(engine: &Engine, ports: &[PortProto]) -> (Vec<u16>, Vec<u16>) {
    let ports = if ports.is_empty() {
        engine.default_ports()
    } else {
        ports.to_vec()
    };
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for p in ports {
        match p.protocol {
            Protocol::Tcp => {
                tcp.insert(p.port);
            }
            Protocol::Udp => {
                udp.insert(p.port);
            }
            Protocol::Sctp => {}
        }
    }
    (tcp.into_iter().collect(), udp.into_iter().collect())
}

/// Brings a lab up for the cluster of `engine`.
pub fn up(engine: &Engine, cfg: &Config) -> Result<Lab> {
    if !sys::is_root() {
        return Err(Error::Msg("the lab needs root".into()));
    }
    check_name(&cfg.name)?;
    if state_path(&cfg.name).exists()
        || !existing_netns(&cfg.name).is_empty()
        || cni::ipam_dir(&cfg.name).exists()
    {
        return Err(Error::Msg(format!(
            "lab {:?} exists; run `lab down --name {}` first",
            cfg.name, cfg.name
        )));
    }
    let cluster = engine.cluster();
    let idx = engine.index();
    let pfx = prefix(&cfg.name);

    // Lab nodes: every node a pod names; pods naming none share one.
    let pods: Vec<usize> = (0..cluster.pods.len())
        .filter(|&i| idx.pod_identity[i].is_some() && !cluster.pods[i].host_network)
        .collect();
    let mut node_names: BTreeSet<Option<String>> = BTreeSet::new();
    for &i in &pods {
        node_names.insert(cluster.pods[i].node.clone());
    }
    let node_names: Vec<Option<String>> = node_names.into_iter().collect();
    let mut nodes: Vec<NodeState> = node_names
        .iter()
        .enumerate()
        .map(|(n, name)| NodeState {
            netns: format!("{pfx}n{n}"),
            node: name.clone(),
            pods: Vec::new(),
        })
        .collect();
    let mut pod_states = Vec::new();
    for (j, &i) in pods.iter().enumerate() {
        let p = &cluster.pods[i];
        let n = node_names
            .iter()
            .position(|x| *x == p.node)
            .expect("collected above");
        nodes[n].pods.push(p.key());
        pod_states.push(PodState {
            key: p.key(),
            netns: format!("{pfx}p{j}"),
            node: n,
            ips: p.ips.clone(),
            addresses: Vec::new(),
            host_interface: None,
            cni: None,
        });
    }
    let fabric = format!("{pfx}fab");
    let mut all_ns = vec![fabric.clone()];
    all_ns.extend(nodes.iter().map(|n| n.netns.clone()));
    all_ns.extend(pod_states.iter().map(|p| p.netns.clone()));
    let (tcp_ports, udp_ports) = listener_ports(engine, &cfg.ports);
    let state = State {
        name: cfg.name.clone(),
        netns: all_ns.clone(),
        nodes,
        pods: pod_states,
        pids: Vec::new(),
        sources: cfg.sources.clone(),
        tcp_ports,
        udp_ports,
        cni: cfg.cni.as_ref().map(|c| c.plugin.clone()),
        cni_bin_dir: cfg.cni.as_ref().map(|c| c.bin_dir.clone()),
    };
    // Record intent first: a failure half-way can still be cleaned up.
    state.save()?;
    let mut lab = Lab {
        state,
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
        keep: false,
    };
    lab.build(engine, cfg)?;
    Ok(lab)
}

impl Lab {
    fn build(&mut self, engine: &Engine, cfg: &Config) -> Result<()> {
        let st = &self.state;
        let fabric = st.netns[0].clone();
        ip_batch(
            None,
            &st.netns
                .iter()
                .map(|n| format!("netns add {n}\n"))
                .collect::<String>(),
        )?;
        for ns in &st.netns {
            in_netns(ns, || sys::write_sysctls(NS_SYSCTLS))?;
        }
        let cluster = engine.cluster();
        let pod_index: HashMap<String, usize> = cluster
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key(), i))
            .collect();

        let mut fab = String::from("link set lo up\n");
        for (n, node) in st.nodes.iter().enumerate() {
            let nid = n + 1;
            let mut b = String::from("link set lo up\n");
            b += &format!("link add fab0 type veth peer name n{n} netns {fabric}\n");
            b += "link set fab0 up\n";
            b += &format!("addr add 169.254.100.{nid}/32 dev fab0\n");
            b += &format!("addr add fe80::100:{nid:x}/64 dev fab0 nodad\n");
            b += "route add 169.254.200.1/32 dev fab0 scope link\n";
            b += "route add default via 169.254.200.1 dev fab0\n";
            b += "route add default via fe80::1 dev fab0\n";
            fab += &format!("link set n{n} up\n");
            fab += &format!("addr add 169.254.200.1/32 dev n{n}\n");
            fab += &format!("addr add fe80::1/64 dev n{n} nodad\n");
            fab += &format!("route add 169.254.100.{nid}/32 dev n{n} scope link\n");
            if cfg.cni.is_some() {
                // The plugin wires the local pods; remote ones are the
                // fabric's, even where a local subnet contains them.
                for ip in st.pods.iter().filter(|p| p.node != n).flat_map(|p| &p.ips) {
                    match ip {
                        IpAddr::V4(a) => {
                            b += &format!("route add {a}/32 via 169.254.200.1 dev fab0\n")
                        }
                        IpAddr::V6(a) => b += &format!("route add {a}/128 via fe80::1 dev fab0\n"),
                    }
                }
            }
            for pod in st.pods.iter().filter(|p| p.node == n) {
                for ip in &pod.ips {
                    match ip {
                        IpAddr::V4(a) => {
                            fab += &format!("route add {a}/32 via 169.254.100.{nid} dev n{n}\n");
                        }
                        IpAddr::V6(a) => {
                            fab += &format!("route add {a}/128 via fe80::100:{nid:x} dev n{n}\n");
                        }
                    }
                }
                if cfg.cni.is_some() {
                    continue;
                }
                let iface = palisade_nft::interface_name(&cluster.pods[pod_index[&pod.key]]);
                b += &format!(
                    "link add {iface} type veth peer name eth0 netns {}\n",
                    pod.netns
                );
                b += &format!("link set {iface} up\n");
                b += &format!("addr add 169.254.1.1/32 dev {iface}\n");
                b += &format!("addr add fe80::1/64 dev {iface} nodad\n");
                for ip in &pod.ips {
                    match ip {
                        IpAddr::V4(a) => b += &format!("route add {a}/32 dev {iface}\n"),
                        IpAddr::V6(a) => b += &format!("route add {a}/128 dev {iface}\n"),
                    }
                }
            }
            ip_batch(Some(&node.netns), &b)?;
        }
        ip_batch(Some(&fabric), &fab)?;
        if let Some(c) = &cfg.cni {
            // The plugin wires the pods; the node agents load the rules.
            cni::wire(&mut self.state, c, cluster)?;
            return self.start_listeners(&cfg.serve);
        }
        for pod in &st.pods {
            let mut b = String::from("link set lo up\nlink set eth0 up\n");
            for ip in &pod.ips {
                match ip {
                    IpAddr::V4(a) => b += &format!("addr add {a}/32 dev eth0\n"),
                    IpAddr::V6(a) => b += &format!("addr add {a}/128 dev eth0 nodad\n"),
                }
            }
            b += "route add 169.254.1.1/32 dev eth0 scope link\n";
            b += "route add default via 169.254.1.1 dev eth0\n";
            b += "route add default via fe80::1 dev eth0\n";
            ip_batch(Some(&pod.netns), &b)?;
        }
        self.apply(engine)?;
        self.start_listeners(&cfg.serve)?;
        Ok(())
    }

    /// The local pods of each lab node, for the compiler.
    fn locality(&self, engine: &Engine, n: usize) -> Local {
        let node = &self.state.nodes[n];
        let single = self.state.nodes.len() == 1;
        match &node.node {
            Some(name) if !single => Local::Node(name.clone()),
            Some(name) => {
                // One node: still its addresses are "own node".
                Local::Node(name.clone())
            }
            None if single => Local::All,
            None => Local::Pods(
                engine
                    .cluster()
                    .pods
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| node.pods.contains(&p.key()))
                    .map(|(i, _)| i)
                    .collect(),
            ),
        }
    }

    /// Compiles the ruleset of every node for `engine` (same pods, any
    /// policies) and replaces each node's table in one transaction.
    pub fn apply(&self, engine: &Engine) -> Result<()> {
        for (n, node) in self.state.nodes.iter().enumerate() {
            let local = self.locality(engine, n);
            let wiring = palisade_nft::named_wiring(engine, &local, palisade_nft::interface_name);
            let rs = compile_with(engine, &Options { local, wiring })?;
            run(
                Command::new("ip").args(["netns", "exec", &node.netns, "nft", "-f", "-"]),
                Some(&rs.to_nft_replace_text()),
            )?;
        }
        Ok(())
    }

    /// Runs one `nft -f` transaction in lab node `node`'s namespace and
    /// returns how long it took.
    pub fn load_table(&self, node: usize, text: &str) -> Result<Duration> {
        let t = Instant::now();
        run(
            Command::new("ip").args([
                "netns",
                "exec",
                &self.state.nodes[node].netns,
                "nft",
                "-f",
                "-",
            ]),
            Some(text),
        )?;
        Ok(t.elapsed())
    }

    fn start_listeners(&mut self, serve: &Serve) -> Result<()> {
        let (tcp, udp) = (self.state.tcp_ports.clone(), self.state.udp_ports.clone());
        match serve {
            Serve::Threads => {
                for pod in &self.state.pods {
                    let (tx, rx) = std::sync::mpsc::channel();
                    let ns = pod.netns.clone();
                    let (tcp, udp, stop) = (tcp.clone(), udp.clone(), self.stop.clone());
                    self.threads.push(std::thread::spawn(move || {
                        let l = sys::enter_netns(&ns).and_then(|_| serve::bind(&tcp, &udp));
                        match l {
                            Ok(l) => {
                                let _ = tx.send(Ok(()));
                                l.run(stop);
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e));
                            }
                        }
                    }));
                    rx.recv()
                        .map_err(|_| Error::Msg("listener thread died".into()))?
                        .map_err(io_err(format!("listening in {}", pod.netns)))?;
                }
            }
            Serve::Spawn(program) => {
                let join = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
                let mut children = Vec::new();
                for pod in self.state.pods.clone() {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", &pod.netns]).arg(program);
                    c.args(["lab", "serve"]);
                    // An empty list is no value at all for the listener's
                    // command line: pass only what there is.
                    if !tcp.is_empty() {
                        c.args(["--tcp", &join(&tcp)]);
                    }
                    if !udp.is_empty() {
                        c.args(["--udp", &join(&udp)]);
                    }
                    // The listener says on stdout when it is bound (or why
                    // it is not): probing its port from here instead would
                    // hold the port for a moment and could make the
                    // listener's own bind fail.
                    c.stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    use std::os::unix::process::CommandExt;
                    c.process_group(0);
                    let mut child = c.spawn().map_err(io_err("starting a listener"))?;
                    self.state.pids.push(child.id());
                    self.state.save()?;
                    let stdout = child.stdout.take().expect("stdout is piped");
                    children.push((pod.netns.clone(), child, stdout));
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                for (ns, mut child, stdout) in children {
                    match serve::wait_ready(stdout, deadline) {
                        Ok(()) => {}
                        Err(why) => {
                            let _ = child.kill();
                            let status = child.wait().map(|s| format!(" ({s})"));
                            let mut stderr = String::new();
                            if let Some(mut e) = child.stderr.take() {
                                let _ = e.read_to_string(&mut stderr);
                            }
                            return Err(Error::Msg(format!(
                                "listener in {ns} did not start: {why}{}{}",
                                status.unwrap_or_default(),
                                stderr
                                    .lines()
                                    .map(|l| format!("\n  {l}"))
                                    .collect::<String>()
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Leaves the lab running when this value is dropped.
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// CNI mode: the runtime's DEL for one pod (its interface goes; its
    /// namespace and listeners stay).
    pub fn cni_del(&mut self, key: &str) -> Result<()> {
        let j = self.pod_index(key)?;
        cni::del(&mut self.state, j)
    }

    /// CNI mode: ADD for one pod again, with the same addresses.
    pub fn cni_add(&mut self, key: &str) -> Result<()> {
        let j = self.pod_index(key)?;
        let (Some(plugin), Some(bin_dir)) =
            (self.state.cni.clone(), self.state.cni_bin_dir.clone())
        else {
            return Err(Error::Msg(format!(
                "lab {} is not wired by CNI",
                self.state.name
            )));
        };
        cni::add(&mut self.state, j, &plugin, &bin_dir)
    }

    fn pod_index(&self, key: &str) -> Result<usize> {
        self.state
            .pods
            .iter()
            .position(|p| p.key == key)
            .ok_or_else(|| Error::Msg(format!("no pod {key} in lab {}", self.state.name)))
    }

    pub fn pod(&self, key: &str) -> Option<&PodState> {
        self.state.pods.iter().find(|p| p.key == key)
    }

    /// Removes the lab now.
    pub fn down(mut self) -> Result<()> {
        self.keep = true;
        self.stop_threads();
        down(&self.state.name)
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_threads();
        if !self.keep {
            if let Err(e) = down(&self.state.name) {
                eprintln!("removing lab {}: {e}", self.state.name);
            }
        }
    }
}

/// Loads a running lab's state (for probing from another process).
pub fn load(name: &str) -> Result<State> {
    check_name(name)?;
    let p = state_path(name);
    let text =
        std::fs::read_to_string(&p).map_err(io_err(format!("lab {name:?} ({})", p.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Msg(format!("{}: {e}", p.display())))
}

/// Removes everything lab `name` made: its listener processes, in CNI mode
/// its pods' wiring (`CNI_COMMAND=DEL`) and IPAM directory, its namespaces
/// (with their veths) and its state file.
pub fn down(name: &str) -> Result<()> {
    check_name(name)?;
    let state = load(name).ok();
    if let Some(st) = &state {
        for &pid in &st.pids {
            // Only a process that is still our listener.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("lab serve") {
                // SAFETY: plain kill(2) of a known pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
    }
    if let Some(st) = &state {
        cni::unwire(st);
    }
    let mut names: BTreeSet<String> = existing_netns(name).into_iter().collect();
    if let Some(st) = &state {
        let present: HashSet<String> = ns_list().into_iter().collect();
        names.extend(st.netns.iter().filter(|n| present.contains(*n)).cloned());
    }
    if !names.is_empty() {
        ip_batch(
            None,
            &names
                .iter()
                .map(|n| format!("netns del {n}\n"))
                .collect::<String>(),
        )?;
    }
    cni::remove_ipam(name)?;
    let p = state_path(name);
    if p.exists() {
        std::fs::remove_file(&p).map_err(io_err(p.display().to_string()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- probes

/// One probed flow: predicted by the engine, observed with packets.
#[derive(Clone, Debug, Serialize)]
pub struct Observation {
    pub src: String,
    pub dst: String,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub expected: bool,
    pub observed: bool,
}

impl Observation {
    pub fn agrees(&self) -> bool {
        self.expected == self.observed
    }
}

/// `src -> dst (src_ip -> dst_ip) port/proto: engine allowed, kernel denied`.
impl std::fmt::Display for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = |b: bool| if b { "allowed" } else { "denied" };
        write!(
            f,
            "{} -> {} ({} -> {}) {}/{}: engine {}, kernel {}",
            self.src,
            self.dst,
            self.src_ip,
            self.dst_ip,
            self.port,
            self.protocol,
            word(self.expected),
            word(self.observed)
        )
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// How long a denied connection attempt waits.
    pub timeout: Duration,
    pub threads: usize,
    /// Source pods to probe from (keys); empty: all.
    pub only_src: Vec<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: Duration::from_millis(300),
            threads: 64,
            only_src: Vec::new(),
        }
    }
}

struct Task {
    src: usize,
    dst: usize,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    port: PortProto,
    expected: bool,
}

static TAG: AtomicUsize = AtomicUsize::new(1);

fn probe_tcp(dst: SocketAddr, timeout: Duration) -> bool {
    match TcpStream::connect_timeout(&dst, timeout) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

fn probe_udp(dst: SocketAddr, timeout: Duration) -> bool {
    let any: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let Ok(s) = UdpSocket::bind(any) else {
        return false;
    };
    if s.connect(dst).is_err() || s.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    if s.send(b"palisade-probe").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.recv(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Probes every ordered pair of lab pods (a pod to itself is left out: the
/// API leaves loopback undefined) for every port, over IPv4 and IPv6, and
/// returns what arrived next to what `engine` predicts.
pub fn probe(
    state: &State,
    engine: &Engine,
    ports: &[PortProto],
    opts: &ProbeOptions,
) -> Result<Vec<Observation>> {
    if !sys::is_root() {
        return Err(Error::Msg("probing the lab needs root".into()));
    }
    let cluster = engine.cluster();
    let pod_index: HashMap<String, usize> = cluster
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.key(), i))
        .collect();
    let mut tasks = Vec::new();
    for (si, s) in state.pods.iter().enumerate() {
        if !opts.only_src.is_empty() && !opts.only_src.contains(&s.key) {
            continue;
        }
        let Some(&sp) = pod_index.get(&s.key) else {
            return Err(Error::Msg(format!("pod {} is not in the cluster", s.key)));
        };
        for (di, d) in state.pods.iter().enumerate() {
            if si == di {
                continue;
            }
            let Some(&dp) = pod_index.get(&d.key) else {
                return Err(Error::Msg(format!("pod {} is not in the cluster", d.key)));
            };
            for &port in ports {
                for v4 in [true, false] {
                    let Some(f) = engine.flow_in_family(
                        Endpoint::Pod(sp),
                        Endpoint::Pod(dp),
                        port.protocol,
                        port.port,
                        v4,
                    ) else {
                        continue;
                    };
                    tasks.push(Task {
                        src: si,
                        dst: di,
                        src_ip: f.src_ip,
                        dst_ip: f.dst_ip,
                        port,
                        expected: engine.allowed(&f),
                    });
                }
            }
        }
    }

    let (sctp, stream): (Vec<usize>, Vec<usize>) =
        (0..tasks.len()).partition(|&i| tasks[i].port.protocol == Protocol::Sctp);
    let observed = vec![false; tasks.len()];

    // TCP and UDP: a worker pool, each worker entering the source namespace.
    let run_stream = |list: &[usize], timeout: Duration, observed: &Mutex<Vec<bool>>| {
        let next = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..opts.threads.clamp(1, list.len().max(1)) {
                sc.spawn(|| {
                    let mut current: Option<usize> = None;
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = list.get(k) else { break };
                        let t = &tasks[i];
                        if current != Some(t.src) {
                            if sys::enter_netns(&state.pods[t.src].netns).is_err() {
                                continue;
                            }
                            current = Some(t.src);
                        }
                        let dst = SocketAddr::new(t.dst_ip, t.port.port);
                        let ok = match t.port.protocol {
                            Protocol::Tcp => probe_tcp(dst, timeout),
                            Protocol::Udp => probe_udp(dst, timeout),
                            Protocol::Sctp => false,
                        };
                        observed.lock().expect("no poisoning")[i] = ok;
                    }
                });
            }
        });
    };
    let obs = Mutex::new(observed);
    run_stream(&stream, opts.timeout, &obs);
    // An allowed probe that saw nothing is retried with a longer timeout
    // (a slow first packet is not a verdict); a denied one never is.
    let retry: Vec<usize> = stream
        .iter()
        .copied()
        .filter(|&i| tasks[i].expected && !obs.lock().expect("no poisoning")[i])
        .collect();
    if !retry.is_empty() {
        run_stream(&retry, opts.timeout * 4, &obs);
    }
    let mut observed = obs.into_inner().expect("no poisoning");

    if !sctp.is_empty() {
        let mut pending: Vec<usize> = sctp.clone();
        for attempt in 0..2 {
            let seen = sctp_round(state, &tasks, &pending, opts.timeout * (attempt + 1))?;
            for &i in &pending {
                observed[i] = seen.contains(&i);
            }
            pending.retain(|&i| tasks[i].expected && !observed[i]);
            if pending.is_empty() {
                break;
            }
        }
    }

    Ok(tasks
        .iter()
        .zip(observed)
        .map(|(t, o)| Observation {
            src: state.pods[t.src].key.clone(),
            dst: state.pods[t.dst].key.clone(),
            src_ip: t.src_ip,
            dst_ip: t.dst_ip,
            port: t.port.port,
            protocol: t.port.protocol.to_string(),
            expected: t.expected,
            observed: o,
        })
        .collect())
}

/// Sends one raw SCTP INIT per task and returns the tasks whose INIT arrived
/// in the destination namespace.
fn sctp_round(
    state: &State,
    tasks: &[Task],
    list: &[usize],
    wait: Duration,
) -> Result<HashSet<usize>> {
    // Receivers first, in every destination namespace and family.
    let mut receivers = BTreeMap::new();
    for &i in list {
        let t = &tasks[i];
        let key = (t.dst, t.dst_ip.is_ipv4());
        if let std::collections::btree_map::Entry::Vacant(e) = receivers.entry(key) {
            let v4 = key.1;
            e.insert(in_netns(&state.pods[t.dst].netns, move || {
                sys::raw_sctp(v4)
            })?);
        }
    }
    let mut by_tag: HashMap<u32, usize> = HashMap::new();
    let mut by_src: BTreeMap<usize, Vec<(usize, u32)>> = BTreeMap::new();
    for &i in list {
        let tag = TAG.fetch_add(1, Ordering::Relaxed) as u32 | 0x5000_0000;
        by_tag.insert(tag, i);
        by_src.entry(tasks[i].src).or_default().push((i, tag));
    }
    // (source netns, [(destination, port, initiate tag)])
    type Batch = (String, Vec<(IpAddr, u16, u32)>);
    let batches: Vec<Batch> = by_src
        .into_iter()
        .map(|(s, v)| {
            (
                state.pods[s].netns.clone(),
                v.into_iter()
                    .map(|(i, tag)| (tasks[i].dst_ip, tasks[i].port.port, tag))
                    .collect(),
            )
        })
        .collect();
    for (ns, sends) in batches {
        in_netns(&ns, move || {
            let s4 = sys::raw_sctp(true)?;
            let s6 = sys::raw_sctp(false)?;
            for (dst, port, tag) in sends {
                let pkt = sys::sctp_init(40000 + (tag % 20000) as u16, port, tag);
                let s = if dst.is_ipv4() { &s4 } else { &s6 };
                s.send(&pkt, dst)?;
            }
            Ok(())
        })?;
    }
    std::thread::sleep(wait);
    let mut seen = HashSet::new();
    let mut buf = [0u8; 2048];
    for ((dst, v4), fd) in &receivers {
        while let Ok((n, from)) = sys::recv_from(fd, &mut buf) {
            if let Some((port, tag)) = sys::parse_sctp_init(&buf[..n], *v4) {
                if let Some(&i) = by_tag.get(&tag) {
                    let t = &tasks[i];
                    if t.dst == *dst && t.port.port == port && t.src_ip == from {
                        seen.insert(i);
                    }
                }
            }
        }
    }
    Ok(seen)
}

trait SendRaw {
    fn send(&self, pkt: &[u8], dst: IpAddr) -> std::io::Result<()>;
}

impl SendRaw for std::os::fd::OwnedFd {
    fn send(&self, pkt: &[u8], dst: IpAddr) -> std::io::Result<()> {
        sys::send_to(self, pkt, dst)
    }
}

/// Runs the listener in the current namespace until the process ends.
///
/// Prints `ready` on stdout once every port is bound, or the reason it
/// could not bind, for [`Lab::up`] to wait on.
pub fn serve_forever(tcp: &[u16], udp: &[u16]) -> Result<()> {
    let l = match serve::bind(tcp, udp) {
        Ok(l) => l,
        Err(e) => {
            println!("binding listeners: {e}");
            return Err(io_err("binding listeners")(e));
        }
    };
    println!("{}", serve::READY);
    l.run(Arc::new(AtomicBool::new(false)));
    Ok(())
}

/// Opens a TCP connection from a lab pod (for tests of established flows).
pub fn connect_from(
    state: &State,
    src: &str,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    let pod = state
        .pods
        .iter()
        .find(|p| p.key == src)
        .ok_or_else(|| Error::Msg(format!("no pod {src} in the lab")))?;
    in_netns(&pod.netns, move || {
        TcpStream::connect_timeout(&dst, timeout)
    })
}

/// Sends `msg` on `s` and reads the echo back.
pub fn echo_roundtrip(s: &mut TcpStream, msg: &[u8], timeout: Duration) -> bool {
    let _ = s.set_read_timeout(Some(timeout));
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg
}
