//! The `compile` fuzz target's committed corpus with real packets: every
//! entry that is a cluster (`fuzz/corpus/compile`, read exactly as the
//! target reads it) is built in network namespaces, enforced by its
//! compiled rulesets and probed on every pod pair and port; the kernel
//! agrees with the engine. Entries that read as the same cluster (they
//! differ in the flows only the engine target uses) are probed once.
//! Needs root; without it the test says why and returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use palisade_engine::Engine;
use palisade_lab::{Config, ProbeOptions, Serve};
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
    let failures = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (entries, failures, next) = (&entries, &failures, &next);
            s.spawn(move || {
                while let Some((file, cluster)) = entries.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    let engine = Engine::new(cluster.clone());
                    let ports = engine.default_ports();
                    let name = format!("fuzz{w}");
                    let _ = palisade_lab::down(&name);
                    let lab = palisade_lab::up(
                        &engine,
                        &Config {
                            name,
                            serve: Serve::Threads,
                            ports: ports.clone(),
                            sources: Vec::new(),
                            cni: None,
                        },
                    )
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                    let obs =
                        palisade_lab::probe(&lab.state, &engine, &ports, &ProbeOptions::default())
                            .unwrap_or_else(|e| panic!("{file}: {e}"));
                    lab.down().unwrap_or_else(|e| panic!("{file}: {e}"));
                    let bad: Vec<String> = obs
                        .iter()
                        .filter(|o| !o.agrees())
                        .map(|o| format!("{file}: {o}"))
                        .collect();
                    eprintln!(
                        "{file}: {} probes, {} allowed, {} disagreements",
                        obs.len(),
                        obs.iter().filter(|o| o.observed).count(),
                        bad.len()
                    );
                    failures.lock().expect("no worker panicked").extend(bad);
                }
            });
        }
    });
    palisade_testkit::assert_agrees(&failures.into_inner().expect("no worker panicked"));
}
