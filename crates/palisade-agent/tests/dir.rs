//! The directory source against a real directory: what cannot be read keeps
//! its last good objects and is reported, an idle tree costs nothing, FIFOs,
//! link loops and oversized files are refused without blocking or
//! duplicating.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use palisade_agent::dir::{self, DirSource};
use palisade_agent::manifests::{self, Found, ReadError, Skip};
use palisade_agent::{Entry, Health, Input, Store};

/// A bound for things that must happen; never reached when they do.
const NEVER: Duration = Duration::from_secs(20);

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path()).unwrap();
    (t, root)
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

fn origin(p: &Path) -> String {
    format!("dir:{}", p.display())
}

fn next(rx: &Receiver<Input>) -> Input {
    rx.recv_timeout(NEVER).expect("the source sends an input")
}

fn watch(root: &Path) -> (DirSource, Receiver<Input>, Store) {
    let (tx, rx) = channel();
    let src = dir::watch(root.to_path_buf(), tx).unwrap();
    let mut store = Store::new();
    let first = next(&rx);
    assert_eq!(first.kind(), "resync");
    store.apply(first);
    (src, rx, store)
}

/// Applies inputs until `done` holds of the store.
fn apply_until(rx: &Receiver<Input>, store: &mut Store, done: impl Fn(&Store) -> bool) {
    let t = Instant::now();
    while !done(store) {
        assert!(t.elapsed() < NEVER, "never happened");
        if let Ok(i) = rx.recv_timeout(Duration::from_millis(100)) {
            store.apply(i);
        }
    }
}

fn healthz(store: &Store) -> String {
    Health {
        ready: true,
        rejected: store.rejected().clone(),
        ..Health::default()
    }
    .status()
}

fn replace_with(path: &Path, how: &str, root: &Path) {
    std::fs::remove_file(path).unwrap();
    match how {
        "self-link" => symlink(path.file_name().unwrap(), path).unwrap(),
        "dir-link" => {
            let d = root.join("elsewhere");
            std::fs::create_dir_all(&d).unwrap();
            symlink(&d, path).unwrap();
        }
        "fifo" => mkfifo(path),
        "too-large" => {
            let f = std::fs::File::create(path).unwrap();
            f.set_len(manifests::MAX_FILE_BYTES + (1 << 20)).unwrap();
        }
        other => panic!("{other}"),
    }
}

/// Regression: any read error was a deletion; a policy file that became a
/// self-link, a link to a directory, a FIFO or a file over the limit was
/// removed with its isolation while `/healthz` said ok.
#[test]
fn an_unreadable_file_keeps_its_objects_and_is_reported() {
    for how in ["self-link", "dir-link", "fifo", "too-large"] {
        let (_t, root) = tempdir();
        let a = root.join("a.yaml");
        std::fs::write(&a, pod("web", "10.9.0.1")).unwrap();
        let (_src, rx, mut store) = watch(&root);
        assert_eq!(store.get(&origin(&a)).map(<[_]>::len), Some(1));
        replace_with(&a, how, &root);
        apply_until(&rx, &mut store, |s| s.rejected().contains_key(&origin(&a)));
        let kept = store.get(&origin(&a)).unwrap_or_default();
        assert_eq!(kept.len(), 1, "{how}: the last good version stays");
        let status = healthz(&store);
        assert!(status.starts_with("degraded"), "{how}: {status}");
        // The problem names the file; the origin is not said twice.
        let line = format!("rejected {}: ", a.display());
        assert!(status.contains(&line), "{how}: {status}");
        // A full scan (the start, or after lost events) sees it the same.
        store.apply(dir::scan(&root));
        assert_eq!(store.get(&origin(&a)).map(<[_]>::len), Some(1), "{how}");
        assert!(store.rejected().contains_key(&origin(&a)), "{how}");
        // Fixed, it is read again; removed, it is gone.
        std::fs::remove_file(&a).unwrap();
        std::fs::write(&a, pod("web", "10.9.0.2")).unwrap();
        apply_until(&rx, &mut store, |s| s.rejected().is_empty());
        std::fs::remove_file(&a).unwrap();
        apply_until(&rx, &mut store, |s| s.get(&origin(&a)).is_none());
    }
}

/// The messages name the file and the problem.
#[test]
fn problems_are_named() {
    let (_t, root) = tempdir();
    symlink("loop.yaml", root.join("loop.yaml")).unwrap();
    mkfifo(&root.join("pipe.yaml"));
    let big = std::fs::File::create(root.join("big.yaml")).unwrap();
    big.set_len(manifests::MAX_FILE_BYTES * 3).unwrap();
    let Input::Resync { entries, .. } = dir::scan(&root) else {
        panic!("a resync")
    };
    let message = |name: &str| -> String {
        let e: &Entry = entries
            .iter()
            .find(|e| e.origin == origin(&root.join(name)))
            .unwrap_or_else(|| panic!("an entry for {name}: {entries:?}"));
        assert!(e.objects.is_empty());
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].object, None, "keeps every previous object");
        e.errors[0].to_string()
    };
    let p = |name: &str| root.join(name).display().to_string();
    assert!(message("loop.yaml").starts_with(&format!(
        "{}: cannot read: Too many levels of symbolic links",
        p("loop.yaml")
    )));
    assert_eq!(
        message("pipe.yaml"),
        format!("{}: not a regular file (a FIFO)", p("pipe.yaml"))
    );
    assert_eq!(
        message("big.yaml"),
        format!(
            "{}: file is {} bytes, over the limit of {} bytes; not read",
            p("big.yaml"),
            manifests::MAX_FILE_BYTES * 3,
            manifests::MAX_FILE_BYTES
        )
    );
}

/// Regression: the watcher reported the source's own reads, and every event
/// on a directory read the whole tree again: an unchanged directory was
/// read 20-66 times a second.
#[test]
fn an_idle_directory_sends_and_reads_nothing() {
    let (_t, root) = tempdir();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("a.yaml"), pod("a", "10.9.0.1")).unwrap();
    std::fs::write(root.join("sub/b.yaml"), pod("b", "10.9.0.2")).unwrap();
    let (src, rx, _store) = watch(&root);
    let reads = src.reads();
    assert_eq!(reads, 2);
    std::thread::sleep(Duration::from_secs(2));
    let sent: Vec<Input> = rx.try_iter().collect();
    assert_eq!(sent.len(), 0, "{sent:?}");
    assert_eq!(src.reads(), reads);
}

/// Writing a file again with the same bytes sends nothing; a change to
/// one file reads that file only.
#[test]
fn only_changed_content_is_read_and_sent() {
    let (_t, root) = tempdir();
    for i in 0..5 {
        std::fs::write(
            root.join(format!("p{i}.yaml")),
            pod(&format!("p{i}"), "10.9.0.1"),
        )
        .unwrap();
    }
    let (src, rx, _store) = watch(&root);
    let r0 = src.reads();
    std::fs::write(root.join("p0.yaml"), pod("p0", "10.9.0.1")).unwrap();
    let t = Instant::now();
    while src.reads() == r0 {
        assert!(t.elapsed() < NEVER, "never read again");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Sent after p0 was handled, so its input, if any, comes first.
    std::fs::write(root.join("p1.yaml"), pod("p1", "10.9.0.9")).unwrap();
    match next(&rx) {
        Input::Upsert(e) => assert_eq!(e.origin, origin(&root.join("p1.yaml"))),
        other => panic!("expected p1 only: {other:?}"),
    }
    assert_eq!(src.reads(), r0 + 2, "p0 and p1, nothing else");
}

/// A directory renamed into the tree is walked alone; nothing else is
/// read again, and no resync replaces everything.
#[test]
fn a_directory_renamed_in_is_read_alone() {
    let (_t, root) = tempdir();
    std::fs::write(root.join("a.yaml"), pod("a", "10.9.0.1")).unwrap();
    let staging = root.join(".staging");
    std::fs::create_dir(&staging).unwrap();
    for i in 0..3 {
        std::fs::write(
            staging.join(format!("n{i}.yaml")),
            pod(&format!("n{i}"), "10.9.1.1"),
        )
        .unwrap();
    }
    let (src, rx, mut store) = watch(&root);
    let r0 = src.reads();
    std::fs::rename(&staging, root.join("new")).unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match next(&rx) {
            Input::Upsert(e) => got.push(e.origin.clone()),
            other => panic!("expected upserts: {other:?}"),
        }
    }
    got.sort();
    let want: Vec<String> = (0..3)
        .map(|i| origin(&root.join(format!("new/n{i}.yaml"))))
        .collect();
    assert_eq!(got, want);
    assert_eq!(src.reads(), r0 + 3);
    // Renamed out again: its files are gone.
    std::fs::rename(root.join("new"), root.join(".old")).unwrap();
    for o in &want {
        let o = o.clone();
        apply_until(&rx, &mut store, move |s| s.get(&o).is_none());
    }
    assert!(store.get(&origin(&root.join("a.yaml"))).is_some());
}

/// A file rewritten in place is read once closed, not while half written
/// (an empty or truncated file would remove policies for a moment).
#[test]
fn a_file_being_written_is_read_after_it_is_closed() {
    let (_t, root) = tempdir();
    let a = root.join("a.yaml");
    let two = format!("{}---\n{}", pod("a", "10.9.0.1"), pod("b", "10.9.0.2"));
    std::fs::write(&a, &two).unwrap();
    let (_src, rx, store) = watch(&root);
    assert_eq!(store.get(&origin(&a)).map(<[_]>::len), Some(2));
    let mut f = std::fs::File::create(&a).unwrap();
    f.write_all(pod("a", "10.9.0.1").as_bytes()).unwrap();
    f.flush().unwrap();
    // Many quiet periods long: a half-written file would have been sent.
    std::thread::sleep(dir::QUIET * 10);
    let early: Vec<Input> = rx.try_iter().collect();
    assert!(early.is_empty(), "read while open for writing: {early:?}");
    f.write_all(format!("---\n{}", pod("c", "10.9.0.3")).as_bytes())
        .unwrap();
    drop(f);
    match next(&rx) {
        Input::Upsert(e) => assert_eq!(e.objects.len(), 2, "{e:?}"),
        other => panic!("{other:?}"),
    }
}

/// Regression: a FIFO in the directory blocked the watcher's thread for
/// good; changes after it were never seen.
#[test]
fn a_fifo_does_not_block_the_watcher() {
    let (_t, root) = tempdir();
    mkfifo(&root.join("first.yaml"));
    // The first scan runs in `watch`: bounded, so a blocking read fails
    // the test instead of hanging it.
    let (tx, started) = channel();
    let r = root.clone();
    std::thread::spawn(move || tx.send(watch(&r)).unwrap());
    let (_src, rx, mut store) = started.recv_timeout(NEVER).expect("the first scan ends");
    mkfifo(&root.join("second.yaml"));
    std::fs::write(root.join("z.yaml"), pod("z", "10.9.0.1")).unwrap();
    apply_until(&rx, &mut store, |s| {
        s.get(&origin(&root.join("z.yaml"))).is_some()
    });
    let status = healthz(&store);
    for f in ["first.yaml", "second.yaml"] {
        let p = root.join(f);
        assert!(
            status.contains(&format!(
                "rejected {}: not a regular file (a FIFO)",
                p.display()
            )),
            "{status}"
        );
    }
}

/// A FIFO swapped in after the walk looked at a path is refused on open,
/// not waited on.
#[test]
fn reading_a_fifo_never_blocks() {
    let (_t, root) = tempdir();
    let p = root.join("x.yaml");
    mkfifo(&p);
    let (tx, rx) = channel();
    std::thread::spawn(move || tx.send(manifests::read(&p).map(|_| ())).unwrap());
    let r = rx.recv_timeout(NEVER).expect("read returns");
    assert!(matches!(r, Err(ReadError::NotRegular("a FIFO"))), "{r:?}");
}

/// A file that grows past the limit while read is refused too: at most
/// limit + 1 bytes are read. (`/proc` files are regular with size 0.)
#[test]
fn a_file_longer_than_its_size_is_cut_at_the_limit() {
    let r = manifests::read_limited(Path::new("/proc/self/status"), 16);
    assert!(
        matches!(
            r,
            Err(ReadError::TooLarge {
                size: 17,
                limit: 16,
                grew: true
            })
        ),
        "{r:?}"
    );
}

/// Regression: `a -> .` and `b -> .` made the walk exponential, and a self
/// link loaded every object 41 times. Every directory and file is read
/// once; the links skipped are named, with the path read.
#[test]
fn link_loops_are_read_once_and_named() {
    let (_t, root) = tempdir();
    std::fs::write(root.join("p.yaml"), pod("p", "10.9.0.1")).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/q.yaml"), pod("q", "10.9.0.2")).unwrap();
    symlink(".", root.join("a")).unwrap();
    symlink(".", root.join("b")).unwrap();
    symlink("..", root.join("sub/up")).unwrap();
    symlink("p.yaml", root.join("twice.yaml")).unwrap();
    let (tx, rx) = channel();
    let r = root.clone();
    std::thread::spawn(move || tx.send(manifests::walk(&[r])).unwrap());
    let found = rx.recv_timeout(NEVER).expect("the walk ends").unwrap();
    let skip = |name: &str, first: &Path, dir: bool| {
        let first = first.to_path_buf();
        let why = if dir {
            Skip::DirSeen { first, link: true }
        } else {
            Skip::FileSeen { first, link: true }
        };
        Found::Skipped {
            path: root.join(name),
            why,
        }
    };
    let file = |name: &str| Found::File {
        path: root.join(name),
        via_link: false,
    };
    assert_eq!(
        found,
        vec![
            skip("a", &root, true),
            skip("b", &root, true),
            file("p.yaml"),
            file("sub/q.yaml"),
            skip("sub/up", &root, true),
            skip("twice.yaml", &root.join("p.yaml"), false),
        ]
    );
    let Found::Skipped { why, .. } = &found[0] else {
        unreachable!()
    };
    assert_eq!(
        why.to_string(),
        format!("a link to a directory already read ({})", root.display())
    );
    // The agent's source reads the same, and follows later changes.
    let (_src, rx, mut store) = watch(&root);
    assert_eq!(store.origins().count(), 2);
    std::fs::write(root.join("sub/q.yaml"), pod("q", "10.9.0.3")).unwrap();
    let q = origin(&root.join("sub/q.yaml"));
    apply_until(&rx, &mut store, |s| {
        s.get(&q)
            .is_some_and(|o| format!("{o:?}").contains("10.9.0.3"))
    });
    assert_eq!(store.origins().count(), 2);
}

/// A file reached through a link is read again when its target changes
/// with no event on the link (a mounted ConfigMap swaps `..data`).
#[test]
fn a_link_target_swapped_behind_the_link_is_read_again() {
    let (_t, root) = tempdir();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(root.join("..v1/a.yaml"), pod("a", "10.9.0.1")).unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/a.yaml", root.join("a.yaml")).unwrap();
    let (_src, rx, mut store) = watch(&root);
    let a = origin(&root.join("a.yaml"));
    assert_eq!(store.origins().collect::<Vec<_>>(), vec![a.as_str()]);
    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(root.join("..v2/a.yaml"), pod("a", "10.9.0.2")).unwrap();
    symlink("..v2", root.join("..tmp")).unwrap();
    std::fs::rename(root.join("..tmp"), root.join("..data")).unwrap();
    apply_until(&rx, &mut store, |s| {
        s.get(&a)
            .is_some_and(|o| format!("{o:?}").contains("10.9.0.2"))
    });
}

/// Builds a tree with each naming edge case; every manifest holds one pod
/// named after its file.
fn edge_tree(root: &Path, outside: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let put = |rel: &str, n: usize| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // `.json` in any case is read as JSON.
        let text = if rel.to_ascii_lowercase().ends_with(".json") {
            format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p{n}", "namespace": "shop"}}, "status": {{"podIP": "10.9.1.{n}"}}}}"#
            )
        } else {
            pod(&format!("p{n}"), &format!("10.9.1.{n}"))
        };
        std::fs::write(&p, text).unwrap();
    };
    for (n, rel) in [
        "plain.yaml",
        "upper.YAML",
        "short.yml",
        "object.json",
        "upper.JSON",
        "notes.txt",
        "no-extension",
        ".hidden.yaml",
        ".hidden-dir/inside.yaml",
        "sub/nested.yaml",
        "sub/.swap.yaml",
        "sub/deeper/leaf.yml",
    ]
    .iter()
    .enumerate()
    {
        put(rel, n + 1);
    }
    let target = outside.join("target.yaml");
    std::fs::write(&target, pod("p90", "10.9.1.90")).unwrap();
    symlink(&target, root.join("linked.yaml")).unwrap();
    symlink(root.join("sub"), root.join("sub-link")).unwrap();
    symlink(root.join("nowhere.yaml"), root.join("broken.yaml")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd-\xff.yaml");
    std::fs::write(root.join(odd), pod("p91", "10.9.1.91")).unwrap();
}

/// The files the command line reads (`palisade -f DIR` walks with
/// `manifests::walk`), relative to `root`.
fn cli_reads(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = manifests::walk(&[root.to_path_buf()])
        .unwrap()
        .into_iter()
        .filter_map(|f| match f {
            Found::File { path, .. } => {
                Some(path.strip_prefix(root).unwrap().display().to_string())
            }
            _ => None,
        })
        .collect();
    files.sort();
    files
}

fn relative_origins<'a>(root: &Path, origins: impl Iterator<Item = &'a str>) -> Vec<String> {
    let prefix = origin(root) + "/";
    let mut v: Vec<String> = origins
        .map(|o| o.strip_prefix(&prefix).unwrap_or(o).to_string())
        .collect();
    v.sort();
    v
}

/// `palisade -f DIR`, `agent --dir DIR` at start and the agent's watcher
/// when the same files appear later read exactly the same files: hidden
/// names and directories skipped, extensions in any case, links followed
/// once, non-manifest names ignored, a broken link named as a problem.
#[test]
fn the_command_line_and_the_agent_read_the_same_files() {
    let (_t, root) = tempdir();
    let (_o, outside) = tempdir();
    edge_tree(&root, &outside);
    let cli = cli_reads(&root);
    assert_eq!(
        cli,
        [
            "linked.yaml",
            "object.json",
            "plain.yaml",
            "short.yml",
            "sub/deeper/leaf.yml",
            "sub/nested.yaml",
            "upper.JSON",
            "upper.YAML",
        ]
    );
    let Input::Resync { entries, .. } = dir::scan(&root) else {
        panic!("a scan is a resync")
    };
    let good = |e: &&Entry| e.errors.is_empty();
    let problems: Vec<String> = entries
        .iter()
        .filter(|e| !good(e))
        .map(|e| e.origin.clone())
        .collect();
    assert_eq!(problems, [origin(&root.join("broken.yaml"))]);
    let scanned = relative_origins(
        &root,
        entries.iter().filter(good).map(|e| e.origin.as_str()),
    );
    assert_eq!(scanned, cli);

    // The same tree made under a watched directory, after the first scan.
    let (_t2, watched) = tempdir();
    let (_src, rx, mut store) = watch(&watched);
    let (_o2, outside2) = tempdir();
    edge_tree(&watched, &outside2);
    let good_origins = |s: &Store| {
        s.origins()
            .filter(|o| !s.rejected().contains_key(*o))
            .count()
    };
    apply_until(&rx, &mut store, |s| good_origins(s) >= cli.len());
    std::thread::sleep(dir::QUIET * 4);
    while let Ok(i) = rx.try_recv() {
        store.apply(i);
    }
    let watched_origins = relative_origins(
        &watched,
        store
            .origins()
            .filter(|o| !store.rejected().contains_key(*o)),
    );
    assert_eq!(watched_origins, cli);
}
