//! Random small clusters (deterministic seeds): the kernel, enforcing the
//! compiled rulesets, agrees with the engine on every pod pair and port.
//! Even seeds add two AdminNetworkPolicies and a baseline.
//! Needs root; without it the test says why and returns.
//! `PALISADE_SYNTH_CLUSTERS` sets how many clusters (default 50).

mod support;

use palisade_bench::synth;
use palisade_engine::Engine;

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
    let bad = support::disagreements(&seeds, "synth", |&seed| {
        let params = if seed % 2 == 0 {
            synth::Params {
                admin_policies: 2,
                ..synth::Params::small(seed)
            }
        } else {
            synth::Params::small(seed)
        };
        (format!("seed {seed}"), Engine::new(synth::cluster(&params)))
    });
    palisade_testkit::assert_agrees(&bad);
}
