//! The headers of a reported packet: addresses, protocol, destination
//! port. The kernel copies the packet from its network header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_model::Protocol;

/// What a report says about its packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// `None` for what no policy decides (another protocol) and for what
/// carries no port (a later fragment, a truncated copy).
pub fn parse(p: &[u8]) -> Option<Headers> {
    match p.first()? >> 4 {
        4 => v4(p),
        6 => v6(p),
        _ => None,
    }
}

fn v4(p: &[u8]) -> Option<Headers> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    // A fragment other than the first has no transport header.
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    if frag_offset != 0 {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    transport(p[9], &p[ihl..]).map(|(protocol, port)| Headers {
        src: src.into(),
        dst: dst.into(),
        protocol,
        port,
    })
}

fn v6(p: &[u8]) -> Option<Headers> {
    if p.len() < 40 {
        return None;
    }
    let addr = |o: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = p.get(o..o + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = p[6];
    let mut at = 40;
    // Extension headers the kernel lets through to the forward hook; each
    // is skipped by its own length field.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let h = p.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let h = p.get(at..at + 8)?;
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    return None;
                }
                next = h[0];
                at += 8;
            }
            _ => break,
        }
    }
    transport(next, p.get(at..)?).map(|(protocol, port)| Headers {
        src: src.into(),
        dst: dst.into(),
        protocol,
        port,
    })
}

/// TCP, UDP and SCTP all put the destination port at bytes 2..4.
fn transport(proto: u8, l4: &[u8]) -> Option<(Protocol, u16)> {
    let protocol = Protocol::ALL.into_iter().find(|p| p.number() == proto)?;
    let port = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
    Some((protocol, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45,
            0,
            0,
            0,
            0,
            0,
            (frag >> 8) as u8,
            frag as u8,
            64,
            proto,
            0,
            0,
        ];
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend(l4);
        p
    }

    #[test]
    fn ports_of_each_protocol_and_family() {
        let l4 = [0x30, 0x39, 0x00, 0x50];
        for (n, proto) in [
            (6, Protocol::Tcp),
            (17, Protocol::Udp),
            (132, Protocol::Sctp),
        ] {
            let h = parse(&ipv4(n, 0, &l4)).unwrap();
            assert_eq!((h.protocol, h.port), (proto, 80));
            assert_eq!(h.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        }
        // More-fragments set, offset 0: the first fragment has the port.
        assert_eq!(parse(&ipv4(6, 0x2000, &l4)).unwrap().port, 80);
        assert_eq!(parse(&ipv4(6, 0x0001, &l4)), None);
        assert_eq!(parse(&ipv4(1, 0, &l4)), None);
        assert_eq!(parse(&ipv4(6, 0, &l4[..3])), None);

        let mut p6 = vec![0x60, 0, 0, 0, 0, 0, 60, 64];
        p6.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p6.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        // A destination-options header (8 bytes) before UDP.
        p6.extend([17, 0, 0, 0, 0, 0, 0, 0]);
        p6.extend([0x30, 0x39, 0x00, 0x35]);
        let h = parse(&p6).unwrap();
        assert_eq!((h.protocol, h.port), (Protocol::Udp, 53));
        assert_eq!(h.dst, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45]), None);
    }
}
