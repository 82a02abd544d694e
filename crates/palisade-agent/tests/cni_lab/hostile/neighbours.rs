//! ARP and neighbour discovery spoofing between bridged pods (routed pods
//! share no link: their neighbours are the node alone). a1 announces and
//! answers for addresses that are not its own (another pod's, the
//! gateway's) and plays router; a3 must see none of it, while a1's
//! messages for its own addresses reach it, and afterwards a3's traffic to
//! a2 and through the gateway never reaches a1.

use std::net::{IpAddr, Ipv6Addr};

use palisade_lab::raw::{self, Mac};
use palisade_lab::CniPlugin;

use super::{json, up, Hostile, Pod, WAIT};
use crate::harness;

fn gateway(pod: &Pod, v4: bool) -> IpAddr {
    let fam = if v4 { "-4" } else { "-6" };
    let r = json(&pod.netns, &[fam, "route", "show", "default"]);
    r[0]["gateway"].as_str().unwrap().parse().unwrap()
}

/// The pod's modified EUI-64 link-local address (pods may have none
/// configured; a crafted packet needs none).
fn link_local(pod: &Pod) -> IpAddr {
    let m = pod.mac;
    let w = |a: u8, b: u8| u16::from_be_bytes([a, b]);
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        w(m[0] ^ 2, m[1]),
        w(m[2], 0xff),
        w(0xfe, m[3]),
        w(m[4], m[5]),
    )
    .into()
}

fn solicited_node(ip: IpAddr) -> Ipv6Addr {
    let o = super::v6(ip).octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// One message a1 sends: what it is, the frame, and whether a3 may see it.
struct Msg {
    what: String,
    frame: Vec<u8>,
    /// What identifies the frame where it arrives.
    body: Vec<u8>,
    passes: bool,
}

fn arp_msgs(h: &Hostile, gw: IpAddr) -> Vec<Msg> {
    let a1 = &h.a1;
    let claim = |what: &str, spa: IpAddr, op: u16, passes: bool| {
        let (tha, tpa) = if op == 2 {
            (raw::BROADCAST, spa)
        } else {
            ([0; 6], h.a3.v4)
        };
        let body = raw::arp(op, a1.mac, spa, tha, tpa);
        Msg {
            what: format!("ARP {what}"),
            frame: raw::ether(raw::BROADCAST, a1.mac, raw::ETH_ARP, &body),
            body,
            passes,
        }
    };
    vec![
        claim("reply for its own address", a1.v4, 2, true),
        claim("request from its own address", a1.v4, 1, true),
        claim("reply for a2's address", h.a2.v4, 2, false),
        claim("request from a2's address", h.a2.v4, 1, false),
        claim("reply for the gateway", gw, 2, false),
        claim("request from the gateway", gw, 1, false),
    ]
}

fn nd_msgs(h: &Hostile, gw: IpAddr) -> Vec<Msg> {
    let a1 = &h.a1;
    let ll = link_local(a1);
    let msg =
        |what: &str, ty: u8, src: IpAddr, dst: Ipv6Addr, target: Option<IpAddr>, passes: bool| {
            let body = raw::neighbour(ty, src, dst.into(), target.map(super::v6), a1.mac);
            let mac: Mac = raw::multicast_mac(dst);
            Msg {
                what: format!("{what} (from {src})"),
                frame: raw::ether(mac, a1.mac, raw::ETH_IP6, &body),
                body,
                passes,
            }
        };
    let sn = solicited_node(h.a3.v6);
    vec![
        msg(
            "advertisement of its own address",
            136,
            a1.v6,
            ALL_NODES,
            Some(a1.v6),
            true,
        ),
        msg(
            "solicitation from its own address",
            135,
            a1.v6,
            sn,
            Some(h.a3.v6),
            true,
        ),
        msg("router solicitation", 133, ll, ALL_ROUTERS, None, true),
        msg(
            "advertisement of a2's address",
            136,
            a1.v6,
            ALL_NODES,
            Some(h.a2.v6),
            false,
        ),
        msg(
            "advertisement of a2's address",
            136,
            ll,
            ALL_NODES,
            Some(h.a2.v6),
            false,
        ),
        msg(
            "advertisement of the gateway",
            136,
            ll,
            ALL_NODES,
            Some(gw),
            false,
        ),
        msg(
            "advertisement of b1's address",
            136,
            ll,
            ALL_NODES,
            Some(h.b1.v6),
            false,
        ),
        msg(
            "solicitation from the gateway",
            135,
            gw,
            sn,
            Some(h.a3.v6),
            false,
        ),
        msg(
            "solicitation from a2's address",
            135,
            h.a2.v6,
            sn,
            Some(h.a3.v6),
            false,
        ),
        msg("router advertisement", 134, ll, ALL_NODES, None, false),
    ]
}

/// Whether a frame from a3 to `dst` (IPv4 or IPv6 destination) is in
/// `frames`.
fn to_dst(frames: &[Vec<u8>], src: IpAddr, dst: IpAddr) -> bool {
    frames.iter().any(|f| {
        super::addresses::has_source(f, src)
            && match dst {
                IpAddr::V4(a) => f.get(30..34) == Some(&a.octets()[..]),
                IpAddr::V6(a) => f.get(38..54) == Some(&a.octets()[..]),
            }
    })
}

#[test]
fn arp_and_ndp_spoofing_is_dropped_bridged() {
    let _alone = harness::alone();
    let plugin = CniPlugin::Bridge;
    let Some(h) = up("d", &plugin) else { return };
    let mut bad = Vec::new();
    for v4 in [true, false] {
        let gw = gateway(&h.a3, v4);
        let msgs = if v4 {
            arp_msgs(&h, gw)
        } else {
            nd_msgs(&h, gw)
        };
        let sender = h.a1.link();
        for m in &msgs {
            let watch = h.a3.link();
            sender.send(&m.frame).unwrap();
            let seen = watch
                .received(if m.passes { WAIT * 2 } else { WAIT })
                .iter()
                .any(|f| raw::contains(f, &m.body));
            eprintln!("bridged: {}: reached a3 {seen}", m.what);
            if seen != m.passes {
                bad.push(format!(
                    "{}: reached a3 {seen}, expected {}",
                    m.what, m.passes
                ));
            }
        }
        // Whatever a3 believes now, its traffic to a2 and through the
        // gateway goes to them, never to a1.
        let watch = h.a1.link();
        crate::spoof::send(&h.a2.netns, h.a2.ip(v4), h.a3.ip(v4));
        for dst in [h.a2.ip(v4), h.b1.ip(v4)] {
            crate::spoof::send(&h.a3.netns, h.a3.ip(v4), dst);
        }
        let frames = watch.received(WAIT);
        for dst in [h.a2.ip(v4), h.b1.ip(v4)] {
            if to_dst(&frames, h.a3.ip(v4), dst) {
                bad.push(format!("a3's traffic to {dst} reached a1"));
            }
        }
    }
    assert!(bad.is_empty(), "bridged mode: {bad:#?}");
    h.down();
}
