//! Decimal numbers and addresses written straight into a `String`: the
//! same text as `Display`, without `fmt`, which cost several hundred
//! instructions a number on the reasons' hot path.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Decimal forms of 0..1000: address octets, ports and rule numbers are
/// mostly below 1000, and reasons are on the audit tools' hot path.
static DEC: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..1000u32).map(|n| n.to_string()).collect());

pub(super) fn push_u32(s: &mut String, n: u32) {
    if n < 1000 {
        s.push_str(&DEC[n as usize]);
        return;
    }
    push_u32(s, n / 1000);
    // Lower groups are three digits, with leading zeros.
    let r = n % 1000;
    s.push(char::from(b'0' + (r / 100) as u8));
    s.push(char::from(b'0' + (r / 10 % 10) as u8));
    s.push(char::from(b'0' + (r % 10) as u8));
}

pub(super) fn push_usize(s: &mut String, n: usize) {
    match u32::try_from(n) {
        Ok(n) => push_u32(s, n),
        Err(_) => {
            let _ = write!(s, "{n}");
        }
    }
}

pub(super) fn push_ip(s: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            s.push_str(&DEC[a as usize]);
            s.push('.');
            s.push_str(&DEC[b as usize]);
            s.push('.');
            s.push_str(&DEC[c as usize]);
            s.push('.');
            s.push_str(&DEC[d as usize]);
        }
        IpAddr::V6(a) => push_ipv6(s, a),
    }
}

/// `Ipv6Addr`'s `Display` (RFC 5952: lowercase hex, the longest run of two
/// or more zero groups, the first of equals, as `::`; IPv4-mapped addresses
/// dotted) without `fmt`, which cost several hundred instructions an
/// address on the reasons' hot path. A test holds the two equal over every
/// placement of zero runs.
fn push_ipv6(s: &mut String, a: std::net::Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        s.push_str("::ffff:");
        push_ip(s, IpAddr::V4(v4));
        return;
    }
    let g = a.segments();
    // The longest run of zero groups (length > 1), the first if tied.
    let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
    for (i, &x) in g.iter().enumerate() {
        if x == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best, best_len) = (run, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let hex = |s: &mut String, x: u16| {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let d = (x >> shift) & 0xf;
            if d != 0 || started || shift == 0 {
                s.push(char::from(DIGITS[d as usize]));
                started = true;
            }
        }
    };
    if best_len < 2 {
        for (i, &x) in g.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            hex(s, x);
        }
        return;
    }
    for (i, &x) in g[..best].iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        hex(s, x);
    }
    s.push_str("::");
    for (i, &x) in g[best + best_len..].iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        hex(s, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn hand_written_formatting_matches_display() {
        for ip in [
            "0.0.0.0",
            "10.0.2.1",
            "255.255.255.255",
            "192.168.100.9",
            "1.20.3.100",
            "fd00::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
        // Every pattern of zero and non-zero groups (so every placement of
        // zero runs, ties included), with values of every hex width, and
        // IPv4-mapped and -compatible forms.
        let mut v6: Vec<std::net::Ipv6Addr> = Vec::new();
        for pattern in 0u32..256 {
            for (k, fill) in [1u16, 0xabcd, 0x0f00, 0x10, 0xffff].into_iter().enumerate() {
                let g: [u16; 8] = std::array::from_fn(|i| {
                    if pattern >> i & 1 == 1 {
                        fill.rotate_left((i + k) as u32)
                    } else {
                        0
                    }
                });
                v6.push(g.into());
            }
        }
        v6.extend(
            [
                "::ffff:10.0.0.1",
                "::10.0.0.1",
                "::ffff:0:0",
                "::ffff:0:1:2",
                "64:ff9b::1.2.3.4",
            ]
            .iter()
            .map(|a| a.parse::<std::net::Ipv6Addr>().unwrap()),
        );
        for a in v6 {
            let mut s = String::new();
            push_ip(&mut s, IpAddr::V6(a));
            assert_eq!(s, a.to_string(), "{:?}", a.segments());
        }
        for n in (0..70_000).chain([100_007, 1_000_000, 4_000_000_009, u32::MAX]) {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
