//! What the node's kernel says about how pods are wired: links, routes,
//! neighbours and the bridges' forwarding databases, as read over netlink
//! ([`crate::netlink`]). Plain data, so the resolution from facts to
//! [`palisade_nft::Wiring`] ([`crate::wiring`]) is pure and unit-tested.

use std::net::IpAddr;

use ipnet::IpNet;

pub type Mac = [u8; 6];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: `veth`, `bridge`, `vxlan`...; `None` for physical
    /// devices and loopback.
    pub kind: Option<String>,
    /// The bridge (or other master) this link is a port of.
    pub master: Option<u32>,
    pub mac: Option<Mac>,
    /// `IFF_UP`.
    pub up: bool,
    /// The link's peer lives in another network namespace (a veth whose
    /// other end is in a pod): `IFLA_LINK_NETNSID` is present.
    pub peer_netns: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    /// The output interface; `None` for multipath or blackhole routes.
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// Routing table id (254 is `main`).
    pub table: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neigh {
    /// The interface the neighbour was seen on (a bridge, for bridged pods).
    pub index: u32,
    pub addr: IpAddr,
    pub mac: Option<Mac>,
    /// `NUD_*` bits.
    pub state: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fdb {
    /// The bridge port the address was learned on.
    pub port: u32,
    /// The bridge (`NDA_MASTER`), when the entry names one.
    pub master: Option<u32>,
    pub mac: Mac,
    /// `NUD_PERMANENT`: the port's own address, not a learned one.
    pub permanent: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    pub neighs: Vec<Neigh>,
    pub fdb: Vec<Fdb>,
}

impl NodeFacts {
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}
