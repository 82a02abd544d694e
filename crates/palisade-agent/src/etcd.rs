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
//! A session reads the whole prefix with its revision R, sends it as one
//! [`Input::Resync`], and watches from R + 1. When the watch is cancelled
//! (its revision was compacted) or the connection is lost, a new session
//! starts with a new snapshot: objects deleted meanwhile disappear, and no
//! event is ever missed. Lost connections are retried with exponential
//! backoff and reported as [`Input::SourceDown`] until the next snapshot.

use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions};
use palisade_k8s::{Diagnostic, ObjectKey, Severity};
use tracing::{info, warn};

use crate::input::{Entry, Input};

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
    let mut e = match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(v) => Entry::decode_json(origin.clone(), key, v),
        Err(err) => Entry {
            origin: origin.clone(),
            objects: Vec::new(),
            errors: vec![problem(key, format!("not JSON: {err}"))],
        },
    };
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

fn kv_entry(kv: &KeyValue) -> Option<Entry> {
    Some(entry(kv.key_str().ok()?, kv.value()))
}

pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
}

pub async fn connect(endpoints: &[String]) -> Result<Client, String> {
    tokio::time::timeout(
        Duration::from_secs(3),
        Client::connect(endpoints, Some(connect_options())),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())
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
    let mut client = match connect(endpoints).await {
        Ok(c) => c,
        Err(e) => return End::Down(e),
    };
    let get = client.get(PREFIX, Some(GetOptions::new().with_prefix()));
    let resp = match tokio::time::timeout(Duration::from_secs(5), get).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return End::Down(e.to_string()),
        Err(_) => return End::Down("snapshot timed out".into()),
    };
    let rev = resp.header().map_or(0, |h| h.revision());
    let entries: Vec<Entry> = resp.kvs().iter().filter_map(kv_entry).collect();
    info!(revision = rev, keys = entries.len(), "etcd snapshot");
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(rev + 1);
    let mut stream = match client.watch(PREFIX, Some(opts)).await {
        Ok(s) => s,
        Err(e) => return End::Down(e.to_string()),
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
            Ok(None) => return End::Down("watch stream ended".into()),
            Err(e) => return End::Down(e.to_string()),
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
    }
}
