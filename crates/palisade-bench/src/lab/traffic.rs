//! The measured traffic: a listener in the server pod that drops, echoes
//! or sinks what it accepts, and the client loops that drive it.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_lab::{in_netns, sys, Error, Lab, Result};

use super::Measure;

/// What the bench listener does with an accepted connection.
const MODE_DROP: u8 = 0;
const MODE_SINK: u8 = 1;
/// Read the one-byte request, answer one byte, close.
const MODE_ECHO: u8 = 2;

pub(super) struct Listener {
    stop: Arc<AtomicBool>,
    mode: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub(super) fn start(netns: &str, port: u16) -> Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(AtomicU8::new(MODE_DROP));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = netns.to_string();
        let (st, md) = (stop.clone(), mode.clone());
        let thread = std::thread::spawn(move || {
            let l = sys::enter_netns(&ns).and_then(|_| {
                let l = TcpListener::bind(SocketAddr::new(
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    port,
                ))?;
                l.set_nonblocking(true)?;
                // A deep accept queue: the client must never wait on a
                // listener thread the scheduler has not run yet.
                // SAFETY: listen(2) again on a listening socket only
                // changes its backlog.
                if unsafe { libc::listen(l.as_raw_fd(), 4096) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(l)
            });
            let l = match l {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut pfd = libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            while !st.load(Ordering::Relaxed) {
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 50) };
                if n <= 0 {
                    continue;
                }
                while let Ok((s, _)) = l.accept() {
                    match md.load(Ordering::Relaxed) {
                        MODE_SINK => {
                            std::thread::spawn(move || sink(s));
                        }
                        // Inline: the client waits for the answer before
                        // it opens the next connection.
                        MODE_ECHO => echo(s),
                        _ => {}
                    }
                }
            }
        });
        rx.recv()
            .map_err(|_| Error::Msg("bench listener died".into()))?
            .map_err(|e| Error::Io {
                context: format!("bench listener in {netns}"),
                error: e,
            })?;
        Ok(Listener {
            stop,
            mode,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads until end of stream, then closes (the client waits for that).
fn sink(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Answers a one-byte request with one byte. A client that never sends
/// costs the listener at most the timeout.
fn echo(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut b = [0u8; 1];
    if matches!(s.read(&mut b), Ok(1)) {
        let _ = s.write_all(&b);
    }
}

/// Close with RST: no TIME_WAIT, so the client never runs out of ports.
fn abort(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid socket with a linger struct of its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Runs `attempt` back to back for `d`: (successes, failures, seconds).
fn attempts_for(d: Duration, mut attempt: impl FnMut() -> io::Result<()>) -> (u64, u64, f64) {
    let start = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    while start.elapsed() < d {
        match attempt() {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed, start.elapsed().as_secs_f64())
}

/// Connect, close with RST.
fn connect_loop(dst: SocketAddr, d: Duration) -> io::Result<(u64, u64, f64)> {
    Ok(attempts_for(d, || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(1)).map(abort)
    }))
}

/// Connect, one-byte request, one-byte response, close with RST.
fn request_loop(dst: SocketAddr, d: Duration) -> io::Result<(u64, u64, f64)> {
    let exchange = |mut s: TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"q")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        abort(s);
        Ok(())
    };
    Ok(attempts_for(d, || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(1)).and_then(exchange)
    }))
}

fn bulk(dst: SocketAddr, d: Duration) -> io::Result<(u64, f64)> {
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
    let buf = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    // The server closes once it has read everything.
    let mut b = [0u8; 16];
    let _ = s.read(&mut b);
    Ok((sent, start.elapsed().as_secs_f64()))
}

pub(super) fn measure(
    lab: &Lab,
    client: &str,
    listener: &Listener,
    dst: SocketAddr,
    d: Duration,
) -> Result<Measure> {
    let ns = lab
        .pod(client)
        .ok_or_else(|| Error::Msg(format!("no pod {client} in the lab")))?
        .netns
        .clone();
    listener.mode.store(MODE_DROP, Ordering::Relaxed);
    // A short warm-up, not counted: the first connections after a ruleset
    // load and a conntrack flush pay for cold caches.
    let warm = d / 10;
    let (connections, failed, conn_seconds) = in_netns(&ns, move || {
        connect_loop(dst, warm)?;
        connect_loop(dst, d)
    })?;
    listener.mode.store(MODE_ECHO, Ordering::Relaxed);
    let (crr_connections, crr_failed, crr_seconds) = in_netns(&ns, move || {
        request_loop(dst, warm)?;
        request_loop(dst, d)
    })?;
    listener.mode.store(MODE_SINK, Ordering::Relaxed);
    let (bytes, bulk_seconds) = in_netns(&ns, move || bulk(dst, d))?;
    listener.mode.store(MODE_DROP, Ordering::Relaxed);
    Ok(Measure {
        connections,
        failed,
        conn_seconds,
        crr_connections,
        crr_failed,
        crr_seconds,
        bytes,
        bulk_seconds,
    })
}
