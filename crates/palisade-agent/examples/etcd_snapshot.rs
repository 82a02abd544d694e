//! The etcd source's snapshot at size: time and peak memory for N pods as
//! kubectl stores them (about 5 KB each with the last-applied annotation),
//! against 1,000 pods measured in the same run.
//!
//! ```text
//! cargo run --release -p palisade-agent --example etcd_snapshot -- 50000
//! ```
//!
//! Starts its own etcd in a temporary directory on 127.0.0.1 (the `etcd`
//! binary must be installed). Each snapshot runs in a fresh process whose
//! peak memory (VmHWM) covers the pages in flight and the decoded entries,
//! not etcd; "rise" is that peak less the process's memory before it.

#[path = "../tests/etcd_server/mod.rs"]
mod etcd_server;

use std::process::Command;
use std::time::Instant;

use etcd_client::Client;
use etcd_server::{block_on, put_pods, Etcd};
use palisade_agent::etcd;

const BASELINE: usize = 1_000;
const ROUNDS: usize = 3;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In a process of its own, so that its peak is the snapshot's alone:
/// prints the snapshot's seconds, then VmRSS before and VmHWM after, in KiB.
fn measure(endpoint: &str, pods: usize) {
    let ep = vec![endpoint.to_string()];
    let client = block_on(Client::connect(&ep, None)).unwrap();
    let before = status_kib("VmRSS:");
    let t = Instant::now();
    let (_, entries) = block_on(etcd::snapshot(&client, &ep)).expect("a snapshot");
    let seconds = t.elapsed().as_secs_f64();
    let bad = entries.iter().filter(|e| !e.errors.is_empty()).count();
    assert_eq!((entries.len(), bad), (pods, 0), "every pod, none rejected");
    println!("{seconds} {before} {}", status_kib("VmHWM:"));
}

struct Run {
    pods: usize,
    seconds: f64,
    peak_mib: f64,
    rise_mib: f64,
}

/// The median time and the largest peak of `ROUNDS` snapshots.
fn run(endpoint: &str, pods: usize) -> Run {
    let mut rounds: Vec<(f64, f64, f64)> = (0..ROUNDS)
        .map(|_| {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--measure", endpoint, &pods.to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            (v[0], v[1] / 1024.0, v[2] / 1024.0)
        })
        .collect();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let peak = rounds.iter().map(|r| r.2).fold(0.0, f64::max);
    let rise = rounds.iter().map(|r| r.2 - r.1).fold(0.0, f64::max);
    Run {
        pods,
        seconds: rounds[ROUNDS / 2].0,
        peak_mib: peak,
        rise_mib: rise,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--measure") {
        return measure(&args[2], args[3].parse().unwrap());
    }
    let n: usize = args
        .get(1)
        .map(|a| a.parse().expect("a number of pods"))
        .unwrap_or(50_000)
        .max(BASELINE);
    let tmp = tempfile::tempdir().unwrap();
    let quota = (8u64 << 30).to_string();
    let Some(etcd) = Etcd::start_with(tmp.path(), &["--quota-backend-bytes", &quota]) else {
        std::process::exit(2);
    };
    let ep = vec![etcd.client.clone()];
    let mut client = block_on(Client::connect(&ep, None)).unwrap();

    let mut bytes = block_on(put_pods(&mut client, "pod", 0, BASELINE));
    let value = bytes / BASELINE;
    let base = run(&etcd.client, BASELINE);
    let t = Instant::now();
    bytes += block_on(put_pods(&mut client, "pod", BASELINE, n - BASELINE));
    println!(
        "wrote {n} pods, {:.0} MB, in {:.0} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let big = run(&etcd.client, n);

    println!("value size: about {value} bytes per pod (key and JSON)");
    println!("median of {ROUNDS} snapshots, each in a fresh process; peak is VmHWM");
    println!("  pods  MB in etcd  snapshot s  peak MiB  rise MiB");
    for r in [&base, &big] {
        println!(
            "{:>6}  {:>10.0}  {:>10.2}  {:>8.0}  {:>8.0}",
            r.pods,
            (r.pods * value) as f64 / 1e6,
            r.seconds,
            r.peak_mib,
            r.rise_mib
        );
    }
    println!(
        "ratios for {:.0}x the pods: time {:.1}x, memory rise {:.1}x",
        n as f64 / BASELINE as f64,
        big.seconds / base.seconds,
        big.rise_mib / base.rise_mib.max(0.001)
    );
}
