//! A random small cluster through the nftables compiler, for every node
//! and for a single-node view: compiling is deterministic, and both the
//! text and the JSON rendering load (`nft --check`). The lab test
//! `fuzz_corpus` in palisade-lab replays this target's corpus with real
//! packets against the engine.

#![no_main]

use std::io::Write;
use std::process::{Command, Stdio};

use libfuzzer_sys::fuzz_target;
use palisade_engine::Engine;
use palisade_nft::{Local, Ruleset};
use palisade_testkit::fuzz;

/// Runs `nft --check` on `input` (`-j`: JSON); panics with nft's message
/// when the kernel would refuse it.
fn nft_check(json: bool, input: &str) {
    let mut cmd = Command::new("nft");
    if json {
        cmd.arg("-j");
    }
    let mut child = cmd
        .args(["--check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs (the compile target needs nft and root)");
    // Written before waiting: nft reads all of its input first.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("nft reads the ruleset");
    }
    let out = child.wait_with_output().expect("nft finishes");
    assert!(
        out.status.success(),
        "nft --check refused the ruleset: {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compile(engine: &Engine, node: Option<&str>) -> Ruleset {
    let local = node.map_or(Local::All, |n| Local::Node(n.to_string()));
    let wiring = palisade_nft::named_wiring(engine, &local, palisade_nft::interface_name);
    palisade_nft::compile(engine, node, &wiring).expect("a node of the cluster compiles")
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = fuzz::input(data, &fuzz::COMPILE) else {
        return;
    };
    let engine = Engine::new(input.cluster);
    let nodes: Vec<String> = engine
        .cluster()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let all = compile(&engine, None);
    assert_eq!(all, compile(&engine, None), "compiling is deterministic");
    nft_check(false, &all.to_nft_replace_text());
    nft_check(true, &serde_json::to_string(&all.to_json()).expect("JSON"));
    for n in &nodes {
        nft_check(false, &compile(&engine, Some(n)).to_nft_replace_text());
    }
});
