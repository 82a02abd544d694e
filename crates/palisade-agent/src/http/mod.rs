//! `/metrics`, `/healthz`, `/readyz` and `/flows` over HTTP (meant for
//! loopback). Read-only: every other method is refused.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::agent::Health;
use crate::flowlog::Ring;
use crate::metrics::Metrics;
use crate::Error;

mod flows;

/// Serves until the process ends; returns the bound address
/// ([`Error::Listen`] when it cannot). `/flows` answers from `flows`, the
/// flow log's ring, when there is one.
pub fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    flows: Option<Arc<Ring>>,
) -> Result<SocketAddr, Error> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| Error::Listen(format!("listening on {addr}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Listen(format!("{addr} is not an IP address")))?;
    thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let followers = Arc::new(AtomicUsize::new(0));
            for req in server.incoming_requests() {
                if *req.method() != tiny_http::Method::Get {
                    let _ = req.respond(
                        tiny_http::Response::from_string("only GET\n").with_status_code(405),
                    );
                    continue;
                }
                let (path, query) = req.url().split_once('?').unwrap_or((req.url(), ""));
                if path == "/flows" {
                    let query = query.to_string();
                    flows::answer(req, &query, flows.as_ref(), &followers);
                    continue;
                }
                let (code, body, ctype) = match path {
                    "/metrics" => (
                        200,
                        metrics.encode(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                    "/healthz" => {
                        let h = health.lock().unwrap_or_else(|e| e.into_inner());
                        let text = h.status();
                        (if h.is_degraded() { 503 } else { 200 }, text, "text/plain")
                    }
                    "/readyz" => {
                        let h = health.lock().unwrap_or_else(|e| e.into_inner());
                        let code = if h.ready && h.node_unknown.is_none() {
                            200
                        } else {
                            503
                        };
                        (code, h.readiness(), "text/plain")
                    }
                    _ => (404, "not found\n".to_string(), "text/plain"),
                };
                let header = tiny_http::Header::from_bytes("Content-Type", ctype)
                    .expect("static header is valid");
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })
        .map_err(|error| Error::Start {
            what: "the HTTP server",
            error,
        })?;
    Ok(bound)
}

/// A minimal HTTP GET for tests and the CLI: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
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
