//! Prometheus metrics of the agent.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric, registered under the `palisade_agent_` prefix.
pub struct Metrics {
    registry: Registry,
    /// Objects in the store (last good versions), by kind.
    pub objects: Family<Labels, Gauge>,
    /// Elements of each set and map of the applied table.
    pub set_elements: Family<Labels, Gauge>,
    /// Inputs received, by type (upsert, delete, resync, source_down).
    pub events: Family<Labels, Counter>,
    /// Transactions applied, by mode (elements, replace).
    pub applies: Family<Labels, Counter>,
    /// Successful syncs, by path (incremental: changes compiled on their
    /// own; full: engine rebuilt and compiled).
    pub syncs: Family<Labels, Counter>,
    /// Elements added and removed by transactions.
    pub elements_changed: Family<Labels, Counter>,
    /// Seconds from the start of a sync to the kernel updated.
    pub apply_seconds: Histogram,
    /// Errors by reason (invalid_object, apply, read, source, compile).
    pub errors: Family<Labels, Counter>,
    /// Unix time of the last successful sync.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// 1 while degraded (see `/healthz`).
    pub degraded: Gauge,
    /// Origins whose last update was rejected.
    pub rejected_origins: Gauge,
    /// Unreachable interval elements waiting to be removed while idle.
    pub garbage: Gauge,
    /// Local pods whose interface the node does not show (yet): their
    /// packets are dropped.
    pub pods_unwired: Gauge,
    /// Flow log records, by verdict and direction.
    pub flow_records: Family<Labels, Counter>,
    /// Reports lost, by cause (kernel: the socket overflowed; queue: the
    /// worker fell behind; file: a write failed).
    pub flow_lost: Family<Labels, Counter>,
    /// Reports whose policy generation the agent no longer held.
    pub flow_unattributed: Counter,
    /// Reports that were not a policy decision the agent can read.
    pub flow_unreadable: Counter,
    /// Observed connections the staged policies would change, by staged
    /// policy and verdict (would-deny, would-allow).
    pub flow_staged: Family<Labels, Counter>,
    /// The node's conntrack table, read on every scrape.
    pub conntrack_entries: Gauge,
    pub conntrack_max: Gauge,
    /// New connections the kernel refused or evicted for room, by reason.
    pub conntrack_dropped: Family<Labels, Counter>,
    conntrack: std::sync::Mutex<crate::conntrack::Watch>,
}

pub fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_agent");
        let m = Metrics {
            registry: Registry::default(),
            objects: Family::default(),
            set_elements: Family::default(),
            events: Family::default(),
            applies: Family::default(),
            syncs: Family::default(),
            elements_changed: Family::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            errors: Family::default(),
            last_sync: Gauge::default(),
            degraded: Gauge::default(),
            rejected_origins: Gauge::default(),
            garbage: Gauge::default(),
            pods_unwired: Gauge::default(),
            flow_records: Family::default(),
            flow_lost: Family::default(),
            flow_unattributed: Counter::default(),
            flow_unreadable: Counter::default(),
            flow_staged: Family::default(),
            conntrack_entries: Gauge::default(),
            conntrack_max: Gauge::default(),
            conntrack_dropped: Family::default(),
            conntrack: Default::default(),
        };
        registry.register(
            "objects",
            "Objects in the store, by kind",
            m.objects.clone(),
        );
        registry.register(
            "set_elements",
            "Elements of each set and map of the applied table",
            m.set_elements.clone(),
        );
        registry.register("events", "Inputs received, by type", m.events.clone());
        registry.register(
            "applies",
            "Transactions applied, by mode",
            m.applies.clone(),
        );
        registry.register("syncs", "Successful syncs, by path", m.syncs.clone());
        registry.register(
            "elements_changed",
            "Elements added or removed by transactions",
            m.elements_changed.clone(),
        );
        registry.register(
            "apply_seconds",
            "Seconds from the start of a sync to the kernel updated",
            m.apply_seconds.clone(),
        );
        registry.register("errors", "Errors, by reason", m.errors.clone());
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync",
            m.last_sync.clone(),
        );
        registry.register("degraded", "1 while degraded", m.degraded.clone());
        registry.register(
            "rejected_origins",
            "Origins whose last update was rejected",
            m.rejected_origins.clone(),
        );
        registry.register(
            "unreachable_elements",
            "Interval-set elements nothing can reach, removed while idle",
            m.garbage.clone(),
        );
        registry.register(
            "pods_unwired",
            "Local pods whose interface the node does not show yet (their packets are dropped)",
            m.pods_unwired.clone(),
        );
        registry.register(
            "flow_records",
            "Flow log records, by verdict and direction",
            m.flow_records.clone(),
        );
        registry.register(
            "flow_lost",
            "Flow reports lost, by cause (kernel, queue, file)",
            m.flow_lost.clone(),
        );
        registry.register(
            "flow_unattributed",
            "Flow reports whose policy generation was no longer held",
            m.flow_unattributed.clone(),
        );
        registry.register(
            "flow_unreadable",
            "Flow reports that were no policy decision",
            m.flow_unreadable.clone(),
        );
        registry.register(
            "flow_staged",
            "Observed connections staged policies would change, by policy and verdict",
            m.flow_staged.clone(),
        );
        registry.register(
            "conntrack_entries",
            "Entries of the node's conntrack table",
            m.conntrack_entries.clone(),
        );
        registry.register(
            "conntrack_max",
            "The kernel's limit of conntrack entries",
            m.conntrack_max.clone(),
        );
        registry.register(
            "conntrack_dropped",
            "New connections the kernel dropped (table_full) or entries it evicted (early_drop, insert_failed)",
            m.conntrack_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Reports the conntrack table of `netns` (`None`: the agent's own
    /// namespace, the default).
    pub fn watch_conntrack(&self, netns: Option<String>) {
        *self.conntrack.lock().unwrap_or_else(|e| e.into_inner()) =
            crate::conntrack::Watch::new(netns);
    }

    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&label("reason", reason)).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        self.conntrack
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(self);
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}
