//! A full conntrack table: new connections are dropped (the node fails
//! closed) and the agent reports it.
//!
//! `nf_conntrack_max` is one limit for the whole host (read-only in other
//! namespaces on this kernel), compared with each namespace's own count. So
//! the test fills node-a's table to a limit above every other namespace's
//! count, lowers the host's limit to it for a moment, and restores it, on
//! failure too.

use std::process::Command;
use std::time::Duration;

use palisade_lab::CniPlugin;

use super::{up, ALLOWED};
use crate::harness;

const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Puts the host's limit back when dropped.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(MAX, &self.0).expect("restoring nf_conntrack_max");
    }
}

fn count_in(netns: Option<&str>) -> u64 {
    let path = "/proc/sys/net/netfilter/nf_conntrack_count";
    let text = match netns {
        None => std::fs::read_to_string(path).unwrap_or_default(),
        Some(ns) => {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "cat", path])
                .output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        }
    };
    text.trim().parse().unwrap_or(0)
}

/// The largest count of any namespace but `ours`.
fn others_peak(ours: &str) -> u64 {
    let names = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    names
        .iter()
        .filter(|n| *n != ours)
        .map(|n| count_in(Some(n)))
        .chain([count_in(None)])
        .max()
        .unwrap_or(0)
}

fn conntrack(netns: &str, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["netns", "exec", netns, "conntrack"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        ok.status.success() || args[0] == "-F",
        "conntrack {args:?}: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Fills `netns`'s table with `n` assured entries (never evicted early)
/// between documentation addresses no packet of the lab carries.
fn fill(netns: &str, n: u64) {
    let mut lines = String::new();
    for i in 0..n {
        let (a, p) = (i / 60000, 1024 + i % 60000);
        lines.push_str(&format!(
            "-I -p udp -s 192.0.2.{} -d 198.51.100.1 --sport {p} --dport 9 -t 600 -u ASSURED\n",
            a + 1
        ));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines).unwrap();
    conntrack(netns, &["-R", &file.path().to_string_lossy()]);
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_full_conntrack_table_fails_closed_and_is_reported_routed() {
    let _alone = harness::alone();
    let Some(h) = up("x", &CniPlugin::Ptp) else {
        return;
    };
    let metrics = h.agents[0].metrics.clone();
    let delivered = || {
        let l = crate::spoof::listen(&h.a3.netns, h.a3.v4);
        crate::spoof::send(&h.a2.netns, h.a2.v4, h.a3.v4);
        let got = crate::spoof::received(&l, Duration::from_millis(700));
        got.contains(&h.a2.v4)
    };
    assert_eq!(crate::spoof::PORT, ALLOWED);
    assert!(delivered(), "a2 reaches a3 before the table fills");
    let text = metrics.encode();
    let host_max: u64 = std::fs::read_to_string(MAX)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        metric(&text, "palisade_agent_conntrack_max"),
        Some(host_max),
        "{text}"
    );
    assert_eq!(
        metric(&text, "palisade_agent_conntrack_entries"),
        Some(count_in(Some(&h.node_a))),
        "{text}"
    );

    // Unreplied entries would be evicted for new ones: start from none.
    conntrack(&h.node_a, &["-F"]);
    let limit = (others_peak(&h.node_a) * 4 + 1024).max(2048).min(host_max);
    fill(&h.node_a, limit);
    let full = {
        let _restore = Restore(host_max.to_string());
        std::fs::write(MAX, limit.to_string()).unwrap();
        let passed = delivered();
        let text = metrics.encode();
        (passed, text)
    };
    let (passed, text) = full;
    assert!(!passed, "a new connection passed with the table full");
    assert_eq!(
        metric(&text, "palisade_agent_conntrack_max"),
        Some(limit),
        "{text}"
    );
    assert!(
        metric(&text, "palisade_agent_conntrack_entries") >= Some(limit),
        "{text}"
    );
    let drops = metric(
        &text,
        "palisade_agent_conntrack_dropped_total{reason=\"table_full\"}",
    );
    assert!(drops.is_some_and(|d| d > 0), "{text}");

    conntrack(&h.node_a, &["-F"]);
    assert!(delivered(), "a2 reaches a3 once the table has room again");
    h.down();
}
