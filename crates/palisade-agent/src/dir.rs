//! A directory of manifests, watched with `notify`.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the directory is one
//! origin, `dir:<path>`; the tree is walked as [`manifests`] does for the
//! command line (hidden entries skipped, each directory and file read once,
//! regular files only, none over the size limit).
//!
//! - Only a file that is gone removes its objects. A file that cannot be
//!   read (a broken link, a FIFO, a file over the limit, a directory that
//!   cannot be listed) is sent as an entry whose error names no object: the
//!   agent keeps its last good objects and reports the file in `/healthz`.
//! - Only changes are handled. Reading the tree produces events too (opens
//!   and closes without writing); reacting to those would read it forever.
//!   Events are collected until the tree is quiet for [`QUIET`], then each
//!   changed path is examined once: a file is read again, a directory
//!   walked again. A file open for writing is read after it is closed, not
//!   half written. Content equal to what was last sent sends nothing.
//! - Everything is read again only when the watcher lost events. The watch
//!   starts before the first scan, so no change between the two is lost.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use notify::{Event, RecursiveMode, Watcher};
use palisade_k8s::{Diagnostic, Severity};
use tracing::warn;

use crate::burst::Batch;
use crate::input::{Entry, Input};
use crate::manifests::{self, Found, ReadError, Skip, Walker};
use crate::Error;

pub const SCOPE: &str = "dir:";

pub use crate::burst::QUIET;

fn origin(p: &Path) -> String {
    format!("{SCOPE}{}", p.display())
}

/// An entry that keeps the origin's last good objects: its error names no
/// object.
fn problem(path: &Path, message: String) -> Entry {
    Entry {
        origin: origin(path),
        objects: Vec::new(),
        errors: vec![Diagnostic {
            severity: Severity::Error,
            file: path.display().to_string(),
            line: None,
            object: None,
            field: None,
            message,
        }],
    }
}

/// What was last sent for an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    Bytes { len: usize, hash: u64 },
    Problem(String),
}

#[derive(Clone, Debug)]
struct Known {
    sent: Sent,
    via_link: bool,
}

/// What was read of the tree and what was sent for it.
struct Tree {
    root: PathBuf,
    walker: Walker,
    known: BTreeMap<PathBuf, Known>,
    /// Links to directories read under another path (events may name
    /// either path), and files reached again: path → the path read.
    aliases: BTreeMap<PathBuf, PathBuf>,
    dups: BTreeMap<PathBuf, PathBuf>,
    reads: Arc<AtomicU64>,
}

/// The entries of `map` at or under `path`, taken out of it.
fn take_under<V>(map: &mut BTreeMap<PathBuf, V>, path: &Path) -> BTreeMap<PathBuf, V> {
    let keys: Vec<PathBuf> = map
        .range(path.to_path_buf()..)
        .take_while(|(k, _)| k.starts_with(path))
        .map(|(k, _)| k.clone())
        .collect();
    keys.into_iter()
        .filter_map(|k| map.remove_entry(&k))
        .collect()
}

impl Tree {
    fn new(root: PathBuf, reads: Arc<AtomicU64>) -> Tree {
        Tree {
            root,
            walker: Walker::new(),
            known: BTreeMap::new(),
            aliases: BTreeMap::new(),
            dups: BTreeMap::new(),
            reads,
        }
    }

    /// Everything, read again.
    fn scan(&mut self) -> Input {
        let previous = std::mem::take(&mut self.known);
        self.walker = Walker::new();
        self.aliases.clear();
        self.dups.clear();
        let mut found = Vec::new();
        if let Err(e) = self.walker.root(&self.root, &mut found) {
            self.known = previous;
            return Input::SourceDown {
                scope: SCOPE.to_string(),
                reason: format!("{}: {e}", self.root.display()),
            };
        }
        let mut entries = Vec::new();
        self.absorb(found, &previous, true, &mut entries);
        Input::Resync {
            scope: SCOPE.to_string(),
            entries,
        }
    }

    /// Records what the walk found, pushing an entry for each origin that
    /// differs from `previous` (each one, if `all`). Returns the paths of
    /// files read earlier under another path and found again here: their
    /// content may have changed.
    fn absorb(
        &mut self,
        found: Vec<Found>,
        previous: &BTreeMap<PathBuf, Known>,
        all: bool,
        out: &mut Vec<Entry>,
    ) -> Vec<PathBuf> {
        let mut firsts = Vec::new();
        for f in found {
            match f {
                Found::File { path, via_link } => {
                    self.reads.fetch_add(1, Ordering::Relaxed);
                    match manifests::read(&path) {
                        Ok(bytes) => {
                            let mut h = DefaultHasher::new();
                            bytes.hash(&mut h);
                            let sent = Sent::Bytes {
                                len: bytes.len(),
                                hash: h.finish(),
                            };
                            let known = Known { sent, via_link };
                            self.put(&path, known, previous, all, out, || {
                                let name = path.display().to_string();
                                Entry::decode_bytes(origin(&path), &name, &bytes)
                            });
                        }
                        // Removed since the walk: the removal's own event
                        // follows.
                        Err(ReadError::Gone) => {}
                        Err(e) => {
                            self.put_problem(&path, e.to_string(), via_link, previous, all, out)
                        }
                    }
                }
                Found::Skipped { path, why } => match &why {
                    Skip::NotRegular(_) => {
                        self.put_problem(&path, why.to_string(), false, previous, all, out)
                    }
                    Skip::DirSeen { first, .. } => {
                        warn!(path = %path.display(), "skipped: {why}");
                        self.aliases.insert(path, first.clone());
                    }
                    Skip::FileSeen { first, .. } => {
                        warn!(path = %path.display(), "skipped: {why}");
                        firsts.push(first.clone());
                        self.dups.insert(path, first.clone());
                    }
                    Skip::Broken(_) => {
                        warn!(path = %path.display(), "skipped: {why}");
                        let m = format!("{}: {why}", path.display());
                        self.keep_under(&path, &m, previous, all, out);
                    }
                },
                Found::Unreadable { path, dir, error } => {
                    if dir {
                        let m = format!("{}: {error}", path.display());
                        self.keep_under(&path, &m, previous, all, out);
                    }
                    self.put_problem(&path, error, false, previous, all, out);
                }
            }
        }
        firsts
    }

    fn put(
        &mut self,
        path: &Path,
        known: Known,
        previous: &BTreeMap<PathBuf, Known>,
        all: bool,
        out: &mut Vec<Entry>,
        entry: impl FnOnce() -> Entry,
    ) {
        if all || previous.get(path).is_none_or(|k| k.sent != known.sent) {
            out.push(entry());
        }
        self.known.insert(path.to_path_buf(), known);
    }

    fn put_problem(
        &mut self,
        path: &Path,
        message: String,
        via_link: bool,
        previous: &BTreeMap<PathBuf, Known>,
        all: bool,
        out: &mut Vec<Entry>,
    ) {
        let known = Known {
            sent: Sent::Problem(message.clone()),
            via_link,
        };
        self.put(path, known, previous, all, out, || problem(path, message));
    }

    /// Keeps the origins known under a directory that cannot be read, with
    /// the error: what it holds is unknown, not gone.
    fn keep_under(
        &mut self,
        dir: &Path,
        message: &str,
        previous: &BTreeMap<PathBuf, Known>,
        all: bool,
        out: &mut Vec<Entry>,
    ) {
        let under = previous
            .range(dir.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(dir))
            .filter(|(k, _)| *k != dir);
        let under: Vec<(PathBuf, bool)> = under.map(|(k, v)| (k.clone(), v.via_link)).collect();
        for (path, via_link) in under {
            self.put_problem(&path, message.to_string(), via_link, previous, all, out);
        }
    }

    /// `path` with any link to a directory read under another path
    /// replaced by that path, as the walk knows it.
    fn translate(&self, path: &Path) -> PathBuf {
        let mut p = path.to_path_buf();
        // Bounded: aliases can chain, never loop forever.
        for _ in 0..40 {
            let alias = self
                .aliases
                .iter()
                .filter(|(link, _)| p.starts_with(link) && p != **link)
                .max_by_key(|(link, _)| link.components().count());
            let Some((link, first)) = alias else { break };
            p = first.join(p.strip_prefix(link).expect("checked prefix"));
        }
        p
    }

    /// Whether `path` belongs to the walked tree (its directory was walked
    /// and its name is not hidden), and whether it is reached through a
    /// link.
    fn place(&self, path: &Path) -> Option<bool> {
        if path == self.root {
            return Some(false);
        }
        let rel = path.strip_prefix(&self.root).ok()?;
        if rel
            .components()
            .any(|c| manifests::is_hidden_name(c.as_os_str()))
        {
            return None;
        }
        self.walker.walked(path.parent()?)
    }

    /// Examines `path` again, pushing what changed at or under it. Returns
    /// whether the path means anything to the tree, and other paths that
    /// need reading again (others reaching the same files).
    fn rescan(
        &mut self,
        path: &Path,
        via_link: bool,
        out: &mut Vec<Input>,
    ) -> (bool, Vec<PathBuf>) {
        let previous = take_under(&mut self.known, path);
        self.walker.forget(path);
        take_under(&mut self.aliases, path);
        take_under(&mut self.dups, path);
        let mut found = Vec::new();
        if path == self.root {
            if let Err(e) = self.walker.root(path, &mut found) {
                // The watched directory itself is gone: keep everything.
                self.known = previous;
                out.push(Input::SourceDown {
                    scope: SCOPE.to_string(),
                    reason: format!("{}: {e}", path.display()),
                });
                return (true, Vec::new());
            }
        } else {
            self.walker.entry(path, via_link, &mut found);
        }
        let accounted = !previous.is_empty() || !found.is_empty();
        let mut entries = Vec::new();
        let mut more = self.absorb(found, &previous, false, &mut entries);
        out.extend(entries.into_iter().map(Input::Upsert));
        for p in previous.keys().filter(|p| !self.known.contains_key(*p)) {
            out.push(Input::Delete { origin: origin(p) });
        }
        // Paths that reached what was here under another name: if it was
        // removed, they are now the way to it.
        for (seen, first) in self.aliases.iter().chain(&self.dups) {
            if first.starts_with(path) && !seen.starts_with(path) {
                more.push(seen.clone());
            }
        }
        (accounted, more)
    }

    /// Handles a burst of changed paths.
    fn changed(&mut self, paths: BTreeSet<PathBuf>) -> Vec<Input> {
        let mut out = Vec::new();
        let mut done: Vec<PathBuf> = Vec::new();
        let mut queue: VecDeque<PathBuf> = paths
            .iter()
            .map(|p| self.translate(p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut unaccounted = false;
        let mut linked_read = false;
        loop {
            while let Some(p) = queue.pop_front() {
                if done.iter().any(|d| p.starts_with(d)) {
                    continue;
                }
                let Some(via_link) = self.place(&p) else {
                    unaccounted = true;
                    continue;
                };
                let (accounted, more) = self.rescan(&p, via_link, &mut out);
                unaccounted |= !accounted;
                done.push(p);
                queue.extend(more);
            }
            // A change the tree cannot place (in a hidden directory, behind
            // a link) may be a change to the target of a link: such files
            // are read again, and sent only if their content changed.
            if !unaccounted || linked_read {
                return out;
            }
            linked_read = true;
            queue.extend(
                self.known
                    .iter()
                    .filter(|(_, k)| k.via_link)
                    .map(|(p, _)| p.clone()),
            );
        }
    }
}

fn run(mut tree: Tree, events: Receiver<notify::Result<Event>>, tx: Sender<Input>) {
    let mut batch = Batch::default();
    loop {
        let now = Instant::now();
        if let Some((full, paths)) = batch.take(now) {
            let inputs = if full {
                vec![tree.scan()]
            } else {
                tree.changed(paths)
            };
            for i in inputs {
                if tx.send(i).is_err() {
                    return;
                }
            }
            continue;
        }
        let ev = match batch.deadline() {
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => events.recv_timeout(t.saturating_duration_since(now)),
        };
        match ev {
            Ok(ev) => batch.add(ev, Instant::now()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Every manifest under `dir`, decoded.
pub fn scan(dir: &Path) -> Input {
    Tree::new(dir.to_path_buf(), Arc::default()).scan()
}

/// A running directory source.
pub struct DirSource {
    reads: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl DirSource {
    /// Files opened for reading so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn into_thread(self) -> JoinHandle<()> {
        self.thread
    }
}

/// Watches `dir` on a thread, sending inputs until `tx` is closed
/// ([`Error::Watch`] when it cannot be watched).
pub fn watch(dir: PathBuf, tx: Sender<Input>) -> Result<DirSource, Error> {
    let dir =
        std::fs::canonicalize(&dir).map_err(|e| Error::Watch(format!("{}: {e}", dir.display())))?;
    let (ntx, nrx) = channel();
    let mut watcher = notify::recommended_watcher(ntx).map_err(|e| Error::Watch(e.to_string()))?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| Error::Watch(format!("watching {}: {e}", dir.display())))?;
    let reads = Arc::new(AtomicU64::new(0));
    let mut tree = Tree::new(dir, reads.clone());
    tx.send(tree.scan())
        .map_err(|e| Error::Watch(e.to_string()))?;
    let thread = thread::Builder::new()
        .name("dir-source".into())
        .spawn(move || {
            let _watcher = watcher;
            run(tree, nrx, tx)
        })
        .map_err(|error| Error::Start {
            what: "the directory source",
            error,
        })?;
    Ok(DirSource { reads, thread })
}

/// Watches `dir` on a thread, sending inputs until `tx` is closed.
pub fn spawn(dir: PathBuf, tx: Sender<Input>) -> Result<JoinHandle<()>, Error> {
    watch(dir, tx).map(DirSource::into_thread)
}
