//! The two spaces a diff cuts into pieces that every rule treats alike:
//! ports (per protocol, cut at every port and endPort edge and container
//! port of both versions) and outside addresses (cut at every ipBlock,
//! `networks` and node address edge of both versions).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use palisade_model::{AdminPort, Cluster, PortSpec, Protocol};

use crate::classify::{key, net_bounds, Partition};
use crate::index::interval_start;
use crate::Engine;

/// Ports `start..=end` of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        start: 1,
        end: u16::MAX,
    };

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    /// `80`, `8000-8080`, or `all` for 1-65535.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == PortRange::ALL {
            f.write_str("all")
        } else if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Index of a protocol in per-protocol tables, in `Protocol::ALL` order.
pub(super) fn proto_slot(p: Protocol) -> usize {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

fn cut(cuts: &mut [BTreeSet<u32>; 3], protocol: Protocol, start: u16, end: u16) {
    let c = &mut cuts[proto_slot(protocol)];
    c.insert(start.into());
    c.insert(u32::from(end) + 1);
}

fn cut_cluster(c: &Cluster, cuts: &mut [BTreeSet<u32>; 3]) {
    // Named ports resolve to container ports, so every container port is
    // an edge (of its own protocol, which is the only one it can match).
    for pod in &c.pods {
        for cp in &pod.ports {
            cut(cuts, cp.protocol, cp.port, cp.port);
        }
    }
    let rules = c
        .policies
        .iter()
        .flat_map(|p| p.ingress.iter().chain(&p.egress).flatten());
    for spec in rules.flat_map(|r| r.ports.iter().flatten()) {
        if let PortSpec::Range {
            protocol,
            start,
            end,
        } = *spec
        {
            cut(cuts, protocol, start, end);
        }
    }
    let admin = c
        .admin_policies
        .iter()
        .flat_map(|p| p.ingress.iter().chain(&p.egress));
    for port in admin.flat_map(|r| r.ports.iter().flatten()) {
        match *port {
            AdminPort::Number { protocol, port } => cut(cuts, protocol, port, port),
            AdminPort::Range {
                protocol,
                start,
                end,
            } => cut(cuts, protocol, start, end),
            AdminPort::Named(_) => {}
        }
    }
}

/// Per protocol (`Protocol::ALL` order), ports 1-65535 cut at every edge
/// of both versions: no rule of either tells two ports of a piece apart.
pub(crate) fn port_pieces(base: &Cluster, head: &Cluster) -> [Vec<PortRange>; 3] {
    let mut cuts: [BTreeSet<u32>; 3] = Default::default();
    cut_cluster(base, &mut cuts);
    cut_cluster(head, &mut cuts);
    cuts.map(|mut c| {
        c.insert(1);
        c.insert(1 << 16);
        c.retain(|&x| (1..=1 << 16).contains(&x));
        let c: Vec<u32> = c.into_iter().collect();
        c.windows(2)
            .map(|w| PortRange {
                start: w[0] as u16,
                end: (w[1] - 1) as u16,
            })
            .collect()
    })
}

/// Addresses `start..=end` of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl AddrRange {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let (f, k) = key(ip);
        let (fs, s) = key(&self.start);
        let (_, e) = key(&self.end);
        f == fs && s <= k && k <= e
    }

    /// Order: IPv4 before IPv6, then by start.
    pub fn sort_key(&self) -> (usize, u128) {
        key(&self.start)
    }

    /// The prefix length when the range is exactly one CIDR.
    fn prefix(&self) -> Option<u32> {
        let (fam, s) = key(&self.start);
        let (_, e) = key(&self.end);
        let len = e - s;
        let bits = if fam == 0 { 32 } else { 128 };
        // `len + 1` a power of two (wrapping to 0 for the whole IPv6 space)
        // and `start` aligned to it.
        (len & len.wrapping_add(1) == 0 && s & len == 0).then(|| bits - len.count_ones())
    }
}

impl fmt::Display for AddrRange {
    /// One CIDR when the range is one (`10.0.0.0/8`, `192.168.0.1/32`),
    /// else `first-last` as np-guard prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix() {
            Some(p) => write!(f, "{}/{p}", self.start),
            None => write!(f, "{}-{}", self.start, self.end),
        }
    }
}

/// A piece of the outside address space and the address that stands for it.
#[derive(Clone, Debug)]
pub(crate) struct AddrPiece {
    pub(crate) range: AddrRange,
    /// An address of the piece that is no endpoint pod's in either version.
    pub(crate) rep: IpAddr,
    /// The piece is one node address: ingress from it depends on the node
    /// the destination pod runs on.
    pub(crate) node: bool,
}

fn is_pod_address(engines: [&Engine; 2], ip: &IpAddr) -> bool {
    engines.iter().any(|e| e.index().pod_at(ip).is_some())
}

/// The outside address space of both versions in pieces, IPv4 then IPv6.
/// A piece made only of pod addresses stands for no outside address and is
/// left out.
pub(crate) fn addr_pieces(base: &Engine, head: &Engine) -> Vec<AddrPiece> {
    let engines = [base, head];
    let mut bounds: [Vec<u128>; 2] = Default::default();
    let mut nodes: BTreeSet<(usize, u128)> = BTreeSet::new();
    for e in engines {
        for m in e.index().matchers() {
            m.push_bounds(&mut bounds);
        }
        for a in e.index().all_node_addresses() {
            net_bounds(&ipnet::IpNet::from(*a), &mut bounds);
            nodes.insert(key(a));
        }
    }
    let mut out = Vec::new();
    for (fam, b) in bounds.into_iter().enumerate() {
        let part = Partition::new(b);
        let max = if fam == 0 {
            u32::MAX as u128
        } else {
            u128::MAX
        };
        for (i, &start) in part.bounds.iter().enumerate() {
            let end = part.bounds.get(i + 1).map_or(max, |&n| n - 1);
            // Pod addresses are finite and distinct, so this walk ends.
            let mut x = start;
            while is_pod_address(engines, &interval_start(fam, x)) && x < end {
                x += 1;
            }
            let rep = interval_start(fam, x);
            if is_pod_address(engines, &rep) {
                continue;
            }
            out.push(AddrPiece {
                range: AddrRange {
                    start: interval_start(fam, start),
                    end: interval_start(fam, end),
                },
                rep,
                node: start == end && nodes.contains(&(fam, start)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, b: &str) -> String {
        AddrRange {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        }
        .to_string()
    }

    #[test]
    fn ranges_print_as_one_cidr_or_first_last() {
        assert_eq!(r("0.0.0.0", "255.255.255.255"), "0.0.0.0/0");
        assert_eq!(r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "::/0");
        assert_eq!(r("10.0.0.0", "10.255.255.255"), "10.0.0.0/8");
        assert_eq!(r("192.168.0.1", "192.168.0.1"), "192.168.0.1/32");
        assert_eq!(r("0.0.0.0", "9.255.255.255"), "0.0.0.0-9.255.255.255");
        assert_eq!(r("10.0.0.1", "10.0.0.2"), "10.0.0.1-10.0.0.2");
        assert_eq!(
            PortRange {
                start: 1,
                end: 65535
            }
            .to_string(),
            "all"
        );
        assert_eq!(PortRange { start: 80, end: 80 }.to_string(), "80");
        assert_eq!(
            PortRange {
                start: 8000,
                end: 8080
            }
            .to_string(),
            "8000-8080"
        );
    }
}
