//! Where transactions go: the kernel (`nft`), nowhere (dry run), or memory
//! (tests).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_nft::Ruleset;
use tracing::{debug, warn};

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
    /// Replaces (or removes) the bridge table in one transaction.
    fn apply_bridge(&mut self, text: &str) -> Result<(), BackendError>;
}

/// The kernel, through `nft`, optionally inside a network namespace.
///
/// Element deltas go to one long-lived `nft -i` (see [`Session`]): no
/// process is started and no netlink socket opened or closed per
/// transaction. This matters: closing an nf_tables netlink socket after a
/// transaction that deleted anything waits for the kernel's deferred
/// destruction of what was deleted (several milliseconds), and starting
/// `ip netns exec … nft` costs a few more. Table replacements, rare and
/// large, still run `nft -f -`; so does, once more, any transaction the
/// session rejects: it changed nothing, so `nft -f` fails the same way and
/// its error text is reported (or, if the kernel changed in between,
/// succeeds). If `nft -i` cannot be used at all, every transaction runs
/// `nft -f -`.
#[derive(Debug, Default)]
pub struct Nft {
    netns: Option<String>,
    session: Option<Session>,
    /// `nft -i` failed its first transaction: not tried again.
    no_session: bool,
    counts: NftCounts,
}

/// How an [`Nft`] backend's transactions ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NftCounts {
    /// Committed through the long-lived `nft -i`.
    pub session: u64,
    /// Run with `nft -f -` (replacements, and transactions the session
    /// rejected or could not run), whatever their outcome.
    pub once: u64,
    /// `nft -i` processes started.
    pub sessions_started: u64,
}

impl Clone for Nft {
    /// A clone talks to the same namespace through its own `nft` process.
    fn clone(&self) -> Nft {
        Nft::new(self.netns.clone())
    }
}

/// Transactions run by one `nft -i` before it is replaced by a fresh one:
/// nft keeps every input line in its (libedit) history, in memory.
const SESSION_TRANSACTIONS: u64 = 10_000;

/// Longest wait for `nft -i` to finish one transaction (an element delta
/// takes milliseconds to a few hundred). Past it the session is dropped and
/// `nft -f` used from then on: an nft that does not answer as expected must
/// not stall the agent.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

impl Nft {
    /// `nft` in the network namespace `netns` (`ip netns exec`), or in the
    /// agent's own.
    pub fn new(netns: Option<String>) -> Nft {
        Nft {
            netns,
            session: None,
            no_session: false,
            counts: NftCounts::default(),
        }
    }

    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn counts(&self) -> NftCounts {
        self.counts
    }

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

    /// One transaction through `nft -f -`.
    fn apply_once(&mut self, text: &str) -> Result<(), BackendError> {
        self.counts.once += 1;
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

    /// One transaction through the long-lived session, started if needed.
    /// `Ok(false)`: not committed (rejected, or no session), and nothing
    /// changed. `Err`: the session failed in the middle of the transaction,
    /// which may or may not have been committed.
    fn apply_in_session(&mut self, text: &str) -> Result<bool, BackendError> {
        if self.no_session {
            return Ok(false);
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.serial >= SESSION_TRANSACTIONS)
        {
            self.session = None;
        }
        if self.session.is_none() {
            let mut c = self.command();
            c.arg("-i");
            match Session::start(c, SESSION_TIMEOUT) {
                Ok(s) => {
                    self.session = Some(s);
                    self.counts.sessions_started += 1;
                }
                Err(e) => {
                    warn!(error = %e, "cannot use a long-lived nft -i; running nft -f for every transaction");
                    self.no_session = true;
                    return Ok(false);
                }
            }
        }
        let session = self.session.as_mut().expect("started");
        match session.run(text) {
            Ok(out) if out.is_empty() => {
                self.counts.session += 1;
                Ok(true)
            }
            Ok(out) => {
                debug!(output = %out.trim_end(), "nft -i did not take the transaction");
                Ok(false)
            }
            Err(e) => {
                self.session = None;
                if e.kind() == std::io::ErrorKind::TimedOut {
                    warn!(error = %e, "giving up the long-lived nft -i; running nft -f for every transaction");
                    self.no_session = true;
                }
                Err(BackendError::Spawn {
                    cmd: "nft -i".into(),
                    source: e,
                })
            }
        }
    }
}

/// A long-lived `nft -i` (one process, one netlink socket).
///
/// A transaction is written to a private file, and nft is sent one line,
/// `include "<file>"`: nft runs each input line as one batch, one atomic
/// kernel transaction, with the included text parsed as part of it. (The
/// text itself as one line would do too, but libedit reads its input one
/// byte per system call: about 1 µs a byte; an include is read in blocks.)
/// The file is anonymous memory (`memfd`), or where that is refused an
/// unlinked file in `$TMPDIR`, reached through `/proc/<agent>/fd/<n>`:
/// nothing is left behind, nobody else can write it, and with a memfd the
/// agent needs no writable filesystem at all.
///
/// nft says nothing on success and writes errors to standard error; `nft
/// -i` neither stops on errors nor has an exit status per line. So each
/// transaction line is followed by a *sentinel* line, `=palisade-sync-<n>`,
/// which nft cannot parse (no command starts with `=`) and which touches
/// nothing: its syntax error (the sentinel echoed, then a caret line) is
/// the last thing nft writes for that transaction, since it runs lines in
/// order. Whatever standard error holds before it is the transaction's own
/// output: empty means committed. nft writes nothing to standard output
/// for element commands.
#[derive(Debug)]
struct Session {
    child: Child,
    stdin: ChildStdin,
    /// nft's standard error, read by a thread: a transaction waits for its
    /// sentinel with a deadline, so an nft that never answers (another
    /// version's error format, a hang) costs a timeout, not the agent.
    stderr: Receiver<Vec<u8>>,
    file: File,
    /// The file as nft opens it.
    path: String,
    serial: u64,
    /// How long a transaction may take before the session is given up.
    timeout: Duration,
}

impl Session {
    /// Starts `nft -i` and checks that it reads the transaction file.
    fn start(mut cmd: Command, timeout: Duration) -> std::io::Result<Session> {
        let file = transaction_file()?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
        let mut child = cmd
            // No history file read or written.
            .env("HOME", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stderr = forward(child.stderr.take().expect("piped"))?;
        let mut s = Session {
            child,
            stdin,
            stderr,
            file,
            path,
            serial: 0,
            timeout,
        };
        let out = s.run("")?;
        if out.is_empty() {
            Ok(s)
        } else {
            Err(std::io::Error::other(format!(
                "nft -i does not read {}: {}",
                s.path,
                out.trim_end()
            )))
        }
    }

    /// Runs one transaction; returns what nft wrote for it (empty:
    /// committed).
    fn run(&mut self, text: &str) -> std::io::Result<String> {
        self.file.set_len(0)?;
        self.file.write_all_at(text.as_bytes(), 0)?;
        self.serial += 1;
        let sentinel = format!("=palisade-sync-{}", self.serial);
        let input = format!("include \"{}\"\n{sentinel}\n", self.path);
        self.stdin.write_all(input.as_bytes())?;
        self.stdin.flush()?;
        let needle = format!("\n{sentinel}\n");
        let mut buf = Vec::new();
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(pos) = find(&buf, needle.as_bytes()) {
                if buf[pos + needle.len()..].contains(&b'\n') {
                    // The sentinel's error: the line before the sentinel,
                    // the sentinel and the caret line after it.
                    let start = buf[..pos]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    return Ok(String::from_utf8_lossy(&buf[..start]).into_owned());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "nft -i gave no answer within {:.1} s",
                            self.timeout.as_secs_f64()
                        ),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let said = String::from_utf8_lossy(&buf);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("nft exited: {}", said.trim_end()),
                    ));
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Between transactions: nothing is lost.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new file, only the agent's, with no name: a memfd where the kernel
/// and the seccomp profile allow it, else an unlinked file in `$TMPDIR`.
fn transaction_file() -> std::io::Result<File> {
    // SAFETY: the name is a NUL-terminated literal; the returned descriptor
    // is new and owned by nothing else.
    let fd = unsafe { libc::memfd_create(c"palisade-nft".as_ptr(), libc::MFD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` was just created and is owned by nothing else.
        return Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    let err = std::io::Error::last_os_error();
    debug!(error = %err, "no memfd for nft transactions; using $TMPDIR");
    unlinked_file()
}

/// A new file in `$TMPDIR`, only the agent's, already unlinked.
fn unlinked_file() -> std::io::Result<File> {
    let dir = std::env::temp_dir();
    let mut last = None;
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(
            ".palisade-agent-{}-{nanos:x}-{attempt}.nft",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("attempted"))
}

/// Forwards everything `r` yields to a channel, from a thread of its own;
/// the channel disconnects when `r` ends.
fn forward(mut r: ChildStderr) -> std::io::Result<Receiver<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("nft-stderr".into())
        .spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    Ok(rx)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Backend for Nft {
    fn apply_bridge(&mut self, text: &str) -> Result<(), BackendError> {
        self.apply_once(text)
    }

    fn apply(&mut self, delta: &Delta, text: &str) -> Result<(), BackendError> {
        if text.is_empty() {
            return Ok(());
        }
        if matches!(delta, Delta::Elements(_)) && self.apply_in_session(text)? {
            return Ok(());
        }
        self.apply_once(text)
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
    fn apply_bridge(&mut self, text: &str) -> Result<(), BackendError> {
        print!("{text}");
        Ok(())
    }

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
    /// Bridge table transactions (`nft -f` text).
    pub bridge_texts: Vec<String>,
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
    fn apply_bridge(&mut self, text: &str) -> Result<(), BackendError> {
        let mut s = self.state();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(BackendError::Rejected("injected failure".into()));
        }
        s.bridge_texts.push(text.to_string());
        Ok(())
    }

    fn apply(&mut self, delta: &Delta, text: &str) -> Result<(), BackendError> {
        let mut s = self.state();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(BackendError::Rejected("injected failure".into()));
        }
        delta::apply_to(&mut s.table, delta)?;
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

#[cfg(test)]
mod session_tests {
    use super::*;

    /// The deployment gives the agent no writable filesystem: transactions
    /// live in memory, and nft can still open them by their `/proc` path.
    #[test]
    fn transactions_need_no_filesystem() {
        let file = transaction_file().unwrap();
        let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
        let target = std::fs::read_link(&path).unwrap();
        assert!(
            target.to_string_lossy().starts_with("/memfd:palisade-nft"),
            "{target:?}"
        );
        file.write_all_at(b"add table inet t\n", 0).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"add table inet t\n");
    }

    /// A process that reads nothing and says nothing stands for an nft that
    /// never answers: the transaction times out instead of blocking.
    #[test]
    fn a_silent_session_times_out() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        // Had it waited for `sleep` to exit, the error would be nft's exit.
        let err = Session::start(cmd, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    }

    /// A process that exits at once stands for an nft that cannot run:
    /// reported as such, at once.
    #[test]
    fn a_session_that_exits_is_an_error() {
        let err = Session::start(Command::new("true"), Duration::from_secs(20)).unwrap_err();
        assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    }
}
