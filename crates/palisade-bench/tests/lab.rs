//! The dataplane benchmark runs end to end on a tiny cluster (a smoke test:
//! nothing here looks at the numbers). Needs root; without it the test says
//! why and returns.

use std::time::Duration;

use palisade_bench::lab::{run, BenchConfig, Setup};
use palisade_bench::synth;

#[test]
fn bench_runs_on_a_tiny_cluster() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the benchmark needs root");
        return;
    }
    let cfg = BenchConfig {
        params: synth::Params {
            pods: 60,
            policies: 12,
            namespaces: 6,
            nodes: 3,
            ..synth::Params::large()
        },
        duration: Duration::from_millis(100),
        rounds: 1,
        settle: Duration::ZERO,
        lab: "benchsmoke".into(),
    };
    let r = run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(r.nodes.len(), 2);
    assert!(r.nodes.iter().all(|n| n.loads.len() == 1 && n.elements > 0));
    assert_eq!(r.measures.len(), Setup::ALL.len());
    let text = r.render();
    assert!(text.contains("(b) full ruleset"), "{text}");
    // The measured flow is allowed: connections went through.
    assert!(
        r.measures.iter().all(|(_, m)| m[0].connections > 0),
        "{text}"
    );
}
