//! The agent's error type: what a sync, a source or the HTTP endpoint
//! reports. Messages are whole sentences, shown as they are in logs,
//! `/healthz` and on the command line.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The desired state does not compile; the agent waits for the next
    /// change.
    #[error("{0}")]
    Compile(String),
    /// A transaction failed; the agent retries it with backoff.
    #[error("{0}")]
    Apply(String),
    /// The agent's node is in no object read; the kernel is not touched
    /// until one names it.
    #[error("{0}")]
    UnknownNode(String),
    /// etcd failed, as one sentence that names etcd.
    #[error("{0}")]
    Etcd(String),
    /// The revision being read was compacted before the read finished:
    /// start again.
    #[error("etcd compacted the revision being read")]
    Compacted,
    /// The Kubernetes client could not be configured (no kubeconfig, no
    /// service account).
    #[error("cannot configure the Kubernetes client: {0}")]
    KubeConfig(String),
    /// A source could not start; `what` names it ("the etcd source").
    #[error("starting {what}: {error}")]
    Start {
        what: &'static str,
        error: io::Error,
    },
    /// A directory could not be watched.
    #[error("{0}")]
    Watch(String),
    /// The HTTP endpoint could not listen.
    #[error("{0}")]
    Listen(String),
    /// A datastore was not read through (time out, source stopped).
    #[error("{0}")]
    Snapshot(String),
    /// Capabilities could not be dropped as asked.
    #[error("{0}")]
    Privileges(String),
    /// The flow log could not start.
    #[error("{0}")]
    FlowLog(String),
}
