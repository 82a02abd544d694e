//! The dataplane against the engine, with real packets: every case of
//! `tests/cases` (NetworkPolicy and the admin tiers) in a namespace lab, every pod pair and
//! port over IPv4 and IPv6. Needs root; without it each test says why and
//! returns.

use std::sync::Mutex;

use palisade_engine::{Engine, PortProto};
use palisade_lab::{Config, Lab, ProbeOptions, Serve};

fn root() -> bool {
    if palisade_lab::sys::is_root() {
        return true;
    }
    eprintln!("skipped: the namespace lab needs root");
    false
}

fn up(name: &str, engine: &Engine, ports: &[PortProto]) -> Lab {
    // A lab left over by an interrupted run of this same test.
    let _ = palisade_lab::down(name);
    palisade_lab::up(
        engine,
        &Config {
            name: name.to_string(),
            serve: Serve::Threads,
            ports: ports.to_vec(),
            sources: Vec::new(),
            cni: None,
        },
    )
    .unwrap_or_else(|e| panic!("lab {name}: {e}"))
}

/// Brings up one case's lab, probes, tears down; returns the disagreements.
fn run_case(lab_name: &str, case: &palisade_testkit::Case) -> Vec<String> {
    let engine = Engine::new(case.cluster.clone());
    let ports = case.ports(&engine);
    let lab = up(lab_name, &engine, &ports);
    let obs = palisade_lab::probe(&lab.state, &engine, &ports, &ProbeOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert!(
        !obs.is_empty() || lab.state.pods.len() < 2,
        "{}: nothing probed",
        case.name
    );
    let allowed = obs.iter().filter(|o| o.observed).count();
    eprintln!("{}: {} probes, {} allowed", case.name, obs.len(), allowed);
    lab.down().unwrap();
    obs.iter()
        .filter(|o| !o.agrees())
        .map(|o| format!("{}: {o}", case.name))
        .collect()
}

#[test]
fn every_case_agrees_with_the_engine() {
    if !root() {
        return;
    }
    let cases: Vec<palisade_testkit::Case> = palisade_testkit::all_cases()
        .into_iter()
        .map(|c| c.expect("case loads"))
        .filter(|c| std::env::var("PALISADE_CASE").map_or(true, |only| c.name == only))
        .collect();
    assert!(!cases.is_empty());
    let failures = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (cases, failures, next) = (&cases, &failures, &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let f = run_case(&format!("dcase{w}"), case);
                eprintln!(
                    "{}: {}",
                    case.name,
                    if f.is_empty() { "ok" } else { "DISAGREES" }
                );
                failures.lock().unwrap().extend(f);
            });
        }
    });
    palisade_testkit::assert_agrees(&failures.into_inner().unwrap());
}
