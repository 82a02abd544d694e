//! What the agent tells people: `/healthz` and `/readyz` ([`Health`]) and
//! the metrics a sync sets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use palisade_k8s::Object;
use tracing::{info, warn};

use super::{Agent, SyncPath, SyncReport};
use crate::delta::Delta;
use crate::metrics::label;
use crate::store::Store;
use crate::{Backend, Error};

/// What `/healthz` and `/readyz` report.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// A sync has succeeded since start.
    pub ready: bool,
    /// Unreachable sources and why.
    pub sources_down: BTreeMap<String, String>,
    /// Origins whose last update was rejected, with the problems.
    pub rejected: BTreeMap<String, Vec<String>>,
    /// The last transaction failed.
    pub apply_error: Option<String>,
    /// The desired state could not be compiled.
    pub compile_error: Option<String>,
    /// Why the agent does not touch the kernel yet: its node is in no
    /// object it has read.
    pub node_unknown: Option<String>,
    /// Local pods with an address whose interface the node does not show
    /// yet: their packets are dropped until it does.
    pub unwired: Vec<String>,
}

impl Health {
    pub fn is_degraded(&self) -> bool {
        !self.sources_down.is_empty()
            || !self.rejected.is_empty()
            || self.apply_error.is_some()
            || self.compile_error.is_some()
            || self.node_unknown.is_some()
    }

    /// `ready`, or `not ready:` and why.
    pub fn readiness(&self) -> String {
        match (&self.node_unknown, self.ready) {
            (Some(why), _) => format!("not ready: {why}\n"),
            (None, true) => "ready\n".into(),
            (None, false) => "not ready: the datastore has not been read and applied yet\n".into(),
        }
    }

    /// `ok`, or `degraded:` and one line per reason.
    pub fn status(&self) -> String {
        if !self.is_degraded() {
            return "ok\n".into();
        }
        let mut s = match &self.node_unknown {
            Some(why) => format!("degraded: the table is left as it is: {why}\n"),
            None => String::from("degraded: enforcing the last good state\n"),
        };
        for (scope, why) in &self.sources_down {
            s += &format!("source {scope} failed: {why}\n");
        }
        for (origin, problems) in &self.rejected {
            for p in problems {
                s += &rejected_line(origin, p);
            }
        }
        if let Some(e) = &self.apply_error {
            s += &format!("apply failed: {e}\n");
        }
        if let Some(e) = &self.compile_error {
            s += &format!("compile failed: {e}\n");
        }
        s
    }
}

/// One line of `/healthz` for a rejected origin: the problem alone when
/// it already names the origin's file or key, as the decoder's messages do.
fn rejected_line(origin: &str, problem: &str) -> String {
    let place = origin.split_once(':').map_or(origin, |(_, rest)| rest);
    if problem.starts_with(place) {
        format!("rejected {problem}\n")
    } else {
        format!("rejected {origin}: {problem}\n")
    }
}

/// Why `node` is in none of `store`'s objects, or `None` when a Node
/// object or a pod scheduled to it names it. An agent started with a
/// misspelt `--node` would otherwise compile a table with no local pods
/// and replace the node's enforcement with nothing.
fn unknown_node(store: &Store, node: &str) -> Option<String> {
    let mut known = BTreeSet::new();
    for o in store.objects() {
        let name = match &o.value {
            Object::Node(n) => &n.name,
            Object::Pod(p) => match &p.node {
                Some(n) => n,
                None => continue,
            },
            _ => continue,
        };
        if name == node {
            return None;
        }
        known.insert(name.as_str());
    }
    let mut why = format!("node {node:?} (--node) is in no Node object and no pod's spec.nodeName");
    if let Some(close) = known.iter().find(|k| k.eq_ignore_ascii_case(node)) {
        why += &format!("; did you mean {close:?}? (node names are case-sensitive)");
    } else if known.is_empty() {
        why += "; the datastore names no node at all";
    } else {
        let list: Vec<&str> = known.iter().take(5).copied().collect();
        why += &format!("; nodes it names: {}", list.join(", "));
        if known.len() > 5 {
            why += &format!(" and {} more", known.len() - 5);
        }
    }
    Some(why)
}

const KINDS: [&str; 7] = [
    "Namespace",
    "Pod",
    "Node",
    "NetworkPolicy",
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
];

impl<B: Backend> Agent<B> {
    pub(super) fn health_mut(&self) -> std::sync::MutexGuard<'_, super::Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn refresh_object_counts(&mut self) {
        if !std::mem::take(&mut self.counts_stale) {
            return;
        }
        let counts = self.store.counts();
        for k in KINDS {
            self.metrics
                .objects
                .get_or_create(&label("kind", k))
                .set(counts.get(k).copied().unwrap_or(0) as i64);
        }
    }

    pub(super) fn update_degraded(&self) {
        let d = self.health_mut().is_degraded();
        self.metrics.degraded.set(i64::from(d));
    }

    /// Refuses to sync while no object names the agent's node (reported
    /// once per reason); known once is enough.
    pub(super) fn check_node(&mut self) -> Result<(), Error> {
        if self.node_known {
            return Ok(());
        }
        if let Some(why) = unknown_node(&self.store, &self.cfg.node) {
            let new = self.health_mut().node_unknown.replace(why.clone()) != Some(why.clone());
            self.update_degraded();
            if new {
                warn!("{why}; the table is left as it is");
            }
            return Err(Error::UnknownNode(why));
        }
        // A node whose last pod and Node object go away keeps what was
        // compiled for it.
        self.node_known = true;
        self.health_mut().node_unknown = None;
        self.update_degraded();
        Ok(())
    }

    /// A transaction failed: what `/healthz` says until one succeeds.
    pub(super) fn report_apply_error(&mut self, e: &str) {
        self.metrics.error("apply");
        self.health_mut().apply_error = Some(e.to_string());
        self.update_degraded();
    }

    /// The node does not compile: what `/healthz` says until it does.
    pub(super) fn report_compile_error(&mut self, e: &str) {
        self.metrics.error("compile");
        self.health_mut().compile_error = Some(e.to_string());
        self.update_degraded();
    }

    /// Records a successful sync (metrics, health) and reports it.
    pub(super) fn synced(&mut self, delta: &Delta, t0: Instant, path: SyncPath) -> SyncReport {
        let elapsed = t0.elapsed();
        let (added, removed) = delta.counts();
        let mode = match delta {
            Delta::Noop => "noop",
            Delta::Elements(_) => "elements",
            Delta::Replace(_) => "replace",
        };
        info!(
            mode,
            path = path.name(),
            added,
            removed,
            ms = elapsed.as_secs_f64() * 1e3,
            "table in sync"
        );
        let m = &self.metrics;
        m.applies.get_or_create(&label("mode", mode)).inc();
        m.elements_changed
            .get_or_create(&label("change", "added"))
            .inc_by(added as u64);
        m.elements_changed
            .get_or_create(&label("change", "removed"))
            .inc_by(removed as u64);
        m.syncs.get_or_create(&label("path", path.name())).inc();
        m.apply_seconds.observe(elapsed.as_secs_f64());
        for s in self.state.applied().iter().flat_map(|rs| &rs.sets) {
            m.set_elements
                .get_or_create(&label("set", &s.name))
                .set(s.elements.len() as i64);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        m.last_sync.set(now.as_secs_f64());
        m.garbage.set(self.garbage_len() as i64);
        self.refresh_object_counts();
        {
            let mut h = self.health_mut();
            h.ready = true;
            h.apply_error = None;
        }
        self.update_degraded();
        SyncReport {
            added,
            removed,
            replaced: delta.is_replace(),
            path,
            elapsed,
            apply: self.apply_time,
        }
    }
}
