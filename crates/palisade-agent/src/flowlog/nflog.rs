//! The kernel's side of the flow log: one NFLOG group, read over a
//! netfilter netlink socket (`netlink-packet-netfilter` decodes the
//! messages). The socket is opened in the node's network namespace and
//! stays bound to it.

use std::io;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use palisade_engine::Direction;
use palisade_nft::Dir;

use super::packet::{self, Headers};

/// Bytes of each packet the kernel copies: IPv6 with a few extension
/// headers and the transport ports fit.
const COPY_RANGE: u32 = 160;

/// One decision the kernel reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub allowed: bool,
    pub direction: Direction,
    /// The policy generation from the packet's mark.
    pub generation: u32,
    pub headers: Headers,
}

/// What the reader hands on.
#[derive(Debug)]
pub enum Event {
    Report(Report),
    /// Reports the kernel could not deliver (the socket's buffer was full).
    Lost(u64),
    /// A report that is not ours or not a policy decision (another prefix,
    /// a later fragment).
    Unreadable,
}

pub struct Reader {
    socket: Socket,
    buf: Vec<u8>,
    next_seq: Option<u32>,
}

/// Binds NFLOG group `group` in `netns` (the current namespace if `None`).
/// `receive_buffer` absorbs a burst while the reader is busy; beyond it the
/// kernel drops reports, and the sequence numbers say how many.
pub fn open(netns: Option<&str>, group: u16, receive_buffer: usize) -> io::Result<Reader> {
    let socket = crate::netlink::in_netns(netns, move || {
        let mut s = Socket::new(NETLINK_NETFILTER)?;
        s.bind_auto()?;
        let _ = s.set_rx_buf_sz(receive_buffer);
        // Wakes the reader twice a second, so that it notices when the
        // agent is done with it.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 500_000,
        };
        // SAFETY: a valid socket and a timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Kernels before 3.17 need the families bound; later ones ignore it.
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            request(
                &s,
                config_request(family, 0, vec![ConfigCmd::PfBind.into()]),
            )?;
        }
        request(
            &s,
            config_request(
                NetfilterProtoFamily::Unspec,
                group,
                vec![
                    ConfigCmd::Bind.into(),
                    ConfigFlags::SEQ.into(),
                    ConfigMode::new_packet(COPY_RANGE).into(),
                    // Reports leave the kernel at once (one per message)
                    // or after 10 ms at the latest.
                    ConfigNla::QThresh(1),
                    Timeout::new(1).into(),
                ],
            ),
        )?;
        Ok(s)
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Reader {
        socket,
        buf: vec![0; 1 << 16],
        next_seq: None,
    })
}

/// Sends one configuration request and waits for its acknowledgement.
fn request(s: &Socket, mut msg: NetlinkMessage<NetfilterMessage>) -> io::Result<()> {
    msg.finalize();
    let mut out = vec![0; msg.header.length as usize];
    msg.serialize(&mut out);
    s.send(&out, 0)?;
    let mut buf = vec![0; 4096];
    let n = s.recv(&mut &mut buf[..], 0)?;
    let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..n])
        .map_err(|e| io::Error::other(format!("cannot decode the kernel's NFLOG reply: {e}")))?;
    match reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
        },
        _ => Ok(()),
    }
}

impl Reader {
    /// Blocks for the next batch of reports; an error only when the socket
    /// itself fails.
    pub fn next_batch(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            // The kernel dropped reports: the next sequence number says
            // how many.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
            // Nothing within the receive timeout.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let mut at = 0;
        while at < n {
            let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[at..n]) else {
                out.push(Event::Unreadable);
                break;
            };
            let len = msg.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = &msg.payload
            {
                self.packet(nlas, out);
            }
            if len == 0 {
                break;
            }
            at += nlmsg_align(len);
        }
        Ok(())
    }

    fn packet(&mut self, nlas: &[PacketNla], out: &mut Vec<Event>) {
        let (mut prefix, mut mark, mut payload, mut seq) = (None, 0, None, None);
        for nla in nlas {
            match nla {
                PacketNla::Prefix(p) => prefix = p.to_str().ok(),
                PacketNla::Mark(m) => mark = *m,
                PacketNla::Payload(p) => payload = Some(p.as_slice()),
                PacketNla::Seq(s) => seq = Some(*s),
                _ => {}
            }
        }
        if let Some(s) = seq {
            if let Some(want) = self.next_seq {
                let gap = s.wrapping_sub(want);
                // A gap of more than half the sequence space is a
                // reordering, not a loss.
                if gap != 0 && gap < u32::MAX / 2 {
                    out.push(Event::Lost(u64::from(gap)));
                }
            }
            self.next_seq = Some(s.wrapping_add(1));
        }
        let decided = prefix.and_then(palisade_nft::parse_log_prefix);
        match (decided, payload.and_then(packet::parse)) {
            (Some((allowed, dir)), Some(headers)) => out.push(Event::Report(Report {
                allowed,
                direction: match dir {
                    Dir::Egress => Direction::Egress,
                    Dir::Ingress => Direction::Ingress,
                },
                generation: mark,
                headers,
            })),
            _ => out.push(Event::Unreadable),
        }
    }
}

fn nlmsg_align(len: usize) -> usize {
    (len + 3) & !3
}
