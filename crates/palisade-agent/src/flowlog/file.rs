//! The flow log on disk: JSON lines, rotated by size (`FILE`, `FILE.1`,
//! ... `FILE.N`, oldest last), so that it never fills the disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
    size: u64,
}

impl Rotating {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Rotating> {
        let mut r = Rotating {
            path: path.to_owned(),
            max_bytes: max_bytes.max(4096),
            keep,
            file: None,
            size: 0,
        };
        r.reopen()?;
        Ok(r)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    fn numbered(&self, i: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(not_found_ok)?;
        } else {
            for i in (1..self.keep).rev() {
                std::fs::rename(self.numbered(i), self.numbered(i + 1)).or_else(not_found_ok)?;
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        self.reopen()
    }

    /// Appends one line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let f = self.file.as_mut().expect("reopened above");
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // One write per line: a reader never sees half a record.
        f.write_all(&buf)?;
        self.size += len;
        Ok(())
    }
}

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flows.jsonl");
        let mut r = Rotating::open(&p, 4096, 2).unwrap();
        let line = "x".repeat(1000);
        for _ in 0..13 {
            r.write_line(&line).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        // 4 lines of 1001 bytes fit in 4096: files of 4, 4 and the last 1
        // (the oldest 4 rotated away).
        assert_eq!(size(&p), 1001);
        assert_eq!(size(&dir.path().join("flows.jsonl.1")), 4004);
        assert_eq!(size(&dir.path().join("flows.jsonl.2")), 4004);
        assert!(!dir.path().join("flows.jsonl.3").exists());
    }
}
