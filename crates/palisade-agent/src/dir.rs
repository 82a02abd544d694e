//! A directory of manifests, watched with `notify`.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the directory (hidden
//! files excepted) is one origin, `dir:<path>`. A changed file is decoded
//! again as a whole; a removed file removes its objects. The watch starts
//! before the first scan, so no change between the two is lost; a watcher
//! error triggers a full rescan.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::thread::{self, JoinHandle};

use notify::{RecursiveMode, Watcher};
use tracing::warn;

use crate::input::{Entry, Input};

pub const SCOPE: &str = "dir:";

fn is_manifest(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    !hidden && matches!(ext.as_deref(), Some("yaml" | "yml" | "json"))
}

fn origin(p: &Path) -> String {
    format!("{SCOPE}{}", p.display())
}

fn read(p: &Path) -> Option<Entry> {
    let bytes = std::fs::read(p).ok()?;
    let name = p.display().to_string();
    Some(Entry::decode_bytes(origin(p), &name, &bytes))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            if !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
            {
                walk(&p, out);
            }
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
}

/// Every manifest under `dir`, decoded.
pub fn scan(dir: &Path) -> Input {
    let mut files = Vec::new();
    walk(dir, &mut files);
    Input::Resync {
        scope: SCOPE.to_string(),
        entries: files.iter().filter_map(|p| read(p)).collect(),
    }
}

/// Watches `dir` on a thread, sending inputs until `tx` is closed.
pub fn spawn(dir: PathBuf, tx: Sender<Input>) -> Result<JoinHandle<()>, String> {
    let dir = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (ntx, nrx) = channel();
    let mut watcher = notify::recommended_watcher(ntx).map_err(|e| e.to_string())?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    tx.send(scan(&dir)).map_err(|e| e.to_string())?;
    thread::Builder::new()
        .name("dir-source".into())
        .spawn(move || {
            let _watcher = watcher;
            for ev in nrx {
                let inputs: Vec<Input> = match ev {
                    Ok(ev) => {
                        if ev.paths.iter().any(|p| p.is_dir()) || ev.need_rescan() {
                            vec![scan(&dir)]
                        } else {
                            ev.paths
                                .iter()
                                .filter(|p| is_manifest(p))
                                .map(|p| match read(p) {
                                    Some(e) => Input::Upsert(e),
                                    None => Input::Delete { origin: origin(p) },
                                })
                                .collect()
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "watching the manifest directory; rescanning");
                        vec![scan(&dir)]
                    }
                };
                for i in inputs {
                    if tx.send(i).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())
}
