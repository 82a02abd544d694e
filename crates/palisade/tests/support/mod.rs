//! Pieces shared by the end-to-end tests that run agents against a lab:
//! processes killed on drop, engines from manifest texts, health checks
//! and probing until the kernel agrees with the engine.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_engine::{Engine, PortProto};
use palisade_lab::{Config, Lab, ProbeOptions, Serve};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An etcd named `name`, its data under `dir/etcd`, on free loopback
/// ports; killed when dropped, and maybe not serving yet. Its client URL.
pub fn spawn_etcd(dir: &Path, name: &str) -> (Proc, String) {
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("{name}={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    (Proc(child), client)
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The engine of manifest texts (each one file), which must be valid.
pub fn engine(docs: &[&str]) -> Engine {
    let inputs: Vec<(String, Vec<u8>)> = docs
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("{i}.yaml"), f.as_bytes().to_vec()))
        .collect();
    let loaded = palisade_k8s::load(&inputs);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    Engine::new(loaded.cluster)
}

/// An agent's HTTP endpoint on loopback: (status, body), (0, "") when
/// it does not answer.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    palisade_agent::http::get(addr, path).unwrap_or((0, String::new()))
}

/// Probes port 80/TCP until the kernel agrees with `engine` on every pair
/// (agents apply asynchronously); returns how many pairs are allowed.
pub fn converge(state: &palisade_lab::State, engine: &Engine, what: &str) -> usize {
    let ports = [PortProto {
        port: 80,
        protocol: palisade_model::Protocol::Tcp,
    }];
    let opts = ProbeOptions {
        timeout: Duration::from_millis(200),
        ..ProbeOptions::default()
    };
    let t = Instant::now();
    loop {
        let obs = palisade_lab::probe(state, engine, &ports, &opts).unwrap();
        let bad: Vec<String> = obs
            .iter()
            .filter(|o| !o.agrees())
            .map(|o| format!("{} -> {}: kernel {}", o.src, o.dst, o.observed))
            .collect();
        if bad.is_empty() {
            return obs.iter().filter(|o| o.observed).count();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{what}: {bad:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A lab of `engine`'s nodes and pods listening on 80/TCP, wired by the
/// reference CNI `plugin` and enforcing nothing until agents load their
/// tables (one left over by an interrupted run is removed first), with
/// each node's name and network namespace.
pub fn lab_up(
    name: &str,
    engine: &Engine,
    plugin: palisade_lab::CniPlugin,
) -> (Lab, Vec<(String, String)>) {
    let _ = palisade_lab::down(name);
    let lab = palisade_lab::up(
        engine,
        &Config {
            name: name.into(),
            serve: Serve::Threads,
            ports: vec![PortProto {
                port: 80,
                protocol: palisade_model::Protocol::Tcp,
            }],
            sources: Vec::new(),
            cni: Some(palisade_lab::Cni::new(plugin)),
        },
    )
    .expect("lab up");
    let nodes = lab
        .state
        .nodes
        .iter()
        .map(|n| (n.node.clone().expect("named node"), n.netns.clone()))
        .collect();
    (lab, nodes)
}
