//! Arbitrary bytes as a manifest file (YAML and JSON) and as an etcd value
//! or API object. Decoding never panics, every message stays short, an
//! error-free cluster builds an engine, and every decoded NetworkPolicy
//! encodes to a manifest that decodes to the same policy.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_k8s::{Diagnostic, Object};

/// The longest message decoding may write: quoted input is cut at 64
/// characters and a parser's message at 400 (docs/limits.md), so a
/// message is a sentence around a few of those.
const MAX_MESSAGE_CHARS: usize = 2_000;

fn check_messages(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        let n = d.to_string().chars().count();
        assert!(n <= MAX_MESSAGE_CHARS, "a {n}-character message: {d}");
    }
}

fn round_trip(objects: &[palisade_k8s::Located<Object>]) {
    for o in objects {
        let Object::NetworkPolicy(p) = &o.value else {
            continue;
        };
        let manifest = palisade_k8s::encode::network_policy(p, &Default::default());
        let text = serde_json::to_vec(&manifest).expect("a manifest serializes");
        let (again, diagnostics) = palisade_k8s::decode_json_bytes("encoded", &text);
        assert!(
            diagnostics.iter().all(|d| !d.is_error()),
            "{p:?} encoded as {}: {diagnostics:?}",
            String::from_utf8_lossy(&text)
        );
        match again.as_slice() {
            [o] => assert_eq!(&o.value, &Object::NetworkPolicy(p.clone())),
            other => panic!("{p:?} encoded as {} objects", other.len()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for name in ["fuzz.yaml", "fuzz.json"] {
        let (objects, diagnostics) = palisade_k8s::decode(name, data);
        check_messages(&diagnostics);
        round_trip(&objects);
        let loaded = palisade_k8s::assemble(objects);
        check_messages(&loaded.diagnostics);
        // Whatever was refused, what was kept is a cluster the engine takes.
        let _ = palisade_engine::Engine::new(loaded.cluster);
    }
    let (objects, diagnostics) = palisade_k8s::decode_json_bytes("etcd value", data);
    check_messages(&diagnostics);
    round_trip(&objects);
});
