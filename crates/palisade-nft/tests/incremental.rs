//! The incremental compiler against the full one: after every change of a
//! random sequence (pods added, removed, relabelled, moved, given other
//! ports; policies added, removed, edited, staged and unstaged), the
//! previous ruleset patched
//! with the incremental delta equals the full compilation of the new
//! cluster, element for element. A refused change rebuilds the state from
//! the full compilation, as the agent does; refusals must stay rare.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use palisade_bench::synth::{self, Params};
use palisade_engine::live::{IdentityKey, Live, Op as Sel, SelectionDelta};
use palisade_engine::Engine;
use palisade_model::{
    Cluster, LabelSelector, NamespaceScope, NetworkPolicy, Peer, PortSpec, Protocol, Rule,
};
use palisade_nft::incr::{Change, Incremental};
use palisade_nft::{compile_numbered, Local, Numbering, Options, Ruleset};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const NODE: &str = "node0";

/// The cluster as decoding assembles it: pods and policies sorted by
/// namespace and name (group ids and representatives depend on it).
fn assembled(c: &Cluster) -> Cluster {
    let mut c = c.clone();
    c.complete_namespaces();
    c.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    c.policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    c
}

fn full(c: &Cluster) -> Ruleset {
    let engine = Engine::new(assembled(c));
    let opts = Options {
        local: Local::Node(NODE.into()),
        // The wiring is the caller's, outside the incremental state.
        wiring: Default::default(),
        flow_log: None,
        kept_mark: Default::default(),
    };
    compile_numbered(&engine, &opts, Numbering::Stable).unwrap()
}

type PodKey = (String, String);

/// The engine's live index fed the same changes, with what its selection
/// deltas say each NetworkPolicy selects, summed since it was built.
struct Selections {
    live: Live,
    identities: BTreeSet<Arc<IdentityKey>>,
    selected: BTreeMap<PodKey, BTreeSet<Arc<IdentityKey>>>,
}

impl Selections {
    fn new(c: &Cluster) -> Option<Selections> {
        let engine = Engine::new(assembled(c));
        let (live, delta) = Live::build(&engine).ok()?;
        let mut sel = Selections {
            live,
            identities: BTreeSet::new(),
            selected: BTreeMap::new(),
        };
        sel.sum(delta);
        Some(sel)
    }

    /// Applies the changes; `false` when the live index refuses one.
    fn apply(&mut self, changes: &[Change]) -> bool {
        for c in changes {
            let Ok(delta) = self.live.apply(c.clone()) else {
                return false;
            };
            self.sum(delta);
        }
        true
    }

    fn sum(&mut self, delta: SelectionDelta) {
        for (ik, op) in delta.identities {
            match op {
                Sel::Add => assert!(self.identities.insert(ik), "an identity added twice"),
                Sel::Remove => assert!(self.identities.remove(&ik), "an unknown identity removed"),
            }
        }
        for (pk, ik, op) in delta.subjects {
            let set = self.selected.entry(pk).or_default();
            match op {
                Sel::Add => assert!(set.insert(ik), "a selection added twice"),
                Sel::Remove => assert!(set.remove(&ik), "an unknown selection removed"),
            }
        }
        self.selected.retain(|_, s| !s.is_empty());
    }
    /// The summed deltas against a full index of the same cluster: the
    /// same identities (as partitions of the endpoint pods) and, for every
    /// NetworkPolicy, the same selected pods.
    fn check(&self, c: &Cluster) -> Result<(), String> {
        let engine = Engine::new(assembled(c));
        let (cluster, idx) = (engine.cluster(), engine.index());
        let key = |i: palisade_engine::PodId| {
            (
                cluster.pods[i.index()].namespace.clone(),
                cluster.pods[i.index()].name.clone(),
            )
        };
        let live_ids: BTreeSet<&Arc<IdentityKey>> =
            self.live.identities().map(|i| &i.key).collect();
        if live_ids != self.identities.iter().collect() {
            return Err("identity deltas disagree with the live identities".into());
        }
        let want: BTreeSet<BTreeSet<PodKey>> = idx
            .identities()
            .iter()
            .map(|i| i.members.iter().map(|&m| key(m)).collect())
            .collect();
        let got: BTreeSet<BTreeSet<PodKey>> =
            self.live.identities().map(|i| i.members.clone()).collect();
        if want != got {
            return Err(format!("identities differ:\n want {want:?}\n got  {got:?}"));
        }
        let mut want: BTreeMap<PodKey, BTreeSet<PodKey>> = BTreeMap::new();
        for ident in idx.identities() {
            for &p in ident.ingress_policies.iter().chain(&ident.egress_policies) {
                let pk = (
                    cluster.policies[p].namespace.clone(),
                    cluster.policies[p].name.clone(),
                );
                want.entry(pk)
                    .or_default()
                    .extend(ident.members.iter().map(|&m| key(m)));
            }
        }
        // The index records the policies that isolate an identity; one
        // with neither direction selects but isolates nothing.
        let isolates = |pk: &PodKey| {
            let p = self.live.policy(pk).expect("a selecting policy exists");
            p.ingress.is_some() || p.egress.is_some()
        };
        let got: BTreeMap<PodKey, BTreeSet<PodKey>> = self
            .selected
            .iter()
            .filter(|(pk, _)| isolates(pk))
            .map(|(pk, ids)| {
                let pods = ids
                    .iter()
                    .flat_map(|ik| {
                        self.live
                            .identity(ik)
                            .expect("a live identity")
                            .members
                            .clone()
                    })
                    .collect();
                (pk.clone(), pods)
            })
            .collect();
        if want != got {
            return Err(format!("selections differ:\n want {want:?}\n got  {got:?}"));
        }
        Ok(())
    }
}

fn state(c: &Cluster) -> Option<Incremental> {
    Incremental::new(&Engine::new(assembled(c)), NODE)
}

#[derive(Clone, Debug)]
enum Op {
    /// A copy of pod `a` with a new name and address, with app label `b`
    /// (or its own when `b` is 0), on node `c`.
    AddPod(usize, usize, usize),
    DeletePod(usize),
    /// Pod `a` takes pod `b`'s labels.
    Relabel(usize, usize),
    /// Pod `a` takes pod `b`'s container ports.
    Ports(usize, usize),
    MovePod(usize, usize),
    /// Policy `a` copied into namespace `b` under a new name, selecting
    /// app `c`.
    CopyPolicy(usize, usize, usize),
    DeletePolicy(usize),
    /// Policy `a` gets the rules of policy `b` (ingress, egress or both).
    SwapRules(usize, usize, usize),
    /// A new policy whose rules use selectors, named ports and ranges but
    /// no ipBlock.
    NewPolicy(usize, usize, usize),
    /// Namespace `a` gets label `team: t<b>`.
    RelabelNamespace(usize, usize),
    /// Namespace object `a` deleted (its pods keep an implicit one).
    DeleteNamespace(usize),
    /// A copy of pod `a` in a namespace that has no object.
    PodInNewNamespace(usize, usize),
    /// This node's addresses change.
    NodeAddresses(usize),
    /// A host-network copy of pod `a` on node `b`, with that node's
    /// addresses.
    AddHostPod(usize, usize),
    /// Policy `a` staged if it was enforced, enforced if it was staged:
    /// the kernel must lose or gain exactly what the policy enforces.
    ToggleStaged(usize),
    /// Several of the above before one sync.
    Burst(Vec<Op>),
}

fn leaf() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..1000usize, 0..6usize, 0..3usize).prop_map(|(a, b, c)| Op::AddPod(a, b, c)),
        2 => (0..1000usize).prop_map(Op::DeletePod),
        2 => (0..1000usize, 0..1000usize).prop_map(|(a, b)| Op::Relabel(a, b)),
        1 => (0..1000usize, 0..1000usize).prop_map(|(a, b)| Op::Ports(a, b)),
        1 => (0..1000usize, 0..3usize).prop_map(|(a, b)| Op::MovePod(a, b)),
        2 => (0..1000usize, 0..1000usize, 0..6usize).prop_map(|(a, b, c)| Op::CopyPolicy(a, b, c)),
        2 => (0..1000usize).prop_map(Op::DeletePolicy),
        1 => (0..1000usize, 0..1000usize, 0..3usize).prop_map(|(a, b, c)| Op::SwapRules(a, b, c)),
        2 => (0..1000usize, 0..6usize, 0..1000usize).prop_map(|(a, b, c)| Op::NewPolicy(a, b, c)),
        1 => (0..1000usize, 0..3usize).prop_map(|(a, b)| Op::RelabelNamespace(a, b)),
        1 => (0..1000usize).prop_map(Op::DeleteNamespace),
        1 => (0..1000usize, 0..2usize).prop_map(|(a, b)| Op::PodInNewNamespace(a, b)),
        1 => (0..4usize).prop_map(Op::NodeAddresses),
        1 => (0..1000usize, 0..3usize).prop_map(|(a, b)| Op::AddHostPod(a, b)),
        2 => (0..1000usize).prop_map(Op::ToggleStaged),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => leaf(),
        1 => prop::collection::vec(leaf(), 2..5).prop_map(Op::Burst),
    ]
}

fn app(k: usize) -> String {
    format!("app{k}")
}

/// Applies `op` to `c`, returning the changes it made.
fn step(c: &mut Cluster, n: &mut usize, op: &Op) -> Vec<Change> {
    *n += 1;
    let pod = |c: &Cluster, p: &palisade_model::Pod| Change::Pod {
        key: (p.namespace.clone(), p.name.clone()),
        new: c.pods.iter().find(|q| q.key() == p.key()).cloned(),
    };
    let policy = |c: &Cluster, p: &NetworkPolicy| Change::Policy {
        key: (p.namespace.clone(), p.name.clone()),
        new: c
            .policies
            .iter()
            .find(|q| q.namespace == p.namespace && q.name == p.name)
            .cloned(),
    };
    let np = c.pods.len().max(1);
    let npol = c.policies.len().max(1);
    // Changes pod `a` in place with what `f` takes from pod `b`.
    let edit_pod = |c: &mut Cluster,
                    a: usize,
                    b: usize,
                    f: &dyn Fn(&mut palisade_model::Pod, &palisade_model::Pod)| {
        if c.pods.is_empty() {
            return vec![];
        }
        let from = c.pods[b % np].clone();
        f(&mut c.pods[a % np], &from);
        let p = c.pods[a % np].clone();
        vec![pod(c, &p)]
    };
    match op {
        Op::Burst(ops) => ops.iter().flat_map(|o| step(c, n, o)).collect(),
        Op::RelabelNamespace(a, t) => {
            let Some(name) = c
                .namespaces
                .keys()
                .nth(a % c.namespaces.len().max(1))
                .cloned()
            else {
                return vec![];
            };
            let ns = c.namespaces.get_mut(&name).unwrap();
            ns.labels.insert("team".into(), format!("t{t}"));
            vec![Change::Namespace {
                name,
                new: Some(ns.clone()),
            }]
        }
        Op::DeleteNamespace(a) => {
            let Some(name) = c
                .namespaces
                .keys()
                .nth(a % c.namespaces.len().max(1))
                .cloned()
            else {
                return vec![];
            };
            c.namespaces.remove(&name);
            vec![Change::Namespace { name, new: None }]
        }
        Op::PodInNewNamespace(a, k) => {
            let Some(mut p) = c.pods.get(a % np).cloned() else {
                return vec![];
            };
            p.namespace = format!("extra{k}");
            p.name = format!("new{n}");
            p.ips = vec![synth::pod_ipv4(5000 + *n), synth::pod_ipv6(5000 + *n)];
            c.pods.push(p.clone());
            vec![pod(c, &p)]
        }
        Op::AddHostPod(a, node) => {
            let Some(mut p) = c.pods.get(a % np).cloned() else {
                return vec![];
            };
            let name = format!("node{node}");
            p.name = format!("host{n}");
            p.host_network = true;
            p.ips = c
                .nodes
                .iter()
                .find(|x| x.name == name)
                .map(|x| x.addresses.clone())
                .unwrap_or_default();
            if p.ips.is_empty() || a % 2 == 1 {
                // An address of its own (several host pods may share it).
                p.ips = vec![format!("192.168.9.{}", a % 5).parse().unwrap()];
            }
            p.node = Some(name);
            c.pods.push(p.clone());
            vec![pod(c, &p)]
        }
        Op::NodeAddresses(k) => {
            let Some(node) = c.nodes.iter_mut().find(|x| x.name == NODE) else {
                return vec![];
            };
            node.addresses = match k {
                0 => vec![],
                1 => vec!["192.168.0.1".parse().unwrap()],
                2 => vec![
                    "192.168.7.7".parse().unwrap(),
                    "fd00:ff::7".parse().unwrap(),
                ],
                _ => vec!["fd00:ff::8".parse().unwrap()],
            };
            vec![Change::Node {
                name: NODE.into(),
                new: Some(node.clone()),
            }]
        }
        Op::AddPod(a, b, node) => {
            let Some(mut p) = c.pods.get(a % np).cloned() else {
                return vec![];
            };
            p.name = format!("new{n}");
            if *b > 0 {
                p.labels.insert("app".into(), app(*b));
            }
            p.ips = vec![synth::pod_ipv4(5000 + *n), synth::pod_ipv6(5000 + *n)];
            p.node = Some(format!("node{node}"));
            c.pods.push(p.clone());
            vec![pod(c, &p)]
        }
        Op::DeletePod(a) => {
            if c.pods.is_empty() {
                return vec![];
            }
            let p = c.pods.remove(a % np);
            vec![pod(c, &p)]
        }
        Op::Relabel(a, b) => edit_pod(c, *a, *b, &|p, from| p.labels = from.labels.clone()),
        Op::Ports(a, b) => edit_pod(c, *a, *b, &|p, from| p.ports = from.ports.clone()),
        Op::MovePod(a, node) => edit_pod(c, *a, *a, &|p, _| p.node = Some(format!("node{node}"))),
        Op::CopyPolicy(a, b, k) => {
            let Some(mut p) = c.policies.get(a % npol).cloned() else {
                return vec![];
            };
            let Some(ns) = c
                .namespaces
                .keys()
                .nth(b % c.namespaces.len().max(1))
                .cloned()
            else {
                return vec![];
            };
            p.namespace = ns;
            p.name = format!("copy{n}");
            p.pod_selector = LabelSelector::from_labels([("app", app(*k).as_str())]);
            c.policies.push(p.clone());
            vec![policy(c, &p)]
        }
        Op::DeletePolicy(a) => {
            if c.policies.is_empty() {
                return vec![];
            }
            let p = c.policies.remove(a % npol);
            vec![policy(c, &p)]
        }
        Op::ToggleStaged(a) => {
            let Some(p) = c.policies.get_mut(a % npol) else {
                return vec![];
            };
            p.staged = !p.staged;
            let p = p.clone();
            vec![policy(c, &p)]
        }
        Op::SwapRules(a, b, which) => {
            if c.policies.is_empty() {
                return vec![];
            }
            let src = c.policies[b % npol].clone();
            let dst = &mut c.policies[a % npol];
            if which % 3 != 1 {
                dst.ingress = src.ingress;
            }
            if which % 3 != 0 {
                dst.egress = src.egress;
            }
            let p = dst.clone();
            vec![policy(c, &p)]
        }
        Op::NewPolicy(a, k, m) => {
            let Some(ns) = c
                .namespaces
                .keys()
                .nth(a % c.namespaces.len().max(1))
                .cloned()
            else {
                return vec![];
            };
            let peer = match m % 3 {
                0 => Peer::Pods {
                    namespaces: NamespaceScope::Own(ns.clone()),
                    pods: LabelSelector::from_labels([("app", app(m % 7).as_str())]),
                },
                1 => Peer::Pods {
                    namespaces: NamespaceScope::Selector(LabelSelector::everything()),
                    pods: LabelSelector::everything(),
                },
                _ => Peer::Pods {
                    namespaces: NamespaceScope::Selector(LabelSelector::from_labels([(
                        "team", "t1",
                    )])),
                    pods: LabelSelector::everything(),
                },
            };
            let ports = match m % 4 {
                0 => None,
                1 => Some(vec![PortSpec::Named {
                    protocol: Protocol::Tcp,
                    name: "http".into(),
                }]),
                2 => Some(vec![PortSpec::Range {
                    protocol: Protocol::Udp,
                    start: 1000,
                    end: 1000 + (m % 50) as u16,
                }]),
                _ => Some(vec![
                    PortSpec::Range {
                        protocol: Protocol::Tcp,
                        start: 80,
                        end: 80,
                    },
                    PortSpec::AllPorts(Protocol::Sctp),
                ]),
            };
            let rules = Some(vec![Rule {
                peers: if m % 5 == 4 { None } else { Some(vec![peer]) },
                ports,
            }]);
            let p = NetworkPolicy {
                namespace: ns,
                name: format!("np{n}"),
                pod_selector: LabelSelector::from_labels([("app", app(*k).as_str())]),
                ingress: rules.clone(),
                egress: if m % 2 == 0 { rules } else { None },
                staged: false,
            };
            c.policies.push(p.clone());
            vec![policy(c, &p)]
        }
    }
}

fn patch(rs: &mut Ruleset, changes: Vec<palisade_nft::SetDelta>) {
    for palisade_nft::SetDelta {
        set: name,
        remove,
        add,
    } in changes
    {
        let set = rs
            .sets
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no set {name}"));
        let mut elems: BTreeSet<_> = set.elements.iter().cloned().collect();
        for e in remove {
            assert!(elems.remove(&e), "{name}: removes absent {e:?}");
        }
        for e in add {
            assert!(elems.insert(e.clone()), "{name}: adds present {e:?}");
        }
        set.elements = elems.into_iter().collect();
    }
}

/// What differs between two rulesets, element by element.
fn difference(got: &Ruleset, want: &Ruleset) -> String {
    let mut out = String::new();
    if got.chains != want.chains {
        out += "chains differ\n";
    }
    for (g, w) in got.sets.iter().zip(&want.sets) {
        let gs: BTreeSet<_> = g.elements.iter().collect();
        let ws: BTreeSet<_> = w.elements.iter().collect();
        for e in gs.difference(&ws) {
            out += &format!("{}: extra {:?}\n", g.name, e);
        }
        for e in ws.difference(&gs) {
            out += &format!("{}: missing {:?}\n", g.name, e);
        }
    }
    out
}

#[test]
fn incremental_compile_equals_full_compile() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    let (applied, refused) = (Cell::new(0usize), Cell::new(0usize));
    let deferred = Cell::new(0usize);
    let selections = Cell::new(0usize);
    let toggled = Cell::new(0usize);
    runner
        .run(
            &(1u64..10_000, prop::collection::vec(op(), 1..30)),
            |(seed, ops)| {
                let mut params = Params::small(seed);
                params.pods = 12 + (seed % 20) as usize;
                params.policies = 3 + (seed % 8) as usize;
                params.nodes = 3;
                // A third of the clusters carry admin-tier policies.
                if seed % 3 == 0 {
                    params.admin_policies = 1 + (seed % 4) as usize;
                }
                let mut c = synth::cluster(&params);
                let mut rs = full(&c);
                let mut st = state(&c);
                let mut sel = Selections::new(&c);
                let mut n = 0;
                for op in &ops {
                    let changes = step(&mut c, &mut n, op);
                    let want = full(&c);
                    // The engine's selection deltas, summed, agree with a
                    // full index of the new cluster.
                    match sel.as_mut().map(|s| s.apply(&changes)) {
                        Some(true) => {
                            let s = sel.as_ref().unwrap();
                            if let Err(e) = s.check(&c) {
                                prop_assert!(false, "after {:?}: {}", op, e);
                            }
                            selections.set(selections.get() + 1);
                        }
                        Some(false) | None => sel = Selections::new(&c),
                    }
                    match st.as_mut().map(|s| s.apply(changes)) {
                        Some(Ok(delta)) => {
                            patch(&mut rs, delta.into_changes());
                            // The table holds what the full compilation
                            // does, plus the garbage whose removal waits.
                            let mut expect = want.clone();
                            for (name, garbage) in st.as_ref().unwrap().garbage() {
                                let set = expect.sets.iter_mut().find(|s| s.name == *name);
                                let set = set.expect("garbage of a known set");
                                for e in garbage {
                                    prop_assert!(
                                        !set.elements.contains(e),
                                        "{} wanted and garbage",
                                        name
                                    );
                                    set.elements.push(e.clone());
                                }
                                set.elements.sort();
                            }
                            let d = difference(&rs, &expect);
                            prop_assert!(d.is_empty(), "after {:?}:\n{}", op, d);
                            applied.set(applied.get() + 1);
                            if matches!(op, Op::ToggleStaged(_)) {
                                toggled.set(toggled.get() + 1);
                            }
                            deferred.set(deferred.get() + st.as_ref().unwrap().garbage_len());
                        }
                        Some(Err(_)) | None => {
                            refused.set(refused.get() + 1);
                            rs = want;
                            st = state(&c);
                        }
                    }
                }
                // Collecting the garbage, a few elements at a time, leaves
                // exactly the full compilation.
                if let Some(st) = st.as_mut() {
                    while st.garbage_len() > 0 {
                        let before = st.garbage_len();
                        patch(&mut rs, st.collect(3).into_changes());
                        prop_assert_eq!(st.garbage_len(), before.saturating_sub(3));
                    }
                }
                let d = difference(&rs, &full(&c));
                prop_assert!(d.is_empty(), "after collecting:\n{}", d);
                Ok(())
            },
        )
        .unwrap();
    let (applied, refused) = (applied.get(), refused.get());
    eprintln!(
        "changes: {applied} incremental, {refused} refused; garbage after a change, summed: {}",
        deferred.get()
    );
    assert!(deferred.get() > 0, "no removal was ever deferred");
    assert!(
        toggled.get() > 0,
        "no staging change took the incremental path"
    );
    assert!(
        selections.get() > 4 * refused,
        "selection deltas checked only {} times",
        selections.get()
    );
    assert!(
        applied > 4 * refused,
        "{refused} refused against {applied} applied"
    );
}
