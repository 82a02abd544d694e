//! Times the incremental compiler alone (no kernel) on the benchmark
//! cluster: `cargo run --release -p palisade-bench --example incr`.

use std::time::Instant;

use palisade_bench::synth::{self, Params};
use palisade_engine::Engine;
use palisade_model::{LabelSelector, NamespaceScope, NetworkPolicy, Peer, Rule};
use palisade_nft::incr::{Change, Incremental};

fn main() {
    let mut c = synth::cluster(&Params::large());
    c.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let engine = Engine::new(c.clone());
    let t = Instant::now();
    let mut st = Incremental::new(&engine, "node0").expect("supported");
    println!("state: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut r = synth::Rng::new(7);
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    for k in 0..rounds {
        let mut p = c.pods[r.below(c.pods.len())].clone();
        p.name = format!("incr-new{k}");
        p.labels.insert("app".into(), format!("incr-new{k}"));
        p.ips = vec![synth::pod_ipv4(300_000 + k), synth::pod_ipv6(300_000 + k)];
        p.node = Some("node0".into());
        let key = (p.namespace.clone(), p.name.clone());
        let t = Instant::now();
        let d = st.apply(vec![Change::Pod { key, new: Some(p) }]).unwrap();
        let n: usize = d.sets.values().map(|(a, b)| a.len() + b.len()).sum();
        let new_pod = t.elapsed();
        if k == 0 {
            for (set, (a, b)) in &d.sets {
                println!("  {set}: {}", a.len() + b.len());
            }
        }
        let mut q = c.pods[r.below(c.pods.len())].clone();
        q.name = format!("incr-rep{k}");
        q.ips = vec![synth::pod_ipv4(310_000 + k), synth::pod_ipv6(310_000 + k)];
        q.node = Some("node0".into());
        let key = (q.namespace.clone(), q.name.clone());
        let t = Instant::now();
        let d2 = st
            .apply(vec![Change::Pod {
                key,
                new: Some(q.clone()),
            }])
            .unwrap();
        let n2: usize = d2.sets.values().map(|(a, b)| a.len() + b.len()).sum();
        let replica = t.elapsed();
        let pol = NetworkPolicy {
            namespace: q.namespace.clone(),
            name: format!("incr-np{k}"),
            pod_selector: LabelSelector::from_labels([(
                "app",
                q.labels.get("app").map_or("x", String::as_str),
            )]),
            ingress: Some(vec![Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Own(q.namespace.clone()),
                    pods: LabelSelector::from_labels([("tier", "frontend")]),
                }]),
                ports: None,
            }]),
            egress: None,
            staged: false,
        };
        let key = (pol.namespace.clone(), pol.name.clone());
        let t = Instant::now();
        let d3 = st
            .apply(vec![Change::Policy {
                key,
                new: Some(pol),
            }])
            .unwrap();
        let n3: usize = d3.sets.values().map(|(a, b)| a.len() + b.len()).sum();
        println!(
            "new workload {:.2} ms ({n} elements), replica {:.2} ms ({n2}), policy add {:.2} ms ({n3})",
            new_pod.as_secs_f64() * 1e3,
            replica.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
