//! Profiling aid: `Engine::new` on the large synthetic cluster, repeated.
use palisade_bench::synth::{self, Params};
use palisade_engine::Engine;

fn main() {
    let cluster = synth::cluster(&Params::large());
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let e = Engine::new(cluster.clone());
        println!(
            "{:.1} ms ({} identities)",
            t.elapsed().as_secs_f64() * 1e3,
            e.index().identities().len()
        );
    }
}
