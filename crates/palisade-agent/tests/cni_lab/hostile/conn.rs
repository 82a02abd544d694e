//! Packets that claim a connection: ICMP errors quoting one, TCP segments
//! without SYN; and a flood of new connections.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use palisade_lab::raw;
use palisade_lab::{in_netns, CniPlugin};

use super::{conntrack_entries, datagram, family, marker, up, Hostile, Pod, ALLOWED, CLOSED, WAIT};
use crate::harness;

/// The start of the UDP packet `src:sport -> dst:dport` as an ICMP error
/// quotes it, with `mark` in its payload.
fn quoted(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, mark: &[u8]) -> Vec<u8> {
    raw::ip(src, dst, raw::UDP, &datagram(src, dst, sport, dport, mark))
}

/// `client` opens a UDP "connection" from a fixed port to `server:CLOSED`
/// (the server's kernel answers port unreachable): the conntrack entry a
/// related error belongs to.
fn connect(client: &Pod, server: IpAddr, sport: u16) -> UdpSocket {
    let src = client.ip(server.is_ipv4());
    in_netns(&client.netns, move || {
        let s = UdpSocket::bind(SocketAddr::new(src, sport))?;
        s.connect(SocketAddr::new(server, CLOSED))?;
        s.send(b"hello")?;
        Ok(s)
    })
    .unwrap()
}

/// An error `from` sends to `to` quoting `to:sport -> from:CLOSED`, marked.
fn error(from: &Pod, to: &Pod, v4: bool, sport: u16, m: &[u8]) -> Vec<u8> {
    let (src, dst) = (from.ip(v4), to.ip(v4));
    let q = quoted(dst, src, sport, CLOSED, m);
    let proto = if v4 { raw::ICMP } else { raw::ICMP6 };
    raw::ip(src, dst, proto, &raw::unreachable(src, dst, &q))
}

/// Errors that belong to an open connection arrive, even from a pod the
/// receiver's policy denies (a1 to a3); errors quoting a connection that
/// never existed are dropped, to a pod that accepts anything (a2) too.
fn icmp_errors(plugin: CniPlugin) {
    let Some(h) = up("i", &plugin) else { return };
    let mut bad = Vec::new();
    let mut n = 0;
    for v4 in [true, false] {
        // (from, to, whether `to` opens the quoted connection first)
        let cases = [
            (&h.a1, &h.a3, true),
            (&h.a1, &h.a3, false),
            (&h.a2, &h.a3, false),
            (&h.a1, &h.a2, false),
            (&h.a3, &h.a2, false),
        ];
        for (from, to, real) in cases {
            n += 1;
            let sport = 41000 + n as u16;
            let _conn = real.then(|| connect(to, from.ip(v4), sport));
            std::thread::sleep(Duration::from_millis(100));
            let (watch, sender) = (to.link(), from.link());
            let m = marker("icmp", n);
            from.send_ip(&sender, to.ip(v4), &error(from, to, v4, sport, &m));
            let wait = if real { WAIT * 3 } else { WAIT };
            let seen = watch.received(wait).iter().any(|f| raw::contains(f, &m));
            if seen != real {
                bad.push(format!(
                    "{} -> {} quoting {}:{sport}: arrived {seen}, connection {real}",
                    from.ip(v4),
                    to.ip(v4),
                    to.ip(v4)
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{} mode: {bad:#?}", crate::tag(&plugin));
    h.down();
}

per_plugin!(
    icmp_errors,
    icmp_errors_of_no_connection_are_dropped_routed,
    icmp_errors_of_no_connection_are_dropped_bridged
);

/// TCP segments that are not a connection's first (ACK, FIN, RST, SYN-ACK,
/// data) from a2 to a3's allowed port, where no connection exists: none
/// arrives and none leaves a conntrack entry; a SYN of the same shape
/// arrives.
fn tcp_without_syn(plugin: CniPlugin) {
    let Some(h) = up("t", &plugin) else { return };
    let mut bad = Vec::new();
    let mut n = 0;
    for v4 in [true, false] {
        for (what, flags) in [
            ("syn", raw::SYN),
            ("ack", raw::ACK),
            ("psh-ack", raw::PSH | raw::ACK),
            ("fin", raw::FIN),
            ("fin-ack", raw::FIN | raw::ACK),
            ("rst", raw::RST),
            ("rst-ack", raw::RST | raw::ACK),
            ("syn-ack", raw::SYN | raw::ACK),
            ("none", 0),
        ] {
            n += 1;
            let (src, dst) = (h.a2.ip(v4), h.a3.ip(v4));
            let sport = 42000 + n as u16;
            let m = marker(what, n);
            let seg = raw::tcp((src, sport), (dst, ALLOWED), flags, 1000 * n, 77, &m);
            let (watch, sender) = (h.a3.link(), h.a2.link());
            h.a2.send_ip(&sender, dst, &raw::ip(src, dst, raw::TCP, &seg));
            let syn = flags == raw::SYN;
            let seen = watch
                .received(if syn { WAIT * 3 } else { WAIT })
                .iter()
                .any(|f| raw::contains(f, &m));
            let entries = conntrack_entries(&h.node_a, family(v4), &format!("sport={sport} "));
            if seen != syn || entries.is_empty() == syn {
                bad.push(format!(
                    "{} {what}: arrived {seen}, conntrack {entries:?}",
                    family(v4)
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{} mode: {bad:#?}", crate::tag(&plugin));
    h.down();
}

per_plugin!(
    tcp_without_syn,
    tcp_without_syn_for_no_connection_is_dropped_and_not_tracked_routed,
    tcp_without_syn_for_no_connection_is_dropped_and_not_tracked_bridged
);

/// The `inet` and bridge tables of node-a as `nft` lists them.
fn tables(h: &Hostile) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &h.node_a, "nft", "-j", "list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A flood of new connections, allowed (a2 to a3) and denied (a1 to a3):
/// the ruleset is the same after it (no rule, set element or meter grows
/// with connections: a first packet walks the same rules and lookups
/// whatever came before); every allowed one is tracked and no denied one
/// leaves a conntrack entry, so denied floods cannot fill the table.
pub fn flood(plugin: CniPlugin) {
    let Some(h) = up("n", &plugin) else { return };
    let before = tables(&h);
    const N: u16 = 500;
    for v4 in [true, false] {
        for (from, base) in [(&h.a2, 20000u16), (&h.a1, 30000u16)] {
            let (src, dst) = (from.ip(v4), h.a3.ip(v4));
            let sender = from.link();
            for i in 0..N {
                let d = datagram(src, dst, base + i, ALLOWED, b"flood-------");
                from.send_ip(&sender, dst, &raw::ip(src, dst, raw::UDP, &d));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let fam = family(v4);
        let count = |src: IpAddr, lo: u16| {
            conntrack_entries(&h.node_a, fam, &format!("src={src} "))
                .iter()
                .filter(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("sport="))
                        .and_then(|p| p.parse::<u16>().ok())
                        .is_some_and(|p| (lo..lo + N).contains(&p))
                })
                .count()
        };
        let allowed = count(h.a2.ip(v4), 20000);
        let denied = count(h.a1.ip(v4), 30000);
        eprintln!(
            "{} {fam}: {allowed} allowed tracked, {denied} denied tracked",
            crate::tag(&plugin)
        );
        assert_eq!(
            (allowed, denied),
            (usize::from(N), 0),
            "{fam}: tracked (allowed, denied)"
        );
    }
    assert_eq!(
        strip_counters(&before),
        strip_counters(&tables(&h)),
        "the ruleset grew with the flood"
    );
    h.down();
}

/// `nft -j` output without counter values (the only state a packet may
/// change in the ruleset).
fn strip_counters(json: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("counter");
                o.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

per_plugin!(
    flood,
    a_flood_of_new_connections_grows_no_rule_and_denied_ones_are_not_tracked_routed,
    a_flood_of_new_connections_grows_no_rule_and_denied_ones_are_not_tracked_bridged
);
