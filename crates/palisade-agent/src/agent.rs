//! The single-owner loop: inputs in, one transaction per settled burst out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_engine::Engine;
use palisade_k8s::{Located, Object};
use palisade_nft::{compile_numbered, Local, Numbering, Options, Ruleset, Wiring};
use tracing::{debug, info, warn};

use crate::backend::{Backend, BackendError};
use crate::delta::{self, Delta, SetDelta};
use crate::facts::NodeFacts;
use crate::fast::{self, Change, Fast};
use crate::incr::Incr;
use crate::input::{Entry, Input};
use crate::metrics::{label, Metrics};
use crate::store::Store;
use crate::wiring::{LocalPod, PodInterfaces, Resolver};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node whose pods this agent enforces.
    pub node: String,
    /// A burst has settled after this long without input...
    pub debounce: Duration,
    /// ...or this long after its first input, whichever comes first.
    pub max_delay: Duration,
    /// Scopes (see [`Input::Resync`]) that must have sent their first
    /// resync before anything is applied: an agent never replaces a working
    /// table with the compilation of a half-read datastore.
    pub scopes: Vec<String>,
    /// Longest wait between retries of a failed transaction.
    pub max_backoff: Duration,
    /// Replace the table instead of patching it when a delta removes more
    /// than this many elements from interval sets: the kernel removes each
    /// one from a large concatenated interval set (`pipapo`) in 20-50 ms of
    /// system time, while a full reload costs ≈ 16 µs per element (about
    /// 0.6 s for a 10,000-pod cluster's node). Additions are cheap (250
    /// into a 20,000-element set: 14 ms). `None`: always patch.
    pub replace_above_interval_removals: Option<usize>,
    /// Interval elements that nothing can reach any more are removed when
    /// the agent is idle, this many per transaction (see
    /// [`palisade_nft::incr`]): an event arriving meanwhile waits for one
    /// such transaction at most.
    pub collect_batch: usize,
    /// With more unreachable elements than this, the idle agent replaces
    /// the table once instead (a 10,000-pod node's table loads in about
    /// 0.5 s; 750 removals take about 9 s of kernel time).
    pub collect_replace_above: usize,
    /// How local pods' interfaces are found in the node's facts.
    pub pod_interfaces: PodInterfaces,
}

impl AgentConfig {
    pub fn new(node: &str, scopes: Vec<String>) -> AgentConfig {
        AgentConfig {
            node: node.to_string(),
            debounce: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            scopes,
            max_backoff: Duration::from_secs(10),
            replace_above_interval_removals: Some(16),
            collect_batch: 2,
            collect_replace_above: 64,
            pod_interfaces: PodInterfaces::Auto,
        }
    }
}

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

/// What one sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
    pub replaced: bool,
    /// How the desired state was computed.
    pub path: SyncPath,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent in the backend's transactions.
    pub apply: Duration,
}

/// How a sync computed the desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPath {
    /// Engine rebuilt, node compiled, diffed against the table.
    Full,
    /// Pod changes that alter no rule: a sibling pod's elements copied
    /// (clusters the incremental compiler cannot start from).
    Fast,
    /// Pod, NetworkPolicy, Namespace and Node changes compiled
    /// incrementally.
    Incremental,
}

impl SyncPath {
    pub fn name(self) -> &'static str {
        match self {
            SyncPath::Full => "full",
            SyncPath::Fast => "fast",
            SyncPath::Incremental => "incremental",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// The desired state does not compile; waits for the next change.
    Compile(String),
    /// The transaction failed; retried with backoff.
    Apply(String),
    /// The agent's node is in no object read; the kernel is not touched
    /// until one names it.
    UnknownNode(String),
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

pub struct Agent<B: Backend> {
    cfg: AgentConfig,
    store: Store,
    backend: B,
    /// What the kernel has, as far as the agent knows.
    applied: Option<Ruleset>,
    kernel_read: bool,
    synced_scopes: BTreeSet<String>,
    never_synced: bool,
    /// Some object has named the agent's node (see [`unknown_node`]).
    node_known: bool,
    /// The store changed since the object-count metrics were last set.
    counts_stale: bool,
    /// The last full build, for the fast path; `None` until a full sync
    /// succeeds and whenever the fast path gives up.
    fast: Option<Fast>,
    /// The node's wiring facts, from the node source (none read yet: no
    /// local pod is recognized, so every one fails closed).
    facts: NodeFacts,
    resolver: Resolver,
    /// The wiring of the last sync.
    wiring: Wiring,
    /// The bridge wiring the bridge table was last written for; `None`
    /// when unknown (start, or a failed transaction): the next sync writes
    /// it.
    bridge: Option<palisade_nft::BridgeWiring>,
    /// Sends a datagram to addresses whose bridge port is not known yet.
    poke: Option<Poke>,
    poked: HashMap<IpAddr, Instant>,
    /// The facts or the local pods changed since the wiring was resolved.
    wiring_stale: bool,
    /// The last full build's state for the incremental path; `None` when
    /// that cluster is one it refuses (then `fast` is kept instead).
    incr: Option<Incr>,
    /// Origins changed since the last sync, with their objects then.
    pending: BTreeMap<String, Option<Vec<Located<Object>>>>,
    /// Something since the last sync needs a full rebuild (a resync).
    pending_full: bool,
    /// Time in the backend's transactions during the current sync.
    apply_time: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
}

impl<B: Backend> Agent<B> {
    pub fn new(cfg: AgentConfig, backend: B) -> Agent<B> {
        Agent {
            resolver: Resolver::new(cfg.pod_interfaces.clone()),
            cfg,
            store: Store::new(),
            backend,
            applied: None,
            kernel_read: false,
            synced_scopes: BTreeSet::new(),
            never_synced: true,
            node_known: false,
            counts_stale: true,
            fast: None,
            facts: NodeFacts::default(),
            wiring: Wiring::default(),
            bridge: None,
            poke: None,
            poked: HashMap::new(),
            wiring_stale: true,
            incr: None,
            pending: BTreeMap::new(),
            pending_full: false,
            apply_time: Duration::ZERO,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Mutex::new(Health::default())),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn health(&self) -> Arc<Mutex<Health>> {
        self.health.clone()
    }

    fn health_mut(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The table as last applied (or read from the kernel).
    pub fn applied(&self) -> Option<&Ruleset> {
        self.applied.as_ref()
    }

    /// Unreachable interval elements the table still holds, by set (see
    /// [`Agent::collect_garbage`]).
    pub fn garbage(&self) -> BTreeMap<String, BTreeSet<palisade_nft::Element>> {
        self.incr
            .as_ref()
            .map(|i| i.garbage().clone())
            .unwrap_or_default()
    }

    /// How many unreachable interval elements the table still holds.
    pub fn garbage_len(&self) -> usize {
        self.incr.as_ref().map_or(0, Incr::garbage_len)
    }

    /// Removes up to `collect_batch` unreachable interval elements in one
    /// transaction; returns how many are left. On failure the incremental
    /// state is dropped and the next sync is a full one.
    pub fn collect_garbage(&mut self) -> Result<usize, SyncError> {
        let batch = self.cfg.collect_batch.max(1);
        if self.garbage_len() > self.cfg.collect_replace_above {
            return self.replace_without_garbage();
        }
        let (Some(incr), Some(applied)) = (self.incr.as_mut(), self.applied.as_ref()) else {
            return Ok(0);
        };
        let sets = match incr.collect(batch, applied) {
            Ok(sets) => sets,
            Err(e) => {
                warn!(error = %e, "cannot collect unreachable elements; rebuilding");
                self.incr = None;
                self.pending_full = true;
                return Err(SyncError::Compile(e));
            }
        };
        if sets.is_empty() {
            return Ok(0);
        }
        let delta = Delta::Elements(sets);
        let text = delta.to_nft_text(self.applied.as_ref().expect("checked above"));
        if let Err(e) = self.apply(&delta, &text) {
            warn!(error = %e, transaction = %text, "removing unreachable elements failed; rebuilding");
            return Err(self.collection_failed(e));
        }
        if let (Some(table), Delta::Elements(sets)) = (self.applied.as_mut(), &delta) {
            fast::apply_in_place(table, sets);
        }
        let left = self.garbage_len();
        self.metrics.garbage.set(left as i64);
        Ok(left)
    }

    /// Many unreachable elements: one table replacement (about 16 µs per
    /// element of the whole table) costs less than removing them (20-50 ms
    /// each).
    fn replace_without_garbage(&mut self) -> Result<usize, SyncError> {
        let (Some(incr), Some(applied)) = (self.incr.as_mut(), self.applied.as_ref()) else {
            return Ok(0);
        };
        let mut rs = applied.clone();
        let garbage = incr.take_garbage();
        for s in &mut rs.sets {
            if let Some(g) = garbage.get(&s.name) {
                s.elements.retain(|e| !g.contains(e));
            }
        }
        let delta = Delta::Replace(Box::new(rs.clone()));
        let text = delta.to_nft_text(&rs);
        if let Err(e) = self.apply(&delta, &text) {
            warn!(error = %e, "replacing the table without unreachable elements failed; rebuilding");
            return Err(self.collection_failed(e));
        }
        self.applied = Some(rs);
        self.metrics.garbage.set(0);
        Ok(0)
    }

    /// A collection transaction failed: what the kernel holds is unknown,
    /// so the next sync reads it and rebuilds in full.
    fn collection_failed(&mut self, e: BackendError) -> SyncError {
        self.metrics.error("apply");
        self.incr = None;
        self.kernel_read = false;
        self.pending_full = true;
        SyncError::Apply(e.to_string())
    }

    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Every required scope has sent its first resync.
    pub fn ready_to_sync(&self) -> bool {
        self.cfg
            .scopes
            .iter()
            .all(|s| self.synced_scopes.contains(s))
    }

    /// Applies one input to the store; true when a sync is needed.
    pub fn handle(&mut self, input: Input) -> bool {
        self.metrics
            .events
            .get_or_create(&label("type", input.kind()))
            .inc();
        let mut scope_up = None;
        if let Input::NodeFacts(f) = input {
            let changed = f != self.facts;
            self.facts = f;
            self.wiring_stale |= changed;
            if self.health_mut().sources_down.remove(NODE_SCOPE).is_some() {
                self.update_degraded();
            }
            let was = self.ready_to_sync();
            self.synced_scopes.insert(NODE_SCOPE.to_string());
            return changed || (!was && self.ready_to_sync() && self.never_synced);
        }
        match &input {
            Input::SourceDown { scope, reason } => {
                warn!("source {scope} failed, enforcing the last good state: {reason}");
                self.metrics.error("source");
                self.health_mut()
                    .sources_down
                    .insert(scope.clone(), reason.clone());
            }
            Input::Resync { scope, entries } => {
                info!(source = %scope, origins = entries.len(), "resync");
                scope_up = Some(scope.clone());
            }
            Input::Upsert(e) => debug!(origin = %e.origin, "upsert"),
            Input::Delete { origin } => debug!(%origin, "delete"),
            Input::NodeFacts(_) => {}
        }
        // Only local pods and the facts decide the wiring: other changes
        // need not resolve it again.
        let local = |objs: &[Located<Object>]| {
            objs.iter().any(|o| {
                matches!(&o.value, Object::Pod(p) if p.node.as_deref() == Some(self.cfg.node.as_str()))
            })
        };
        self.wiring_stale |= match &input {
            Input::Upsert(e) => local(&e.objects) || self.store.get(&e.origin).is_some_and(local),
            Input::Delete { origin } => self.store.get(origin).is_some_and(local),
            Input::Resync { .. } => true,
            Input::SourceDown { .. } | Input::NodeFacts(_) => false,
        };
        if self.fast.is_some() || self.incr.is_some() {
            match &input {
                Input::Upsert(Entry { origin, .. }) | Input::Delete { origin } => {
                    if !self.pending.contains_key(origin) {
                        let before = self.store.get(origin).map(<[_]>::to_vec);
                        self.pending.insert(origin.clone(), before);
                    }
                }
                Input::Resync { .. } => self.pending_full = true,
                Input::SourceDown { .. } | Input::NodeFacts(_) => {}
            }
        }
        let applied = self.store.apply(input);
        for problem in &applied.rejected {
            warn!("invalid, its previous version stays in force: {problem}");
            self.metrics.error("invalid_object");
        }
        let mut first = false;
        if let Some(scope) = scope_up {
            self.health_mut().sources_down.remove(&scope);
            let was = self.ready_to_sync();
            self.synced_scopes.insert(scope);
            first = !was && self.ready_to_sync();
        }
        // The gauges are set after the kernel is updated (`synced`), here
        // only while no sync can run.
        self.counts_stale |= applied.changed;
        if !self.ready_to_sync() {
            self.refresh_object_counts();
        }
        let rejected = self.store.rejected().clone();
        self.metrics.rejected_origins.set(rejected.len() as i64);
        self.health_mut().rejected = rejected;
        self.update_degraded();
        applied.changed || (first && self.never_synced)
    }

    fn refresh_object_counts(&mut self) {
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

    fn update_degraded(&self) {
        let d = self.health_mut().is_degraded();
        self.metrics.degraded.set(i64::from(d));
    }

    /// The node's ruleset for the current store.
    pub fn desired(&self) -> Result<Ruleset, String> {
        self.build().map(|(rs, _)| rs)
    }

    /// The node's ruleset for the current store, and the engine it was
    /// compiled from.
    fn build(&self) -> Result<(Ruleset, Engine), String> {
        let t = Instant::now();
        let (cluster, diags) = self.store.cluster();
        for d in diags.iter().filter(|d| d.is_error()) {
            warn!("merging objects: {d}");
        }
        let t_cluster = t.elapsed();
        let engine = Engine::new(cluster);
        let t_engine = t.elapsed();
        let opts = Options {
            local: Local::Node(self.cfg.node.clone()),
            wiring: self.wiring.clone(),
        };
        let rs = compile_numbered(&engine, &opts, Numbering::Stable).map_err(|e| e.to_string())?;
        debug!(
            cluster_ms = t_cluster.as_secs_f64() * 1e3,
            engine_ms = (t_engine - t_cluster).as_secs_f64() * 1e3,
            compile_ms = (t.elapsed() - t_engine).as_secs_f64() * 1e3,
            "built"
        );
        Ok((rs, engine))
    }

    /// Brings the table to the store in one transaction: by the fast path
    /// when only pods changed and no rule can have (see `fast`), else by
    /// rebuilding the engine, compiling and diffing.
    pub fn sync(&mut self) -> Result<SyncReport, SyncError> {
        if !self.node_known {
            if let Some(why) = unknown_node(&self.store, &self.cfg.node) {
                let new = self.health_mut().node_unknown.replace(why.clone()) != Some(why.clone());
                self.update_degraded();
                if new {
                    warn!("{why}; the table is left as it is");
                }
                return Err(SyncError::UnknownNode(why));
            }
            // Known once is enough: a node whose last pod and Node object
            // go away keeps what was compiled for it.
            self.node_known = true;
            self.health_mut().node_unknown = None;
            self.update_degraded();
        }
        let t0 = Instant::now();
        self.apply_time = Duration::ZERO;
        self.rewire();
        let pending = std::mem::take(&mut self.pending);
        let full = std::mem::take(&mut self.pending_full);
        if !full {
            let report = if self.fast.is_some() {
                self.try_fast(&pending, t0)
            } else {
                self.try_incr(&pending, t0)
            };
            if let Some(report) = report {
                self.sync_bridge()?;
                return Ok(report);
            }
        }
        self.fast = None;
        self.incr = None;
        let r = self.full_sync(t0)?;
        self.sync_bridge()?;
        Ok(r)
    }

    /// The pod changes of `pending`, or `None` when an origin holds
    /// anything else.
    fn pod_changes(
        &self,
        pending: &BTreeMap<String, Option<Vec<Located<Object>>>>,
    ) -> Option<Vec<Change>> {
        let mut out = Vec::new();
        for (origin, before) in pending {
            let after = self.store.get(origin).unwrap_or_default();
            let before = before.as_deref().unwrap_or_default();
            if before == after {
                continue;
            }
            let mut keys = BTreeSet::new();
            for o in before.iter().chain(after) {
                let Object::Pod(p) = &o.value else {
                    return None;
                };
                keys.insert(p.key());
            }
            for key in keys {
                let new = after.iter().find_map(|o| match &o.value {
                    Object::Pod(p) if p.key() == key => Some(p.clone()),
                    _ => None,
                });
                out.push(Change {
                    key,
                    origin: origin.clone(),
                    new,
                });
            }
        }
        Some(out)
    }

    /// The fast path; `None` when the changes need the full one.
    fn try_fast(
        &mut self,
        pending: &BTreeMap<String, Option<Vec<Located<Object>>>>,
        t0: Instant,
    ) -> Option<SyncReport> {
        self.applied.as_ref()?;
        let changes = self.pod_changes(pending)?;
        let (Some(fast), Some(applied)) = (self.fast.as_mut(), self.applied.as_ref()) else {
            return None;
        };
        match fast.plan(applied, changes) {
            Ok(sets) => self.patch(sets, t0, SyncPath::Fast),
            Err(reason) => {
                debug!(reason, "pod change needs a full rebuild");
                None
            }
        }
    }

    /// The incremental path; `None` when the changes need the full one.
    fn try_incr(
        &mut self,
        pending: &BTreeMap<String, Option<Vec<Located<Object>>>>,
        t0: Instant,
    ) -> Option<SyncReport> {
        let (Some(incr), Some(applied)) = (self.incr.as_mut(), self.applied.as_ref()) else {
            return None;
        };
        let t = Instant::now();
        let planned = incr.plan(&self.store, pending, applied);
        debug!(ms = t.elapsed().as_secs_f64() * 1e3, "incremental plan");
        match planned {
            Ok(sets) => self.patch(sets, t0, SyncPath::Incremental),
            Err(reason) => {
                debug!(reason, "change needs a full rebuild");
                None
            }
        }
    }

    /// Applies element changes computed without a rebuild; `None` (the
    /// caller rebuilds) when they are better applied as a replacement or
    /// the kernel refuses them.
    fn patch(
        &mut self,
        mut sets: Vec<SetDelta>,
        t0: Instant,
        path: SyncPath,
    ) -> Option<SyncReport> {
        let applied = self.applied.as_ref()?;
        sets.extend(wiring_deltas(applied, &self.wiring)?);
        if self
            .cfg
            .replace_above_interval_removals
            .is_some_and(|max| delta::interval_removals(&sets, applied) > max)
        {
            return None;
        }
        let delta = if sets.is_empty() {
            Delta::Noop
        } else {
            Delta::Elements(sets)
        };
        let t = Instant::now();
        let text = delta.to_nft_text(applied);
        debug!(ms = t.elapsed().as_secs_f64() * 1e3, "rendered");
        if let Err(e) = self.apply(&delta, &text) {
            // The kernel is not what we thought: the full path reads it.
            warn!(error = %e, "element delta failed; re-reading the table");
            self.metrics.error("apply");
            self.kernel_read = false;
            return None;
        }
        if let (Some(table), Delta::Elements(sets)) = (self.applied.as_mut(), &delta) {
            fast::apply_in_place(table, sets);
        }
        Some(self.synced(&delta, t0, path))
    }

    /// Rebuilds the engine, compiles the store and brings the table to it.
    fn full_sync(&mut self, t0: Instant) -> Result<SyncReport, SyncError> {
        let (rs, engine) = match self.build() {
            Ok(built) => {
                self.health_mut().compile_error = None;
                built
            }
            Err(e) => {
                warn!(error = %e, "cannot compile; enforcing the last good state");
                self.metrics.error("compile");
                self.health_mut().compile_error = Some(e.clone());
                self.update_degraded();
                return Err(SyncError::Compile(e));
            }
        };
        if !self.kernel_read {
            self.read_kernel(&rs);
        }
        let t = Instant::now();
        let mut delta = delta::diff(self.applied.as_ref(), &rs);
        debug!(ms = t.elapsed().as_secs_f64() * 1e3, "diffed");
        if let (Delta::Elements(sets), Some(max)) =
            (&delta, self.cfg.replace_above_interval_removals)
        {
            let interval_removals = delta::interval_removals(sets, &rs);
            if interval_removals > max {
                debug!(
                    interval_removals,
                    "large interval-set delta; replacing the table"
                );
                delta = Delta::Replace(Box::new(rs.clone()));
            }
        }
        let mut result = self.apply(&delta, &delta.to_nft_text(&rs));
        if let (Err(e), Delta::Elements(_)) = (&result, &delta) {
            // The kernel is not what we thought: read it again, then replace.
            warn!(error = %e, "element delta failed; re-reading the table");
            self.metrics.error("apply");
            self.read_kernel(&rs);
            delta = delta::diff(self.applied.as_ref(), &rs);
            result = self.apply(&delta, &delta.to_nft_text(&rs));
            if result.is_err() && !delta.is_replace() {
                delta = Delta::Replace(Box::new(rs.clone()));
                result = self.apply(&delta, &delta.to_nft_text(&rs));
            }
        }
        if let Err(e) = result {
            warn!(error = %e, "transaction failed; the previous table stays in force");
            self.metrics.error("apply");
            self.kernel_read = false;
            self.health_mut().apply_error = Some(e.to_string());
            self.update_degraded();
            return Err(SyncError::Apply(e.to_string()));
        }
        let mut rs = rs;
        for s in &mut rs.sets {
            // The fast path searches elements by bisection.
            if !s.elements.is_sorted() {
                s.elements.sort();
            }
        }
        self.applied = Some(rs);
        let t = Instant::now();
        self.incr = Incr::new(&engine, &self.store, &self.cfg.node);
        if self.incr.is_none() {
            self.fast = Some(Fast::new(engine, &self.store, &self.cfg.node));
        }
        debug!(
            ms = t.elapsed().as_secs_f64() * 1e3,
            incremental = self.incr.is_some(),
            "incremental state rebuilt"
        );
        Ok(self.synced(&delta, t0, SyncPath::Full))
    }

    /// Records a successful sync (metrics, health) and reports it.
    fn synced(&mut self, delta: &Delta, t0: Instant, path: SyncPath) -> SyncReport {
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
        self.metrics
            .applies
            .get_or_create(&label("mode", mode))
            .inc();
        self.metrics
            .elements_changed
            .get_or_create(&label("change", "added"))
            .inc_by(added as u64);
        self.metrics
            .elements_changed
            .get_or_create(&label("change", "removed"))
            .inc_by(removed as u64);
        self.metrics
            .syncs
            .get_or_create(&label("path", path.name()))
            .inc();
        self.metrics.apply_seconds.observe(elapsed.as_secs_f64());
        for s in self.applied.iter().flat_map(|rs| &rs.sets) {
            self.metrics
                .set_elements
                .get_or_create(&label("set", &s.name))
                .set(s.elements.len() as i64);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.last_sync.set(now.as_secs_f64());
        self.metrics.garbage.set(self.garbage_len() as i64);
        self.refresh_object_counts();
        self.never_synced = false;
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

    /// One transaction, timed.
    fn apply(&mut self, delta: &Delta, text: &str) -> Result<(), BackendError> {
        let t = Instant::now();
        let r = self.backend.apply(delta, text);
        self.apply_time += t.elapsed();
        r
    }

    /// Learns what the kernel has: when the table's structure is the desired
    /// one, only elements will be patched.
    fn read_kernel(&mut self, desired: &Ruleset) {
        self.kernel_read = true;
        self.applied = match self.backend.read() {
            Ok(Some(t)) => {
                let r = t.as_ruleset(desired);
                match &r {
                    Some(_) => {
                        info!("existing table has the expected structure; patching elements")
                    }
                    None => info!("existing table has another structure; it will be replaced"),
                }
                r
            }
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "cannot read the table; it will be replaced");
                self.metrics.error("read");
                None
            }
        };
    }

    /// Runs until every sender is gone: debounces bursts, syncs, retries
    /// failed transactions with exponential backoff.
    pub fn run(mut self, rx: Receiver<Input>) {
        let idle = Duration::from_secs(3600);
        let min_backoff = Duration::from_millis(100);
        let mut dirty = false;
        let mut first = Instant::now();
        let mut last = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut backoff = min_backoff;
        loop {
            let now = Instant::now();
            let deadline = if dirty && self.ready_to_sync() {
                let settle = (last + self.cfg.debounce).min(first + self.cfg.max_delay);
                retry_at.map_or(settle, |r| settle.max(r))
            } else if self.garbage_len() > 0 {
                // Idle with unreachable elements left: one batch now.
                now
            } else {
                now + idle
            };
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(input) => {
                    if self.handle(input) {
                        if !dirty {
                            first = Instant::now();
                        }
                        dirty = true;
                        last = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let settled = now >= last + self.cfg.debounce || now >= first + self.cfg.max_delay;
            let may_retry = retry_at.is_none_or(|r| now >= r);
            if !dirty && self.garbage_len() > 0 {
                if self.collect_garbage().is_err() {
                    dirty = true;
                    first = now;
                    last = now;
                }
                continue;
            }
            if dirty && self.ready_to_sync() && settled && may_retry {
                match self.sync() {
                    Ok(_) | Err(SyncError::Compile(_) | SyncError::UnknownNode(_)) => {
                        dirty = false;
                        retry_at = None;
                        backoff = min_backoff;
                    }
                    Err(SyncError::Apply(_)) => {
                        retry_at = Some(now + backoff);
                        backoff = (backoff * 2).min(self.cfg.max_backoff);
                    }
                }
            }
        }
    }
}

/// Deletes stale neighbour entries `(interface, address)`, then sends
/// one datagram to each address (see [`Agent::set_poke`]).
pub type Poke = Box<dyn FnMut(&[(u32, IpAddr)], &[IpAddr]) + Send>;

/// The scope the node source's facts count as (see [`AgentConfig::scopes`]).
pub const NODE_SCOPE: &str = "node";

/// Element changes that bring the table's wiring sets to `w`; `None` when
/// the table lacks one of them (it is then replaced by the full path).
fn wiring_deltas(applied: &Ruleset, w: &Wiring) -> Option<Vec<SetDelta>> {
    let mut out = Vec::new();
    for (name, want) in w.inet_elements() {
        out.extend(delta::set_delta(name, &applied.set(name)?.elements, &want));
    }
    Some(out)
}

impl<B: Backend> Agent<B> {
    /// Sends datagrams to bridged pods whose port is not known yet (see
    /// [`crate::wiring`]), so the node learns it.
    pub fn set_poke(&mut self, poke: Poke) {
        self.poke = Some(poke);
    }

    /// The local pods as the store has them, resolved against the node's
    /// facts.
    fn rewire(&mut self) {
        // Without new facts or local pods nothing can have changed (a
        // bridged pod not bound yet is asked again when the facts change).
        if !std::mem::take(&mut self.wiring_stale) {
            return;
        }
        let mut pods: BTreeMap<String, LocalPod> = BTreeMap::new();
        for o in self.store.objects() {
            if let Object::Pod(p) = &o.value {
                if p.node.as_deref() == Some(self.cfg.node.as_str())
                    && !p.host_network
                    && p.is_endpoint()
                {
                    pods.insert(p.key(), LocalPod::of(p));
                }
            }
        }
        let pods: Vec<LocalPod> = pods.into_values().collect();
        let r = self.resolver.resolve(&self.facts, &pods);
        let unwired: Vec<String> = r.unwired().iter().map(|s| s.to_string()).collect();
        if unwired != self.health_mut().unwired {
            if !unwired.is_empty() {
                info!(
                    "{} local pods have no interface on this node yet; their packets are dropped until they do: {}",
                    unwired.len(),
                    unwired.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            self.metrics.pods_unwired.set(unwired.len() as i64);
            self.health_mut().unwired = unwired;
        }
        let now = Instant::now();
        // A new or vanished bridge port may be where an address went:
        // worth asking again at once.
        if r.wiring.bridge.ports != self.wiring.bridge.ports {
            self.poked.clear();
        }
        self.poked.retain(|ip, _| r.to_poke.contains(ip));
        let due: Vec<IpAddr> = r
            .to_poke
            .iter()
            .copied()
            .filter(|ip| {
                self.poked
                    .get(ip)
                    .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(5))
            })
            .collect();
        if let (Some(poke), false) = (self.poke.as_mut(), due.is_empty()) {
            let stale: Vec<(u32, IpAddr)> = r
                .stale
                .iter()
                .copied()
                .filter(|(_, ip)| due.contains(ip))
                .collect();
            poke(&stale, &due);
            for ip in due {
                self.poked.insert(ip, now);
            }
        }
        self.wiring = r.wiring;
    }

    /// Brings the bridge table (bridged pods' per-port check) to the
    /// wiring: replaced whole when it changes (it holds a few elements per
    /// local pod), removed when no pod is bridged.
    fn sync_bridge(&mut self) -> Result<(), SyncError> {
        if self.bridge.as_ref() == Some(&self.wiring.bridge) {
            return Ok(());
        }
        let want = palisade_nft::compile_bridge(&self.wiring.bridge);
        let text = palisade_nft::bridge_text(want.as_ref());
        match self.backend.apply_bridge(&text) {
            Ok(()) => {
                self.bridge = Some(self.wiring.bridge.clone());
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "the bridge table was not updated; retrying");
                self.metrics.error("apply");
                self.bridge = None;
                Err(SyncError::Apply(e.to_string()))
            }
        }
    }
}
