//! The last records, in memory, for `GET /flows`: bounded, with readers
//! that follow it. A follower that falls behind by more than the ring
//! holds is told how many records it missed, in the next record's `lost`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use palisade_engine::flowlog::{FlowRecord, FlowVerdict};

pub struct Ring {
    inner: Mutex<Inner>,
    grew: Condvar,
    capacity: usize,
}

struct Inner {
    records: VecDeque<FlowRecord>,
    /// The sequence number of `records[0]`.
    first: u64,
    closed: bool,
}

/// Which records a reader wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only records at or after this time (the records' own format, which
    /// sorts as text: fixed-width UTC).
    pub since: Option<String>,
    pub verdict: Option<FlowVerdict>,
    /// Only records the staged policies would change.
    pub staged: bool,
}

impl Filter {
    fn admits(&self, r: &FlowRecord) -> bool {
        self.since
            .as_ref()
            .is_none_or(|s| r.time.as_str() >= s.as_str())
            && self.verdict.is_none_or(|v| r.verdict == v)
            && (!self.staged || r.staged.is_some())
    }
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            inner: Mutex::new(Inner {
                records: VecDeque::with_capacity(capacity.min(1 << 16)),
                first: 0,
                closed: false,
            }),
            grew: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, r: FlowRecord) {
        let mut g = self.lock();
        if g.records.len() == self.capacity {
            g.records.pop_front();
            g.first += 1;
        }
        g.records.push_back(r);
        drop(g);
        self.grew.notify_all();
    }

    /// No more records will come: followers end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }

    /// The records held that `f` admits, and the position after them.
    pub fn snapshot(&self, f: &Filter) -> (Vec<FlowRecord>, u64) {
        let g = self.lock();
        let end = g.first + g.records.len() as u64;
        (
            g.records.iter().filter(|r| f.admits(r)).cloned().collect(),
            end,
        )
    }

    /// The admitted records from position `from` on, waiting up to `wait`
    /// for the first; the new position, and `None` once closed. Records
    /// the ring dropped before they were read are counted into the first
    /// record returned.
    pub fn follow(&self, from: u64, f: &Filter, wait: Duration) -> Option<(Vec<FlowRecord>, u64)> {
        let mut g = self.lock();
        let end = |g: &Inner| g.first + g.records.len() as u64;
        if end(&g) <= from && !g.closed {
            g = self
                .grew
                .wait_timeout_while(g, wait, |g| !g.closed && end(g) <= from)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if g.closed && end(&g) <= from {
            return None;
        }
        let missed = g.first.saturating_sub(from);
        let start = from.max(g.first);
        let mut out: Vec<FlowRecord> = g
            .records
            .iter()
            .skip((start - g.first) as usize)
            .filter(|r| f.admits(r))
            .cloned()
            .collect();
        if let Some(r) = out.first_mut() {
            r.lost += missed;
        }
        Some((out, end(&g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::Direction;
    use palisade_model::Protocol;

    fn rec(i: u16, verdict: FlowVerdict) -> FlowRecord {
        FlowRecord {
            time: format!("2026-12-01T00:00:{:02}.000Z", i % 60),
            node: "n".into(),
            direction: Direction::Egress,
            src: "a".into(),
            src_workload: None,
            src_ip: None,
            dst: "b".into(),
            dst_workload: None,
            dst_ip: None,
            protocol: Protocol::Tcp,
            port: i,
            verdict,
            policy: None,
            rule: None,
            reason: String::new(),
            staged: None,
            staged_policy: None,
            generation: Some(1),
            lost: 0,
        }
    }

    #[test]
    fn a_follower_that_falls_behind_is_told_what_it_missed() {
        let ring = Ring::new(3);
        let all = Filter::default();
        for i in 0..2 {
            ring.push(rec(i, FlowVerdict::Denied));
        }
        let (got, pos) = ring.follow(0, &all, Duration::ZERO).unwrap();
        assert_eq!(got.iter().map(|r| r.port).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(got[0].lost, 0);
        for i in 2..7 {
            ring.push(rec(i, FlowVerdict::Allowed));
        }
        // Positions 2 and 3 were dropped before this reader saw them.
        let (got, pos) = ring.follow(pos, &all, Duration::ZERO).unwrap();
        assert_eq!(got.iter().map(|r| r.port).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(got[0].lost, 2);
        let (none, same) = ring.follow(pos, &all, Duration::from_millis(10)).unwrap();
        assert!(none.is_empty());
        assert_eq!(same, pos);
        ring.close();
        assert!(ring.follow(pos, &all, Duration::from_secs(5)).is_none());
    }

    #[test]
    fn filters_by_verdict_and_time() {
        let ring = Ring::new(10);
        for i in 0..4 {
            let v = if i % 2 == 0 {
                FlowVerdict::Denied
            } else {
                FlowVerdict::Allowed
            };
            ring.push(rec(i, v));
        }
        let f = Filter {
            since: Some("2026-12-01T00:00:01.000Z".into()),
            verdict: Some(FlowVerdict::Denied),
            staged: false,
        };
        let (got, end) = ring.snapshot(&f);
        assert_eq!(got.iter().map(|r| r.port).collect::<Vec<_>>(), [2]);
        assert_eq!(end, 4);
    }
}
