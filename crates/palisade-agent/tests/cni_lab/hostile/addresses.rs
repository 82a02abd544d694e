//! A pod that takes a free address, or speaks IPv6 with IPv4-mapped
//! addresses (`::ffff:a.b.c.d`) as source or destination.

use std::net::IpAddr;

use palisade_lab::raw;
use palisade_lab::CniPlugin;

use super::{datagram, ip_cmd, marker, up, v6, ALLOWED, WAIT};
use crate::harness;

/// a1 adds an address no pod has and sends from it to a2, which accepts
/// anything: dropped; from its own address the same datagram arrives.
fn free_address(plugin: CniPlugin) {
    let Some(h) = up("a", &plugin) else { return };
    let mut n = 0;
    for (free, len) in [("10.78.1.99", "32"), ("fd78::1:99", "128")] {
        let free: IpAddr = free.parse().unwrap();
        let v4 = free.is_ipv4();
        let (from, to) = (h.a1.ip(v4), h.a2.ip(v4));
        let watch = h.a2.link();
        let sender = h.a1.link();
        n += 1;
        let own = marker("own", n);
        h.a1.send_ip(
            &sender,
            to,
            &raw::ip(
                from,
                to,
                raw::UDP,
                &datagram(from, to, 40000, ALLOWED, &own),
            ),
        );
        assert!(
            watch.sees(&own, WAIT * 3),
            "{}: {from} reaches {to}",
            tag(&plugin)
        );
        let addr = format!("{free}/{len}");
        let mut add = vec!["addr", "add", addr.as_str(), "dev", "eth0"];
        if !v4 {
            add.push("nodad");
        }
        ip_cmd(&h.a1.netns, &add);
        let taken = marker("free", n);
        h.a1.send_ip(
            &sender,
            to,
            &raw::ip(
                free,
                to,
                raw::UDP,
                &datagram(free, to, 40000, ALLOWED, &taken),
            ),
        );
        // The kernel's own socket, too: the address is configured.
        crate::spoof::send(&h.a1.netns, free, to);
        let seen = watch.received(WAIT);
        ip_cmd(&h.a1.netns, &["addr", "del", &addr, "dev", "eth0"]);
        let leaked = seen
            .iter()
            .filter(|f| raw::contains(f, &taken) || has_source(f, free))
            .count();
        assert_eq!(
            leaked,
            0,
            "{}: a1 sent from the free address {free}",
            tag(&plugin)
        );
    }
    h.down();
}

fn tag(p: &CniPlugin) -> &'static str {
    crate::tag(p)
}

/// Whether `frame` is an IP packet from `src`.
pub fn has_source(frame: &[u8], src: IpAddr) -> bool {
    let Some(ip) = frame.get(14..) else {
        return false;
    };
    match src {
        IpAddr::V4(a) => {
            frame.get(12..14) == Some(&[8, 0]) && ip.get(12..16) == Some(&a.octets()[..])
        }
        IpAddr::V6(a) => {
            frame.get(12..14) == Some(&[0x86, 0xdd]) && ip.get(8..24) == Some(&a.octets()[..])
        }
    }
}

per_plugin!(
    free_address,
    a_pod_taking_a_free_address_is_dropped_routed,
    a_pod_taking_a_free_address_is_dropped_bridged
);

/// IPv4-mapped IPv6 addresses never pass for the IPv4 pod: a1 (which a2
/// accepts) and a2 (which targets accept) send IPv6 packets from their
/// IPv4 address mapped, and to the target's IPv4 address mapped; none
/// arrives, while the same packet between their IPv6 addresses does.
fn mapped(plugin: CniPlugin) {
    let Some(h) = up("m", &plugin) else { return };
    let cases = [
        // (sender, victim, source, destination, arrives)
        (&h.a1, &h.a2, h.a1.v6, h.a2.v6, true),
        (&h.a1, &h.a2, v6(h.a1.v4).into(), h.a2.v6, false),
        (&h.a1, &h.a2, h.a1.v6, v6(h.a2.v4).into(), false),
        (&h.a2, &h.a3, h.a2.v6, h.a3.v6, true),
        (&h.a2, &h.a3, v6(h.a2.v4).into(), h.a3.v6, false),
        (&h.a2, &h.a3, h.a2.v6, v6(h.a3.v4).into(), false),
        (&h.a2, &h.b1, v6(h.a2.v4).into(), h.b1.v6, false),
        (&h.a2, &h.b1, h.a2.v6, v6(h.b1.v4).into(), false),
        (&h.a2, &h.b1, h.a2.v6, h.b1.v6, true),
    ];
    let mut bad = Vec::new();
    for (n, (from, to, src, dst, arrives)) in cases.into_iter().enumerate() {
        let (watch, sender) = (to.link(), from.link());
        let m = marker("mapped", n as u32);
        let p = raw::ip(src, dst, raw::UDP, &datagram(src, dst, 40000, ALLOWED, &m));
        from.send_ip(&sender, dst, &p);
        let wait = if arrives { WAIT * 3 } else { WAIT };
        let seen = watch.received(wait).iter().any(|f| raw::contains(f, &m));
        if seen != arrives {
            bad.push(format!(
                "{src} -> {dst}: arrived {seen}, expected {arrives}"
            ));
        }
    }
    assert!(bad.is_empty(), "{} mode: {bad:#?}", tag(&plugin));
    h.down();
}

per_plugin!(
    mapped,
    ipv4_mapped_ipv6_addresses_never_pass_as_the_ipv4_pod_routed,
    ipv4_mapped_ipv6_addresses_never_pass_as_the_ipv4_pod_bridged
);
