//! Hostile traffic on CNI wiring: packets a pod crafts byte by byte
//! (`palisade_lab::raw`) and sends on its own interface, observed by a
//! packet socket on the target's interface, which sees whatever the node
//! let through before the target's IP layer decides anything. Every attack
//! is checked next to a legitimate packet of the same shape that must
//! arrive, so that nothing passing cannot pass for a drop.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_engine::{Engine, PortProto};
use palisade_lab::raw::{self, Link, Mac};
use palisade_lab::{in_netns, CniPlugin, Lab};
use palisade_model::Protocol;

use crate::harness::{agents, lab_up, root, wait_settled, NodeAgent};
use crate::{plugins, spoof, tag};

/// node-a: a1 (evil), a2 (trusted), a3 (target); node-b: b1 (target).
/// Targets accept only trusted pods, on port 7000 only; trusted pods may
/// send only to targets; a1 and a2 accept anything (not isolated).
pub const CLUSTER: &str = concat!(
    spoof::pods!(),
    r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: targets, namespace: s}
spec:
  podSelector: {matchLabels: {app: target}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: trusted}}}]
    ports: [{port: 7000, protocol: TCP}, {port: 7000, protocol: UDP}, {port: 7000, protocol: SCTP}]
"#,
    spoof::trusted_egress!()
);

pub const ALLOWED: u16 = 7000;
pub const DENIED: u16 = 7001;
/// No pod listens here: what arrives is answered with port unreachable.
pub const CLOSED: u16 = 7009;

pub const WAIT: Duration = Duration::from_millis(700);

pub fn engine_of(yaml: &str) -> Engine {
    let loaded = palisade_k8s::load(&[("hostile.yaml".into(), yaml.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    Engine::new(loaded.cluster)
}

/// One pod of the lab as an attacker or a victim sees it.
#[derive(Clone)]
pub struct Pod {
    pub netns: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
    pub mac: Mac,
}

impl Pod {
    pub fn ip(&self, v4: bool) -> IpAddr {
        if v4 {
            self.v4
        } else {
            self.v6
        }
    }

    /// A packet socket on the pod's `eth0`.
    pub fn link(&self) -> Link {
        in_netns(&self.netns, || Link::open("eth0")).unwrap()
    }

    /// Sends the IP packet `packet` on the pod's `eth0`, framed for its next
    /// hop towards `dst`.
    pub fn send_ip(&self, link: &Link, dst: IpAddr, packet: &[u8]) {
        let hop = next_hop_mac(&self.netns, dst);
        link.send(&raw::ether(hop, self.mac, raw::ethertype(packet), packet))
            .unwrap();
    }
}

pub struct Hostile {
    pub lab: Lab,
    pub agents: Vec<NodeAgent>,
    pub a1: Pod,
    pub a2: Pod,
    pub a3: Pod,
    pub b1: Pod,
    /// node-a's namespace.
    pub node_a: String,
}

impl Hostile {
    pub fn down(self) {
        drop(self.agents);
        self.lab.down().unwrap();
    }
}

/// The lab's own listeners: TCP only, so that the tests may bind UDP
/// [`ALLOWED`] themselves.
pub fn ports() -> Vec<PortProto> {
    vec![PortProto {
        port: ALLOWED,
        protocol: Protocol::Tcp,
    }]
}

/// The lab of [`CLUSTER`] named `cnih` + `letter` + the plugin's tag, its
/// agents settled; `None` where the plugin is not to run here.
pub fn up(letter: &str, plugin: &CniPlugin) -> Option<Hostile> {
    if !root() || !plugins().contains(plugin) {
        return None;
    }
    let engine = engine_of(CLUSTER);
    let name = format!("cnih{letter}{}", tag(plugin));
    let lab = lab_up(&name, &engine, plugin.clone(), &ports());
    let agents = agents(&lab, &engine);
    wait_settled(&agents, &name);
    let pod = |name: &str, v4: &str, v6: &str| {
        let netns = lab.pod(&format!("s/{name}")).unwrap().netns.clone();
        let mac = mac_of(&netns);
        Pod {
            netns,
            v4: v4.parse().unwrap(),
            v6: v6.parse().unwrap(),
            mac,
        }
    };
    let a1 = pod("a1", "10.78.1.10", "fd78::1:10");
    let a2 = pod("a2", "10.78.1.11", "fd78::1:11");
    let a3 = pod("a3", "10.78.1.12", "fd78::1:12");
    let b1 = pod("b1", "10.78.2.10", "fd78::2:10");
    let node_a = agents[0].netns.clone();
    Some(Hostile {
        lab,
        agents,
        a1,
        a2,
        a3,
        b1,
        node_a,
    })
}

pub fn mac_of(netns: &str) -> Mac {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", "eth0"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    palisade_nft::parse_mac(v[0]["address"].as_str().unwrap()).unwrap()
}

pub fn json(netns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The MAC of the neighbour a pod sends to for `dst`: the gateway, or `dst`
/// itself on its link. The kernel resolves it on a datagram to the
/// discard port, which no test observes.
pub fn next_hop_mac(netns: &str, dst: IpAddr) -> Mac {
    let route = json(netns, &["route", "get", &dst.to_string()]);
    let hop = route[0]["gateway"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| dst.to_string());
    let t = Instant::now();
    loop {
        let n = json(netns, &["neigh", "show", "to", &hop, "dev", "eth0"]);
        if let Some(mac) = n[0]["lladdr"].as_str() {
            return palisade_nft::parse_mac(mac).unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{netns}: no neighbour {hop}"
        );
        let to: IpAddr = hop.parse().unwrap();
        let _ = in_netns(netns, move || {
            let any: IpAddr = if to.is_ipv4() {
                "0.0.0.0".parse().unwrap()
            } else {
                "::".parse().unwrap()
            };
            let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
            let _ = s.send_to(b"resolve", SocketAddr::new(to, 9));
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A marker unique to one packet of one test: what a packet socket looks
/// for in what arrives.
pub fn marker(what: &str, n: u32) -> Vec<u8> {
    let what: String = what.chars().take(6).collect();
    format!("~{what:.<6}{n:04}~").into_bytes()
}

/// A UDP datagram of 56 bytes from `src` to `dst:dport` carrying `mark`
/// (12 bytes) at bytes 8 and 36, so that a fragment of bytes 0-24 and one
/// of bytes 32-48 each carry it whole.
pub fn datagram(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, mark: &[u8]) -> Vec<u8> {
    let mut payload = vec![b'.'; 48];
    payload[..mark.len()].copy_from_slice(mark);
    payload[28..28 + mark.len()].copy_from_slice(mark);
    raw::udp(src, dst, sport, dport, &payload)
}

/// A UDP socket in `netns` bound on `addr:port`.
pub fn listen(netns: &str, addr: IpAddr, port: u16) -> UdpSocket {
    in_netns(netns, move || {
        let s = UdpSocket::bind(SocketAddr::new(addr, port))?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(s)
    })
    .unwrap()
}

/// Payloads `s` receives within `wait`.
pub fn payloads(s: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 2048];
    while t.elapsed() < wait {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

/// Conntrack entries of `netns` whose text mentions `needle`.
pub fn conntrack_entries(netns: &str, family: &str, needle: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "conntrack", "-L", "-f", family])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

pub fn family(v4: bool) -> &'static str {
    if v4 {
        "ipv4"
    } else {
        "ipv6"
    }
}

pub fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

pub fn ip_cmd(netns: &str, args: &[&str]) {
    crate::spoof::ip_cmd(netns, args)
}

mod addresses;
mod conn;
mod fragments;
mod neighbours;
mod policy;
mod table;
