//! Where transactions go: the kernel (`nft`), nowhere (dry run), or memory
//! (tests).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use palisade_nft::Ruleset;

use crate::delta::{self, Delta};
use crate::kernel::KernelTable;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("running {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("nft rejected the transaction: {0}")]
    Rejected(String),
    #[error("reading the table: {0}")]
    Read(String),
}

/// One node's table.
pub trait Backend: Send {
    /// Runs one transaction. `text` is `delta` rendered for `nft -f`; a
    /// failed transaction changes nothing.
    fn apply(&mut self, delta: &Delta, text: &str) -> Result<(), BackendError>;
    /// The current table, or `None` when there is none.
    fn read(&mut self) -> Result<Option<KernelTable>, BackendError>;
}

/// The kernel, through `nft`, optionally inside a network namespace.
#[derive(Clone, Debug, Default)]
pub struct Nft {
    pub netns: Option<String>,
}

impl Nft {
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        }
    }
}

impl Backend for Nft {
    fn apply(&mut self, _delta: &Delta, text: &str) -> Result<(), BackendError> {
        if text.is_empty() {
            return Ok(());
        }
        let spawn = |e| BackendError::Spawn {
            cmd: "nft -f -".into(),
            source: e,
        };
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("piped");
        // A write error shows up as nft's failure below.
        let _ = stdin.write_all(text.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(BackendError::Rejected(
                err.lines().take(6).collect::<Vec<_>>().join("; "),
            ))
        }
    }

    fn read(&mut self) -> Result<Option<KernelTable>, BackendError> {
        let out = self
            .command()
            .args([
                "-j",
                "list",
                "table",
                palisade_nft::FAMILY,
                palisade_nft::TABLE,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BackendError::Spawn {
                cmd: "nft -j list table".into(),
                source: e,
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(BackendError::Read(err.trim().to_string()));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| BackendError::Read(e.to_string()))?;
        KernelTable::from_json(&doc)
            .map(Some)
            .ok_or_else(|| BackendError::Read("unexpected nft JSON".into()))
    }
}

/// Prints each transaction to stdout and touches nothing.
#[derive(Clone, Debug, Default)]
pub struct DryRun;

impl Backend for DryRun {
    fn apply(&mut self, _delta: &Delta, text: &str) -> Result<(), BackendError> {
        print!("{text}");
        Ok(())
    }
    fn read(&mut self) -> Result<Option<KernelTable>, BackendError> {
        Ok(None)
    }
}

/// What a [`Recording`] backend holds: an in-memory table with the kernel's
/// strictness, and every transaction.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub table: Option<Ruleset>,
    pub deltas: Vec<Delta>,
    pub texts: Vec<String>,
    /// Fail this many next transactions (fault injection).
    pub fail_next: usize,
}

/// An in-memory table for tests; clones share the state.
#[derive(Clone, Debug, Default)]
pub struct Recording(pub Arc<Mutex<Recorded>>);

impl Recording {
    pub fn new() -> Recording {
        Recording::default()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for Recording {
    fn apply(&mut self, delta: &Delta, text: &str) -> Result<(), BackendError> {
        let mut s = self.state();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(BackendError::Rejected("injected failure".into()));
        }
        delta::apply_to(&mut s.table, delta).map_err(BackendError::Rejected)?;
        s.deltas.push(delta.clone());
        s.texts.push(text.to_string());
        Ok(())
    }

    fn read(&mut self) -> Result<Option<KernelTable>, BackendError> {
        let s = self.state();
        Ok(s.table.as_ref().and_then(|t| {
            let mut k = KernelTable::from_json(&t.to_json())?;
            k.comment = Some(format!(
                "{}{}",
                delta::STRUCTURE_COMMENT,
                delta::structure_hash(t)
            ));
            Some(k)
        }))
    }
}
