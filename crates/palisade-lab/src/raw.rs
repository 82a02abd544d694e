//! Hostile packets: Ethernet frames built byte by byte (IPv4 and IPv6
//! with fragments, UDP, TCP with any flags, ICMP and ICMPv6 errors, ARP,
//! neighbour discovery) and a packet socket that sends them on a pod's
//! interface and sees every frame that reaches one, before the IP layer
//! decides anything.
//!
//! Builders return what goes on the wire with correct checksums: a packet
//! the kernel drops for a bad checksum would prove nothing about policy.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub type Mac = [u8; 6];

pub const ETH_IP: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IP6: u16 = 0x86dd;
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
pub const SCTP: u8 = 132;
pub const ICMP: u8 = 1;
pub const ICMP6: u8 = 58;
const FRAGMENT6: u8 = 44;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

fn sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The sum of the pseudo-header of an upper-layer packet of `len` bytes.
fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut pseudo = octets(src);
    pseudo.extend(octets(dst));
    if src.is_ipv4() {
        pseudo.extend([0, proto]);
        pseudo.extend((len as u16).to_be_bytes());
    } else {
        pseudo.extend((len as u32).to_be_bytes());
        pseudo.extend([0, 0, 0, proto]);
    }
    sum(&pseudo, 0)
}

/// The checksum of an upper-layer packet `l4` over its pseudo-header.
fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    let c = fold(sum(l4, pseudo_sum(src, dst, proto, l4.len())));
    // UDP sends a computed 0 as all ones (0 means "no checksum").
    if c == 0 && proto == UDP {
        0xffff
    } else {
        c
    }
}

/// A UDP datagram (header and payload) from `src:sport` to `dst:dport`.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend(((8 + payload.len()) as u16).to_be_bytes());
    p.extend([0, 0]);
    p.extend_from_slice(payload);
    let c = l4_checksum(src, dst, UDP, &p);
    p[6..8].copy_from_slice(&c.to_be_bytes());
    p
}

/// A TCP segment with `flags`, sequence and acknowledgement numbers.
pub fn tcp(
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(20 + payload.len());
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend(seq.to_be_bytes());
    p.extend(ack.to_be_bytes());
    p.extend([5 << 4, flags]);
    p.extend(64240u16.to_be_bytes());
    p.extend([0, 0, 0, 0]);
    p.extend_from_slice(payload);
    let c = l4_checksum(src, dst, TCP, &p);
    p[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

/// An SCTP packet of one INIT chunk to `dport`.
pub fn sctp(sport: u16, dport: u16, tag: u32) -> Vec<u8> {
    crate::sys::sctp_init(sport, dport, tag)
}

/// A destination-unreachable error (ICMP port unreachable, ICMPv6 port
/// unreachable) from `src` to `dst` that quotes `quoted`, the start of the
/// IP packet it claims to answer.
pub fn unreachable(src: IpAddr, dst: IpAddr, quoted: &[u8]) -> Vec<u8> {
    let v4 = src.is_ipv4();
    let (ty, code) = if v4 { (3, 3) } else { (1, 4) };
    let mut p = vec![ty, code, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(quoted);
    let c = if v4 {
        checksum(&p)
    } else {
        l4_checksum(src, dst, ICMP6, &p)
    };
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Where a fragment starts in its datagram (bytes, a multiple of 8) and
/// whether more follow; `None`: not a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frag {
    pub id: u32,
    pub offset: u16,
    pub more: bool,
}

/// An IPv4 packet carrying `payload` (or the fragment `frag` of one).
pub fn ipv4(src: IpAddr, dst: IpAddr, proto: u8, frag: Option<Frag>, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend(((20 + payload.len()) as u16).to_be_bytes());
    let f = frag.unwrap_or(Frag {
        id: 0x5a5a,
        offset: 0,
        more: false,
    });
    h.extend((f.id as u16).to_be_bytes());
    let flags = (f.offset / 8) | if f.more { 0x2000 } else { 0 };
    h.extend(flags.to_be_bytes());
    h.extend([64, proto, 0, 0]);
    h.extend(octets(src));
    h.extend(octets(dst));
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet with hop limit `hops` carrying `payload` (after a
/// fragment header when `frag` is given).
pub fn ipv6(
    src: IpAddr,
    dst: IpAddr,
    next: u8,
    hops: u8,
    frag: Option<Frag>,
    payload: &[u8],
) -> Vec<u8> {
    let ext = if frag.is_some() { 8 } else { 0 };
    let mut h = vec![0x60, 0, 0, 0];
    h.extend(((ext + payload.len()) as u16).to_be_bytes());
    h.push(if frag.is_some() { FRAGMENT6 } else { next });
    h.push(hops);
    h.extend(octets(src));
    h.extend(octets(dst));
    if let Some(f) = frag {
        h.extend([next, 0]);
        h.extend((f.offset | u16::from(f.more)).to_be_bytes());
        h.extend(f.id.to_be_bytes());
    }
    h.extend_from_slice(payload);
    h
}

/// An IP packet of `src`'s family, unfragmented, hop limit 64.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ip_frag(src, dst, proto, None, payload)
}

pub fn ip_frag(src: IpAddr, dst: IpAddr, proto: u8, frag: Option<Frag>, payload: &[u8]) -> Vec<u8> {
    if src.is_ipv4() {
        ipv4(src, dst, proto, frag, payload)
    } else {
        ipv6(src, dst, proto, 64, frag, payload)
    }
}

/// `datagram` (an upper-layer packet) cut at `at` bytes (a multiple of 8)
/// into two fragments, each a whole IP packet.
pub fn fragments(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
    datagram: &[u8],
    at: usize,
) -> [Vec<u8>; 2] {
    let first = Frag {
        id,
        offset: 0,
        more: true,
    };
    let second = Frag {
        id,
        offset: at as u16,
        more: false,
    };
    [
        ip_frag(src, dst, proto, Some(first), &datagram[..at]),
        ip_frag(src, dst, proto, Some(second), &datagram[at..]),
    ]
}

/// An Ethernet frame.
pub fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend(dst);
    f.extend(src);
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The ethertype of an IP packet.
pub fn ethertype(packet: &[u8]) -> u16 {
    if packet.first().map(|b| b >> 4) == Some(6) {
        ETH_IP6
    } else {
        ETH_IP
    }
}

pub const BROADCAST: Mac = [0xff; 6];

/// An ARP packet (`op` 1: request, 2: reply) for Ethernet and IPv4.
pub fn arp(op: u16, sha: Mac, spa: IpAddr, tha: Mac, tpa: IpAddr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4];
    p.extend(op.to_be_bytes());
    p.extend(sha);
    p.extend(octets(spa));
    p.extend(tha);
    p.extend(octets(tpa));
    p
}

/// The Ethernet address IPv6 multicast `dst` maps to.
pub fn multicast_mac(dst: Ipv6Addr) -> Mac {
    let o = dst.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A neighbour discovery message (an IPv6 packet, hop limit 255): `ty`
/// 135 (solicitation), 136 (advertisement, with the override flag), 133
/// (router solicitation) or 134 (router advertisement); `target` and a
/// link-layer address option (source for 133/134/135, target for 136).
pub fn neighbour(
    ty: u8,
    src: IpAddr,
    dst: IpAddr,
    target: Option<Ipv6Addr>,
    lladdr: Mac,
) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0];
    match ty {
        136 => p.extend([0x20, 0, 0, 0]),
        // Router advertisement: hop limit, flags, lifetime 1800 s, then
        // reachable time and retransmission timer.
        134 => p.extend([64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]),
        _ => p.extend([0, 0, 0, 0]),
    }
    if let Some(t) = target {
        p.extend(t.octets());
    }
    p.extend([if ty == 136 { 2 } else { 1 }, 1]);
    p.extend(lladdr);
    let c = l4_checksum(src, dst, ICMP6, &p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, ICMP6, 255, None, &p)
}

/// A packet socket on one interface of the namespace it was opened in:
/// sends whole frames and receives every frame the interface receives.
pub struct Link {
    fd: OwnedFd,
    ifindex: i32,
}

impl Link {
    /// Opens `ifname` of the calling thread's namespace (use it from
    /// [`crate::in_netns`]; the socket stays in that namespace).
    pub fn open(ifname: &str) -> io::Result<Link> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let all = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                all,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sll = sockaddr_ll(ifindex, all as u16, [0; 6]);
        // SAFETY: sll is a valid sockaddr_ll of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Link { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let dst: Mac = frame
            .get(..6)
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "short frame"))?;
        let sll = sockaddr_ll(self.ifindex, 0, dst);
        // SAFETY: frame and sll are valid for the given lengths.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The frames received (not sent) on the interface within `wait`.
    pub fn received(&self, wait: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let t = Instant::now();
        let mut buf = vec![0u8; 65536];
        while t.elapsed() < wait {
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and sll are valid for the given lengths.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if r < 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if sll.sll_pkttype != libc::PACKET_OUTGOING {
                out.push(buf[..r as usize].to_vec());
            }
        }
        out
    }

    /// Whether a frame containing `marker` is received within `wait`.
    pub fn sees(&self, marker: &[u8], wait: Duration) -> bool {
        self.received(wait).iter().any(|f| contains(f, marker))
    }
}

pub fn contains(frame: &[u8], marker: &[u8]) -> bool {
    frame.windows(marker.len()).any(|w| w == marker)
}

fn sockaddr_ll(ifindex: i32, protocol: u16, addr: Mac) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol;
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&addr);
    sll
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let (s, d): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let p = ipv4(s, d, UDP, None, &udp(s, d, 1000, 7000, b"x"));
        assert_eq!(checksum(&p[..20]), 0);
        let (s6, d6): (IpAddr, IpAddr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let verify = |s, d, proto, l4: &[u8]| fold(sum(l4, pseudo_sum(s, d, proto, l4.len())));
        assert_eq!(verify(s6, d6, UDP, &udp(s6, d6, 1000, 7000, b"payload")), 0);
        assert_eq!(
            verify(s, d, TCP, &tcp((s, 1), (d, 2), ACK, 7, 9, b"abc")),
            0
        );
        let err = unreachable(s6, d6, &[0u8; 12]);
        assert_eq!(verify(s6, d6, ICMP6, &err), 0);
        let na = neighbour(136, s6, d6, Some("fd00::1".parse().unwrap()), [2; 6]);
        assert_eq!(verify(s6, d6, ICMP6, &na[40..]), 0);
    }

    #[test]
    fn fragments_carry_offsets_and_the_more_flag() {
        let (s, d): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let [a, b] = fragments(s, d, UDP, 7, &[0u8; 40], 16);
        assert_eq!(&a[6..8], &[0x20, 0]);
        assert_eq!(&b[6..8], &[0, 2]);
        assert_eq!((a.len(), b.len()), (36, 44));
        let (s6, d6): (IpAddr, IpAddr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let [a, b] = fragments(s6, d6, UDP, 7, &[0u8; 40], 16);
        assert_eq!((a[6], a[40], &a[42..44]), (FRAGMENT6, UDP, &[0u8, 1][..]));
        assert_eq!(&b[42..44], &[0, 16]);
    }
}
