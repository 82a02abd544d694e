//! A random cluster (a synthetic one with edits, or manifests) and random
//! flows: the engine decides every flow as the naive oracle does, in both
//! its answers (`allowed`, `verdict`) and per direction.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_engine::{Direction, Engine};
use palisade_testkit::{fuzz, oracle};

fuzz_target!(|data: &[u8]| {
    let Some(input) = fuzz::input(data, &fuzz::ENGINE) else {
        return;
    };
    let engine = Engine::new(input.cluster);
    let c = engine.cluster();
    for f in fuzz::flows(&engine, &input.flows) {
        let want = oracle::allowed(c, &f);
        let verdict = engine.verdict(&f);
        assert_eq!(
            engine.allowed(&f),
            want,
            "flow {f:?}: the oracle says {want}; reasons {:?}",
            verdict.reasons
        );
        assert_eq!(verdict.allowed, want, "flow {f:?}: {:?}", verdict.reasons);
        for dir in [Direction::Ingress, Direction::Egress] {
            assert_eq!(
                engine.outcome(dir, &f).allowed(),
                engine.allowed_in(dir, &f),
                "flow {f:?}, {dir:?}"
            );
        }
    }
});
