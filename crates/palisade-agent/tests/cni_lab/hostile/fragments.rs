//! IP fragments, IPv4 and IPv6: conntrack reassembles before the `inet`
//! table decides (its defragmentation hook runs first), and the bridge
//! table checks each fragment's addresses on its own.

use std::net::IpAddr;

use palisade_lab::raw::{self, Frag};
use palisade_lab::CniPlugin;

use super::{datagram, listen, marker, payloads, up, Pod, ALLOWED, DENIED, WAIT};
use crate::harness;

/// What one fragment test sends: pieces of a datagram from `from` (with
/// source `src`) to `to:dport`, as fragments; a piece may come from a
/// second datagram that differs in its destination port only ([`DENIED`]).
struct Case {
    what: &'static str,
    from: Pod,
    src: IpAddr,
    to: Pod,
    dport: u16,
    /// (offset, more fragments, bytes, from the second datagram)
    pieces: Vec<(u16, bool, std::ops::Range<usize>, bool)>,
    /// Whether the datagram reaches the destination's socket on `dport`.
    delivered: bool,
}

/// Sends `c`: whether its datagram reached `dport`, whether it reached
/// [`DENIED`] (never allowed), and how many frames with its marker reached
/// the target's interface.
fn send(c: &Case, v4: bool, n: u32) -> (bool, bool, usize) {
    let dst = c.to.ip(v4);
    let m = marker(c.what, n);
    let sport = 40000 + n as u16;
    let first = datagram(c.src, dst, sport, c.dport, &m);
    let second = datagram(c.src, dst, sport, DENIED, &m);
    let on_port = listen(&c.to.netns, dst, c.dport);
    let on_denied = (c.dport != DENIED).then(|| listen(&c.to.netns, dst, DENIED));
    let watch = c.to.link();
    let sender = c.from.link();
    let id = 0x7000 + n;
    for (offset, more, range, other) in &c.pieces {
        let body = if *other { &second } else { &first };
        let f = Frag {
            id,
            offset: *offset,
            more: *more,
        };
        let p = raw::ip_frag(c.src, dst, raw::UDP, Some(f), &body[range.clone()]);
        c.from.send_ip(&sender, dst, &p);
    }
    let wait = if c.delivered { WAIT * 3 } else { WAIT };
    let marked =
        |s: &std::net::UdpSocket, wait| payloads(s, wait).iter().any(|p| raw::contains(p, &m));
    let got = marked(&on_port, wait);
    let denied = on_denied.is_some_and(|s| marked(&s, WAIT / 2));
    let frames = watch
        .received(WAIT / 2)
        .iter()
        .filter(|f| raw::contains(f, &m))
        .count();
    (got, denied, frames)
}

/// Fragments of an allowed flow arrive and are reassembled; of a denied
/// flow (a denied source, a denied port), and a later fragment alone
/// (allowed source, spoofed source), and overlapping fragments that rewrite
/// the port, nothing reaches the target's interface.
fn fragments(plugin: CniPlugin) {
    let Some(h) = up("f", &plugin) else { return };
    let whole = |at: usize| vec![(0, true, 0..at, false), (at as u16, false, at..56, false)];
    // A second fragment that overlaps the first and goes beyond it, with
    // the denied port.
    let overlap = || {
        vec![
            (0, true, 0..24, false),
            (0, true, 0..32, true),
            (32, false, 32..56, false),
        ]
    };
    let mut bad = Vec::new();
    let mut n = 0;
    for v4 in [true, false] {
        let cases = [
            Case {
                what: "allowed",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: whole(24),
                delivered: true,
            },
            Case {
                what: "allowed-remote",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.b1.clone(),
                dport: ALLOWED,
                pieces: whole(24),
                delivered: true,
            },
            Case {
                what: "denied-source",
                from: h.a1.clone(),
                src: h.a1.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: whole(24),
                delivered: false,
            },
            Case {
                what: "denied-port",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: DENIED,
                pieces: whole(24),
                delivered: false,
            },
            Case {
                what: "denied-remote",
                from: h.a1.clone(),
                src: h.a1.ip(v4),
                to: h.b1.clone(),
                dport: ALLOWED,
                pieces: whole(24),
                delivered: false,
            },
            Case {
                what: "later-alone",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: vec![(24, false, 24..56, false)],
                delivered: false,
            },
            Case {
                what: "later-middle",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: vec![(32, true, 32..48, false)],
                delivered: false,
            },
            Case {
                what: "later-spoofed",
                from: h.a1.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: vec![(24, false, 24..56, false)],
                delivered: false,
            },
            Case {
                what: "later-remote",
                from: h.a1.clone(),
                src: h.a1.ip(v4),
                to: h.b1.clone(),
                dport: ALLOWED,
                pieces: vec![(24, false, 24..56, false)],
                delivered: false,
            },
            // The first fragment says port 7000 (allowed); a duplicate of
            // it says 7001 (denied): the kernel keeps the first copy, and
            // the datagram arrives on 7000, never on 7001.
            Case {
                what: "duplicate",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: vec![
                    (0, true, 0..24, false),
                    (0, true, 0..24, true),
                    (24, false, 24..56, false),
                ],
                delivered: true,
            },
            // A second fragment that overlaps the first and goes beyond it,
            // with port 7001: the kernel discards the whole datagram.
            Case {
                what: "overlap",
                from: h.a2.clone(),
                src: h.a2.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: overlap(),
                delivered: false,
            },
            // The same from a denied source.
            Case {
                what: "overlap-denied",
                from: h.a1.clone(),
                src: h.a1.ip(v4),
                to: h.a3.clone(),
                dport: ALLOWED,
                pieces: overlap(),
                delivered: false,
            },
        ];
        for c in &cases {
            n += 1;
            let (got, denied, frames) = send(c, v4, n);
            let fam = if v4 { "IPv4" } else { "IPv6" };
            eprintln!(
                "{} {fam} {}: delivered {got}, on {DENIED} {denied}, {frames} frames with its marker",
                tag(&plugin),
                c.what
            );
            if denied {
                bad.push(format!(
                    "{fam} {}: delivered on the denied port {DENIED}",
                    c.what
                ));
            }
            if got != c.delivered {
                bad.push(format!(
                    "{fam} {}: delivered {got}, expected {}",
                    c.what, c.delivered
                ));
            }
            if !c.delivered && frames > 0 {
                bad.push(format!(
                    "{fam} {}: {frames} frames reached the target",
                    c.what
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{} mode: {bad:#?}", tag(&plugin));
    h.down();
}

fn tag(p: &CniPlugin) -> &'static str {
    crate::tag(p)
}

per_plugin!(
    fragments,
    fragments_of_denied_flows_and_later_fragments_alone_never_pass_routed,
    fragments_of_denied_flows_and_later_fragments_alone_never_pass_bridged
);
