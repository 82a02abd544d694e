//! Clusters met with real packets three labs at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use palisade_engine::Engine;
use palisade_lab::{Config, ProbeOptions, Serve};

/// Builds each item's cluster in a lab of its own (`{prefix}0`..`{prefix}2`,
/// three at a time), probes every pod pair and port, and returns every
/// observation that disagrees with the engine, prefixed with the item's
/// label. `cluster` gives an item's label and engine.
pub fn disagreements<T: Sync>(
    items: &[T],
    prefix: &str,
    cluster: impl Fn(&T) -> (String, Engine) + Sync,
) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (failures, next, cluster) = (&failures, &next, &cluster);
            s.spawn(move || {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (label, engine) = cluster(item);
                    let bad = probe_one(&format!("{prefix}{w}"), &label, &engine);
                    failures.lock().expect("no worker panicked").extend(bad);
                }
            });
        }
    });
    failures.into_inner().expect("no worker panicked")
}

fn probe_one(name: &str, label: &str, engine: &Engine) -> Vec<String> {
    let ports = engine.default_ports();
    let _ = palisade_lab::down(name);
    let lab = palisade_lab::up(
        engine,
        &Config {
            name: name.to_string(),
            serve: Serve::Threads,
            ports: ports.clone(),
            sources: Vec::new(),
            cni: None,
        },
    )
    .unwrap_or_else(|e| panic!("{label}: {e}"));
    let obs = palisade_lab::probe(&lab.state, engine, &ports, &ProbeOptions::default())
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    lab.down().unwrap_or_else(|e| panic!("{label}: {e}"));
    let bad: Vec<String> = obs
        .iter()
        .filter(|o| !o.agrees())
        .map(|o| format!("{label}: {o}"))
        .collect();
    eprintln!(
        "{label}: {} probes, {} allowed, {} disagreements",
        obs.len(),
        obs.iter().filter(|o| o.observed).count(),
        bad.len()
    );
    bad
}
