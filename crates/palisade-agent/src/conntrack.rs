//! The node's connection tracking table as its kernel counts it: entries,
//! the limit, and the new connections it dropped. Read from the node's
//! network namespace (`/proc/sys/net/netfilter` and
//! `/proc/thread-self/net/stat` resolve against the reading thread's
//! namespace) on every scrape.
//!
//! When the table is full the kernel first evicts an entry that never saw
//! a reply (`early_drop`), and when there is none it drops the new
//! connection's packet (`drop`): the node fails closed, and these counters
//! are how an operator sees it. `nf_conntrack_max` is one limit for the
//! whole host (read-only in other namespaces), compared with each
//! namespace's own count.

use std::io;

use crate::metrics::{label, Metrics};
use crate::netlink::{in_netns, NetlinkError};

/// One reading of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub max: u64,
    /// New connections dropped because the table was full.
    pub drop: u64,
    /// Entries without a reply evicted to make room for new ones.
    pub early_drop: u64,
    /// Entries that could not be inserted (a race lost, or no memory).
    pub insert_failed: u64,
}

/// The drop counters of `/proc/net/stat/nf_conntrack`: one line of names,
/// then one line of hexadecimal values per CPU, summed.
pub fn parse_stat(text: &str) -> Result<Stats, String> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines
        .next()
        .ok_or("the conntrack statistics are empty")?
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("the conntrack statistics have no column {name:?}"))
    };
    let (d, e, i) = (col("drop")?, col("early_drop")?, col("insert_failed")?);
    let mut s = Stats::default();
    for (n, line) in lines.enumerate() {
        let v: Vec<&str> = line.split_whitespace().collect();
        let at = |c: usize| -> Result<u64, String> {
            let field = v
                .get(c)
                .ok_or_else(|| format!("line {} of the conntrack statistics is short", n + 2))?;
            u64::from_str_radix(field, 16)
                .map_err(|e| format!("line {} of the conntrack statistics: {field:?}: {e}", n + 2))
        };
        s.drop += at(d)?;
        s.early_drop += at(e)?;
        s.insert_failed += at(i)?;
    }
    Ok(s)
}

fn number(path: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

/// The table of `netns` (a name under /run/netns; `None`: the agent's
/// own namespace).
pub fn read(netns: Option<&str>) -> Result<Stats, NetlinkError> {
    in_netns(netns, || {
        // `/proc/net` is the namespace of the process's main thread;
        // `thread-self` is this one's, which entered `netns`.
        let stat = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")?;
        let mut s = parse_stat(&stat).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        s.entries = number("/proc/sys/net/netfilter/nf_conntrack_count")?;
        s.max = number("/proc/sys/net/netfilter/nf_conntrack_max")?;
        Ok(s)
    })
}

/// Which namespace's table the metrics report, and the kernel counters
/// already counted.
#[derive(Debug, Default)]
pub struct Watch {
    pub netns: Option<String>,
    last: Stats,
}

impl Watch {
    pub fn new(netns: Option<String>) -> Watch {
        Watch {
            netns,
            last: Stats::default(),
        }
    }

    /// Reads the table into `m`. Until conntrack is loaded (the first
    /// ruleset loads it) there is nothing to read and nothing is reported.
    pub fn observe(&mut self, m: &Metrics) {
        let Ok(s) = read(self.netns.as_deref()) else {
            return;
        };
        m.conntrack_entries.set(s.entries as i64);
        m.conntrack_max.set(s.max as i64);
        for (reason, now, before) in [
            ("table_full", s.drop, self.last.drop),
            ("early_drop", s.early_drop, self.last.early_drop),
            ("insert_failed", s.insert_failed, self.last.insert_failed),
        ] {
            // Counters of the kernel only grow while the namespace lives.
            m.conntrack_dropped
                .get_or_create(&label("reason", reason))
                .inc_by(now.saturating_sub(before));
        }
        self.last = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_summed_over_cpus_by_column_name() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
            00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 0000000a 00000002 00000000  00000000 00000000 00000000 00000000\n\
            00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000010 00000000 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(
            parse_stat(text),
            Ok(Stats {
                drop: 26,
                early_drop: 2,
                insert_failed: 1,
                ..Stats::default()
            })
        );
    }

    #[test]
    fn a_malformed_statistic_is_an_error_naming_its_line() {
        assert_eq!(
            parse_stat("entries drop early_drop\n1 2 3\n"),
            Err("the conntrack statistics have no column \"insert_failed\"".into())
        );
        assert_eq!(
            parse_stat("drop early_drop insert_failed\n1 zz 3\n"),
            Err("line 2 of the conntrack statistics: \"zz\": invalid digit found in string".into())
        );
        assert_eq!(
            parse_stat("drop early_drop insert_failed\n1 2\n"),
            Err("line 2 of the conntrack statistics is short".into())
        );
    }
}
