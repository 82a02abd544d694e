//! The `compile` fuzz target's committed corpus with real packets: every
//! entry that is a cluster (`fuzz/corpus/compile`, read exactly as the
//! target reads it) is built in network namespaces, enforced by its
//! compiled rulesets and probed on every pod pair and port; the kernel
//! agrees with the engine. Entries that read as the same cluster (they
//! differ in the flows only the engine target uses) are probed once.
//! Needs root; without it the test says why and returns.

mod support;

use std::path::PathBuf;

use palisade_engine::Engine;
use palisade_model::Cluster;
use palisade_testkit::fuzz;

fn corpus() -> Vec<(String, Cluster)> {
    let dir = palisade_testkit::repo_root().join("fuzz/corpus/compile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    let mut out: Vec<(String, Cluster)> = Vec::new();
    for f in files {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let Some(input) = fuzz::input(&data, &fuzz::COMPILE) else {
            continue;
        };
        if !out.iter().any(|(_, c)| *c == input.cluster) {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            out.push((name.unwrap_or_default(), input.cluster));
        }
    }
    out
}

#[test]
fn compile_corpus_agrees_with_the_engine() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the namespace lab needs root");
        return;
    }
    let entries = corpus();
    assert!(
        entries.len() >= 10,
        "only {} clusters in the compile corpus",
        entries.len()
    );
    let bad = support::disagreements(&entries, "fuzz", |(file, cluster)| {
        (file.clone(), Engine::new(cluster.clone()))
    });
    palisade_testkit::assert_agrees(&bad);
}
