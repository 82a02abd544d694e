//! The command line at cluster scale, end to end: the synthetic 10,000-pod
//! / 1,000-policy cluster written as manifest files, a file of 100,000
//! flows, and the release `palisade` binary run on them for `validate`,
//! `check --flows` and `matrix -o json --by workload`. Reports each run's
//! wall time and peak memory (the child's maximum resident set, from
//! `wait4`), and the ratio of `check --flows` to `validate` measured in
//! the same run (the bar: under 3x).
//!
//! ```text
//! cargo build --release -p palisade --bin palisade
//! cargo run --release -p palisade-bench --example cli_scale -- \
//!     [--bin target/release/palisade] [--flows 100000] [--runs 3]
//! ```

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_bench::manifests;
use palisade_bench::synth::{self, Params};
use palisade_model::Cluster;

/// A random flow between two pods by name, on a port the synthetic pods
/// serve (or one they do not).
fn flows(c: &Cluster, n: usize, seed: u64) -> String {
    let mut r = synth::Rng::new(seed);
    let ports = ["80/TCP", "8080/TCP", "53/UDP", "443/TCP"];
    let mut out = String::with_capacity(n * 40);
    for _ in 0..n {
        let s = &c.pods[r.below(c.pods.len())];
        let d = &c.pods[r.below(c.pods.len())];
        out.push_str(&format!(
            "{} {} {}\n",
            s.key(),
            d.key(),
            ports[r.below(ports.len())]
        ));
    }
    out
}

struct Run {
    wall: Duration,
    max_rss_kib: i64,
    code: i32,
}

/// Runs `bin args`, stdout to /dev/null and stderr to `log`, and reaps it
/// with `wait4` so that its own peak memory is read, not the largest of
/// all children so far.
// The child is reaped by `wait4`, which `Child` does not know about.
#[allow(clippy::zombie_processes)]
fn run(bin: &Path, args: &[&str], log: &Path) -> Run {
    let err = std::fs::File::create(log).expect("create the log");
    let t = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; status and usage are
    // valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    if code != 0 {
        let err = std::fs::read_to_string(log).unwrap_or_default();
        let head: Vec<&str> = err.lines().take(5).collect();
        eprintln!("{args:?} exited {code}:\n{}", head.join("\n"));
    }
    Run {
        wall,
        max_rss_kib: usage.ru_maxrss,
        code,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let default_bin = PathBuf::from(target).join("release/palisade");
    let bin: PathBuf = arg(&args, "--bin", default_bin);
    let n_flows: usize = arg(&args, "--flows", 100_000);
    let runs: usize = arg(&args, "--runs", 3).max(1);

    let params = Params::large();
    let cluster = synth::cluster(&params);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = manifests::write(dir.path(), &cluster, 100).expect("write the manifests");
    let flow_file = dir.path().join("flows.txt");
    std::fs::write(&flow_file, flows(&cluster, n_flows, 7)).expect("write the flows");
    println!(
        "cluster: {} pods, {} policies, {} namespaces, {} nodes in {} files; {n_flows} flows; {}; median of {runs}",
        cluster.pods.len(),
        cluster.policies.len(),
        cluster.namespaces.len(),
        cluster.nodes.len(),
        files.len(),
        bin.display()
    );
    let flows_s = flow_file.to_str().expect("a UTF-8 path").to_string();
    // The flows file lives beside the manifests; `-f` names the manifest
    // files only (a text file in the tree would be a warning).
    let cluster_files: Vec<String> = files
        .iter()
        .map(|f| f.to_str().expect("a UTF-8 path").to_string())
        .collect();
    let with_files = |cmd: &[&str], tail: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.push("-f".into());
        v.extend(cluster_files.iter().cloned());
        v.extend(tail.iter().map(|s| s.to_string()));
        v
    };
    let commands: [(&str, Vec<String>); 3] = [
        ("validate", with_files(&["validate"], &[])),
        (
            "check --flows",
            with_files(&["check"], &["--flows", &flows_s]),
        ),
        (
            "matrix -o json --by workload",
            with_files(&["matrix"], &["-o", "json", "--by", "workload"]),
        ),
    ];
    println!(
        "{:30} {:>10} {:>14} {:>6}",
        "command", "wall", "peak RSS", "exit"
    );
    let mut walls = Vec::new();
    for (name, argv) in &commands {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = dir.path().join("stderr.log");
        let results: Vec<Run> = (0..runs).map(|_| run(&bin, &argv, &log)).collect();
        let wall = median(results.iter().map(|r| r.wall).collect());
        let rss = results.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
        let codes: Vec<String> = results.iter().map(|r| r.code.to_string()).collect();
        println!(
            "{name:30} {:>8.2} s {:>10} MiB {:>6}",
            wall.as_secs_f64(),
            rss / 1024,
            codes.join(",")
        );
        walls.push(wall);
    }
    println!(
        "check --flows / validate: {:.2}x (bar: under 3x)",
        walls[1].as_secs_f64() / walls[0].as_secs_f64()
    );
}
