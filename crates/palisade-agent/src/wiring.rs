//! From what the node says ([`NodeFacts`]) and which pods the datastore
//! puts on it, to how each local pod is reached ([`Wiring`]): pure, so the
//! agent, `palisade doctor` and the tests share it.
//!
//! - **Routed** pods (Calico, Cilium's legacy routing, AWS VPC CNI,
//!   kindnet, the reference `ptp` plugin): a host route (`/32`, `/128`,
//!   no gateway) to the pod's address through a per-pod interface. That
//!   interface carries the pod's packets: `(interface, address)`.
//! - **Bridged** pods (flannel, the reference `bridge` plugin): the route
//!   to the address is the bridge's subnet route. All of them reach the IP
//!   layer on the bridge, so the `inet` table knows `(bridge, address)`,
//!   and the bridge table checks the port: the pod's MAC comes from the
//!   bridge's neighbour entry for the address, its port from the
//!   forwarding database. Once learned, a binding sticks while its port and
//!   pod last: a later neighbour entry cannot move an address to another
//!   port (ARP claiming a bound address from another port is dropped).
//!   The first binding trusts the first ARP the node sees for an address:
//!   a pod that answers for a new neighbour's address before that
//!   neighbour speaks could take it; the CNI plugin's own result would
//!   close that window.
//! - Interfaces that lead to pods are every interface with such a host
//!   route (known pod or not), every bridge of bridged pods, and in
//!   `prefix:` mode every interface of that prefix: what comes from one
//!   and belongs to no known pod is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use palisade_nft::{Mac, Wiring};

use crate::facts::{Link, NodeFacts};

/// How the agent finds local pods' interfaces (`--pod-interfaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PodInterfaces {
    /// Routed or bridged, per pod, from the routes.
    #[default]
    Auto,
    /// Routed only: host routes through per-pod interfaces.
    Routes,
    /// Bridged behind this bridge only.
    Bridge(String),
    /// Routed through interfaces whose name starts so (`cali`, `lxc`).
    Prefix(String),
}

impl FromStr for PodInterfaces {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "auto" => Ok(PodInterfaces::Auto),
            None if s == "routes" => Ok(PodInterfaces::Routes),
            Some(("bridge", b)) if !b.is_empty() => Ok(PodInterfaces::Bridge(b.into())),
            Some(("prefix", p)) if !p.is_empty() => Ok(PodInterfaces::Prefix(p.into())),
            _ => Err(format!(
                "{s:?} is not a way to find pod interfaces: use auto, routes, bridge:NAME or prefix:NAME"
            )),
        }
    }
}

impl fmt::Display for PodInterfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodInterfaces::Auto => f.write_str("auto"),
            PodInterfaces::Routes => f.write_str("routes"),
            PodInterfaces::Bridge(b) => write!(f, "bridge:{b}"),
            PodInterfaces::Prefix(p) => write!(f, "prefix:{p}"),
        }
    }
}

/// A local pod as the datastore says: `namespace/name` and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub key: String,
    pub ips: Vec<IpAddr>,
}

impl LocalPod {
    pub fn of(p: &palisade_model::Pod) -> LocalPod {
        LocalPod {
            key: p.key(),
            ips: p.ips.clone(),
        }
    }

    /// The local pods of `engine`'s cluster (see [`palisade_nft::local_pods`]).
    pub fn all(engine: &palisade_engine::Engine, local: &palisade_nft::Local) -> Vec<LocalPod> {
        let pods = &engine.cluster().pods;
        palisade_nft::local_pods(engine, local)
            .into_iter()
            .map(|i| LocalPod::of(&pods[i]))
            .collect()
    }
}

/// How one local pod is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    Routed {
        interface: String,
    },
    Bridged {
        bridge: String,
        port: Option<String>,
    },
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub wiring: Wiring,
    /// Per local pod and address.
    pub reach: BTreeMap<String, Vec<(IpAddr, Reach)>>,
    /// Bridged addresses whose port is not known yet: a datagram from the
    /// node makes the kernel resolve them ([`crate::netlink::poke`]).
    pub to_poke: Vec<IpAddr>,
    /// Of those, neighbour entries (bridge index, address) whose MAC is on
    /// no port of the bridge (a pod's old interface, or a reused address):
    /// deleted first, or the kernel would keep using them.
    pub stale: Vec<(u32, IpAddr)>,
}

impl Resolved {
    /// Local pods with an address whose interface is not known (their
    /// traffic is dropped until it is).
    pub fn unwired(&self) -> Vec<&str> {
        self.reach
            .iter()
            .filter(|(_, r)| {
                r.iter()
                    .any(|(_, r)| matches!(r, Reach::Unknown | Reach::Bridged { port: None, .. }))
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// The resolution, with the bridge bindings it keeps between calls.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    pub mode: PodInterfaces,
    /// Bridged address → (port, MAC), sticky (see the module doc).
    bound: BTreeMap<IpAddr, (String, Mac)>,
}

/// The `main` routing table.
const MAIN: u32 = 254;

fn is_host_route(dst: &ipnet::IpNet) -> bool {
    dst.prefix_len() == dst.max_prefix_len()
}

fn is_bridge(l: &Link) -> bool {
    l.kind.as_deref() == Some("bridge")
}

impl Resolver {
    pub fn new(mode: PodInterfaces) -> Resolver {
        Resolver {
            mode,
            bound: BTreeMap::new(),
        }
    }

    /// A per-pod interface: a veth (or netkit) pair's node side, or in
    /// `prefix:` mode any interface so named; never an uplink (an
    /// interface with a default or gateway route: a host route to the
    /// gateway on `eth0` is common and must not make `eth0` a pod).
    fn routed_ok(&self, l: &Link, uplinks: &BTreeSet<u32>) -> bool {
        if is_bridge(l) || uplinks.contains(&l.index) {
            return false;
        }
        match &self.mode {
            PodInterfaces::Auto | PodInterfaces::Routes => {
                matches!(l.kind.as_deref(), Some("veth" | "netkit"))
            }
            PodInterfaces::Prefix(p) => l.name.starts_with(p.as_str()),
            PodInterfaces::Bridge(_) => false,
        }
    }

    fn bridge_ok(mode: &PodInterfaces, l: &Link) -> bool {
        match mode {
            PodInterfaces::Auto => is_bridge(l),
            PodInterfaces::Bridge(b) => l.name == *b,
            _ => false,
        }
    }

    pub fn resolve(&mut self, facts: &NodeFacts, pods: &[LocalPod]) -> Resolved {
        let mut out = Resolved::default();
        let w = &mut out.wiring;
        // Host routes without a gateway through acceptable interfaces: the
        // per-pod interfaces, whether their pod is known or not.
        let uplinks: BTreeSet<u32> = facts
            .routes
            .iter()
            .filter(|r| r.gateway.is_some() || r.dst.prefix_len() == 0)
            .filter_map(|r| r.oif)
            .collect();
        let mut host: BTreeMap<IpAddr, &Link> = BTreeMap::new();
        for r in &facts.routes {
            // The main table: `local` holds the node's own addresses.
            let (true, None, Some(oif), MAIN) = (is_host_route(&r.dst), r.gateway, r.oif, r.table)
            else {
                continue;
            };
            if let Some(l) = facts.link(oif).filter(|l| self.routed_ok(l, &uplinks)) {
                host.insert(r.dst.addr(), l);
                w.pod_interfaces.insert(l.name.clone());
            }
        }
        if let PodInterfaces::Prefix(p) = &self.mode {
            for l in facts
                .links
                .iter()
                .filter(|l| l.name.starts_with(p.as_str()) && !uplinks.contains(&l.index))
            {
                w.pod_interfaces.insert(l.name.clone());
            }
        }
        let mode = self.mode.clone();
        let bridge_of = |ip: IpAddr| -> Option<&Link> {
            // The most specific route whose interface is a pod bridge.
            facts
                .routes
                .iter()
                .filter(|r| r.table == MAIN && r.gateway.is_none() && r.dst.contains(&ip))
                .filter(|r| r.dst.prefix_len() > 0)
                .filter_map(|r| Some((r.dst.prefix_len(), facts.link(r.oif?)?)))
                .max_by_key(|(len, _)| *len)
                .map(|(_, l)| l)
                .filter(|l| Self::bridge_ok(&mode, l))
        };
        let mut wanted = BTreeSet::new();
        for pod in pods {
            let mut reach = Vec::new();
            for &ip in &pod.ips {
                let r = if let Some(l) = host.get(&ip) {
                    w.sources.insert((l.name.clone(), ip));
                    Reach::Routed {
                        interface: l.name.clone(),
                    }
                } else if let Some(b) = bridge_of(ip) {
                    wanted.insert(ip);
                    w.pod_interfaces.insert(b.name.clone());
                    for port in facts.links.iter().filter(|l| l.master == Some(b.index)) {
                        w.bridge.ports.insert(port.name.clone());
                    }
                    let port = self.bind(facts, b, ip);
                    // Known to the inet table only once the bridge table
                    // checks its port.
                    match port {
                        Some(_) => {
                            w.sources.insert((b.name.clone(), ip));
                        }
                        None => {
                            out.to_poke.push(ip);
                            if let Some(n) = facts.neighs.iter().find(|n| {
                                n.index == b.index
                                    && n.addr == ip
                                    && !n.mac.is_some_and(|m| {
                                        facts.fdb.iter().any(|f| {
                                            f.mac == m
                                                && facts
                                                    .link(f.port)
                                                    .is_some_and(|l| l.master == Some(b.index))
                                        })
                                    })
                            }) {
                                out.stale.push((n.index, n.addr));
                            }
                        }
                    }
                    Reach::Bridged {
                        bridge: b.name.clone(),
                        port,
                    }
                } else {
                    Reach::Unknown
                };
                reach.push((ip, r));
            }
            out.reach.insert(pod.key.clone(), reach);
        }
        // Bindings of addresses that are no longer bridged local pods go.
        self.bound.retain(|ip, _| wanted.contains(ip));
        for (ip, (port, mac)) in &self.bound {
            w.bridge.bindings.insert((port.clone(), *mac, *ip));
        }
        out
    }

    /// The port of bridged address `ip` behind bridge `b`: the sticky
    /// binding while its port is still a port of `b`, else the neighbour
    /// entry's MAC and the forwarding entry's port.
    fn bind(&mut self, facts: &NodeFacts, b: &Link, ip: IpAddr) -> Option<String> {
        let is_port = |name: &str| {
            facts
                .link_named(name)
                .is_some_and(|l| l.master == Some(b.index))
        };
        if let Some((port, _)) = self.bound.get(&ip) {
            if is_port(port) {
                return Some(port.clone());
            }
            self.bound.remove(&ip);
        }
        let mac = facts
            .neighs
            .iter()
            .find(|n| n.index == b.index && n.addr == ip)
            .and_then(|n| n.mac)?;
        let port = facts
            .fdb
            .iter()
            .filter(|f| f.mac == mac && !f.permanent)
            .filter_map(|f| facts.link(f.port))
            .find(|l| l.master == Some(b.index))?;
        // One MAC, one pod: a MAC already bound to another address of
        // another port is not taken.
        if self
            .bound
            .values()
            .any(|(p, m)| *m == mac && p != &port.name)
        {
            return None;
        }
        self.bound.insert(ip, (port.name.clone(), mac));
        Some(port.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Fdb, Neigh, Route};

    fn link(index: u32, name: &str, kind: Option<&str>, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            master,
            mac: None,
            up: true,
            peer_netns: kind == Some("veth"),
        }
    }

    fn route(dst: &str, oif: u32, gateway: Option<&str>) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            oif: Some(oif),
            gateway: gateway.map(|g| g.parse().unwrap()),
            table: MAIN,
        }
    }

    fn pod(key: &str, ips: &[&str]) -> LocalPod {
        LocalPod {
            key: key.into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A routed node: eth0 (uplink, with a host route to its gateway, as
    /// many clouds have), two pod veths, one of a pod the datastore does
    /// not know.
    fn routed() -> NodeFacts {
        NodeFacts {
            links: vec![
                link(2, "eth0", None, None),
                link(7, "cali1234", Some("veth"), None),
                link(8, "cali5678", Some("veth"), None),
            ],
            routes: vec![
                route("0.0.0.0/0", 2, Some("10.0.0.1")),
                route("10.0.0.1/32", 2, None),
                route("10.78.1.10/32", 7, None),
                route("fd78::1:10/128", 7, None),
                route("10.78.1.99/32", 8, None),
            ],
            ..NodeFacts::default()
        }
    }

    #[test]
    fn routed_pods_are_found_by_their_host_routes() {
        let mut r = Resolver::new(PodInterfaces::Auto);
        let out = r.resolve(&routed(), &[pod("a/web", &["10.78.1.10", "fd78::1:10"])]);
        let w = &out.wiring;
        assert_eq!(
            w.pod_interfaces,
            ["cali1234", "cali5678"].map(String::from).into(),
            "the uplink is never a pod interface; an unknown pod's is"
        );
        assert_eq!(
            w.sources,
            [
                ("cali1234".to_string(), ip("10.78.1.10")),
                ("cali1234".to_string(), ip("fd78::1:10"))
            ]
            .into()
        );
        assert!(out.unwired().is_empty());
        assert!(w.bridge.ports.is_empty());
    }

    #[test]
    fn a_pod_without_its_interface_is_unwired() {
        let mut r = Resolver::new(PodInterfaces::Routes);
        let out = r.resolve(&routed(), &[pod("a/late", &["10.78.1.11"])]);
        assert_eq!(out.unwired(), vec!["a/late"]);
        assert!(out.wiring.sources.is_empty());
    }

    #[test]
    fn prefix_mode_takes_only_its_interfaces() {
        let mut facts = routed();
        facts.links.push(link(9, "lxc0001", Some("veth"), None));
        facts.routes.push(route("10.78.1.20/32", 9, None));
        let mut r = Resolver::new(PodInterfaces::Prefix("lxc".into()));
        let out = r.resolve(
            &facts,
            &[pod("a/web", &["10.78.1.10"]), pod("a/api", &["10.78.1.20"])],
        );
        assert_eq!(out.wiring.pod_interfaces, ["lxc0001".to_string()].into());
        assert_eq!(out.unwired(), vec!["a/web"]);
    }

    fn bridged() -> NodeFacts {
        let mac = |n: u8| Some([2, 0, 0, 0, 0, n]);
        NodeFacts {
            links: vec![
                link(2, "eth0", None, None),
                link(3, "cni0", Some("bridge"), None),
                link(10, "veth0a", Some("veth"), Some(3)),
                link(11, "veth0b", Some("veth"), Some(3)),
            ],
            routes: vec![
                route("0.0.0.0/0", 2, Some("192.168.0.1")),
                route("10.78.1.0/24", 3, None),
            ],
            neighs: vec![Neigh {
                index: 3,
                addr: ip("10.78.1.10"),
                mac: mac(0x10),
                state: 2,
            }],
            fdb: vec![
                Fdb {
                    port: 10,
                    master: Some(3),
                    mac: [2, 0, 0, 0, 0, 0x10],
                    permanent: false,
                },
                Fdb {
                    port: 10,
                    master: Some(3),
                    mac: [2, 0, 0, 0, 0, 0xaa],
                    permanent: true,
                },
            ],
        }
    }

    #[test]
    fn bridged_pods_are_bound_to_their_port() {
        let mut r = Resolver::new(PodInterfaces::Auto);
        let pods = [pod("a/web", &["10.78.1.10"]), pod("a/api", &["10.78.1.11"])];
        let out = r.resolve(&bridged(), &pods);
        let w = &out.wiring;
        assert_eq!(w.pod_interfaces, ["cni0".to_string()].into());
        assert!(w.sources.contains(&("cni0".into(), ip("10.78.1.10"))));
        assert!(
            !w.sources.contains(&("cni0".into(), ip("10.78.1.11"))),
            "an unbound pod is not a source"
        );
        assert_eq!(
            w.bridge.ports,
            ["veth0a", "veth0b"].map(String::from).into()
        );
        assert_eq!(
            w.bridge.bindings,
            [(
                "veth0a".to_string(),
                [2, 0, 0, 0, 0, 0x10],
                ip("10.78.1.10")
            )]
            .into()
        );
        assert_eq!(out.to_poke, vec![ip("10.78.1.11")]);
        assert!(out.stale.is_empty());
        assert_eq!(out.unwired(), vec!["a/api"]);
    }

    #[test]
    fn a_binding_sticks_against_a_later_claim() {
        let mut r = Resolver::new(PodInterfaces::Bridge("cni0".into()));
        let pods = [pod("a/web", &["10.78.1.10"])];
        r.resolve(&bridged(), &pods);
        // Another port's MAC now claims the address.
        let mut f = bridged();
        f.neighs[0].mac = Some([2, 0, 0, 0, 0, 0x11]);
        f.fdb.push(Fdb {
            port: 11,
            master: Some(3),
            mac: [2, 0, 0, 0, 0, 0x11],
            permanent: false,
        });
        let out = r.resolve(&f, &pods);
        assert_eq!(
            out.wiring.bridge.bindings,
            [(
                "veth0a".to_string(),
                [2, 0, 0, 0, 0, 0x10],
                ip("10.78.1.10")
            )]
            .into()
        );
        // A neighbour entry whose MAC is on no port is stale.
        let mut gone = bridged();
        gone.fdb.clear();
        let mut fresh = Resolver::new(PodInterfaces::Auto);
        assert_eq!(
            fresh.resolve(&gone, &pods).stale,
            vec![(3, ip("10.78.1.10"))]
        );
        // The port goes away: the binding goes with it, and is learned anew.
        f.links.retain(|l| l.name != "veth0a");
        let out = r.resolve(&f, &pods);
        assert_eq!(
            out.wiring.bridge.bindings,
            [(
                "veth0b".to_string(),
                [2, 0, 0, 0, 0, 0x11],
                ip("10.78.1.10")
            )]
            .into()
        );
    }

    #[test]
    fn modes_parse_and_print() {
        for m in ["auto", "routes", "bridge:cni0", "prefix:cali"] {
            assert_eq!(m.parse::<PodInterfaces>().unwrap().to_string(), m);
        }
        for bad in ["", "bridge:", "prefix", "veth"] {
            let e = bad.parse::<PodInterfaces>().unwrap_err();
            assert!(
                e.contains("auto, routes, bridge:NAME or prefix:NAME"),
                "{e}"
            );
        }
    }
}
