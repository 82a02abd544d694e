//! `/metrics`, `/healthz`, `/readyz` and `/flows` over HTTP (meant for
//! loopback). Read-only: every other method is refused with 405, and
//! nothing a request says changes the agent.
//!
//! Bounded against clients that misbehave: one request per connection;
//! a request head larger than [`MAX_HEAD`] bytes gets 431; a head not
//! complete within [`HEAD_TIMEOUT`] gets 408; at most [`MAX_CONNECTIONS`]
//! connections are served at once (more are closed unanswered); an answer
//! the client does not read for [`WRITE_TIMEOUT`] is cut. Each connection
//! has its own thread, so a slow one holds nobody else.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::agent::Health;
use crate::flowlog::Ring;
use crate::metrics::Metrics;
use crate::Error;

mod flows;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 << 10;
/// Headers of one request at most.
pub const MAX_HEADERS: usize = 32;
/// Time for a client to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client may leave an answer unread before it is cut.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (`/flows` followers among them).
pub const MAX_CONNECTIONS: usize = 64;

/// Binds `addr`. Done before the agent drops its capabilities, so that a
/// port below 1024 can be given.
pub fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|e| Error::Listen(format!("listening on {addr}: {e}")))
}

/// What the endpoints answer from.
struct State {
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    flows: Option<Arc<Ring>>,
    followers: Arc<AtomicUsize>,
}

/// Serves `listener` until the process ends; returns its address.
/// `/flows` answers from `flows`, the flow log's ring, when there is one.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    flows: Option<Arc<Ring>>,
) -> Result<SocketAddr, Error> {
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Listen(format!("the listening socket has no address: {e}")))?;
    let state = Arc::new(State {
        metrics,
        health,
        flows,
        followers: Arc::new(AtomicUsize::new(0)),
    });
    thread::Builder::new()
        .name("http".into())
        .spawn(move || accept(listener, state))
        .map_err(|error| Error::Start {
            what: "the HTTP server",
            error,
        })?;
    Ok(bound)
}

fn accept(listener: TcpListener, state: Arc<State>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            // Closed unanswered: an answer could block this thread on a
            // client that does not read.
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (state, done) = (state.clone(), active.clone());
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let _ = connection(conn, &state);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a thread for an HTTP connection");
        }
    }
}

/// A request head as read: the method and the target.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Request {
        method: String,
        target: String,
    },
    /// Refused before it was complete: status and reason.
    Refused(u16, &'static str),
}

/// Reads one request head within [`HEAD_TIMEOUT`] and [`MAX_HEAD`].
fn read_head(conn: &mut impl Read, set_timeout: &mut dyn FnMut(Duration)) -> io::Result<Head> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Refused(
                408,
                "the request head did not arrive in time",
            ));
        }
        set_timeout(left);
        let n = match conn.read(&mut buf[len..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::Refused(
                    408,
                    "the request head did not arrive in time",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return Ok(Head::Request {
                    method: req.method.unwrap_or_default().to_string(),
                    target: req.path.unwrap_or_default().to_string(),
                })
            }
            Ok(httparse::Status::Partial) if len == buf.len() => {
                return Ok(Head::Refused(431, "the request head is too large"))
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Ok(Head::Refused(431, "too many request headers"))
            }
            Err(_) => return Ok(Head::Refused(400, "not an HTTP request")),
        }
    }
}

fn connection(mut conn: TcpStream, state: &State) -> io::Result<()> {
    conn.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let reader = conn.try_clone()?;
    let head = read_head(&mut conn, &mut |t| {
        let _ = reader.set_read_timeout(Some(t));
    })?;
    let (method, target) = match head {
        Head::Request { method, target } => (method, target),
        Head::Refused(code, why) => {
            return respond(&mut conn, code, "text/plain", &format!("{why}\n"))
        }
    };
    if method != "GET" {
        return respond(&mut conn, 405, "text/plain", "only GET\n");
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path == "/flows" {
        return flows::answer(conn, query, state.flows.as_ref(), &state.followers);
    }
    let (code, body, ctype) = match path {
        "/metrics" => (
            200,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" => {
            let h = state.health.lock().unwrap_or_else(|e| e.into_inner());
            (
                if h.is_degraded() { 503 } else { 200 },
                h.status(),
                "text/plain",
            )
        }
        "/readyz" => {
            let h = state.health.lock().unwrap_or_else(|e| e.into_inner());
            let ready = h.ready && h.node_unknown.is_none();
            (if ready { 200 } else { 503 }, h.readiness(), "text/plain")
        }
        _ => (404, "not found\n".to_string(), "text/plain"),
    };
    respond(&mut conn, code, ctype, &body)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The status line and headers of an answer that ends when the connection
/// closes.
fn status_head(code: u16, ctype: &str, length: Option<usize>) -> String {
    let mut h = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nConnection: close\r\n",
        reason(code)
    );
    if code == 405 {
        h.push_str("Allow: GET\r\n");
    }
    if let Some(n) = length {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn respond(conn: &mut TcpStream, code: u16, ctype: &str, body: &str) -> io::Result<()> {
    let mut out = status_head(code, ctype, Some(body.len())).into_bytes();
    out.extend_from_slice(body.as_bytes());
    conn.write_all(&out)?;
    conn.flush()?;
    linger(conn);
    Ok(())
}

/// Ends the answer, then reads and drops what the client still sends
/// (a body, the rest of a refused head), a bounded amount for a bounded
/// time: closing with unread input resets the connection, and the client
/// would lose the answer.
fn linger(conn: &mut TcpStream) {
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut left = 64usize << 10;
    let mut buf = [0u8; 4096];
    while left > 0 {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

/// A minimal HTTP GET for tests and the CLI: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    // One write: a request that arrives in pieces may be answered and the
    // connection closed before the rest arrives, which resets it.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Head {
        read_head(&mut io::Cursor::new(bytes.to_vec()), &mut |_| {}).unwrap()
    }

    #[test]
    fn heads_are_read_within_their_bounds() {
        let get = |t: &str| Head::Request {
            method: "GET".into(),
            target: t.into(),
        };
        assert_eq!(head(b"GET /metrics HTTP/1.0\r\n\r\n"), get("/metrics"));
        assert_eq!(
            head(b"DELETE /flows HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Request {
                method: "DELETE".into(),
                target: "/flows".into()
            }
        );
        let at_limit = |fill: usize| {
            let mut h = b"GET / HTTP/1.0\r\nX: ".to_vec();
            h.resize(h.len() + fill, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        let base = at_limit(0).len();
        assert_eq!(head(&at_limit(MAX_HEAD - base)), get("/"));
        assert_eq!(
            head(&at_limit(MAX_HEAD - base + 1)),
            Head::Refused(431, "the request head is too large")
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            head(format!("GET / HTTP/1.0\r\n{many}\r\n").as_bytes()),
            Head::Refused(431, "too many request headers")
        );
        assert_eq!(
            head(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Head::Refused(400, "not an HTTP request")
        );
        // A client that stops half way ends the connection unanswered.
        assert!(read_head(&mut io::Cursor::new(b"GET / HT".to_vec()), &mut |_| {}).is_err());
    }

    #[test]
    fn answers_say_their_length_and_close() {
        assert_eq!(
            status_head(405, "text/plain", Some(9)),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n\
             Connection: close\r\nAllow: GET\r\nContent-Length: 9\r\n\r\n"
        );
        assert_eq!(
            status_head(200, "application/x-ndjson", None),
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n"
        );
    }
}
