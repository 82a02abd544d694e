//! What the agent binary says to people: log lines without terminal
//! escape codes when stderr is a pipe, and `/readyz` and `/healthz` in
//! plain sentences. Runs with `--dry-run`, so it needs no root.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {nodeName: worker-1}
status: {phase: Running, podIP: 10.9.0.1}
";

/// The agent binary for `node` on `dir`, dry-run, logging at the default
/// level to a pipe, with colour not turned off by the environment.
fn spawn(node: &str, dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "agent",
            "--node",
            node,
            "--dry-run",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts the agent for `node` on a directory holding one pod on
/// `worker-1`; returns it and its log lines so far, read
/// until a line containing `until` (or the agent exits).
fn agent(node: &str, until: &str) -> (Kill, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pods.yaml"), POD).unwrap();
    let mut child = spawn(node, dir.path());
    let lines = lines_until(child.stderr.take().unwrap(), until);
    std::mem::forget(dir);
    (Kill(child), lines)
}

/// Lines of `out` up to the first containing `until` (or its end, or 30 s
/// of silence). A thread reads it to the end, so the agent never writes
/// into a closed pipe.
fn lines_until(out: impl std::io::Read + Send + 'static, until: &str) -> Vec<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains(until);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

/// The address the agent's log says it serves on.
fn address(lines: &[String]) -> SocketAddr {
    lines
        .iter()
        .find_map(|l| {
            let at = l.find("addr=")? + 5;
            l[at..].split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no address in the log: {lines:#?}"))
}

/// Regression: logs written to a pipe carried ANSI colour codes.
#[test]
fn logs_to_a_pipe_have_no_escape_codes() {
    let (_agent, lines) = agent("worker-1", "table in sync");
    assert!(
        lines.iter().any(|l| l.contains("table in sync")),
        "{lines:#?}"
    );
    for l in &lines {
        assert!(!l.contains('\u{1b}'), "escape code in {l:?}");
    }
}

/// Regression: a misspelt `--node` enforced nothing and said ready.
#[test]
fn a_misspelt_node_is_not_ready_and_says_why() {
    let (_agent, lines) = agent("Worker-1", "did you mean");
    let addr = address(&lines);
    let warned = lines.iter().find(|l| l.contains("did you mean")).cloned();
    let warned = warned.unwrap_or_else(|| panic!("no warning: {lines:#?}"));
    assert!(warned.contains("\"worker-1\""), "{warned}");
    let (code, body) = palisade_agent::http::get(addr, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: node \"Worker-1\""), "{body}");
    let (code, body) = palisade_agent::http::get(addr, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("did you mean \"worker-1\""), "{body}");
}

/// Regression: the logging library reports a failed write with
/// `eprintln!`, which panics on a closed stderr: an agent whose log
/// reader went away died.
#[test]
fn the_agent_outlives_its_log_reader() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pods.yaml"), POD).unwrap();
    let mut child = spawn("worker-1", dir.path());
    let mut first = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut first).unwrap();
    let addr = address(&[first]);
    drop(stderr);
    // Something to log about: a new file.
    std::fs::write(
        dir.path().join("more.yaml"),
        POD.replace("web", "api").replace("10.9.0.1", "10.9.0.2"),
    )
    .unwrap();
    let mut agent = Kill(child);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited");
    }
    let (code, _) = palisade_agent::http::get(addr, "/healthz").unwrap();
    assert_eq!(code, 200);
}

/// `--kept-mark-bits` reaches the ruleset the agent applies, and a mask
/// it cannot keep is refused before anything starts, naming the flag.
#[test]
fn kept_mark_bits_are_applied_or_refused() {
    let refused = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["agent", "--node", "worker-1", "--dry-run"])
        .args(["--kept-mark-bits", "0xff00"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--kept-mark-bits") && err.contains("0xff00 has 8 bits, at most 4"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pods.yaml"), POD).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["agent", "--node", "worker-1", "--dry-run"])
        .args(["--listen", "127.0.0.1:0", "--kept-mark-bits", "0x8000"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = lines_until(child.stdout.take().unwrap(), "goto from_pod_mark_8000");
    let _agent = Kill(child);
    let dispatch: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("meta mark & 0x"))
        .collect();
    assert!(
        !dispatch.is_empty() && dispatch.iter().all(|l| l.contains("meta mark & 0x8000 ==")),
        "{seen:#?}"
    );
}
