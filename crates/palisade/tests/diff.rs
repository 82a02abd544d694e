//! `palisade diff` as users and scripts see it: each case under
//! `tests/diff/<case>/` (BASE and HEAD as `base/` and `head/`, or a `paths`
//! file naming them relative to the repository root) has its expected
//! output in every format, compared whole (`UPDATE_GOLDEN=1` rewrites
//! them), and exit codes follow `git diff`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff")
}

fn palisade(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run palisade")
}

/// `-f BASE... --to HEAD...` for a case, relative to the repository root.
fn versions(case: &str) -> Vec<String> {
    let dir = cases().join(case);
    let rel = |p: &Path| {
        p.strip_prefix(root())
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let (mut base, mut head) = (Vec::new(), Vec::new());
    match std::fs::read_to_string(dir.join("paths")) {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let (which, paths) = line.split_once(':').expect("`base:` or `head:`");
                let v = if which == "base" {
                    &mut base
                } else {
                    &mut head
                };
                v.extend(paths.split_whitespace().map(String::from));
            }
        }
        Err(_) => {
            base.push(rel(&dir.join("base")));
            head.push(rel(&dir.join("head")));
        }
    }
    let mut args = vec!["-f".to_string()];
    args.extend(base);
    args.push("--to".into());
    args.extend(head);
    args
}

fn check_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the output (UPDATE_GOLDEN=1 to refresh)\n--- actual ---\n{actual}",
        path.display()
    );
}

const FORMATS: [(&str, &str); 4] = [
    ("text", "expect.txt"),
    ("json", "expect.json"),
    ("md", "expect.md"),
    ("csv", "expect.csv"),
];

#[test]
fn every_case_in_every_format() {
    let mut names: Vec<String> = std::fs::read_dir(cases())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    for case in names {
        for (format, file) in FORMATS {
            let mut args = vec!["diff".to_string()];
            args.extend(versions(&case));
            args.extend(["-o".to_string(), format.to_string()]);
            let o = palisade(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(0), "{case} {format}: {err}");
            assert_eq!(err, "", "{case} {format}");
            let out = String::from_utf8(o.stdout).unwrap();
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                let changes = v["changes"].as_array().unwrap();
                assert_eq!(v["summary"]["changed"], changes.len());
                for c in changes {
                    for k in ["src", "dst", "protocol", "ports", "before", "after"] {
                        assert!(c[k].is_string(), "{case}: {k} in {c}");
                    }
                }
            }
            check_golden(&cases().join(&case).join(file), &out);
        }
    }
}

#[test]
fn exit_code_is_1_when_something_changed_and_0_when_nothing_did() {
    let mut args = vec!["diff".to_string()];
    args.extend(versions("webapp"));
    assert_eq!(palisade(&args).status.code(), Some(0));
    args.push("--exit-code".into());
    assert_eq!(palisade(&args).status.code(), Some(1));

    let same: Vec<String> = [
        "diff",
        "-f",
        "examples/webapp/cluster.yaml",
        "examples/webapp/policies-refined",
        "--to",
        "examples/webapp/policies-refined",
        "examples/webapp/cluster.yaml",
        "--exit-code",
    ]
    .map(String::from)
    .into();
    let o = palisade(&same);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "no connection changed\n"
    );
    let mut md = same.clone();
    md.extend(["-o".to_string(), "md".to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&palisade(&md).stdout),
        "0 connections changed: 0 allowed, 0 denied\n"
    );
}

#[test]
fn bad_versions_exit_2_naming_the_side_and_the_file() {
    let o = palisade(&["diff", "-f", "examples/webapp", "--to", "no/such/dir"].map(String::from));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("HEAD (--to)") && err.contains("no/such/dir"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: d}\nspec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n",
    )
    .unwrap();
    let bad = dir.path().to_string_lossy().into_owned();
    let o = palisade(&[
        "diff".into(),
        "-f".into(),
        bad.clone(),
        "--to".into(),
        "examples/webapp".into(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BASE (-f)") && err.contains("bad.yaml"),
        "{err}"
    );
    // Both sides are required.
    let o = palisade(&["diff", "-f", "examples/webapp"].map(String::from));
    assert_eq!(o.status.code(), Some(2));
}
