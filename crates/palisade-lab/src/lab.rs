//! Bringing a lab up and down: namespaces, veths, routes, the compiled
//! rulesets and the listeners.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_engine::{Engine, PodId, PortProto};
use palisade_model::Protocol;
use palisade_nft::{compile_with, Local, Options};

use crate::cmd::{ns_list, NS_SYSCTLS};
use crate::state::{check_name, prefix, state_path};
use crate::{
    cni, existing_netns, in_netns, io_err, ip_batch, load, run, serve, sys, Cni, Error, NodeState,
    PodState, Result, State,
};

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

    // Lab nodes: every node a pod names; pods naming none share one. A
    // workload's pod template has no address: nothing to build.
    let pods: Vec<usize> = (0..cluster.pods.len())
        .filter(|&i| {
            let p = &cluster.pods[i];
            idx.identity_of(PodId::new(i)).is_some()
                && !p.host_network
                && p.template_kind().is_none()
        })
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
        let pod_index = crate::state::pod_index(cluster);

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
            let rs = compile_with(
                engine,
                &Options {
                    local,
                    wiring,
                    flow_log: None,
                    kept_mark: Default::default(),
                },
            )?;
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
        self.state.pod(key)
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
