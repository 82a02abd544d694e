//! Profiling aid: `generate` and its check on a synthetic cluster whose
//! pods are the pods of one Deployment per app and namespace, from
//! observed pod-to-pod flows. `generate_bench [PODS] [FLOWS]`.
use palisade_bench::synth::{self, Params};
use palisade_engine::generate::{self, Observed};
use palisade_engine::Engine;
use palisade_model::{PodPhase, PodSource, Workload, WorkloadKind};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let pods = args.next().and_then(Result::ok).unwrap_or(2_000);
    let flows = args.next().and_then(Result::ok).unwrap_or(5_000);
    let mut p = Params::large();
    p.pods = pods;
    p.namespaces = (pods / 100).max(1);
    p.policies = 0;
    let mut cluster = synth::cluster(&p);
    for pod in &mut cluster.pods {
        pod.source = PodSource::Live {
            phase: PodPhase::Running,
            owner: Some(Workload {
                kind: WorkloadKind::Deployment,
                name: pod.labels["app"].clone(),
            }),
        };
    }
    let engine = Engine::new(cluster);
    let observed: Vec<Observed> = synth::pod_flows(&engine, flows, 1)
        .into_iter()
        .map(|f| Observed {
            src: f.src,
            dst: f.dst,
            protocol: f.protocol,
            port: f.port,
        })
        .collect();
    let t = std::time::Instant::now();
    let g = generate::generate(&engine, &observed);
    let gen_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    let checked = generate::with_generated(&engine, &g);
    let c = generate::check(&checked, &g, &observed);
    println!(
        "{pods} pods, {} workloads, {} identities, {} observed: generate {gen_ms:.0} ms, check {:.0} ms; {}",
        g.workloads.len(),
        checked.index().identities().len(),
        c.observed,
        t.elapsed().as_secs_f64() * 1e3,
        c.summary()
    );
}
