//! The engine's rendered reasons over random synthetic clusters. Here and
//! not beside the renderer because the generator lives in `palisade-bench`,
//! which depends on this crate.

use palisade_bench::synth;
use palisade_engine::{Decision, Direction, Endpoint, Engine, PodId};

/// The sentences assembled from precomputed pieces read exactly as
/// the plain `format!` of their parts.
#[test]
fn assembled_reasons_match_their_formatted_form() {
    let mut kinds = [0usize; 3];
    for seed in 0..20 {
        let engine = Engine::new(synth::cluster(&synth::Params {
            pods: 60,
            policies: 1 + seed as usize,
            ..synth::Params::small(seed)
        }));
        let c = engine.cluster();
        for f in synth::pod_flows(&engine, 400, seed) {
            for o in [
                engine.outcome(Direction::Egress, &f),
                engine.outcome(Direction::Ingress, &f),
            ] {
                let dir = o.direction.as_str();
                let (subject, peer_ip) = match o.direction {
                    Direction::Ingress => (f.dst, f.src_ip),
                    Direction::Egress => (f.src, f.dst_ip),
                };
                let peer_ip = peer_ip.expect("synthetic pods have addresses");
                let who = engine.describe(subject);
                let want = match o.decision {
                    Decision::NotIsolated => {
                        kinds[0] += 1;
                        format!("{dir} allowed: {who} is not isolated for {dir}")
                    }
                    Decision::Denied => {
                        kinds[1] += 1;
                        let Endpoint::Pod(p) = subject else {
                            unreachable!()
                        };
                        let idx = engine.index();
                        let id = idx.identity(idx.identity_of(PodId::new(p)).unwrap());
                        let by = match o.direction {
                            Direction::Ingress => &id.ingress_plan.isolated_by,
                            Direction::Egress => &id.egress_plan.isolated_by,
                        };
                        let to = match o.direction {
                            Direction::Ingress => format!("{peer_ip} to port "),
                            Direction::Egress if peer_ip.is_ipv6() => format!("[{peer_ip}]:"),
                            Direction::Egress => format!("{peer_ip}:"),
                        };
                        format!("{dir} denied: {who} is isolated for {dir} by {by} and no rule allows {to}{}/{}", f.port, f.protocol.as_str())
                    }
                    Decision::Allowed { policy, rule, .. } => {
                        kinds[2] += 1;
                        let p = &c.policies[policy];
                        let prefix =
                            format!("{dir} allowed by {}/{} rule {rule} (", p.namespace, p.name);
                        let got = engine.render(&o, &f);
                        assert!(
                            got.starts_with(&prefix),
                            "{got:?} does not start with {prefix:?}"
                        );
                        continue;
                    }
                    _ => continue,
                };
                assert_eq!(engine.render(&o, &f), want);
            }
        }
    }
    assert!(
        kinds.iter().all(|&k| k > 100),
        "sentences of each kind: {kinds:?}"
    );
}
