//! The listener that runs in each pod namespace: TCP accept-and-echo and UDP
//! echo on every given port, over IPv4 and IPv6 (dual-stack sockets).

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bound sockets, ready to serve.
pub struct Listeners {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

/// Binds every port in the calling thread's network namespace.
pub fn bind(tcp: &[u16], udp: &[u16]) -> io::Result<Listeners> {
    let any = |p: u16| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), p);
    let mut l = Listeners {
        tcp: Vec::new(),
        udp: Vec::new(),
    };
    for &p in tcp {
        let s = TcpListener::bind(any(p))?;
        s.set_nonblocking(true)?;
        l.tcp.push(s);
    }
    for &p in udp {
        let s = UdpSocket::bind(any(p))?;
        s.set_nonblocking(true)?;
        l.udp.push(s);
    }
    Ok(l)
}

fn echo(mut s: TcpStream, stop: Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Listeners {
    /// Serves until `stop` is set: accepts TCP connections (echoing on
    /// each) and echoes UDP datagrams.
    pub fn run(self, stop: Arc<AtomicBool>) {
        let mut fds: Vec<libc::pollfd> = self
            .tcp
            .iter()
            .map(|s| s.as_raw_fd())
            .chain(self.udp.iter().map(|s| s.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: fds is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if n <= 0 {
                continue;
            }
            for (i, pfd) in fds.iter_mut().enumerate() {
                if pfd.revents == 0 {
                    continue;
                }
                pfd.revents = 0;
                if i < self.tcp.len() {
                    while let Ok((s, _)) = self.tcp[i].accept() {
                        let stop = stop.clone();
                        std::thread::spawn(move || echo(s, stop));
                    }
                } else {
                    let u = &self.udp[i - self.tcp.len()];
                    while let Ok((n, from)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(&buf[..n], from);
                    }
                }
            }
        }
    }
}

/// What a listener process prints once its ports are bound.
pub const READY: &str = "ready";

/// Waits until a listener process prints [`READY`] on `out`; any other
/// line is its reason for not starting.
pub fn wait_ready(
    out: std::process::ChildStdout,
    deadline: std::time::Instant,
) -> Result<(), String> {
    let mut line = Vec::new();
    let mut out = out;
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n == 0 {
            return Err("no word from it in time".into());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        match out.read(&mut byte) {
            Ok(0) => return Err("it exited before binding its ports".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&line);
    if line == READY {
        Ok(())
    } else {
        Err(line.into_owned())
    }
}
