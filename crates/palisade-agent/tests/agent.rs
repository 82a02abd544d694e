//! The agent's loop against the in-memory backend: incremental deltas equal
//! full rebuilds, invalid objects keep the previous version, bursts are
//! debounced, restarts patch instead of replacing.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use palisade_agent::delta::Delta;
use palisade_agent::{Agent, AgentConfig, Entry, Input, Recording, SyncPath};
use palisade_bench::agent::{entries, entry, SCOPE};
use palisade_bench::synth::{self, Params};
use palisade_k8s::Object;
use palisade_model::{Cluster, LabelSelector, NamespaceScope, NetworkPolicy, Peer, Pod, Rule};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

fn agent(rec: &Recording) -> Agent<Recording> {
    let mut cfg = AgentConfig::new("node0", vec![SCOPE.to_string()]);
    cfg.debounce = Duration::from_millis(30);
    cfg.replace_above_interval_removals = None;
    Agent::new(cfg, rec.clone())
}

fn resync(c: &Cluster) -> Input {
    Input::Resync {
        scope: SCOPE.into(),
        entries: entries(c),
    }
}

/// The table a fresh agent builds from `c` alone, plus what `a` defers
/// removing (unreachable interval elements, removed when idle).
fn full_rebuild_and_garbage(c: &Cluster, a: &Agent<Recording>) -> palisade_nft::Ruleset {
    let mut rs = full_rebuild(c);
    for (name, garbage) in a.garbage() {
        let set = rs.sets.iter_mut().find(|s| s.name == name).unwrap();
        for e in garbage {
            assert!(!set.elements.contains(&e), "{name}: wanted and garbage");
            set.elements.push(e);
        }
        set.elements.sort();
    }
    rs
}

/// The table `rec` holds is what a fresh agent would build, given what `a`
/// still defers removing.
#[track_caller]
fn assert_is_rebuild(rec: &Recording, c: &Cluster, a: &Agent<Recording>) {
    assert_eq!(
        rec.state().table.as_ref(),
        Some(&full_rebuild_and_garbage(c, a))
    );
}

/// Removes every unreachable element the agent deferred.
fn collect_all(a: &mut Agent<Recording>) {
    while a.collect_garbage().unwrap() > 0 {}
}

/// A fresh agent, on its own recording, that has been handed `c` but has
/// not synced yet.
fn started(c: &Cluster) -> (Recording, Agent<Recording>) {
    let rec = Recording::new();
    let mut a = agent(&rec);
    a.handle(resync(c));
    (rec, a)
}

/// The table a fresh agent builds from `c` alone.
fn full_rebuild(c: &Cluster) -> palisade_nft::Ruleset {
    let (rec, mut a) = started(c);
    a.sync().unwrap();
    let table = rec.state().table.clone();
    table.unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    AddPod(usize, usize),
    DeletePod(usize),
    RelabelPod(usize, usize),
    AddPolicy(usize, usize, usize),
    DeletePolicy(usize),
    RelabelNamespace(usize, usize),
    /// One more replica of an existing pod (new name and addresses).
    ScalePod(usize),
    /// A pod takes the labels (and, with the flag, the ports) of another
    /// pod of its namespace.
    BecomeLike(usize, usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..100usize, 0..4usize).prop_map(|(a, b)| Op::AddPod(a, b)),
        1 => (0..100usize).prop_map(Op::DeletePod),
        1 => (0..100usize, 0..4usize).prop_map(|(a, b)| Op::RelabelPod(a, b)),
        1 => (0..100usize, 0..4usize, 0..4usize).prop_map(|(a, b, c)| Op::AddPolicy(a, b, c)),
        1 => (0..100usize).prop_map(Op::DeletePolicy),
        1 => (0..100usize, 0..3usize).prop_map(|(a, b)| Op::RelabelNamespace(a, b)),
        3 => (0..100usize).prop_map(Op::ScalePod),
        3 => (0..100usize, 0..100usize, any::<bool>()).prop_map(|(a, b, c)| Op::BecomeLike(a, b, c)),
        2 => (0..100usize).prop_map(Op::DeletePod),
    ]
}

fn origin(o: &Object) -> String {
    format!("{SCOPE}{}", o.key())
}

fn delete(o: Object) -> Input {
    Input::Delete { origin: origin(&o) }
}

/// Removes the `i`th item, counting round `v`; `None` when it is empty.
fn remove_nth<T>(v: &mut Vec<T>, i: usize) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    Some(v.remove(i % v.len()))
}

/// Applies `op` to the cluster and returns the input that says so.
fn step(c: &mut Cluster, n: &mut usize, op: &Op) -> Option<Input> {
    *n += 1;
    let app = |k: usize| format!("app{k}");
    Some(match *op {
        Op::AddPod(i, k) => {
            let mut p: Pod = c.pods.get(i % c.pods.len().max(1))?.clone();
            p.name = format!("new{n}");
            p.labels.insert("app".into(), app(k));
            p.ips = vec![synth::pod_ipv4(1000 + *n), synth::pod_ipv6(1000 + *n)];
            p.node = Some(format!("node{}", k % 2));
            c.pods.push(p.clone());
            Input::Upsert(entry(Object::Pod(p)))
        }
        Op::DeletePod(i) => delete(Object::Pod(remove_nth(&mut c.pods, i)?)),
        Op::RelabelPod(i, k) => {
            let len = c.pods.len();
            let p = c.pods.get_mut(i % len.max(1))?;
            p.labels.insert("app".into(), app(k));
            Input::Upsert(entry(Object::Pod(p.clone())))
        }
        Op::AddPolicy(i, k, m) => {
            let ns = c.namespaces.keys().nth(i % c.namespaces.len())?.clone();
            let peer = if m % 2 == 0 {
                Peer::Pods {
                    namespaces: NamespaceScope::Own(ns.clone()),
                    pods: LabelSelector::from_labels([("app", app(m).as_str())]),
                }
            } else {
                Peer::Pods {
                    namespaces: NamespaceScope::Selector(LabelSelector::from_labels([(
                        "team", "t1",
                    )])),
                    pods: LabelSelector::everything(),
                }
            };
            let rules = Some(vec![Rule {
                peers: Some(vec![peer]),
                ports: None,
            }]);
            let p = NetworkPolicy {
                namespace: ns,
                name: format!("np{n}"),
                pod_selector: LabelSelector::from_labels([("app", app(k).as_str())]),
                ingress: rules.clone(),
                egress: if m > 1 { rules } else { None },
                staged: false,
            };
            c.policies.push(p.clone());
            Input::Upsert(entry(Object::NetworkPolicy(p)))
        }
        Op::DeletePolicy(i) => delete(Object::NetworkPolicy(remove_nth(&mut c.policies, i)?)),
        Op::ScalePod(i) => {
            let mut p: Pod = c.pods.get(i % c.pods.len().max(1))?.clone();
            p.name = format!("{}-r{n}", p.name);
            p.ips = vec![synth::pod_ipv4(1000 + *n), synth::pod_ipv6(1000 + *n)];
            c.pods.push(p.clone());
            Input::Upsert(entry(Object::Pod(p)))
        }
        Op::BecomeLike(i, j, ports) => {
            let i = i % c.pods.len().max(1);
            let ns = c.pods.get(i)?.namespace.clone();
            let same: Vec<usize> = (0..c.pods.len())
                .filter(|&k| c.pods[k].namespace == ns)
                .collect();
            let like = c.pods[same[j % same.len()]].clone();
            let p = &mut c.pods[i];
            p.labels = like.labels;
            if ports {
                p.ports = like.ports;
            }
            Input::Upsert(entry(Object::Pod(p.clone())))
        }
        Op::RelabelNamespace(i, t) => {
            let key = c.namespaces.keys().nth(i % c.namespaces.len())?.clone();
            let ns = c.namespaces.get_mut(&key)?;
            ns.labels.insert("team".into(), format!("t{t}"));
            Input::Upsert(entry(Object::Namespace(ns.clone())))
        }
    })
}

/// After any sequence of events applied incrementally (sometimes in
/// bursts), the table equals a full rebuild after every sync, and no event
/// ever replaced the table. Events in clusters the incremental compiler
/// cannot start from take the full path (element changes all the same);
/// both paths must be taken often, the full one in such clusters too.
#[test]
fn incremental_equals_full_rebuild() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let (refused, full) = (Cell::new(0usize), Cell::new(0usize));
    let incremental = Cell::new(0usize);
    let strategy = (
        1u64..1000,
        prop::collection::vec((op(), any::<bool>()), 1..25),
    );
    runner
        .run(&strategy, |(seed, ops)| {
            // A third of the clusters have admin policies; in a third a
            // pod lists one port name twice, which the incremental
            // compiler refuses: their events take the full path.
            let mut params = Params::small(seed);
            if seed % 3 == 0 {
                params.admin_policies = 1;
            }
            let mut c = synth::cluster(&params);
            let refuses = seed % 3 == 1;
            if refuses {
                ambiguous_ports(&mut c);
            }
            let (rec, mut a) = started(&c);
            a.sync().unwrap();
            let mut n = 0;
            let check = |a: &mut Agent<Recording>, c: &Cluster| -> Result<(), TestCaseError> {
                let r = a.sync().unwrap();
                let counter = match r.path {
                    SyncPath::Incremental => &incremental,
                    SyncPath::Full => &full,
                };
                counter.set(counter.get() + 1);
                // (A pod that takes another's ports may end the refusal.)
                if refuses && r.path == SyncPath::Full {
                    refused.set(refused.get() + 1);
                }
                let incremental = rec.state().table.clone().unwrap();
                prop_assert_eq!(&incremental, &full_rebuild_and_garbage(c, a));
                prop_assert_eq!(a.applied(), Some(&incremental));
                let m = a.metrics().encode();
                let failed = m.lines().find(|l| l.contains("reason=\"apply\""));
                prop_assert!(failed.is_none(), "a transaction failed: {:?}", failed);
                Ok(())
            };
            for (op, sync_now) in &ops {
                if let Some(input) = step(&mut c, &mut n, op) {
                    a.handle(input);
                }
                if *sync_now {
                    check(&mut a, &c)?;
                }
            }
            check(&mut a, &c)?;
            collect_all(&mut a);
            prop_assert!(a.garbage().is_empty());
            prop_assert_eq!(rec.state().table.clone().unwrap(), full_rebuild(&c));
            let replaces = rec.state().deltas.iter().filter(|d| d.is_replace()).count();
            prop_assert_eq!(replaces, 1);
            Ok(())
        })
        .unwrap();
    let (refused, full, incremental) = (refused.get(), full.get(), incremental.get());
    eprintln!("syncs: {incremental} incremental, {full} full ({refused} in refused clusters)");
    assert!(
        refused >= 10,
        "the full path was taken {refused} times in clusters the incremental compiler refuses"
    );
    assert!(
        incremental >= 50,
        "the incremental path was taken {incremental} times"
    );
    assert!(full >= 10, "the full path was taken {full} times");
}

/// A pod that lists one container port name twice (which named port it
/// means depends on the order): the incremental compiler refuses such a
/// cluster, so every change takes the full path.
fn ambiguous_ports(c: &mut Cluster) {
    let p = c.pods.last_mut().unwrap();
    for port in [1, 2] {
        p.ports.push(palisade_model::ContainerPort {
            name: Some("twice".into()),
            port,
            protocol: palisade_model::Protocol::Tcp,
        });
    }
}

/// In a cluster the incremental compiler refuses, pod events take the full
/// path: replicas, their removal and relabels between existing identities
/// patch elements (no table replacement), and every table agrees with a
/// rebuild from scratch.
#[test]
fn replicas_and_relabels_in_a_refused_cluster_patch_elements() {
    let mut params = Params::small(7);
    params.admin_policies = 1;
    let mut c = synth::cluster(&params);
    ambiguous_ports(&mut c);
    let (rec, mut a) = started(&c);
    assert_eq!(a.sync().unwrap().path, SyncPath::Full);
    let mut n = 0;
    let local = c
        .pods
        .iter()
        .position(|p| p.node.as_deref() == Some("node0"))
        .unwrap();
    let remote = c
        .pods
        .iter()
        .position(|p| p.node.as_deref() != Some("node0"))
        .unwrap();
    // `patched`: the event must be element changes, not a replacement.
    let mut expect = |a: &mut Agent<Recording>, c: &mut Cluster, op: Op, patched: bool| {
        let input = step(c, &mut n, &op).unwrap();
        a.handle(input);
        let r = a.sync().unwrap();
        assert_eq!(r.path, SyncPath::Full, "{op:?}: {r:?}");
        assert!(!patched || !r.replaced, "{op:?}: {r:?}");
        assert_eq!(
            rec.state().table.as_ref(),
            Some(&full_rebuild_and_garbage(c, a)),
            "{op:?}"
        );
    };
    // A replica of a local pod; then it has a sibling: further replicas
    // and their removal only change elements.
    expect(&mut a, &mut c, Op::ScalePod(local), false);
    expect(&mut a, &mut c, Op::ScalePod(local), true);
    let last = c.pods.len() - 1;
    expect(&mut a, &mut c, Op::DeletePod(last), true);
    // The same on the remote side (identity marks only).
    expect(&mut a, &mut c, Op::ScalePod(remote), false);
    expect(&mut a, &mut c, Op::ScalePod(remote), true);
    let last = c.pods.len() - 1;
    expect(&mut a, &mut c, Op::DeletePod(last), true);
    // A relabel to labels no pod has: a new identity.
    let original = c.pods[local].labels.clone();
    expect(&mut a, &mut c, Op::ScalePod(local), true);
    expect(&mut a, &mut c, Op::ScalePod(local), true);
    let r1 = c.pods.len() - 2;
    let relabel = |a: &mut Agent<Recording>, c: &mut Cluster, i: usize, labels| {
        c.pods[i].labels = labels;
        a.handle(Input::Upsert(entry(Object::Pod(c.pods[i].clone()))));
        let r = a.sync().unwrap();
        assert_is_rebuild(&rec, c, a);
        assert_eq!(r.path, SyncPath::Full, "{r:?}");
        r
    };
    let mut other = original.clone();
    other.insert("app".into(), "app-other".into());
    relabel(&mut a, &mut c, local, other.clone());
    // Relabels between two existing identities, both keeping a member.
    assert!(!relabel(&mut a, &mut c, r1, other).replaced);
    assert!(!relabel(&mut a, &mut c, r1, original).replaced);
    let m = a.metrics().encode();
    assert!(
        m.contains("palisade_agent_syncs_total{path=\"full\"}"),
        "{m}"
    );
    assert!(
        !m.contains("palisade_agent_syncs_total{path=\"incremental\"}"),
        "{m}"
    );
}

fn cluster() -> Cluster {
    synth::cluster(&Params::small(7))
}

#[test]
fn a_pod_relabel_changes_only_map_elements() {
    let mut c = cluster();
    let (rec, mut a) = started(&c);
    assert!(a.sync().unwrap().replaced);
    let i = c
        .pods
        .iter()
        .position(|p| p.node.as_deref() == Some("node0"))
        .unwrap();
    c.pods[i].labels.insert("app".into(), "app-new".into());
    assert!(a.handle(Input::Upsert(entry(Object::Pod(c.pods[i].clone())))));
    let r = a.sync().unwrap();
    assert!(!r.replaced);
    assert!(r.added > 0);
    let st = rec.state();
    let Some(Delta::Elements(sets)) = st.deltas.last() else {
        panic!("expected an element delta, got {:?}", st.deltas.last());
    };
    let text = st.texts.last().unwrap();
    assert!(
        !text.contains("delete table") && !text.contains("chain"),
        "{text}"
    );
    // A pod's identity lives in the identity and group maps; the relabelled
    // pod's address is what changes.
    let ip = c.pods[i].ips[0].to_string();
    assert!(sets.iter().any(|d| d.set == "identity4"), "{sets:?}");
    assert!(text.contains(&ip), "{text}");
    drop(st);
    assert_is_rebuild(&rec, &c, &a);
}

/// The object-count gauges follow the store: set after the first sync, and
/// after a later sync that added a pod.
#[test]
fn object_counts_follow_the_store() {
    let mut c = cluster();
    let (_rec, mut a) = started(&c);
    a.sync().unwrap();
    let gauge = |a: &Agent<Recording>, kind: &str| {
        let m = a.metrics().encode();
        let prefix = format!("palisade_agent_objects{{kind=\"{kind}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {m}"))
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(gauge(&a, "Pod"), c.pods.len());
    assert_eq!(gauge(&a, "NetworkPolicy"), c.policies.len());
    let mut p = c.pods[0].clone();
    p.name = format!("{}-copy", p.name);
    p.ips = vec!["10.250.0.1".parse().unwrap()];
    c.pods.push(p.clone());
    assert!(a.handle(Input::Upsert(entry(Object::Pod(p)))));
    a.sync().unwrap();
    assert_eq!(gauge(&a, "Pod"), c.pods.len());
}

const GOOD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: ns0}
spec:
  podSelector: {matchLabels: {app: app0}}
  ingress:
  - ports: [{port: 80}]
"#;

/// `GOOD` with an inverted port range, which decoding refuses.
fn bad() -> String {
    GOOD.replace("{port: 80}", "{port: 90, endPort: 85}")
}

fn file(body: &str) -> Input {
    Input::Upsert(Entry::decode_bytes(
        "dir:/m/web.yaml".into(),
        "/m/web.yaml",
        body.as_bytes(),
    ))
}

#[test]
fn an_invalid_update_keeps_the_previous_version() {
    let c = cluster();
    let (rec, mut a) = started(&c);
    assert!(a.handle(file(GOOD)));
    a.sync().unwrap();
    let before = rec.state().table.clone();
    let deltas = rec.state().deltas.len();

    assert!(!a.handle(file(&bad())), "an invalid update changes nothing");
    let h = a.health();
    let status = h.lock().unwrap().status();
    assert!(status.starts_with("degraded"), "{status}");
    assert!(
        status.contains("/m/web.yaml")
            && status.contains("NetworkPolicy ns0/web")
            && status.contains("endPort"),
        "{status}"
    );
    let metrics = a.metrics().encode();
    assert!(
        metrics.contains("palisade_agent_errors_total{reason=\"invalid_object\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("palisade_agent_degraded 1"), "{metrics}");
    let kept: Vec<_> = a
        .store()
        .objects()
        .filter(|o| o.file == "/m/web.yaml")
        .collect();
    assert_eq!(kept.len(), 1);
    let _ = a.sync();
    assert_eq!(rec.state().table, before);
    assert!(rec.state().deltas.len() <= deltas + 1);
    assert!(matches!(
        rec.state().deltas.last(),
        Some(Delta::Replace(_)) | Some(Delta::Elements(_)) | Some(Delta::Noop)
    ));

    // Fixing the file clears the problem.
    a.handle(file(GOOD.replace("80", "81").as_str()));
    assert_eq!(h.lock().unwrap().status(), "ok\n");
}

#[test]
fn a_syntax_error_keeps_every_object_of_the_file() {
    let c = cluster();
    let mut a = agent(&Recording::new());
    a.handle(resync(&c));
    a.handle(file(GOOD));
    assert!(!a.handle(file("kind: [unclosed")));
    assert_eq!(
        a.store()
            .objects()
            .filter(|o| o.file == "/m/web.yaml")
            .count(),
        1
    );
    assert!(a.handle(Input::Delete {
        origin: "dir:/m/web.yaml".into()
    }));
    assert_eq!(
        a.store()
            .objects()
            .filter(|o| o.file == "/m/web.yaml")
            .count(),
        0
    );
}

#[test]
fn bursts_are_debounced_into_one_transaction() {
    let mut c = cluster();
    let rec = Recording::new();
    let a = agent(&rec);
    let health = a.health();
    let (tx, rx) = channel();
    let h = std::thread::spawn(move || a.run(rx));
    tx.send(resync(&c)).unwrap();
    let t = Instant::now();
    while !health.lock().unwrap().ready {
        assert!(t.elapsed() < Duration::from_secs(10), "never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(rec.state().deltas.len(), 1);
    // 20 relabels 2 ms apart: well within the 30 ms quiet period.
    for k in 0..20 {
        let i = k % c.pods.len();
        c.pods[i].labels.insert("app".into(), format!("burst{k}"));
        tx.send(Input::Upsert(entry(Object::Pod(c.pods[i].clone()))))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let t = Instant::now();
    while rec.state().deltas.len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "burst never applied");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    // One transaction for the burst; after it, only the idle removal of
    // unreachable elements (removals only), which leaves the full rebuild.
    let st = rec.state();
    let adding = st.deltas[1..].iter().filter(|d| d.counts().0 > 0).count();
    assert_eq!(adding, 1, "one transaction for the burst");
    assert_eq!(st.table.as_ref(), Some(&full_rebuild(&c)));
    drop(st);
    drop(tx);
    h.join().unwrap();
}

#[test]
fn a_restarted_agent_patches_the_existing_table() {
    let mut c = cluster();
    let (rec, mut first) = started(&c);
    first.sync().unwrap();
    drop(first);

    // Same state: nothing to do.
    let mut second = agent(&rec);
    second.handle(resync(&c));
    let r = second.sync().unwrap();
    assert_eq!((r.added, r.removed, r.replaced), (0, 0, false));

    // Changed while no agent ran: only the difference is applied.
    let gone = c.pods.remove(0);
    let mut third = agent(&rec);
    third.handle(resync(&c));
    let r = third.sync().unwrap();
    assert!(!r.replaced && r.removed > 0, "{r:?}");
    assert_is_rebuild(&rec, &c, &third);
    let _ = gone;

    // A failed element delta re-reads the table and converges.
    rec.state().fail_next = 1;
    c.pods[0].labels.insert("app".into(), "x".into());
    third.handle(Input::Upsert(entry(Object::Pod(c.pods[0].clone()))));
    third.sync().unwrap();
    assert_is_rebuild(&rec, &c, &third);
}

#[test]
fn resync_removes_what_disappeared() {
    let mut c = cluster();
    let mut a = agent(&Recording::new());
    a.handle(resync(&c));
    let before: BTreeMap<String, usize> = a.store().counts();
    c.pods.truncate(3);
    assert!(a.handle(resync(&c)));
    assert_eq!(a.store().counts()["Pod"], 3);
    assert!(before["Pod"] > 3);
    assert!(!a.handle(resync(&c)), "the same snapshot changes nothing");
}

#[test]
fn a_large_interval_delta_replaces_the_table() {
    let mut c = cluster();
    let rec = Recording::new();
    let mut cfg = AgentConfig::new("node0", vec![SCOPE.to_string()]);
    cfg.replace_above_interval_removals = Some(0);
    let mut a = Agent::new(cfg, rec.clone());
    a.handle(resync(&c));
    a.sync().unwrap();
    let mut n = 0;
    let mut replaced = 0;
    for k in 0..12 {
        let op = if k % 3 == 2 {
            Op::DeletePolicy(k)
        } else {
            Op::AddPolicy(k, k % 4, 3)
        };
        let input = step(&mut c, &mut n, &op).unwrap();
        a.handle(input);
        replaced += usize::from(a.sync().unwrap().replaced);
        assert_is_rebuild(&rec, &c, &a);
    }
    assert!(replaced > 0, "no policy change removed interval elements");
}

/// Regression: an agent started with a node name that no Node object and
/// no pod carries (here a case slip) compiled a table with no local pods,
/// applied it over the node's enforcement, and reported healthy and ready.
/// It now leaves the kernel alone, stays unready and says why, until an
/// object names its node.
#[test]
fn an_unknown_node_is_refused_until_an_object_names_it() {
    let mut c = cluster();
    let rec = Recording::new();
    let mut cfg = AgentConfig::new("Node0", vec![SCOPE.to_string()]);
    cfg.replace_above_interval_removals = None;
    let mut a = Agent::new(cfg, rec.clone());
    a.handle(resync(&c));
    let err = a.sync().unwrap_err();
    let palisade_agent::agent::SyncError::UnknownNode(why) = err else {
        panic!("expected an unknown node, got {err:?}");
    };
    assert!(
        why.contains("\"Node0\"") && why.contains("did you mean \"node0\""),
        "{why}"
    );
    assert!(rec.state().deltas.is_empty(), "the kernel was touched");
    let health = a.health();
    {
        let h = health.lock().unwrap();
        assert!(!h.ready && h.is_degraded());
        assert!(
            h.readiness().starts_with("not ready: node \"Node0\""),
            "{}",
            h.readiness()
        );
        assert!(h.status().contains("did you mean"), "{}", h.status());
    }
    // A pod scheduled to the node makes it known.
    let mut p = c.pods[0].clone();
    p.name = "on-the-new-node".into();
    p.node = Some("Node0".into());
    c.pods.push(p.clone());
    assert!(a.handle(Input::Upsert(entry(Object::Pod(p)))));
    a.sync().unwrap();
    let h = health.lock().unwrap();
    assert!(h.ready && h.node_unknown.is_none(), "{}", h.status());
    assert_eq!(h.readiness(), "ready\n");
    assert!(rec.state().table.is_some());
}

/// Whether a policy names an `ipBlock` (staging it changes the set of
/// blocks, which the incremental path refuses).
fn has_blocks(p: &NetworkPolicy) -> bool {
    p.ingress
        .iter()
        .chain(&p.egress)
        .flatten()
        .flat_map(|r| r.peers.iter().flatten())
        .any(|peer| matches!(peer, Peer::IpBlock(_)))
}

/// Staging a policy withdraws what it enforces and unstaging it (the
/// annotation removed, as `promote` does) restores it, both on the
/// incremental path, each time equal to a fresh agent's table.
#[test]
fn staging_and_promoting_a_policy_take_the_incremental_path() {
    let mut c = cluster();
    let (rec, mut a) = started(&c);
    a.sync().unwrap();
    let enforced = rec.state().table.clone().unwrap();
    // A policy whose absence changes this node's table.
    let i = (0..c.policies.len())
        .find(|&i| {
            let mut without = c.clone();
            without.policies.remove(i);
            !has_blocks(&c.policies[i]) && full_rebuild(&without) != enforced
        })
        .expect("a policy that matters on node0");
    for staged in [true, false] {
        c.policies[i].staged = staged;
        let p = Object::NetworkPolicy(c.policies[i].clone());
        assert!(a.handle(Input::Upsert(entry(p))));
        let r = a.sync().unwrap();
        assert_eq!(r.path, SyncPath::Incremental, "staged: {staged}");
        assert!(r.added + r.removed > 0, "staged: {staged}: {r:?}");
        assert_is_rebuild(&rec, &c, &a);
        collect_all(&mut a);
        let table = rec.state().table.clone().unwrap();
        assert_eq!(table == enforced, !staged);
    }
}
