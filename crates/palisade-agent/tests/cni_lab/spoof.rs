//! Spoofed sources and late interfaces, observed by sockets the test binds
//! in the pods' namespaces.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_engine::Engine;
use palisade_lab::{in_netns, Lab};

/// The nodes and pods of [`CLUSTER`], shared with the hostile-traffic
/// cluster (a macro, so that both stay one literal each).
macro_rules! pods {
    () => {
        r#"
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
metadata: {name: a1, namespace: s, labels: {app: evil}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.78.1.10}, {ip: "fd78::1:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a2, namespace: s, labels: {app: trusted}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.78.1.11}, {ip: "fd78::1:11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a3, namespace: s, labels: {app: target}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.78.1.12}, {ip: "fd78::1:12"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, namespace: s, labels: {app: target}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.78.2.10}, {ip: "fd78::2:10"}]}
"#
    };
}
pub(crate) use pods;

/// The egress policy of [`CLUSTER`], shared like [`pods`].
macro_rules! trusted_egress {
    () => {
        r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: trusted, namespace: s}
spec:
  podSelector: {matchLabels: {app: trusted}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: target}}}]}]
"#
    };
}
pub(crate) use trusted_egress;

/// node-a: a1 (evil), a2 (trusted), a3 (target); node-b: b1 (target).
/// Targets accept only trusted pods; trusted pods may send only to
/// targets.
pub const CLUSTER: &str = concat!(
    pods!(),
    r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: targets, namespace: s}
spec:
  podSelector: {matchLabels: {app: target}}
  ingress: [{from: [{podSelector: {matchLabels: {app: trusted}}}]}]
"#,
    trusted_egress!()
);

pub const PORT: u16 = 7000;

pub fn engine() -> Engine {
    let loaded = palisade_k8s::load(&[("spoof.yaml".into(), CLUSTER.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    Engine::new(loaded.cluster)
}

pub fn netns(lab: &Lab, pod: &str) -> String {
    lab.pod(&format!("s/{pod}"))
        .unwrap_or_else(|| panic!("no pod {pod}"))
        .netns
        .clone()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A socket bound in `netns` on `addr`, port [`PORT`].
pub fn listen(netns: &str, addr: IpAddr) -> UdpSocket {
    in_netns(netns, move || {
        let s = UdpSocket::bind(SocketAddr::new(addr, PORT))?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(s)
    })
    .unwrap()
}

/// Datagrams `s` receives within `wait`, by source.
pub fn received(s: &UdpSocket, wait: Duration) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    while t.elapsed() < wait {
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            out.push(from.ip());
        }
    }
    out
}

/// Whether a datagram from `from` reaches `s` within 3 s: a check that
/// something arrives need not wait as long as one that nothing does, and
/// may wait longer on a loaded machine.
pub fn arrives(s: &UdpSocket, from: IpAddr) -> bool {
    let t = Instant::now();
    let mut buf = [0u8; 64];
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok((_, f)) = s.recv_from(&mut buf) {
            if f.ip() == from {
                // What else was sent with it is not for the next check.
                received(s, Duration::from_millis(100));
                return true;
            }
        }
    }
    false
}

/// Sends a few datagrams from `src` (an address of the namespace) to
/// `dst`.
pub fn send(netns: &str, src: IpAddr, dst: IpAddr) {
    in_netns(netns, move || {
        let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
        for _ in 0..3 {
            let _ = s.send_to(b"probe", SocketAddr::new(dst, PORT));
        }
        Ok(())
    })
    .unwrap();
}

pub fn ip_cmd(netns: &str, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip -n {netns} {args:?}");
}

/// Sends from `src` to `dst` every millisecond until stopped, ignoring
/// errors (the address may not be there yet).
pub fn flood(
    netns: &str,
    src: IpAddr,
    dst: IpAddr,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let ns = netns.to_string();
    let h = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let mut sent = 0u64;
            while !s2.load(Ordering::Relaxed) {
                if let Ok(s) = UdpSocket::bind(SocketAddr::new(src, 0)) {
                    if s.send_to(b"early", SocketAddr::new(dst, PORT)).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(sent)
        })
        .unwrap()
    });
    (stop, h)
}
