//! Golden files of the compiler output. Refresh with `UPDATE_GOLDEN=1`.

use std::path::{Path, PathBuf};

use palisade_engine::Engine;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn engine(paths: &[&str]) -> Engine {
    let mut inputs = Vec::new();
    for p in paths {
        let p = root().join(p);
        let mut files: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|f| f.file_name().is_some_and(|n| n != "expect.yaml"))
                .collect()
        } else {
            vec![p]
        };
        files.sort();
        for f in files {
            inputs.push((f.display().to_string(), std::fs::read(&f).unwrap()));
        }
    }
    let loaded = palisade_k8s::load(&inputs);
    assert!(
        loaded.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    Engine::new(loaded.cluster)
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the compiler output (UPDATE_GOLDEN=1 to refresh)\n--- actual ---\n{actual}",
        path.display()
    );
}

#[test]
fn webapp_refined() {
    let e = engine(&[
        "examples/webapp/cluster.yaml",
        "examples/webapp/policies-refined",
    ]);
    let r = palisade_nft::compile(&e, None).unwrap();
    check_golden("webapp-refined.nft", &r.to_nft_text());
    let json = serde_json::to_string_pretty(&r.to_json()).unwrap() + "\n";
    check_golden("webapp-refined.json", &json);
    // Deterministic.
    assert_eq!(r, palisade_nft::compile(&e, None).unwrap());
}

/// Admin and baseline tiers: verdict maps around the NetworkPolicy stage.
#[test]
fn admin_tiers() {
    let e = engine(&[
        "tests/topologies/xyz.yaml",
        "tests/cases/anp-pass-and-baseline",
    ]);
    let r = palisade_nft::compile(&e, Some("node-1")).unwrap();
    check_golden("anp-pass-and-baseline-node-1.nft", &r.to_nft_text());
    let e = engine(&[
        "tests/topologies/xyz.yaml",
        "tests/cases/anp-egress-networks-nodes-ports",
    ]);
    let r = palisade_nft::compile(&e, Some("node-1")).unwrap();
    check_golden(
        "anp-egress-networks-nodes-ports-node-1.nft",
        &r.to_nft_text(),
    );
}

#[test]
fn unknown_node_is_an_error() {
    let e = engine(&["tests/topologies/xyz.yaml"]);
    assert!(palisade_nft::compile(&e, Some("node-9")).is_err());
    assert!(palisade_nft::compile(&e, Some("node-1")).is_ok());
}

/// As root, the kernel accepts both renderings (`nft -c`: check only).
#[test]
fn nft_accepts_text_and_json() {
    if !nix_is_root() {
        eprintln!("skipped: needs root to run nft -c");
        return;
    }
    for case in [
        "examples/webapp",
        "tests/cases/named-ports",
        "tests/cases/ip-block-except",
        "tests/cases/anp-egress-networks-nodes-ports",
        "tests/cases/anp-pass-and-baseline",
        "tests/cases/cluster-network-policy-v1alpha2",
    ] {
        let e = if case.starts_with("examples") {
            engine(&[
                "examples/webapp/cluster.yaml",
                "examples/webapp/policies-refined",
            ])
        } else {
            engine(&["tests/topologies/xyz.yaml", case])
        };
        let r = palisade_nft::compile(&e, Some("node-1"))
            .or_else(|_| palisade_nft::compile(&e, None))
            .unwrap();
        for (flag, input) in [
            (None, r.to_nft_replace_text()),
            (Some("-j"), serde_json::to_string(&r.to_json()).unwrap()),
        ] {
            let mut cmd = std::process::Command::new("nft");
            if let Some(f) = flag {
                cmd.arg(f);
            }
            cmd.args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().expect("nft");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{case} {flag:?}: {}\n{input}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
