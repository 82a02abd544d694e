//! `palisade_engine::lint::lint` on the large synthetic cluster (10,000
//! pods, 1,000 policies; with `--admin N`, N AdminNetworkPolicies too):
//! prints the time of the index build and of the lint, and the findings
//! per check.
use std::collections::BTreeMap;

use palisade_bench::synth::{self, Params};
use palisade_engine::{lint, Engine};

fn main() {
    let mut params = Params::large();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--admin") {
        params.admin_policies = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--admin N");
    }
    let cluster = synth::cluster(&params);
    let t = std::time::Instant::now();
    let engine = Engine::new(cluster);
    let built = t.elapsed();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let findings = lint::lint(&engine);
        let took = t.elapsed();
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &findings {
            *per.entry(f.id).or_default() += 1;
        }
        println!(
            "engine {:.0} ms, lint {:.0} ms ({} identities, {} findings: {per:?})",
            built.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3,
            engine.index().identities().len(),
            findings.len()
        );
    }
}
