//! What the fuzz targets found in the engine, kept as tests. Each file in
//! `tests/fuzz/` is an input of the `engine` target (read by
//! `palisade_testkit::fuzz`) that once made the engine and the naive oracle
//! disagree; docs/fuzzing.md says how one is added.

use std::path::Path;

use palisade_engine::Engine;
use palisade_model::Protocol;
use palisade_testkit::{fuzz, oracle};

#[test]
fn every_fuzz_reproducer_agrees_with_the_oracle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no reproducers in {}", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let input = fuzz::input(&data, &fuzz::ENGINE)
            .unwrap_or_else(|| panic!("{} is not a cluster", f.display()));
        let engine = Engine::new(input.cluster);
        let flows = fuzz::flows(&engine, &input.flows);
        assert!(!flows.is_empty(), "{}: no flows", f.display());
        for flow in flows {
            assert_eq!(
                engine.allowed(&flow),
                oracle::allowed(engine.cluster(), &flow),
                "{}: {flow:?}: {:?}",
                f.display(),
                engine.verdict(&flow).reasons
            );
        }
    }
}

const HOST_NETWORK: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: a}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.50}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: a}
spec: {nodeName: node-2, hostNetwork: true, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.60}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: a}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, image: i}]}
status: {phase: Succeeded, podIP: 10.0.0.70}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: a}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#;

/// A host-network pod whose address is not among its node's: its traffic
/// is the node's whether a flow names the pod or its address (the
/// compiler puts the address in the node's own set), so an isolated pod on
/// that node accepts it; not from another node's host-network pod, nor
/// from the address of a finished one.
#[test]
fn a_host_network_pods_address_is_its_nodes() {
    let loaded = palisade_k8s::load(&[("host.yaml".into(), HOST_NETWORK.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let engine = Engine::new(loaded.cluster);
    for (src, allowed) in [
        ("a/agent", true),
        ("10.0.0.50", true),
        ("a/elsewhere", false),
        ("10.0.0.60", false),
        ("10.0.0.70", false),
    ] {
        let f = engine
            .flow_between(src, "a/web", Protocol::Tcp, 80)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        let v = engine.verdict(&f);
        assert_eq!(v.allowed, allowed, "{src}: {:?}", v.reasons);
        assert_eq!(engine.allowed(&f), allowed, "{src}");
        assert_eq!(oracle::allowed(engine.cluster(), &f), allowed, "{src}");
    }
}
