//! docs/walkthrough.md, run: every `sh` block in order, in one shell, with
//! this build's `palisade` first on the PATH. The checks are the page's
//! own (`grep -q`, `test`); a failing one fails this test with the shell's
//! trace. Root only (the lab and the agents); under CI it must run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The page's `sh` blocks, joined.
fn script(page: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in page.lines() {
        match (inside, line.trim_end()) {
            (false, "```sh") => inside = true,
            (true, "```") => {
                inside = false;
                out.push('\n');
            }
            (true, l) => {
                out.push_str(l);
                out.push('\n');
            }
            _ => {}
        }
    }
    assert!(!inside, "an sh block is not closed");
    out
}

#[test]
fn the_walkthrough_runs_as_written() {
    if !palisade_lab::sys::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI the walkthrough must run (root)"
        );
        eprintln!("skipped: the walkthrough needs root");
        return;
    }
    let page = std::fs::read_to_string(repo().join("docs/walkthrough.md")).unwrap();
    let body = script(&page);
    assert!(
        body.contains("palisade promote"),
        "the page lost its blocks"
    );
    let w = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_palisade"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _ = palisade_lab::down("walk");
    // Whatever happens, the agents stop and the lab goes.
    let full = format!(
        "set -euo pipefail -x\ntrap 'kill $(cat \"$W/pids\" 2>/dev/null) 2>/dev/null; palisade lab down --name walk >/dev/null 2>&1' EXIT\n{body}"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .current_dir(repo())
        .env("PATH", path)
        .env("W", w.path())
        .output()
        .unwrap();
    let logs: String = ["agent-1.log", "agent-2.log"]
        .iter()
        .map(|f| {
            let t = std::fs::read_to_string(w.path().join(f)).unwrap_or_default();
            format!(
                "--- {f}\n{}",
                t.lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "the walkthrough failed:\n--- stdout\n{}\n--- stderr\n{}\n{logs}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
