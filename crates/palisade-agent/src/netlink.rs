//! The kernel side of [`crate::facts`]: one consistent read of the node's
//! links, routes, neighbours and bridge forwarding entries over rtnetlink,
//! and a watch that says when any of them may have changed.
//!
//! Everything runs on short-lived threads that enter the wanted network
//! namespace with `setns`: the namespace is per thread, so the agent's own
//! threads never move, and a socket opened inside stays bound to that
//! namespace wherever it is used afterwards.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::facts::{Fdb, Link, Mac, Neigh, NodeFacts, Route};

/// Large enough for any dump datagram the kernel builds (it sizes them to
/// at most 32 KiB unless one message needs more); a larger one is reported
/// as [`NetlinkError::Truncated`] rather than silently cut.
const RECV_BUF: usize = 64 * 1024;

/// Room for bursts of notifications (pods starting together) before the
/// kernel drops them with ENOBUFS; the kernel caps it at `rmem_max`.
const WATCH_RCVBUF: libc::c_int = 4 << 20;

/// How often a read starts over when the kernel flags a dump as
/// inconsistent because the tables changed while it was being sent, and
/// the pause before each new start (times the attempt), so a burst of
/// changes can pass instead of interrupting every attempt.
const READ_TRIES: u32 = 5;
const READ_PAUSE: Duration = Duration::from_millis(10);

const WATCH_GROUPS: [libc::c_uint; 4] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_NEIGH,
];

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot enter network namespace {netns}: {error}")]
    Netns { netns: String, error: io::Error },
    #[error("{what}: {error}")]
    Io { what: String, error: io::Error },
    #[error("the kernel refused the {what} dump: {error}")]
    Refused {
        what: &'static str,
        error: io::Error,
    },
    #[error("cannot decode a message of the kernel's {what} dump: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("a message of the kernel's {what} dump ({len} bytes) overflows the receive buffer")]
    Truncated { what: &'static str, len: usize },
    #[error("the kernel's dumps were interrupted by concurrent changes {tries} times in a row")]
    Interrupted { tries: u32 },
}

impl NetlinkError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |error| Self::Io { what, error }
    }
}

/// Runs `f` on a new thread inside network namespace `netns` (a name under
/// /run/netns, or a path if it contains '/'), or on a new thread in the
/// current namespace when None. Sockets created inside stay bound to that
/// namespace.
pub fn in_netns<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, NetlinkError> {
    let ns = netns.unwrap_or("(the current one)");
    let what = format!("the work in network namespace {ns} failed");
    run_in(netns, move || f().map_err(NetlinkError::io(what)))
}

fn run_in<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    let netns = netns.map(str::to_owned);
    let thread = thread::Builder::new()
        .name("netlink".into())
        .spawn(move || {
            if let Some(ns) = &netns {
                enter(ns)?;
            }
            f()
        })
        .map_err(NetlinkError::io("cannot start a thread"))?;
    // A panic in `f` is a bug of the caller's: it stays a panic.
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn enter(netns: &str) -> Result<(), NetlinkError> {
    let failed = |error| NetlinkError::Netns {
        netns: netns.to_owned(),
        error,
    };
    let path = if netns.contains('/') {
        Path::new(netns).to_owned()
    } else {
        Path::new("/run/netns").join(netns)
    };
    let file = File::open(path).map_err(failed)?;
    // SAFETY: `file` is an open descriptor for the call's duration; entering
    // a network namespace changes only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    Ok(())
}

/// One consistent read: all links (index, name, IFLA_INFO_KIND, master, MAC,
/// IFF_UP, whether IFLA_LINK_NETNSID is present), all IPv4 and IPv6 unicast
/// routes of every table (default routes as 0.0.0.0/0 and ::/0), IPv4 and
/// IPv6 neighbour entries that have an address, and the bridge forwarding
/// database. Retried from the start when the kernel flags a dump as
/// interrupted by a concurrent change.
pub fn read(netns: Option<&str>) -> Result<NodeFacts, NetlinkError> {
    run_in(netns, || {
        let mut conn = Conn::open()?;
        for attempt in 0..READ_TRIES {
            thread::sleep(READ_PAUSE * attempt);
            if let Some(facts) = conn.read_once()? {
                return Ok(facts);
            }
        }
        Err(NetlinkError::Interrupted { tries: READ_TRIES })
    })
}

/// A thread that subscribes (in `netns`) to RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE,
/// RTNLGRP_IPV6_ROUTE and RTNLGRP_NEIGH and calls `changed()` after each
/// batch of notifications (and after an overrun, when some were lost). It
/// stops when `changed()` returns false, or calls `failed` once and stops
/// when the socket fails. The subscription is in place when this returns.
pub fn watch(
    netns: Option<&str>,
    mut changed: impl FnMut() -> bool + Send + 'static,
    failed: impl FnOnce(NetlinkError) + Send + 'static,
) -> Result<JoinHandle<()>, NetlinkError> {
    let socket = run_in(netns, subscribe)?;
    thread::Builder::new()
        .name("netlink-watch".into())
        .spawn(move || {
            let mut buf = vec![0; RECV_BUF];
            loop {
                // Block for the first notification, then take whatever else
                // is already queued so a burst costs one `changed()`.
                let mut flags = 0;
                loop {
                    match socket.recv(&mut &mut buf[..], flags) {
                        Ok(_) => flags = libc::MSG_DONTWAIT,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // Notifications were lost: the caller re-reads
                        // everything anyway, so this is one more change.
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                        Err(error) => {
                            failed(NetlinkError::Io {
                                what: "cannot receive netlink notifications".into(),
                                error,
                            });
                            return;
                        }
                    }
                }
                if !changed() {
                    return;
                }
            }
        })
        .map_err(NetlinkError::io("cannot start a thread"))
}

fn open() -> Result<Socket, NetlinkError> {
    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(NetlinkError::io("cannot open a netlink socket"))?;
    socket
        .bind_auto()
        .map_err(NetlinkError::io("cannot bind a netlink socket"))?;
    Ok(socket)
}

fn subscribe() -> Result<Socket, NetlinkError> {
    let socket = open()?;
    socket
        .set_rx_buf_sz(WATCH_RCVBUF)
        .map_err(NetlinkError::io("cannot size a netlink socket's buffer"))?;
    for group in WATCH_GROUPS {
        socket
            .add_membership(group)
            .map_err(NetlinkError::io(format!(
                "cannot subscribe to netlink group {group}"
            )))?;
    }
    Ok(socket)
}

/// Sends one empty UDP datagram to port 9 of each address, from inside
/// `netns`, so the kernel resolves each address's neighbour entry. Errors
/// per address are ignored (unreachable is fine); only failing to enter the
/// namespace is an error.
pub fn poke(netns: Option<&str>, addrs: &[IpAddr]) -> Result<(), NetlinkError> {
    let addrs = addrs.to_vec();
    run_in(netns, move || {
        let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok();
        let v6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok();
        for addr in addrs {
            let socket = if addr.is_ipv4() { &v4 } else { &v6 };
            if let Some(socket) = socket {
                let _ = socket.send_to(&[], (addr, 9));
            }
        }
        Ok(())
    })
}

/// Deletes neighbour entries `(interface index, address)` in `netns`, so
/// the next packet to the address resolves it anew (an entry whose MAC
/// went with a pod's old interface would otherwise be used, and fail,
/// for seconds), then [`poke`]s `addrs`. Entries already gone are fine.
pub fn refresh_neighbours(
    netns: Option<&str>,
    forget: &[(u32, IpAddr)],
    addrs: &[IpAddr],
) -> Result<(), NetlinkError> {
    let forget = forget.to_vec();
    run_in(netns, move || {
        let mut conn = Conn::open()?;
        for (index, addr) in forget {
            let mut m = NeighbourMessage::default();
            m.header.ifindex = index;
            m.header.family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            m.attributes
                .push(NeighbourAttribute::Destination(match addr {
                    IpAddr::V4(a) => NeighbourAddress::Inet(a),
                    IpAddr::V6(a) => NeighbourAddress::Inet6(a),
                }));
            match conn.request("neighbour deletion", RouteNetlinkMessage::DelNeighbour(m)) {
                Err(NetlinkError::Io { error, .. })
                    if error.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(())
    })?;
    poke(netns, addrs)
}

/// A socket for request/dump exchanges with the kernel.
struct Conn {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl Conn {
    fn open() -> Result<Self, NetlinkError> {
        let socket = open()?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::io("cannot connect a netlink socket"))?;
        Ok(Self {
            socket,
            buf: vec![0; RECV_BUF],
            seq: 0,
        })
    }

    /// The facts, or None when a dump was interrupted and they may mix
    /// states from before and after a change.
    fn read_once(&mut self) -> Result<Option<NodeFacts>, NetlinkError> {
        use RouteNetlinkMessage::{
            GetLink, GetNeighbour, GetRoute, NewLink, NewNeighbour, NewRoute,
        };
        let (mut v4, mut v6) = (RouteMessage::default(), RouteMessage::default());
        v4.header.address_family = AddressFamily::Inet;
        v6.header.address_family = AddressFamily::Inet6;
        // AF_UNSPEC walks the ARP and NDISC tables; AF_BRIDGE is the fdb.
        let mut bridge = NeighbourMessage::default();
        bridge.header.family = AddressFamily::Bridge;
        let requests = [
            ("link", GetLink(LinkMessage::default())),
            ("IPv4 route", GetRoute(v4)),
            ("IPv6 route", GetRoute(v6)),
            ("neighbour", GetNeighbour(NeighbourMessage::default())),
            ("bridge fdb", GetNeighbour(bridge)),
        ];
        let mut facts = NodeFacts::default();
        let mut each = |m| match m {
            NewLink(m) => facts.links.push(link(m)),
            NewRoute(m) => facts.routes.extend(route(m)),
            NewNeighbour(m) if m.header.family == AddressFamily::Bridge => facts.fdb.extend(fdb(m)),
            NewNeighbour(m) => facts.neighs.extend(neigh(m)),
            _ => {}
        };
        let mut interrupted = false;
        for (what, request) in requests {
            interrupted |= self.dump(what, request, &mut each)?;
        }
        Ok((!interrupted).then_some(facts))
    }

    /// Sends `request` with `flags` under the next sequence number.
    fn send(&mut self, flags: u16, request: RouteNetlinkMessage) -> io::Result<usize> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(request));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(
        &mut self,
        what: &'static str,
        request: RouteNetlinkMessage,
    ) -> Result<(), NetlinkError> {
        self.send(NLM_F_REQUEST | NLM_F_ACK, request)
            .map_err(NetlinkError::io(format!("cannot send the {what}")))?;
        loop {
            let len = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                len => len.map_err(NetlinkError::io(format!("no answer to the {what}")))?,
            };
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..len])
                .map_err(|e| NetlinkError::Decode {
                    what,
                    detail: e.to_string(),
                })?;
            if msg.header.sequence_number != self.seq {
                continue;
            }
            if let NetlinkPayload::Error(e) = msg.payload {
                return match e.code {
                    None => Ok(()),
                    Some(_) => Err(NetlinkError::Io {
                        what: format!("the kernel refused the {what}"),
                        error: e.to_io(),
                    }),
                };
            }
        }
    }

    /// Sends one dump request and hands each reply to `each` until the
    /// kernel's NLMSG_DONE; returns whether the kernel flagged the dump as
    /// interrupted.
    fn dump(
        &mut self,
        what: &'static str,
        request: RouteNetlinkMessage,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<bool, NetlinkError> {
        self.send(NLM_F_REQUEST | NLM_F_DUMP, request)
            .map_err(NetlinkError::io(format!(
                "cannot send the {what} dump request"
            )))?;

        let mut interrupted = false;
        loop {
            // MSG_TRUNC: the datagram's real length, to tell a cut one.
            let len = match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                len => len.map_err(NetlinkError::io(format!("cannot receive the {what} dump")))?,
            };
            if len > self.buf.len() {
                return Err(NetlinkError::Truncated { what, len });
            }
            let mut rest = &self.buf[..len];
            while !rest.is_empty() {
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest).map_err(|e| {
                        NetlinkError::Decode {
                            what,
                            detail: e.to_string(),
                        }
                    })?;
                // NLMSG_ALIGN: the next message starts on a 4-byte boundary.
                let size = (msg.header.length as usize + 3) & !3;
                rest = rest.get(size..).unwrap_or_default();
                if msg.header.sequence_number != self.seq {
                    continue; // a reply to an earlier, abandoned request
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => each(m),
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        let error = io::Error::from_raw_os_error(-done.code);
                        return Err(NetlinkError::Refused { what, error });
                    }
                    NetlinkPayload::Done(_) => return Ok(interrupted),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        let error = e.to_io();
                        return Err(NetlinkError::Refused { what, error });
                    }
                    _ => {}
                }
            }
        }
    }
}

fn mac(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

fn link(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Controller(master) => link.master = Some(master),
            LinkAttribute::Address(addr) => link.mac = mac(&addr),
            LinkAttribute::LinkNetNsId(_) => link.peer_netns = true,
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

fn route(m: RouteMessage) -> Option<Route> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let default: IpAddr = match m.header.address_family {
        AddressFamily::Inet => Ipv4Addr::UNSPECIFIED.into(),
        AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    let (mut dst, mut oif, mut gateway) = (default, None, None);
    let mut table = u32::from(m.header.table);
    for attr in m.attributes {
        match attr {
            RouteAttribute::Destination(addr) => dst = route_addr(addr)?,
            RouteAttribute::Oif(index) => oif = Some(index),
            RouteAttribute::Gateway(addr) => gateway = route_addr(addr),
            // An IPv4 route through an IPv6 next hop names it with RTA_VIA.
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(a.into()),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(a.into()),
            // The header's field is 8 bits: ids above 255 come only here.
            RouteAttribute::Table(id) => table = id,
            _ => {}
        }
    }
    let dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    Some(Route {
        dst,
        oif,
        gateway,
        table,
    })
}

fn route_addr(addr: RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(a.into()),
        RouteAddress::Inet6(a) => Some(a.into()),
        _ => None,
    }
}

fn neigh(m: NeighbourMessage) -> Option<Neigh> {
    let (mut addr, mut lladdr) = (None, None);
    for attr in m.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => addr = Some(a.into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => addr = Some(a.into()),
            NeighbourAttribute::LinkLayerAddress(bytes) => lladdr = mac(&bytes),
            _ => {}
        }
    }
    Some(Neigh {
        index: m.header.ifindex,
        addr: addr?,
        mac: lladdr,
        state: m.header.state.into(),
    })
}

/// Besides the bridges' entries (with NDA_MASTER), the dump has every
/// device's own unicast and multicast addresses (NTF_SELF, permanent, no
/// master); both are kept, as [`Fdb::master`] tells them apart.
fn fdb(m: NeighbourMessage) -> Option<Fdb> {
    let (mut master, mut lladdr) = (None, None);
    for attr in m.attributes {
        match attr {
            NeighbourAttribute::Controller(index) => master = Some(index),
            NeighbourAttribute::LinkLayerAddress(bytes) => lladdr = mac(&bytes),
            _ => {}
        }
    }
    let state: u16 = m.header.state.into();
    Some(Fdb {
        port: m.header.ifindex,
        master,
        mac: lladdr?,
        permanent: state & libc::NUD_PERMANENT != 0,
    })
}
