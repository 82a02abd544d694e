//! The synthetic cluster written as manifest files reads back as the same
//! cluster: what the command-line benchmarks measure is the cluster the
//! engine benchmarks use.

use palisade_bench::manifests;
use palisade_bench::synth::{self, Params};

#[test]
fn written_manifests_decode_to_the_same_cluster() {
    for seed in 0..20 {
        let mut want = synth::cluster(&Params {
            policies: 40,
            ..Params::small(seed)
        });
        let dir = tempfile::tempdir().unwrap();
        let files = manifests::write(dir.path(), &want, 7).unwrap();
        let inputs: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|f| (f.display().to_string(), std::fs::read(f).unwrap()))
            .collect();
        let loaded = palisade_k8s::load(&inputs);
        assert_eq!(loaded.diagnostics, vec![], "seed {seed}");
        // The decoder orders pods and policies by namespace and name.
        want.pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        want.policies
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        assert_eq!(loaded.cluster, want, "seed {seed}");
    }
}

#[test]
fn admin_policies_are_refused_not_dropped() {
    let c = synth::cluster(&Params {
        admin_policies: 2,
        ..Params::small(1)
    });
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        manifests::write(dir.path(), &c, 10),
        Err("admin policies are not written as manifests".to_string())
    );
}
