//! Profiling aid: the verdict loop alone, for `perf record` or
//! `valgrind --tool=callgrind --toggle-collect=hot::run`.
//! `cargo run --release -p palisade-bench --example hot [allowed|explain|text] [ADMIN_POLICIES]`
use palisade_bench::synth::{self, Params};
use palisade_engine::{Engine, Flow};
use std::hint::black_box;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let admin = std::env::args()
        .nth(2)
        .map_or(0, |a| a.parse().expect("a number"));
    let engine = Engine::new(synth::cluster(&Params {
        admin_policies: admin,
        ..Params::large()
    }));
    let fl = synth::pod_flows(&engine, 200_000, 7);
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
