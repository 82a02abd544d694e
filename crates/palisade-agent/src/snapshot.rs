//! One read of a datastore through the agent's own sources: what agents
//! reading it are told, as a cluster (for `palisade lab probe --etcd /
//! --kube`, which compares a lab driven by agents with what they were
//! told, not with the files the lab started from).

use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use palisade_model::Cluster;

use crate::input::Input;
use crate::store::Store;
use crate::{etcd, kube, Error};

pub enum Datastore {
    Etcd(Vec<String>),
    Kube,
}

/// Every scope's first resync, as a cluster, with the problems of the
/// objects the store refused (they are not in it, as for an agent).
/// [`Error::Snapshot`] when the sources did not deliver in `timeout`.
pub fn read(ds: Datastore, timeout: Duration) -> Result<(Cluster, Vec<String>), Error> {
    let (tx, rx) = channel();
    let scopes = match &ds {
        Datastore::Etcd(endpoints) => {
            etcd::spawn(endpoints.clone(), tx).map_err(|error| Error::Start {
                what: "the etcd source",
                error,
            })?;
            vec![etcd::SCOPE.to_string()]
        }
        Datastore::Kube => {
            kube::spawn(tx).map_err(|error| Error::Start {
                what: "the Kubernetes source",
                error,
            })?;
            kube::scopes()
        }
    };
    let mut store = Store::new();
    let mut pending: Vec<String> = scopes;
    let deadline = Instant::now() + timeout;
    let mut last_down = None;
    while !pending.is_empty() {
        let input = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(i) => i,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::Snapshot(format!(
                    "the datastore was not read within {timeout:?} (waiting for {}){}",
                    pending.join(", "),
                    last_down
                        .map(|d| format!("; last error: {d}"))
                        .unwrap_or_default()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Snapshot(
                    last_down.unwrap_or_else(|| "the source stopped".into()),
                ))
            }
        };
        match &input {
            Input::Resync { scope, .. } => pending.retain(|s| s != scope),
            Input::SourceDown { reason, .. } => last_down = Some(reason.clone()),
            _ => {}
        }
        store.apply(input);
    }
    let (cluster, _) = store.cluster();
    let rejected = store.rejected().values().flatten().cloned().collect();
    Ok((cluster, rejected))
}
