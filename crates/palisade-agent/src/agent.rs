//! The single-owner loop: inputs in, one transaction per settled burst out.
//!
//! - [`sync`](self::sync): the sync state and the two ways to a table (the
//!   incremental path, the full rebuild as its only fallback);
//! - [`health`](self::health): `/healthz`, `/readyz` and the metrics a sync
//!   sets;
//! - [`collect`](self::collect): removing unreachable elements while idle;
//! - [`wire`](self::wire): the node's wiring and the bridge table.

mod collect;
mod health;
mod sync;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_engine::Engine;
use palisade_k8s::{Located, Object};
use palisade_nft::{compile_numbered, Local, Numbering, Options, Ruleset, Wiring};
use tracing::{debug, info, warn};

use crate::facts::NodeFacts;
use crate::flowlog::FlowLog;
use crate::input::Input;
use crate::metrics::{label, Metrics};
use crate::store::Store;
use crate::wiring::{PodInterfaces, Resolver};
use crate::Error;

pub use health::Health;
pub use sync::{SyncPath, SyncReport};
pub use wire::Poke;

use sync::SyncState;

/// What a sync fails with: [`Error::Compile`] (waits for the next
/// change), [`Error::Apply`] (retried with backoff) or
/// [`Error::UnknownNode`] (the kernel is not touched until an object names
/// the node).
pub type SyncError = Error;

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
    /// The packet mark's bits that an allowed new connection leaves with
    /// as it came (kube-proxy's masquerade bit by default).
    pub kept_mark: palisade_nft::KeptMark,
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
            kept_mark: palisade_nft::KeptMark::default(),
        }
    }
}

/// Where generations start: distinct from those a previous run of the
/// agent left in the kernel's table (reports of theirs are unattributed,
/// not attributed to the wrong policies).
fn first_generation() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Milliseconds wrap in 49 days; restarts are further apart than a few
    // generations.
    t.as_millis() as u32
}

/// The scope the node source's facts count as (see [`AgentConfig::scopes`]).
pub const NODE_SCOPE: &str = "node";

pub struct Agent<B: crate::Backend> {
    cfg: AgentConfig,
    store: Store,
    backend: B,
    /// What the kernel holds and how the next sync computes the table.
    state: SyncState,
    synced_scopes: BTreeSet<String>,
    /// Some object has named the agent's node (see [`health`]).
    node_known: bool,
    /// The store changed since the object-count metrics were last set.
    counts_stale: bool,
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
    /// Time in the backend's transactions during the current sync.
    apply_time: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    /// Reports decisions to the flow log, if enabled.
    flow_log: Option<FlowLog>,
    /// The policy generation the kernel enforces (see
    /// [`palisade_nft::FlowLog`]).
    generation: u32,
}

impl<B: crate::Backend> Agent<B> {
    pub fn new(cfg: AgentConfig, backend: B) -> Agent<B> {
        Agent {
            resolver: Resolver::new(cfg.pod_interfaces.clone()),
            cfg,
            store: Store::new(),
            backend,
            state: SyncState::start(),
            synced_scopes: BTreeSet::new(),
            node_known: false,
            counts_stale: true,
            facts: NodeFacts::default(),
            wiring: Wiring::default(),
            bridge: None,
            poke: None,
            poked: HashMap::new(),
            wiring_stale: true,
            apply_time: Duration::ZERO,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Mutex::new(Health::default())),
            flow_log: None,
            generation: first_generation(),
        }
    }

    /// Reports the kernel's decisions to `log` from the next sync on.
    pub fn set_flow_log(&mut self, log: FlowLog) {
        self.flow_log = Some(log);
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn health(&self) -> Arc<Mutex<Health>> {
        self.health.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The table as last applied (or read from the kernel).
    pub fn applied(&self) -> Option<&Ruleset> {
        self.state.applied()
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
            return changed || (!was && self.ready_to_sync() && !self.state.has_synced());
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
        self.wiring_stale |= self.touches_local_pods(&input);
        if let Some(incr) = self.state.incremental_mut() {
            incr.note(&input, &self.store);
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
        applied.changed || (first && !self.state.has_synced())
    }

    /// Whether `input` may change the wiring: only local pods and the
    /// facts decide it, so other changes need not resolve it again.
    fn touches_local_pods(&self, input: &Input) -> bool {
        let local = |objs: &[Located<Object>]| {
            objs.iter().any(|o| {
                matches!(&o.value, Object::Pod(p) if p.node.as_deref() == Some(self.cfg.node.as_str()))
            })
        };
        match input {
            Input::Upsert(e) => local(&e.objects) || self.store.get(&e.origin).is_some_and(local),
            Input::Delete { origin } => self.store.get(origin).is_some_and(local),
            Input::Resync { .. } => true,
            Input::SourceDown { .. } | Input::NodeFacts(_) => false,
        }
    }

    /// The node's ruleset for the current store.
    pub fn desired(&self) -> Result<Ruleset, Error> {
        self.build().map(|(rs, ..)| rs)
    }

    /// The node's ruleset for the current store, the engine it was
    /// compiled from, and whether the store holds staged policies (which
    /// the engine leaves out).
    fn build(&self) -> Result<(Ruleset, Engine, bool), Error> {
        let t = Instant::now();
        let (cluster, diags) = self.store.cluster();
        for d in diags.iter().filter(|d| d.is_error()) {
            warn!("merging objects: {d}");
        }
        let t_cluster = t.elapsed();
        let staged = cluster.has_staged();
        let engine = Engine::new(cluster);
        let t_engine = t.elapsed();
        let opts = Options {
            local: Local::Node(self.cfg.node.clone()),
            wiring: self.wiring.clone(),
            flow_log: self
                .flow_log
                .as_ref()
                .map(|f| f.options(self.generation.wrapping_add(1))),
            kept_mark: self.cfg.kept_mark,
        };
        let rs = compile_numbered(&engine, &opts, Numbering::Stable)
            .map_err(|e| Error::Compile(e.to_string()))?;
        debug!(
            cluster_ms = t_cluster.as_secs_f64() * 1e3,
            engine_ms = (t_engine - t_cluster).as_secs_f64() * 1e3,
            compile_ms = (t.elapsed() - t_engine).as_secs_f64() * 1e3,
            "built"
        );
        Ok((rs, engine, staged))
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
                    Ok(_) | Err(Error::Compile(_) | Error::UnknownNode(_)) => {
                        dirty = false;
                        retry_at = None;
                        backoff = min_backoff;
                    }
                    // A failed transaction, or anything else: try again.
                    Err(_) => {
                        retry_at = Some(now + backoff);
                        backoff = (backoff * 2).min(self.cfg.max_backoff);
                    }
                }
            }
        }
    }
}

/// Unreachable interval elements, by set, for [`Agent::garbage`].
pub type Garbage = BTreeMap<String, BTreeSet<palisade_nft::Element>>;
