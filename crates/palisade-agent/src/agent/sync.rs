//! One sync: the incremental path when the last full build left a state
//! for it, the full rebuild otherwise and whenever the incremental path
//! gives up.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use palisade_nft::{generation_elements, Element, Ruleset, SetId};
use tracing::{debug, info, warn};

use super::wire::wiring_deltas;
use super::Agent;
use crate::backend::BackendError;
use crate::delta::{self, Delta, SetDelta};
use crate::flowlog::Snapshot;
use crate::incr::Incr;
use crate::{Backend, Error};

/// What the agent knows of the kernel, and so how the next sync computes
/// the table. The incremental state exists only beside a table the kernel
/// is known to hold: it describes that table.
pub(super) enum SyncState {
    /// What the kernel holds is not known: at start, and after a failed
    /// transaction. The next sync reads the table and rebuilds in full.
    Unread {
        /// The table last applied or read, as [`Agent::applied`] reports
        /// it; never diffed against (the kernel is read again).
        last: Option<Ruleset>,
        /// Whether a sync has succeeded since start.
        synced: bool,
    },
    /// The kernel holds `table`, the last sync's.
    Known {
        table: Ruleset,
        /// The incremental compiler's state for `table`; `None` when the
        /// next sync rebuilds in full (the cluster is one the incremental
        /// compiler cannot start from, or it gave up).
        incr: Option<Box<Incr>>,
    },
}

impl SyncState {
    /// The known table and its incremental state, when there is one.
    pub(super) fn table_and_incremental(&mut self) -> Option<(&mut Ruleset, &mut Incr)> {
        match self {
            SyncState::Known {
                table,
                incr: Some(incr),
            } => Some((table, incr)),
            _ => None,
        }
    }

    pub(super) fn start() -> SyncState {
        SyncState::Unread {
            last: None,
            synced: false,
        }
    }

    pub(super) fn applied(&self) -> Option<&Ruleset> {
        match self {
            SyncState::Unread { last, .. } => last.as_ref(),
            SyncState::Known { table, .. } => Some(table),
        }
    }

    pub(super) fn has_synced(&self) -> bool {
        match self {
            SyncState::Unread { synced, .. } => *synced,
            SyncState::Known { .. } => true,
        }
    }

    pub(super) fn incremental(&self) -> Option<&Incr> {
        match self {
            SyncState::Known { incr, .. } => incr.as_deref(),
            SyncState::Unread { .. } => None,
        }
    }

    pub(super) fn incremental_mut(&mut self) -> Option<&mut Incr> {
        match self {
            SyncState::Known { incr, .. } => incr.as_deref_mut(),
            SyncState::Unread { .. } => None,
        }
    }

    /// The next sync rebuilds in full.
    pub(super) fn drop_incremental(&mut self) {
        if let SyncState::Known { incr, .. } = self {
            *incr = None;
        }
    }

    /// A transaction failed: the kernel may hold anything.
    pub(super) fn forget_kernel(&mut self) {
        let synced = self.has_synced();
        let last = match std::mem::replace(self, SyncState::start()) {
            SyncState::Unread { last, .. } => last,
            SyncState::Known { table, .. } => Some(table),
        };
        *self = SyncState::Unread { last, synced };
    }
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
    /// Pod, NetworkPolicy, Namespace and Node changes compiled
    /// incrementally.
    Incremental,
}

impl SyncPath {
    pub fn name(self) -> &'static str {
        match self {
            SyncPath::Full => "full",
            SyncPath::Incremental => "incremental",
        }
    }
}

impl<B: Backend> Agent<B> {
    /// Brings the table to the store in one transaction: by the
    /// incremental path when it can take every change since the last
    /// sync, else by rebuilding the engine, compiling and diffing.
    pub fn sync(&mut self) -> Result<SyncReport, Error> {
        self.check_node()?;
        let t0 = Instant::now();
        self.apply_time = Duration::ZERO;
        self.rewire();
        if let Some(report) = self.try_incremental(t0) {
            self.sync_bridge()?;
            return Ok(report);
        }
        // Whatever the incremental state had taken in is now spent.
        self.state.drop_incremental();
        let r = self.full_sync(t0)?;
        self.sync_bridge()?;
        Ok(r)
    }

    /// The incremental path; `None` when the changes need the full one.
    fn try_incremental(&mut self, t0: Instant) -> Option<SyncReport> {
        let SyncState::Known {
            table,
            incr: Some(incr),
        } = &mut self.state
        else {
            return None;
        };
        let t = Instant::now();
        let planned = incr.plan(&self.store, table);
        debug!(ms = t.elapsed().as_secs_f64() * 1e3, "incremental plan");
        match planned {
            Ok(sets) => self.patch(sets, t0),
            Err(reason) => {
                debug!(reason, "change needs a full rebuild");
                None
            }
        }
    }

    /// Applies element changes computed without a rebuild; `None` (the
    /// caller rebuilds) when they are better applied as a replacement or
    /// the kernel refuses them.
    fn patch(&mut self, mut sets: Vec<SetDelta>, t0: Instant) -> Option<SyncReport> {
        let SyncState::Known { table, .. } = &self.state else {
            return None;
        };
        sets.extend(wiring_deltas(table, &self.wiring)?);
        let next = self.generation.wrapping_add(1);
        if self.flow_log.is_some() && !sets.is_empty() {
            let name = SetId::Generation.name();
            let old = &table.set(name)?.elements;
            sets.extend(delta::set_delta(name, old, &generation_elements(next)));
        }
        if self
            .cfg
            .replace_above_interval_removals
            .is_some_and(|max| delta::interval_removals(&sets, table) > max)
        {
            return None;
        }
        let delta = if sets.is_empty() {
            Delta::Noop
        } else {
            Delta::Elements(sets)
        };
        let t = Instant::now();
        let text = delta.to_nft_text(table);
        debug!(ms = t.elapsed().as_secs_f64() * 1e3, "rendered");
        if let Err(e) = self.apply(&delta, &text) {
            // The kernel is not what we thought: the full path reads it.
            warn!(error = %e, "element delta failed; re-reading the table");
            self.metrics.error("apply");
            self.state.forget_kernel();
            return None;
        }
        if let (SyncState::Known { table, .. }, Delta::Elements(sets)) = (&mut self.state, &delta) {
            apply_in_place(table, sets);
        }
        if let (Some(log), Delta::Elements(_)) = (&self.flow_log, &delta) {
            self.generation = next;
            log.publish(next, Snapshot::Cluster(self.store.cluster().0));
        }
        Some(self.synced(&delta, t0, SyncPath::Incremental))
    }

    /// Rebuilds the engine, compiles the store and brings the table to it.
    fn full_sync(&mut self, t0: Instant) -> Result<SyncReport, Error> {
        let (mut rs, engine, staged) = match self.build() {
            Ok(built) => {
                self.health_mut().compile_error = None;
                built
            }
            Err(e) => {
                warn!(error = %e, "cannot compile; enforcing the last good state");
                self.report_compile_error(&e.to_string());
                return Err(e);
            }
        };
        let synced = self.state.has_synced();
        let mut applied = match std::mem::replace(&mut self.state, SyncState::start()) {
            SyncState::Known { table, .. } => Some(table),
            SyncState::Unread { .. } => self.read_kernel(&rs),
        };
        let delta = match self.bring_to(&mut applied, &rs) {
            Ok(delta) => delta,
            Err(e) => {
                warn!(error = %e, "transaction failed; the previous table stays in force");
                self.state = SyncState::Unread {
                    last: applied,
                    synced,
                };
                self.report_apply_error(&e.to_string());
                return Err(Error::Apply(e.to_string()));
            }
        };
        for s in &mut rs.sets {
            // Element changes are placed and checked by bisection.
            if !s.elements.is_sorted() {
                s.elements.sort();
            }
        }
        let t = Instant::now();
        let incr = Incr::new(&engine, &self.store, &self.cfg.node).map(Box::new);
        debug!(
            ms = t.elapsed().as_secs_f64() * 1e3,
            incremental = incr.is_some(),
            "incremental state rebuilt"
        );
        self.state = SyncState::Known { table: rs, incr };
        if let Some(log) = &self.flow_log {
            // The table was compiled for the next generation.
            self.generation = self.generation.wrapping_add(1);
            // The engine enforces no staged policy: the flow log needs the
            // cluster to compare with them.
            let snap = if staged {
                Snapshot::Cluster(self.store.cluster().0)
            } else {
                Snapshot::Engine(Box::new(engine))
            };
            log.publish(self.generation, snap);
        }
        Ok(self.synced(&delta, t0, SyncPath::Full))
    }

    /// One transaction from `applied` to `rs`: element changes when only
    /// elements differ (and not too many interval removals), else a
    /// replacement. A failed element transaction reads the kernel into
    /// `applied` and tries again, replacing at last.
    fn bring_to(
        &mut self,
        applied: &mut Option<Ruleset>,
        rs: &Ruleset,
    ) -> Result<Delta, BackendError> {
        let t = Instant::now();
        let mut delta = delta::diff(applied.as_ref(), rs);
        debug!(ms = t.elapsed().as_secs_f64() * 1e3, "diffed");
        if let (Delta::Elements(sets), Some(max)) =
            (&delta, self.cfg.replace_above_interval_removals)
        {
            let interval_removals = delta::interval_removals(sets, rs);
            if interval_removals > max {
                debug!(
                    interval_removals,
                    "large interval-set delta; replacing the table"
                );
                delta = Delta::Replace(Box::new(rs.clone()));
            }
        }
        let mut result = self.apply(&delta, &delta.to_nft_text(rs));
        if let (Err(e), Delta::Elements(_)) = (&result, &delta) {
            // The kernel is not what we thought: read it again, then replace.
            warn!(error = %e, "element delta failed; re-reading the table");
            self.metrics.error("apply");
            *applied = self.read_kernel(rs);
            delta = delta::diff(applied.as_ref(), rs);
            result = self.apply(&delta, &delta.to_nft_text(rs));
            if result.is_err() && !delta.is_replace() {
                delta = Delta::Replace(Box::new(rs.clone()));
                result = self.apply(&delta, &delta.to_nft_text(rs));
            }
        }
        result.map(|()| delta)
    }

    /// One transaction, timed.
    pub(super) fn apply(&mut self, delta: &Delta, text: &str) -> Result<(), BackendError> {
        let t = Instant::now();
        let r = self.backend.apply(delta, text);
        self.apply_time += t.elapsed();
        r
    }

    /// What the kernel has: when the table's structure is the desired
    /// one, only elements will be patched.
    fn read_kernel(&mut self, desired: &Ruleset) -> Option<Ruleset> {
        match self.backend.read() {
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
        }
    }
}

/// Applies element changes to a table in memory (sorted, as compiled), so
/// that the remembered table stays what the kernel holds after a patch.
pub(super) fn apply_in_place(table: &mut Ruleset, sets: &[SetDelta]) {
    for d in sets {
        let Some(s) = table.sets.iter_mut().find(|s| s.name == d.set) else {
            continue;
        };
        // The elements are kept sorted. A few changes are placed by
        // bisection; hashing every element of a 10,000-element set to
        // filter it costs about a millisecond.
        if d.remove.len() + d.add.len() <= 64 {
            for e in &d.remove {
                if let Ok(i) = s.elements.binary_search(e) {
                    s.elements.remove(i);
                }
            }
            for e in &d.add {
                if let Err(i) = s.elements.binary_search(e) {
                    s.elements.insert(i, e.clone());
                }
            }
            continue;
        }
        if !d.remove.is_empty() {
            let gone: HashSet<&Element> = d.remove.iter().collect();
            s.elements.retain(|e| !gone.contains(e));
        }
        s.elements.extend(d.add.iter().cloned());
        s.elements.sort();
        s.elements.dedup();
    }
}
