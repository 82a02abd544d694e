//! `palisade bench`: engine throughput on the shared synthetic cluster,
//! single-threaded. Every figure is printed with a ratio against a baseline
//! measured in the same run, because absolute numbers on a shared machine
//! drift from run to run while ratios hold.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::synth::{self, Params};
use palisade_engine::{Engine, Flow, PortProto};
use palisade_model::Protocol;

/// Runs `f` over all flows repeatedly for at least `min`; returns flows/s.
fn rate(flows: &[Flow], min: Duration, mut f: impl FnMut(&Flow) -> bool) -> (f64, usize) {
    let start = Instant::now();
    let mut n = 0usize;
    let mut allowed = 0usize;
    while start.elapsed() < min || n == 0 {
        for fl in flows {
            allowed += usize::from(black_box(f(black_box(fl))));
        }
        n += flows.len();
    }
    (
        n as f64 / start.elapsed().as_secs_f64(),
        allowed * 1000 / n.max(1),
    )
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(pods: usize, policies: usize, quick: bool) {
    let (min, rounds) = if quick {
        (Duration::from_millis(100), 3)
    } else {
        (Duration::from_millis(500), 7)
    };
    let nflows = if quick { 20_000 } else { 200_000 };
    let params = Params {
        pods,
        policies,
        namespaces: (pods / 100).max(1),
        ..Params::large()
    };
    println!(
        "synthetic cluster: {} pods, {} namespaces, {} network policies; one thread; \
         {rounds} interleaved rounds of {} ms per figure, medians",
        params.pods,
        params.namespaces,
        params.policies,
        min.as_millis()
    );

    let cluster = synth::cluster(&params);
    let (engine, build) = timed(|| Engine::new(cluster.clone()));
    println!(
        "index build: {:.1} ms ({} identities, {} shared selector sets)",
        build.as_secs_f64() * 1e3,
        engine.index().identities().len(),
        engine.index().sets().len()
    );
    println!("{}", plan_stats(&engine));
    let empty = Engine::new(synth::cluster(&Params {
        policies: 0,
        ..params.clone()
    }));
    let with_anp = Engine::new(synth::cluster(&Params {
        admin_policies: 50,
        ..params.clone()
    }));
    println!("with 50 AdminNetworkPolicies: {}", plan_stats(&with_anp));
    let fl = synth::pod_flows(&engine, nflows, 7);
    let fl_empty = synth::pod_flows(&empty, nflows, 7);
    let fl_anp = synth::pod_flows(&with_anp, nflows, 7);

    // Interleaved so that a burst of load elsewhere hits every figure alike.
    let mut samples: [Vec<f64>; 5] = Default::default();
    let mut permille = 0;
    for _ in 0..rounds {
        samples[0].push(rate(&fl_empty, min, |f| empty.allowed(f)).0);
        let (r, p) = rate(&fl, min, |f| engine.allowed(f));
        samples[1].push(r);
        permille = p;
        samples[2].push(rate(&fl, min, |f| engine.explain(f).allowed()).0);
        samples[3].push(rate(&fl, min, |f| engine.verdict(f).allowed).0);
        samples[4].push(rate(&fl_anp, min, |f| with_anp.allowed(f)).0);
    }
    let [base, fast, explain, text, anp] = samples.map(median);
    println!("verdicts/s, no policies (baseline):                {base:>12.0}");
    println!(
        "verdicts/s, {policies} policies, allowed only:         {fast:>12.0}  ({:.2}x baseline; {:.1}% of flows allowed)",
        fast / base,
        permille as f64 / 10.0
    );
    println!(
        "verdicts/s, {policies} policies, deciding rule (explain): {explain:>10.0}  ({:.2}x baseline)",
        explain / base
    );
    println!(
        "verdicts/s, {policies} policies, reasons as text:      {text:>12.0}  ({:.2}x baseline)",
        text / base
    );
    println!(
        "verdicts/s, same cluster + 50 AdminNetworkPolicies and a baseline: {anp:>10.0}  ({:.2}x without them)",
        anp / fast
    );

    let p80 = [PortProto {
        port: 80,
        protocol: Protocol::Tcp,
    }];
    let (m, t_matrix) = timed(|| engine.matrix(&p80));
    let pairs = m.identities.len() * m.identities.len();
    println!(
        "matrix 80/TCP over {} identities ({} identity pairs, standing for {} pod pairs): {:.0} ms",
        m.identities.len(),
        pairs,
        pods * pods,
        t_matrix.as_secs_f64() * 1e3
    );
    let ports = engine.default_ports();
    let (_, t_all) = timed(|| engine.matrix(&ports));
    println!(
        "matrix over the {} default ports: {:.0} ms",
        ports.len(),
        t_all.as_secs_f64() * 1e3
    );
}

pub fn plan_stats(engine: &Engine) -> String {
    let ids = engine.index().identities();
    let n = ids.len().max(1) as f64;
    let sum = |f: &dyn Fn(&palisade_engine::Identity) -> usize| {
        ids.iter().map(f).sum::<usize>() as f64 / n
    };
    format!(
        "mean rules per identity: ingress np {:.1}, egress np {:.1}, admin {:.1}/{:.1}, baseline {:.1}/{:.1}; peers per np rule {:.2}",
        sum(&|i| i.ingress_plan.np.len()),
        sum(&|i| i.egress_plan.np.len()),
        sum(&|i| i.ingress_plan.admin.len()),
        sum(&|i| i.egress_plan.admin.len()),
        sum(&|i| i.ingress_plan.baseline.len()),
        sum(&|i| i.egress_plan.baseline.len()),
        ids.iter().flat_map(|i| i.ingress_plan.np.iter().chain(&i.egress_plan.np)).map(|r| r.peers.as_ref().map_or(0, |p| p.len())).sum::<usize>() as f64
            / ids.iter().map(|i| i.ingress_plan.np.len() + i.egress_plan.np.len()).sum::<usize>().max(1) as f64
    )
}
