//! Random small clusters (deterministic seeds): the kernel, enforcing the
//! compiled rulesets, agrees with the engine on every pod pair and port.
//! Even seeds add two AdminNetworkPolicies and a baseline.
//! Needs root; without it the test says why and returns.
//! `PALISADE_SYNTH_CLUSTERS` sets how many clusters (default 50).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use palisade_bench::synth;
use palisade_engine::Engine;
use palisade_lab::{Config, ProbeOptions, Serve};

#[test]
fn random_clusters_agree_with_the_engine() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the namespace lab needs root");
        return;
    }
    let n: u64 = std::env::var("PALISADE_SYNTH_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seeds: Vec<u64> = (1..=n).collect();
    let failures = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (seeds, failures, next) = (&seeds, &failures, &next);
            s.spawn(move || {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let params = if seed % 2 == 0 {
                        synth::Params {
                            admin_policies: 2,
                            ..synth::Params::small(seed)
                        }
                    } else {
                        synth::Params::small(seed)
                    };
                    let engine = Engine::new(synth::cluster(&params));
                    let ports = engine.default_ports();
                    let name = format!("synth{w}");
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
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    let obs =
                        palisade_lab::probe(&lab.state, &engine, &ports, &ProbeOptions::default())
                            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    lab.down().unwrap();
                    let bad: Vec<String> = obs
                        .iter()
                        .filter(|o| !o.agrees())
                        .map(|o| format!("seed {seed}: {o}"))
                        .collect();
                    eprintln!(
                        "seed {seed}: {} probes, {} allowed, {} disagreements",
                        obs.len(),
                        obs.iter().filter(|o| o.observed).count(),
                        bad.len()
                    );
                    failures.lock().unwrap().extend(bad);
                }
            });
        }
    });
    palisade_testkit::assert_agrees(&failures.into_inner().unwrap());
}
