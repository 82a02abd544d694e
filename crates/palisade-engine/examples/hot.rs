//! Profiling aid: the verdict loop alone, for `perf record` or
//! `valgrind --tool=callgrind --toggle-collect=hot::run`.
//! `cargo run --release -p palisade-engine --example hot [allowed|explain|text]`
use palisade_engine::synth::{self, Params, Rng};
use palisade_engine::{Endpoint, Engine, Flow};
use palisade_model::Protocol;
use std::hint::black_box;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let engine = Engine::new(synth::cluster(&Params::large()));
    let mut r = Rng::new(7);
    let pods = engine.cluster().pods.len();
    let ports = [
        (80, Protocol::Tcp),
        (8080, Protocol::Tcp),
        (443, Protocol::Tcp),
        (53, Protocol::Udp),
        (9000, Protocol::Sctp),
    ];
    let mut fl = Vec::new();
    while fl.len() < 200_000 {
        let (s, d) = (r.below(pods), r.below(pods));
        let (port, proto) = ports[r.below(ports.len())];
        if let Ok(f) = engine.flow(Endpoint::Pod(s), Endpoint::Pod(d), proto, port) {
            fl.push(f);
        }
    }
    // One pass first: fills what is built on first use.
    run(&engine, &fl, &mode);
    let passes = 3;
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..passes {
        n += run(&engine, &fl, &mode);
    }
    let rate = (passes * fl.len()) as f64 / t.elapsed().as_secs_f64();
    println!("{n} allowed; {:.2} M/s", rate / 1e6);
}

#[inline(never)]
fn run(engine: &Engine, fl: &[Flow], mode: &str) -> usize {
    let mut n = 0;
    for f in fl {
        n += match mode {
            "explain" => usize::from(black_box(engine.explain(black_box(f))).allowed()),
            "text" => usize::from(black_box(engine.verdict(black_box(f))).allowed),
            _ => usize::from(black_box(engine.allowed(black_box(f)))),
        };
    }
    n
}
