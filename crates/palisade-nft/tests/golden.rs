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

/// Compiled with the lab's wiring: one routed interface per local pod.
fn compile(
    e: &Engine,
    node: Option<&str>,
) -> Result<palisade_nft::Ruleset, palisade_nft::CompileError> {
    let local = match node {
        Some(n) => palisade_nft::Local::Node(n.into()),
        None => palisade_nft::Local::All,
    };
    let w = palisade_nft::named_wiring(e, &local, palisade_nft::interface_name);
    palisade_nft::compile(e, node, &w)
}

#[test]
fn webapp_refined() {
    let e = engine(&[
        "examples/webapp/cluster.yaml",
        "examples/webapp/policies-refined",
    ]);
    let r = compile(&e, None).unwrap();
    check_golden("webapp-refined.nft", &r.to_nft_text());
    let json = serde_json::to_string_pretty(&r.to_json()).unwrap() + "\n";
    check_golden("webapp-refined.json", &json);
    // Deterministic.
    assert_eq!(r, compile(&e, None).unwrap());
}

/// Admin and baseline tiers: verdict maps around the NetworkPolicy stage.
#[test]
fn admin_tiers() {
    let e = engine(&[
        "tests/topologies/xyz.yaml",
        "tests/cases/anp-pass-and-baseline",
    ]);
    let r = compile(&e, Some("node-1")).unwrap();
    check_golden("anp-pass-and-baseline-node-1.nft", &r.to_nft_text());
    let e = engine(&[
        "tests/topologies/xyz.yaml",
        "tests/cases/anp-egress-networks-nodes-ports",
    ]);
    let r = compile(&e, Some("node-1")).unwrap();
    check_golden(
        "anp-egress-networks-nodes-ports-node-1.nft",
        &r.to_nft_text(),
    );
}

/// With a flow log: every denial reported in `{dir}_denied`, a quarter of
/// allowed first packets after each direction's check, the generation in
/// its map; the kernel accepts both renderings.
#[test]
fn flow_log() {
    let e = engine(&[
        "tests/topologies/xyz.yaml",
        "tests/cases/anp-pass-and-baseline",
    ]);
    let local = palisade_nft::Local::Node("node-1".into());
    let opts = palisade_nft::Options {
        wiring: palisade_nft::named_wiring(&e, &local, palisade_nft::interface_name),
        local,
        flow_log: Some(palisade_nft::FlowLog {
            group: 7,
            sample_ppm: 250_000,
            generation: 42,
        }),
        // Two kept bits (a drop mark beside the masquerade mark): four
        // chains per entry, each checked by nft below.
        kept_mark: palisade_nft::KeptMark::new(0xc000).unwrap(),
    };
    let r = palisade_nft::compile_with(&e, &opts).unwrap();
    let text = r.to_nft_text();
    check_golden("flow-log-node-1.nft", &text);
    if nix_is_root() {
        for (flag, input) in [
            (None, r.to_nft_replace_text()),
            (Some("-j"), serde_json::to_string(&r.to_json()).unwrap()),
        ] {
            let mut cmd = std::process::Command::new("nft");
            cmd.args(flag).args(["-c", "-f", "-"]);
            let out = pipe(cmd, &input);
            assert!(
                out.status.success(),
                "{flag:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn pipe(mut cmd: std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn unknown_node_is_an_error() {
    let e = engine(&["tests/topologies/xyz.yaml"]);
    assert!(compile(&e, Some("node-9")).is_err());
    assert!(compile(&e, Some("node-1")).is_ok());
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
        let r = compile(&e, Some("node-1"))
            .or_else(|_| compile(&e, None))
            .unwrap();
        for (flag, input) in [
            (None, r.to_nft_replace_text()),
            (Some("-j"), serde_json::to_string(&r.to_json()).unwrap()),
        ] {
            let mut cmd = std::process::Command::new("nft");
            cmd.args(flag).args(["-c", "-f", "-"]);
            let out = pipe(cmd, &input);
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

fn bridged() -> palisade_nft::BridgeWiring {
    let mut w = palisade_nft::BridgeWiring::default();
    for (port, last, v4, v6) in [
        ("veth1a2b3c4d", 0x11, "10.78.1.10", "fd78::1:10"),
        ("veth5e6f7a8b", 0x12, "10.78.1.11", "fd78::1:11"),
    ] {
        w.ports.insert(port.into());
        let mac = [0x0a, 0x58, 0x0a, 0x4e, 0x01, last];
        w.bindings.insert((port.into(), mac, v4.parse().unwrap()));
        w.bindings.insert((port.into(), mac, v6.parse().unwrap()));
    }
    // A port whose pod is not known yet: it may send nothing but ARP.
    w.ports.insert("veth9c0d1e2f".into());
    w
}

/// The per-port check of bridged pods (`bridge palisade`).
#[test]
fn bridge_table() {
    assert!(palisade_nft::compile_bridge(&Default::default()).is_none());
    let r = palisade_nft::compile_bridge(&bridged()).unwrap();
    check_golden("bridge.nft", &r.to_bridge_replace_text());
    if nix_is_root() {
        let mut c = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(r.to_bridge_replace_text().as_bytes())
            .unwrap();
        assert!(
            c.wait().unwrap().success(),
            "nft -c refused the bridge table"
        );
    }
}

/// Workloads' pod templates have no address: the ruleset of a cluster with
/// them is exactly the ruleset without them, with content-hashed numbering
/// (dense numbers would only shift), on every node and with every pod local.
#[test]
fn templates_put_nothing_in_the_ruleset() {
    let base = [
        "examples/webapp/cluster.yaml",
        "examples/webapp/policies-refined",
    ];
    let without = engine(&base);
    let with = engine(&[base[0], base[1], "crates/palisade-nft/tests/templates.yaml"]);
    let templates: Vec<String> = with
        .cluster()
        .pods
        .iter()
        .filter(|p| p.template_kind().is_some() && p.is_endpoint())
        .map(|p| p.display_name())
        .collect();
    assert_eq!(
        templates,
        [
            "default/backend[Deployment]",
            "default/frontend-next[Deployment]",
            "ingress-nginx/controller[Deployment]"
        ]
    );
    for local in [
        palisade_nft::Local::All,
        palisade_nft::Local::Node("node-1".into()),
        palisade_nft::Local::Node("node-2".into()),
    ] {
        let ruleset = |e: &Engine| {
            let opts = palisade_nft::Options {
                wiring: palisade_nft::named_wiring(e, &local, palisade_nft::interface_name),
                local: local.clone(),
                flow_log: None,
                kept_mark: Default::default(),
            };
            palisade_nft::compile_numbered(e, &opts, palisade_nft::Numbering::Stable)
                .unwrap()
                .to_nft_text()
        };
        assert_eq!(ruleset(&with), ruleset(&without), "{local:?}");
    }
}
