//! etcd as a datastore.
//!
//! # Layout
//!
//! One key per object, its value the object as JSON (what `kubectl get -o
//! json` prints; only the fields Palisade reads matter):
//!
//! ```text
//! /palisade/v1/<Kind>/<namespace>/<name>   Pod, NetworkPolicy
//! /palisade/v1/<Kind>/_/<name>             Namespace, Node, AdminNetworkPolicy,
//!                                          BaselineAdminNetworkPolicy, ClusterNetworkPolicy
//! ```
//!
//! `_` is not a valid namespace name, so the two forms never collide. A
//! value whose object is not the one its key names is rejected.
//!
//! # Watching
//!
//! A session reads the whole prefix at one revision R, sends it as one
//! [`Input::Resync`], and watches from R + 1. The read is paginated (a
//! datastore of 50,000 pods is far larger than one gRPC message): the first
//! page fixes R, every later page is read at R starting after the previous
//! page's last key, and each page is decoded before the next is asked for.
//! When R is compacted mid-read, when the watch is cancelled (its revision
//! was compacted) or when the connection is lost, a new session starts with
//! a new snapshot: objects deleted meanwhile disappear, and no event is
//! ever missed. Lost connections are retried with exponential
//! backoff and reported as [`Input::SourceDown`] until the next snapshot.

use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, KvClient, WatchOptions};
use palisade_k8s::limits::MAX_FILE_BYTES;
use palisade_k8s::{Diagnostic, ObjectKey, Severity};
use tracing::{info, warn};

use crate::input::{Entry, Input};
use crate::Error;

pub const SCOPE: &str = "etcd:";
pub const PREFIX: &str = "/palisade/v1/";

/// The key of an object.
pub fn key_of(k: &ObjectKey) -> String {
    format!(
        "{PREFIX}{}/{}/{}",
        k.kind,
        k.namespace.as_deref().unwrap_or("_"),
        k.name
    )
}

/// What a key names: (kind, namespace, name).
fn parse_key(key: &str) -> Option<ObjectKey> {
    let rest = key.strip_prefix(PREFIX)?;
    let mut it = rest.splitn(3, '/');
    let (kind, ns, name) = (it.next()?, it.next()?, it.next()?);
    Some(ObjectKey {
        kind: kind.to_string(),
        namespace: (ns != "_").then(|| ns.to_string()),
        name: name.to_string(),
    })
}

fn problem(origin: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: origin.to_string(),
        line: None,
        object: None,
        field: None,
        message,
    }
}

/// Decodes one key and value.
pub fn entry(key: &str, value: &[u8]) -> Entry {
    let origin = format!("{SCOPE}{key}");
    // Strict: a duplicate key or an over-size value is an error, never a
    // silently different object.
    let mut e = Entry::decode_json_bytes(origin, key, value);
    if e.errors.is_empty() {
        let want = parse_key(key);
        let got: Vec<ObjectKey> = e.objects.iter().map(|o| o.value.key()).collect();
        if want.is_none() || got.len() != 1 || Some(&got[0]) != want.as_ref() {
            let got: Vec<String> = got.iter().map(ToString::to_string).collect();
            e.objects.clear();
            e.errors.push(problem(
                key,
                format!(
                    "the key must hold exactly the object it names (found: {})",
                    got.join(", ")
                ),
            ));
        }
    }
    e
}

/// Keys per snapshot page: 500 pods with kubectl's last-applied annotation
/// (about 5 KB each) are a reply of a few MB.
const PAGE_KEYS: i64 = 500;

/// Bytes a page should hold. After each page the next one asks for as many
/// keys as fit this at the page's largest value, so a datastore of large
/// values is read in pages of fewer keys instead of replies near the limit.
const PAGE_BYTES: usize = 16 << 20;

/// The largest gRPC message the client decodes. One value may be as large
/// as what Palisade decodes at all (`MAX_FILE_BYTES`; etcd's own default
/// request limit of 1.5 MiB keeps real values far below that), plus room
/// for its key and the reply's header; a page of many values is kept under
/// it by `PAGE_BYTES`, and one that is not is read again in halves. Watch
/// replies are split by etcd (`fragment`) to about its request limit.
pub const MESSAGE_LIMIT: usize = MAX_FILE_BYTES as usize + (1 << 20);

/// How long one read (a snapshot page, creating the watch) may take. The
/// snapshot as a whole has no bound: 50,000 pods take many pages.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

// gRPC status codes (a wire standard), to tell etcd's answers apart.
const OUT_OF_RANGE: i32 = 11;
const UNAVAILABLE: i32 = 14;

/// The entry of a key whose value is too large to be read.
fn too_large_entry(key: &str) -> Entry {
    Entry {
        origin: format!("{SCOPE}{key}"),
        objects: Vec::new(),
        errors: vec![problem(
            key,
            format!(
                "the value is larger than the {} MiB that Palisade reads from etcd",
                MESSAGE_LIMIT >> 20
            ),
        )],
    }
}

pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
}

/// A client of `endpoints`; [`Error::Etcd`] says why there is none.
pub async fn connect(endpoints: &[String]) -> Result<Client, Error> {
    tokio::time::timeout(
        Duration::from_secs(3),
        Client::connect(endpoints, Some(connect_options())),
    )
    .await
    .map_err(|_| {
        Error::Etcd(format!(
            "etcd at {} did not answer within 3 s",
            endpoints.join(", ")
        ))
    })?
    .map_err(|e| Error::Etcd(describe(endpoints, "connection", &e)))
}

/// The innermost I/O error under `e`: what the operating system said.
fn innermost_io<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut found = None;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        cur = err.source();
    }
    found
}

/// What the innermost cause under `e` says.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_words(io: &std::io::Error) -> String {
    let kind = io.kind().to_string();
    if io.raw_os_error().is_some() && !kind.contains("other") && !kind.contains("uncategorized") {
        kind
    } else {
        io.to_string()
    }
}

fn is_too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if i32::from(s.code()) == OUT_OF_RANGE && s.message().contains("message length too large"))
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if i32::from(s.code()) == OUT_OF_RANGE && s.message().contains("compacted"))
}

/// One plain sentence for an etcd client error, for `/healthz`, logs and
/// the command line; `doing` names the request ("read", "watch", "write").
pub fn describe(endpoints: &[String], doing: &str, e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    let at = endpoints.join(", ");
    let io = match e {
        E::GRpcStatus(s) => innermost_io(s),
        E::TransportError(t) => innermost_io(t),
        E::IoError(io) => Some(io),
        _ => None,
    };
    if let Some(io) = io {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable => {
                format!("cannot connect to etcd at {at}: {}", io_words(io))
            }
            _ => format!("lost the connection to etcd at {at}: {}", io_words(io)),
        };
    }
    match e {
        E::GRpcStatus(s) if is_too_large(e) => {
            // tonic says "found N bytes, the limit is: M bytes".
            let n: Vec<f64> = s
                .message()
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .collect();
            let mib = |b: f64| b / f64::from(1 << 20);
            match n[..] {
                [found, limit, ..] => format!(
                    "etcd's answer to the {doing} has {:.1} MiB, more than the {:.1} MiB this agent accepts",
                    mib(found),
                    mib(limit)
                ),
                _ => format!("etcd's answer to the {doing} is too large: {}", s.message()),
            }
        }
        // A status with a cause was made by this client's transport, not
        // sent by etcd: the connection failed under it.
        E::GRpcStatus(s) if std::error::Error::source(s).is_some() => {
            format!("lost the connection to etcd at {at}: {}", innermost(s))
        }
        E::GRpcStatus(s) if i32::from(s.code()) == UNAVAILABLE => {
            format!("cannot connect to etcd at {at}: {}", s.message())
        }
        E::GRpcStatus(s) => format!("etcd rejected the {doing}: {}", s.message()),
        E::TransportError(t) => format!("cannot connect to etcd at {at}: {t}"),
        E::InvalidUri(u) => format!("invalid etcd endpoint {at:?}: {u}"),
        E::InvalidArgs(m) => format!("invalid etcd endpoint {at:?}: {m}"),
        E::WatchError(m) => format!("the etcd watch failed: {m}"),
        other => format!("the etcd {doing} failed: {other}"),
    }
}

fn read_timed_out() -> Error {
    Error::Etcd(format!(
        "etcd snapshot read timed out after {} s",
        CALL_TIMEOUT.as_secs()
    ))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads every key under `prefix` in pages, all at the revision of the
/// first page, and hands each key and value to `each` as its page arrives
/// (the value is `None` when it alone is larger than [`MESSAGE_LIMIT`]), so
/// no more than one page's reply is held at a time. Returns the revision;
/// [`Error::Compacted`] when that revision was compacted before the last
/// page was read, [`Error::Etcd`] for any other failure.
pub async fn read_prefix(
    kv: &mut KvClient,
    endpoints: &[String],
    prefix: &str,
    mut each: impl FnMut(&str, Option<&[u8]>),
) -> Result<i64, Error> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut rev = 0;
    let mut limit = PAGE_KEYS;
    // After a page too large to decode, pages stay near the size that
    // worked, so a large value ahead is not asked for again at full size.
    let mut cap = PAGE_KEYS;
    loop {
        let opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(limit)
            .with_revision(rev);
        let resp = match tokio::time::timeout(CALL_TIMEOUT, kv.get(from.clone(), Some(opts))).await
        {
            Err(_) => return Err(read_timed_out()),
            Ok(Err(e)) if is_compacted(&e) => return Err(Error::Compacted),
            Ok(Err(e)) if is_too_large(&e) && limit > 1 => {
                limit /= 2;
                cap = limit;
                continue;
            }
            Ok(Err(e)) if is_too_large(&e) => {
                // One value alone is too large: name it and go on after it.
                let opts = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(1)
                    .with_revision(rev)
                    .with_keys_only();
                let r = tokio::time::timeout(CALL_TIMEOUT, kv.get(from.clone(), Some(opts)))
                    .await
                    .map_err(|_| read_timed_out())?
                    .map_err(|e| Error::Etcd(describe(endpoints, "read", &e)))?;
                let Some(big) = r.kvs().first() else {
                    return Err(Error::Etcd(describe(endpoints, "read", &e)));
                };
                if let Ok(key) = big.key_str() {
                    each(key, None);
                }
                from = [big.key(), b"\0"].concat();
                if rev == 0 {
                    rev = r.header().map_or(0, |h| h.revision());
                }
                (limit, cap) = (PAGE_KEYS, PAGE_KEYS);
                continue;
            }
            Ok(Err(e)) => return Err(Error::Etcd(describe(endpoints, "read", &e))),
            Ok(Ok(r)) => r,
        };
        if rev == 0 {
            rev = resp.header().map_or(0, |h| h.revision());
        }
        let mut largest = 1;
        for kv in resp.kvs() {
            largest = largest.max(kv.key().len() + kv.value().len());
            if let Ok(key) = kv.key_str() {
                each(key, Some(kv.value()));
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => from = [last.key(), b"\0"].concat(),
            _ => return Ok(rev),
        }
        cap = (cap * 2).min(PAGE_KEYS);
        limit = ((PAGE_BYTES / largest) as i64).clamp(1, cap);
    }
}

/// Every key under [`PREFIX`], decoded, and the revision they were read at.
pub async fn snapshot(client: &Client, endpoints: &[String]) -> Result<(i64, Vec<Entry>), Error> {
    let mut kv = client.kv_client().max_decoding_message_size(MESSAGE_LIMIT);
    let mut entries = Vec::new();
    let rev = read_prefix(&mut kv, endpoints, PREFIX, |key, value| {
        entries.push(match value {
            Some(v) => entry(key, v),
            None => too_large_entry(key),
        })
    })
    .await?;
    Ok((rev, entries))
}

/// How a session ended.
enum End {
    /// Nobody listens any more.
    Closed,
    /// The watch was cancelled (compaction): snapshot again at once.
    Resync(String),
    /// The connection failed.
    Down(String),
}

async fn session(endpoints: &[String], tx: &Sender<Input>, backoff: &mut Duration) -> End {
    let client = match connect(endpoints).await {
        Ok(c) => c,
        Err(e) => return End::Down(e.to_string()),
    };
    let (rev, entries) = match snapshot(&client, endpoints).await {
        Ok(s) => s,
        Err(Error::Compacted) => {
            return End::Resync("the snapshot's revision was compacted while it was read".into())
        }
        Err(e) => return End::Down(e.to_string()),
    };
    info!(revision = rev, keys = entries.len(), "etcd snapshot");
    // A reply may carry the events of many revisions (a watch catching up
    // after the snapshot); `fragment` lets etcd split it to its request size.
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(rev + 1)
        .with_fragment();
    let mut watch = client
        .watch_client()
        .max_decoding_message_size(MESSAGE_LIMIT);
    let mut stream = match tokio::time::timeout(CALL_TIMEOUT, watch.watch(PREFIX, Some(opts))).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return End::Down(describe(endpoints, "watch", &e)),
        Err(_) => {
            return End::Down(format!(
                "etcd did not start the watch within {} s",
                CALL_TIMEOUT.as_secs()
            ))
        }
    };
    if tx
        .send(Input::Resync {
            scope: SCOPE.to_string(),
            entries,
        })
        .is_err()
    {
        return End::Closed;
    }
    *backoff = Duration::from_millis(100);
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return End::Down("etcd closed the watch".into()),
            Err(e) => return End::Down(describe(endpoints, "watch", &e)),
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            return End::Resync(format!(
                "watch cancelled (compacted at {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            ));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let input = match ev.event_type() {
                EventType::Put => Input::Upsert(entry(key, kv.value())),
                EventType::Delete => Input::Delete {
                    origin: format!("{SCOPE}{key}"),
                },
            };
            if tx.send(input).is_err() {
                return End::Closed;
            }
        }
    }
}

/// Runs the etcd source until `tx` is closed.
pub async fn run(endpoints: Vec<String>, tx: Sender<Input>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&endpoints, &tx, &mut backoff).await {
            End::Closed => return,
            End::Resync(why) => {
                info!(reason = %why, "etcd watch lost its revision; taking a new snapshot");
            }
            End::Down(why) => {
                warn!(reason = %why, retry_ms = backoff.as_millis() as u64, "etcd unreachable");
                let down = Input::SourceDown {
                    scope: SCOPE.to_string(),
                    reason: why,
                };
                if tx.send(down).is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs [`run`] on its own thread and runtime.
pub fn spawn(endpoints: Vec<String>, tx: Sender<Input>) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("etcd-source".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(run(endpoints, tx));
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_must_match_the_object() {
        let k = ObjectKey {
            kind: "Pod".into(),
            namespace: Some("a".into()),
            name: "p".into(),
        };
        assert_eq!(key_of(&k), "/palisade/v1/Pod/a/p");
        assert_eq!(parse_key(&key_of(&k)), Some(k));
        let ns = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}"#;
        assert!(entry("/palisade/v1/Namespace/_/x", ns).errors.is_empty());
        let e = entry("/palisade/v1/Namespace/_/y", ns);
        assert!(e.objects.is_empty() && e.errors.len() == 1);
        assert_eq!(entry("/palisade/v1/Namespace/_/x", b"{").errors.len(), 1);
        // Strict: a key given twice is an error, not the last value.
        let twice = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x","name":"y"}}"#;
        let e = entry("/palisade/v1/Namespace/_/x", twice);
        assert!(e.objects.is_empty(), "{e:?}");
        assert!(
            e.errors[0].to_string().contains("duplicate field \"name\""),
            "{e:?}"
        );
    }

    #[test]
    fn a_prefix_ends_at_the_next_key_that_does_not_start_with_it() {
        assert_eq!(prefix_end(b"/palisade/v1/"), b"/palisade/v10");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn an_io_error_is_said_in_words() {
        let ep = ["http://127.0.0.1:2379".to_string()];
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe(&ep, "read", &etcd_client::Error::IoError(refused)),
            "cannot connect to etcd at http://127.0.0.1:2379: connection refused"
        );
        let args = etcd_client::Error::InvalidArgs("empty endpoints".into());
        assert_eq!(
            describe(&[], "read", &args),
            "invalid etcd endpoint \"\": empty endpoints"
        );
    }
}
