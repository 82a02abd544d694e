//! Coalescing a watcher's events: what changed in a burst, each path once,
//! after the burst is over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind};
use tracing::warn;

/// How long the tree must be free of events before a burst is handled.
pub const QUIET: Duration = Duration::from_millis(50);
/// Under a steady stream of events, changes are still handled this often.
const MAX_BURST: Duration = Duration::from_secs(1);
/// A file modified and never closed (written through a mapping, or by a
/// writer that keeps it open) is read this long after its first change.
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// Events collected until the tree is quiet.
#[derive(Default)]
pub(crate) struct Batch {
    full: bool,
    ready: BTreeSet<PathBuf>,
    /// Modified and not yet closed, since.
    writing: BTreeMap<PathBuf, Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Batch {
    pub(crate) fn add(&mut self, ev: notify::Result<Event>, now: Instant) {
        match ev {
            Err(e) => {
                warn!(error = %e, "watching the manifest directory; reading it again");
                self.full = true;
            }
            Ok(ev) if ev.need_rescan() => self.full = true,
            Ok(ev) => match ev.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    for p in ev.paths {
                        self.writing.remove(&p);
                        self.ready.insert(p);
                    }
                }
                // Opens, reads and closes after reading change nothing.
                EventKind::Access(_) => return,
                EventKind::Modify(ModifyKind::Data(_)) => {
                    for p in ev.paths {
                        self.writing.entry(p).or_insert(now);
                    }
                }
                _ => self.ready.extend(ev.paths),
            },
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    fn quiet_at(&self) -> Option<Instant> {
        if !self.full && self.ready.is_empty() {
            return None;
        }
        let last = self.last? + QUIET;
        Some(last.min(self.first? + MAX_BURST))
    }

    /// When something is due next, if anything is pending.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let write = self.writing.values().min().map(|t| *t + WRITE_WAIT);
        match (self.quiet_at(), write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`: whether to read everything, and the paths.
    pub(crate) fn take(&mut self, now: Instant) -> Option<(bool, BTreeSet<PathBuf>)> {
        let mut full = false;
        let mut paths = BTreeSet::new();
        if self.quiet_at().is_some_and(|t| now >= t) {
            full = std::mem::take(&mut self.full);
            paths = std::mem::take(&mut self.ready);
            paths.retain(|p| !self.writing.contains_key(p));
            self.first = None;
            self.last = None;
        }
        let late: Vec<PathBuf> = self
            .writing
            .iter()
            .filter(|(_, t)| now >= **t + WRITE_WAIT)
            .map(|(p, _)| p.clone())
            .collect();
        for p in late {
            self.writing.remove(&p);
            paths.insert(p);
        }
        (full || !paths.is_empty()).then_some((full, paths))
    }
}
