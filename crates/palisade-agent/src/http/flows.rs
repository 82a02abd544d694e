//! `GET /flows?since=TIME&verdict=denied|allowed&staged=1&follow=1`: the
//! flow log's records as JSON lines, oldest first. `since` is an RFC 3339
//! time or a span back from now (`5m`, `1h`). With `follow=1` the answer
//! stays open and carries each new record as it is made (an empty line
//! every few seconds when there is none, so that a reader that left is
//! noticed).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_engine::flowlog::{FlowRecord, FlowVerdict};

use super::{respond, status_head};
use crate::flowlog::{format_time, Filter, Ring};

/// Followers served at once; each holds a thread and one of the server's
/// connections.
const MAX_FOLLOWERS: usize = 16;
const NDJSON: &str = "application/x-ndjson";
const HEARTBEAT: Duration = Duration::from_secs(5);

pub(super) fn answer(
    mut conn: TcpStream,
    query: &str,
    ring: Option<&Arc<Ring>>,
    followers: &Arc<AtomicUsize>,
) -> io::Result<()> {
    let Some(ring) = ring else {
        return respond(
            &mut conn,
            404,
            "text/plain",
            "the flow log is off (palisade agent --flow-log)\n",
        );
    };
    let (filter, follow) = match parse_query(query) {
        Ok(q) => q,
        Err(e) => return respond(&mut conn, 400, "text/plain", &format!("{e}\n")),
    };
    if !follow {
        let (records, _) = ring.snapshot(&filter);
        return respond(&mut conn, 200, NDJSON, &lines(&records));
    }
    if followers.fetch_add(1, Ordering::SeqCst) >= MAX_FOLLOWERS {
        followers.fetch_sub(1, Ordering::SeqCst);
        return respond(
            &mut conn,
            503,
            "text/plain",
            &format!("at most {MAX_FOLLOWERS} followers\n"),
        );
    }
    let (records, pos) = ring.snapshot(&filter);
    let mut reader = Follow {
        ring: ring.clone(),
        filter,
        pos,
        buf: lines(&records).into_bytes(),
        at: 0,
    };
    // This connection's own thread carries the stream; a follower that
    // stops reading is cut by the write timeout, one that left by the
    // next heartbeat.
    let streamed = conn
        .write_all(status_head(200, NDJSON, None).as_bytes())
        .and_then(|()| io::copy(&mut reader, &mut conn).map(drop));
    followers.fetch_sub(1, Ordering::SeqCst);
    streamed
}

fn lines(records: &[FlowRecord]) -> String {
    let mut s = String::new();
    for r in records {
        s.push_str(&serde_json::to_string(r).expect("a record serializes"));
        s.push('\n');
    }
    s
}

/// The query's filter and whether to follow; an error names the parameter.
pub(crate) fn parse_query(query: &str) -> Result<(Filter, bool), String> {
    let mut f = Filter::default();
    let mut follow = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "since" => f.since = Some(since(&v)?),
            "verdict" => {
                f.verdict = Some(
                    FlowVerdict::parse(&v)
                        .ok_or_else(|| format!("verdict={v}: allowed or denied"))?,
                )
            }
            "staged" => f.staged = flag(&k, &v)?,
            "follow" => follow = flag(&k, &v)?,
            _ => {
                return Err(format!(
                    "unknown parameter {k:?} (since, verdict, staged, follow)"
                ))
            }
        }
    }
    Ok((f, follow))
}

fn flag(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{k}={v}: 1 or 0")),
    }
}

fn since(v: &str) -> Result<String, String> {
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Ok(format_time(t));
    }
    match v.parse::<jiff::SignedDuration>() {
        Ok(d) if !d.is_negative() => jiff::Timestamp::now()
            .checked_sub(d)
            .map(format_time)
            .map_err(|e| format!("since={v}: {e}")),
        _ => Err(format!(
            "since={v}: an RFC 3339 time (2026-12-01T10:00:00Z) or a span back from now (5m, 1h)"
        )),
    }
}

struct Follow {
    ring: Arc<Ring>,
    filter: Filter,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for Follow {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            let Some((records, pos)) = self.ring.follow(self.pos, &self.filter, HEARTBEAT) else {
                return Ok(0);
            };
            self.pos = pos;
            self.buf = if records.is_empty() {
                b"\n".to_vec()
            } else {
                lines(&records).into_bytes()
            };
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_or_named() {
        let (f, follow) =
            parse_query("since=2026-12-01T10%3A00%3A00Z&verdict=denied&follow=1").unwrap();
        assert_eq!(f.since.as_deref(), Some("2026-12-01T10:00:00.000Z"));
        assert_eq!(f.verdict, Some(FlowVerdict::Denied));
        assert!(follow);
        assert!(parse_query("since=5m").unwrap().0.since.is_some());
        assert_eq!(
            parse_query("verdict=maybe").unwrap_err(),
            "verdict=maybe: allowed or denied"
        );
        assert!(parse_query("since=yesterday")
            .unwrap_err()
            .starts_with("since=yesterday: an RFC 3339"));
        assert!(parse_query("limit=3")
            .unwrap_err()
            .contains("unknown parameter \"limit\""));
    }
}
