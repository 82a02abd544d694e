//! Finding and reading manifest files: the one walk of a directory tree
//! that the command line and the agent's directory source share.
//!
//! - Every directory is read once, known by (device, inode): a link back to
//!   a directory already read (`a -> .`) is reported and skipped instead of
//!   walked again, which with two such links would never end. A file
//!   reached twice (a link, a hard link, a path named twice) is read once.
//! - Only regular files are opened, and without blocking: a FIFO or a
//!   device would otherwise block the reader for good.
//! - No file over [`MAX_FILE_BYTES`] is read into memory.
//! - Hidden entries (`.name`) are not walked: editors' lock links and
//!   temporary files, and the `..data` directories of a mounted ConfigMap
//!   (whose files are also reached through the visible links).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use palisade_k8s::limits::MAX_FILE_BYTES;

/// Whether a file found in a directory is read as a manifest.
pub fn is_manifest_name(p: &Path) -> bool {
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("yaml" | "yml" | "json"))
}

/// Whether a path's last name is hidden (see [`is_hidden_name`]), or it
/// has no name at all.
pub fn is_hidden(p: &Path) -> bool {
    p.file_name().is_none_or(is_hidden_name)
}

/// Whether one name is hidden: `.name`, or not valid UTF-8 (it could not
/// be named in messages or origins). The walk and the watcher both decide
/// with this, so that a change event and a scan agree on what is read.
pub fn is_hidden_name(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_none_or(|n| n.starts_with('.'))
}

/// Why an entry was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A directory already read under the path `first`.
    DirSeen { first: PathBuf, link: bool },
    /// A file already read under the path `first`.
    FileSeen { first: PathBuf, link: bool },
    /// A manifest's name on something that is not a regular file; the
    /// kind of file, as in `a FIFO`.
    NotRegular(&'static str),
    /// A link that cannot be followed, named like no manifest.
    Broken(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a_link = |link: bool| if link { "a link to " } else { "" };
        match self {
            Skip::DirSeen { first, link } => write!(
                f,
                "{}a directory already read ({})",
                a_link(*link),
                first.display()
            ),
            Skip::FileSeen { first, link } => write!(
                f,
                "{}a file already read ({})",
                a_link(*link),
                first.display()
            ),
            Skip::NotRegular(kind) => write!(f, "not a regular file ({kind})"),
            Skip::Broken(e) => write!(f, "a link that cannot be followed: {e}"),
        }
    }
}

/// What the walk found at one path, in walk order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A regular file to read. `via_link`: its path goes through a
    /// symbolic link, so its content can change with no event on the path.
    File { path: PathBuf, via_link: bool },
    /// Not read, on purpose.
    Skipped { path: PathBuf, why: Skip },
    /// A manifest file (`dir: false`) or a directory (`dir: true`) whose
    /// state could not be read: what it holds is unknown, not absent.
    Unreadable {
        path: PathBuf,
        dir: bool,
        error: String,
    },
}

type Id = (u64, u64);

fn id(m: &Metadata) -> Id {
    (m.dev(), m.ino())
}

/// The kind of a file that is not a regular one, for messages.
pub fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "an unknown kind of file"
    }
}

/// Walks trees of manifests, remembering what it read so that nothing is
/// read twice, across calls too.
#[derive(Debug, Default)]
pub struct Walker {
    dirs: HashMap<Id, PathBuf>,
    files: HashMap<Id, PathBuf>,
    /// Directories read, by path, with whether the path goes through a link.
    walked: BTreeMap<PathBuf, bool>,
}

impl Walker {
    pub fn new() -> Walker {
        Walker::default()
    }

    /// Walks a path named by the user: a link is followed, a file is read
    /// whatever its name. Fails only if the path cannot be examined at all
    /// (a missing path is an error, not an empty tree).
    pub fn root(&mut self, path: &Path, out: &mut Vec<Found>) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if meta.is_dir() {
            self.dir(path, &meta, link, false, out);
        } else if meta.is_file() {
            self.file(path, &meta, link, false, out);
        } else {
            out.push(Found::Skipped {
                path: path.to_path_buf(),
                why: Skip::NotRegular(kind(meta.file_type())),
            });
        }
        Ok(())
    }

    /// Walks one entry of a directory, as found there: a file is read only
    /// if named like a manifest. `via_link`: the directory holding it was
    /// reached through a link. The entry's own name may be hidden (the
    /// caller decides); names below it may not.
    pub fn entry(&mut self, path: &Path, via_link: bool, out: &mut Vec<Found>) {
        let manifest = is_manifest_name(path);
        let unreadable = |error: io::Error| Found::Unreadable {
            path: path.to_path_buf(),
            dir: false,
            error: format!("cannot read: {error}"),
        };
        let lmeta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            // Gone: nothing is there to read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                if manifest {
                    out.push(unreadable(e));
                }
                return;
            }
        };
        let link = lmeta.file_type().is_symlink();
        let meta = if link {
            match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) if manifest => return out.push(unreadable(e)),
                Err(e) => {
                    return out.push(Found::Skipped {
                        path: path.to_path_buf(),
                        why: Skip::Broken(e.to_string()),
                    })
                }
            }
        } else {
            lmeta
        };
        if meta.is_dir() && !(link && manifest) {
            self.dir(path, &meta, link, via_link, out);
        } else if !manifest {
        } else if meta.is_file() {
            self.file(path, &meta, link, via_link, out);
        } else {
            // A link named like a manifest stands for a file: a directory
            // behind it is a mistake to report, not a tree to walk.
            let what = if link && meta.is_dir() {
                "a link to a directory"
            } else {
                kind(meta.file_type())
            };
            out.push(Found::Skipped {
                path: path.to_path_buf(),
                why: Skip::NotRegular(what),
            });
        }
    }

    fn dir(&mut self, path: &Path, meta: &Metadata, link: bool, via: bool, out: &mut Vec<Found>) {
        if let Some(first) = self.dirs.get(&id(meta)) {
            return out.push(Found::Skipped {
                path: path.to_path_buf(),
                why: Skip::DirSeen {
                    first: first.clone(),
                    link,
                },
            });
        }
        self.dirs.insert(id(meta), path.to_path_buf());
        self.walked.insert(path.to_path_buf(), link || via);
        let unreadable = |e: io::Error| Found::Unreadable {
            path: path.to_path_buf(),
            dir: true,
            error: format!("cannot read directory: {e}"),
        };
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return out.push(unreadable(e)),
        };
        let mut names = Vec::new();
        for e in rd {
            match e {
                Ok(e) => names.push(e.path()),
                Err(e) => return out.push(unreadable(e)),
            }
        }
        names.sort();
        for p in names.iter().filter(|p| !is_hidden(p)) {
            self.entry(p, link || via, out);
        }
    }

    fn file(&mut self, path: &Path, meta: &Metadata, link: bool, via: bool, out: &mut Vec<Found>) {
        // The file read first may be gone, and its inode reused by this
        // one (a rename, or a new file in a burst that also removed it):
        // then this is not a second name for it.
        if let Some(first) = self
            .files
            .get(&id(meta))
            .filter(|first| std::fs::metadata(first).is_ok_and(|m| id(&m) == id(meta)))
        {
            return out.push(Found::Skipped {
                path: path.to_path_buf(),
                why: Skip::FileSeen {
                    first: first.clone(),
                    link,
                },
            });
        }
        self.files.insert(id(meta), path.to_path_buf());
        out.push(Found::File {
            path: path.to_path_buf(),
            via_link: link || via,
        });
    }

    /// Whether `dir` was read as a directory of the tree, and if so
    /// whether its path goes through a link.
    pub fn walked(&self, dir: &Path) -> Option<bool> {
        self.walked.get(dir).copied()
    }

    /// Forgets everything read at or under `path`, to walk it again.
    pub fn forget(&mut self, path: &Path) {
        self.dirs.retain(|_, p| !p.starts_with(path));
        self.files.retain(|_, p| !p.starts_with(path));
        self.walked.retain(|p, _| !p.starts_with(path));
    }
}

/// Every manifest under `paths`, each read once, in order, with what was
/// skipped and what could not be read. Fails on a path that cannot be
/// examined at all (a missing path).
pub fn walk(paths: &[PathBuf]) -> Result<Vec<Found>, (PathBuf, io::Error)> {
    let mut w = Walker::new();
    let mut out = Vec::new();
    for p in paths {
        w.root(p, &mut out).map_err(|e| (p.clone(), e))?;
    }
    Ok(out)
}

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing is at the path any more.
    Gone,
    /// Not a regular file (any more); the kind of file.
    NotRegular(&'static str),
    /// Longer than the limit: `size` bytes, or at least that many if the
    /// file grew while read.
    TooLarge {
        size: u64,
        limit: u64,
        grew: bool,
    },
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Gone => f.write_str("removed while it was read"),
            ReadError::NotRegular(kind) => write!(f, "not a regular file ({kind})"),
            ReadError::TooLarge { size, limit, grew } => write!(
                f,
                "file is {}{size} bytes, over the limit of {limit} bytes; not read",
                if *grew { "at least " } else { "" }
            ),
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
        }
    }
}

/// Reads one manifest file of at most [`MAX_FILE_BYTES`].
pub fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    read_limited(path, MAX_FILE_BYTES)
}

/// Reads a regular file of at most `limit` bytes. The open never blocks
/// (a FIFO swapped in after the walk looked at the path is opened without
/// waiting for a writer, then refused), the size is checked before reading
/// and the read stops one byte past the limit, for a file that grows.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let f: File = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling link is there, and unreadable; only nothing at
            // all is gone.
            return Err(match std::fs::symlink_metadata(path) {
                Err(m) if m.kind() == io::ErrorKind::NotFound => ReadError::Gone,
                _ => ReadError::Io(e),
            });
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = f.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
            grew: false,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
            grew: true,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a file renamed onto a name read before its old one in
    /// the same burst (`mv z.yaml a.yaml`) was skipped as a second name
    /// of the old file, which no longer existed, and its policies were
    /// never read.
    #[test]
    fn a_renamed_file_is_not_a_second_name_of_its_old_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, z) = (dir.path().join("a.yaml"), dir.path().join("z.yaml"));
        std::fs::write(&z, "kind: Namespace\n").unwrap();
        let mut w = Walker::new();
        let mut out = Vec::new();
        w.entry(&z, false, &mut out);
        assert!(matches!(&out[..], [Found::File { .. }]));
        std::fs::rename(&z, &a).unwrap();
        out.clear();
        w.entry(&a, false, &mut out);
        assert!(
            matches!(&out[..], [Found::File { path, .. }] if *path == a),
            "{out:?}"
        );
        // A real second name is still one.
        std::fs::hard_link(&a, &z).unwrap();
        out.clear();
        w.entry(&z, false, &mut out);
        assert!(
            matches!(
                &out[..],
                [Found::Skipped {
                    why: Skip::FileSeen { .. },
                    ..
                }]
            ),
            "{out:?}"
        );
    }
}
