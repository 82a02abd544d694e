//! Idle collection: removing interval elements nothing can reach any more
//! (see [`palisade_nft::incr`]), a few per transaction, or by one table
//! replacement when there are many.

use tracing::warn;

use super::sync::{apply_in_place, SyncState};
use super::{Agent, Garbage};
use crate::backend::BackendError;
use crate::delta::Delta;
use crate::{Backend, Error};

impl<B: Backend> Agent<B> {
    /// Unreachable interval elements the table still holds, by set (see
    /// [`Agent::collect_garbage`]).
    pub fn garbage(&self) -> Garbage {
        self.state
            .incremental()
            .map(|i| i.garbage().clone())
            .unwrap_or_default()
    }

    /// How many unreachable interval elements the table still holds.
    pub fn garbage_len(&self) -> usize {
        self.state.incremental().map_or(0, |i| i.garbage_len())
    }

    /// Removes up to `collect_batch` unreachable interval elements in one
    /// transaction; returns how many are left. On failure the incremental
    /// state is dropped and the next sync is a full one.
    pub fn collect_garbage(&mut self) -> Result<usize, Error> {
        let batch = self.cfg.collect_batch.max(1);
        if self.garbage_len() > self.cfg.collect_replace_above {
            return self.replace_without_garbage();
        }
        let Some((table, incr)) = self.state.table_and_incremental() else {
            return Ok(0);
        };
        let sets = match incr.collect(batch, table) {
            Ok(sets) => sets,
            Err(e) => {
                warn!(error = %e, "cannot collect unreachable elements; rebuilding");
                self.state.drop_incremental();
                return Err(Error::Compile(e));
            }
        };
        if sets.is_empty() {
            return Ok(0);
        }
        let delta = Delta::Elements(sets);
        let text = delta.to_nft_text(table);
        if let Err(e) = self.apply(&delta, &text) {
            warn!(error = %e, transaction = %text, "removing unreachable elements failed; rebuilding");
            return Err(self.collection_failed(e));
        }
        if let (SyncState::Known { table, .. }, Delta::Elements(sets)) = (&mut self.state, &delta) {
            apply_in_place(table, sets);
        }
        let left = self.garbage_len();
        self.metrics.garbage.set(left as i64);
        Ok(left)
    }

    /// Many unreachable elements: one table replacement (about 16 µs per
    /// element of the whole table) costs less than removing them (20-50 ms
    /// each).
    fn replace_without_garbage(&mut self) -> Result<usize, Error> {
        let Some((table, incr)) = self.state.table_and_incremental() else {
            return Ok(0);
        };
        let mut rs = table.clone();
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
        if let SyncState::Known { table, .. } = &mut self.state {
            *table = rs;
        }
        self.metrics.garbage.set(0);
        Ok(0)
    }

    /// A collection transaction failed: what the kernel holds is unknown,
    /// so the next sync reads it and rebuilds in full.
    fn collection_failed(&mut self, e: BackendError) -> Error {
        self.metrics.error("apply");
        self.state.forget_kernel();
        Error::Apply(e.to_string())
    }
}
