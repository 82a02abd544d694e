//! A staged policy is absent from the kernel: adding staged copies of a
//! cluster's policies (NetworkPolicies with and without ipBlocks, admin
//! policies of both tiers) leaves every node's ruleset byte for byte as it
//! was, and staging an enforced policy compiles as its removal.

use palisade_bench::synth::{self, Params};
use palisade_engine::Engine;
use palisade_nft::{compile, Wiring};
use proptest::prelude::*;

fn text(c: &palisade_model::Cluster, node: &str) -> String {
    compile(&Engine::new(c.clone()), Some(node), &Wiring::default())
        .unwrap()
        .to_nft_text()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn staged_policies_compile_to_nothing(seed in any::<u64>(), admin in 1usize..4, pods in 4usize..20, policies in 1usize..8) {
        let mut params = Params::sized(seed, admin, pods, policies);
        params.nodes = 2;
        let base = synth::cluster(&params);
        // Staged copies of a differently seeded cluster's policies: other
        // selectors, ports and ipBlocks than the enforced ones.
        let mut other = Params::sized(seed ^ 0x77, admin + 1, pods, policies + 2);
        other.nodes = 2;
        let extra = synth::cluster(&other);
        let mut with = base.clone();
        for mut p in extra.policies {
            p.name = format!("staged-{}", p.name);
            p.staged = true;
            with.policies.push(p);
        }
        for mut p in extra.admin_policies {
            p.name = format!("staged-{}", p.name);
            p.staged = true;
            with.admin_policies.push(p);
        }
        prop_assert!(with.has_staged());
        for node in ["node0", "node1"] {
            prop_assert_eq!(text(&with, node), text(&base, node));
        }
        // Staging one enforced policy is compiled as its removal.
        let mut staged = base.clone();
        let mut removed = base.clone();
        staged.policies[seed as usize % policies].staged = true;
        removed.policies.remove(seed as usize % policies);
        prop_assert_eq!(text(&staged, "node0"), text(&removed, "node0"));
    }
}
