//! The agent against the kernel, in a scratch network namespace (root; skipped
//! with the reason printed otherwise): element deltas are accepted by nft,
//! and a restarted agent reads the table back and patches it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use palisade_agent::backend::{Backend, BackendError};
use palisade_agent::delta::{self, SetDelta};
use palisade_agent::{Agent, AgentConfig, Delta, Input, Nft};
use palisade_bench::agent::{entries, entry, SCOPE};
use palisade_bench::synth::{self, Params};
use palisade_k8s::Object;
use palisade_nft::{Element, Ruleset, Set, Type, Value, Verdict};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn netns(tag: &str) -> Option<Netns> {
    if unsafe_uid() != 0 {
        eprintln!("skipped: nftables needs root");
        return None;
    }
    let name = format!("pa-{tag}-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(Netns(name))
}

fn unsafe_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn agent(ns: &Netns) -> Agent<Nft> {
    Agent::new(
        AgentConfig::new("node0", vec![SCOPE.to_string()]),
        Nft::new(Some(ns.0.clone())),
    )
}

#[test]
fn the_kernel_takes_deltas_and_a_restart_patches() {
    let Some(ns) = netns("delta") else { return };
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut c = synth::cluster(&Params::small(3));
    let mut a = agent(&ns);
    a.handle(Input::Resync {
        scope: SCOPE.into(),
        entries: entries(&c),
    });
    assert!(a.sync().unwrap().replaced);
    for k in 0..4 {
        let i = k % c.pods.len();
        c.pods[i].labels.insert("app".into(), format!("x{k}"));
        a.handle(Input::Upsert(entry(Object::Pod(c.pods[i].clone()))));
        let r = a.sync().unwrap();
        assert!(!r.replaced, "{r:?}");
        reads_back(&ns, a.applied().unwrap());
    }
    let removed = c.pods.remove(1);
    a.handle(Input::Delete {
        origin: format!("{SCOPE}{}", Object::Pod(removed).key()),
    });
    assert!(!a.sync().unwrap().replaced);
    reads_back(&ns, a.applied().unwrap());
    // What the idle agent does: remove the unreachable interval elements
    // it deferred, in small transactions.
    while a.collect_garbage().unwrap() > 0 {
        reads_back(&ns, a.applied().unwrap());
    }
    reads_back(&ns, a.applied().unwrap());
    drop(a);

    let mut b = agent(&ns);
    b.handle(Input::Resync {
        scope: SCOPE.into(),
        entries: entries(&c),
    });
    let r = b.sync().unwrap();
    assert_eq!((r.added, r.removed, r.replaced), (0, 0, false));
}

/// What the kernel holds reads back as exactly what was applied.
fn reads_back(ns: &Netns, applied: &palisade_nft::Ruleset) {
    let kt = Nft::new(Some(ns.0.clone()))
        .read()
        .unwrap()
        .expect("a table");
    let back = kt.as_ruleset(applied);
    if back.as_ref() != Some(applied) {
        for (s, k) in applied
            .sets
            .iter()
            .zip(back.iter().flat_map(|b| b.sets.iter()))
        {
            assert_eq!(s, k, "set {} reads back differently", s.name);
        }
        panic!("the table does not read back: {kt:?}");
    }
}

/// A table with every kind of set the compiler emits: hash sets and maps
/// with single and concatenated keys (interface . address, marks . protocol
/// . port), a verdict map, and concatenated interval sets.
fn kinds_of_sets() -> Ruleset {
    let set = |name: &str, key: Vec<Type>, data: Option<Type>, interval: bool| Set {
        name: name.into(),
        key,
        data,
        interval,
        comment: String::new(),
        elements: Vec::new(),
    };
    // The rule sets: the subject's mark, the peer, protocol and port.
    let rule_set = |name: &str, peer: Type, interval: bool| {
        set(
            name,
            vec![Type::Mark, peer, Type::Proto, Type::Port],
            None,
            interval,
        )
    };
    Ruleset {
        sets: vec![
            set("ifaces", vec![Type::Ifname], None, false),
            set("src4", vec![Type::Ifname, Type::Ipv4], None, false),
            set("src6", vec![Type::Ifname, Type::Ipv6], None, false),
            set("id4", vec![Type::Ipv4], Some(Type::Mark), false),
            set("id6", vec![Type::Ipv6], Some(Type::Mark), false),
            set("verdicts", vec![Type::Mark], Some(Type::Verdict), false),
            rule_set("peer_port", Type::Mark, false),
            rule_set("peer_range", Type::Mark, true),
            rule_set("cidr4", Type::Ipv4, true),
            rule_set("cidr6", Type::Ipv6, true),
        ],
        chains: vec![denied_chain()],
    }
}

/// Elements of every set of [`kinds_of_sets`] for a seed `i`: different
/// seeds give different elements.
fn elements_for(rs: &mut Ruleset, i: u32) {
    let v4 = |n: u32| Ipv4Addr::from(0x0a00_0000 + n);
    let v6 = |n: u32| Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(n));
    let ifname = |n: u32| format!("veth{n:04x}");
    for s in &mut rs.sets {
        let e = |key: Vec<Value>, data: Option<Value>| Element { key, data };
        let (p, q) = (1 + (i % 7) as u16 * 100, 2 + (i % 7) as u16 * 100);
        // The rule sets' keys: this seed's mark, the peer, protocol, ports.
        let rule = |peer: Value, proto: u8, ports: Value| {
            e(vec![Value::Mark(i), peer, Value::Proto(proto), ports], None)
        };
        s.elements.push(match s.name.as_str() {
            "ifaces" => e(vec![Value::Ifname(ifname(i))], None),
            "src4" => e(vec![Value::Ifname(ifname(i)), Value::Ipv4(v4(i))], None),
            "src6" => e(vec![Value::Ifname(ifname(i)), Value::Ipv6(v6(i))], None),
            "id4" => e(vec![Value::Ipv4(v4(i))], Some(Value::Mark(i + 1))),
            "id6" => e(vec![Value::Ipv6(v6(i))], Some(Value::Mark(i + 1))),
            "verdicts" => e(
                vec![Value::Mark(i)],
                Some(Value::Verdict(if i.is_multiple_of(2) {
                    Verdict::Return
                } else {
                    Verdict::Deny(palisade_nft::Dir::Egress)
                })),
            ),
            "peer_port" => rule(Value::Mark(i + 1), 6, Value::Port(p)),
            "peer_range" => rule(Value::Mark(i + 1), 17, Value::PortRange(p, q + 50)),
            // A one-port range: deleted as `80-80`.
            "cidr4" => rule(
                Value::Ipv4Range(v4(i << 8), v4((i << 8) + 255)),
                6,
                Value::PortRange(p, p),
            ),
            "cidr6" => rule(
                Value::Ipv6Range(v6(i << 16), v6((i << 16) + 0xffff)),
                132,
                Value::PortRange(p, q),
            ),
            other => unreachable!("{other}"),
        });
        s.elements.sort();
    }
}

fn with_elements(seeds: impl IntoIterator<Item = u32>) -> Ruleset {
    let mut rs = kinds_of_sets();
    for i in seeds {
        elements_for(&mut rs, i);
    }
    rs
}

/// The kernel table, read back with `nft -j list table`, as a ruleset typed
/// like `like`.
fn kernel(ns: &Netns, like: &Ruleset) -> Option<Ruleset> {
    Nft::new(Some(ns.0.clone()))
        .read()
        .unwrap()
        .expect("a table")
        .as_ruleset(like)
}

#[test]
fn element_transactions_through_the_long_lived_nft_are_atomic() {
    let Some(ns) = netns("apply") else { return };
    let mut nft = Nft::new(Some(ns.0.clone()));
    let apply = |nft: &mut Nft, old: Option<&Ruleset>, new: &Ruleset| {
        let d = delta::diff(old, new);
        let r = nft.apply(&d, &d.to_nft_text(new));
        (d, r)
    };

    // A table to start from: replaced (nft -f).
    let rs0 = with_elements(0..6);
    let (d, r) = apply(&mut nft, None, &rs0);
    assert!(d.is_replace());
    r.unwrap();
    assert_eq!(kernel(&ns, &rs0).as_ref(), Some(&rs0));

    // Adds only, deletes only, deletes and adds of every kind of set, each
    // one transaction through the session, and each read back.
    let steps = [
        with_elements(0..9),
        with_elements(3..9),
        with_elements([3, 5, 7, 9, 10, 11]),
        with_elements([0, 9, 12]),
    ];
    let mut old = rs0;
    for new in steps {
        let (d, r) = apply(&mut nft, Some(&old), &new);
        assert!(matches!(d, Delta::Elements(_)), "{d:?}");
        r.unwrap_or_else(|e| panic!("{e}\n{}", d.to_nft_text(&new)));
        assert_eq!(kernel(&ns, &new).as_ref(), Some(&new));
        old = new;
    }

    // A rejected transaction (its last statement deletes a missing element)
    // changes nothing, not even its earlier statements, and says why.
    let mut bad = match delta::diff(Some(&old), &with_elements([0, 13])) {
        Delta::Elements(sets) => sets,
        other => panic!("{other:?}"),
    };
    let mut missing = with_elements([14]);
    let last = missing.sets.pop().unwrap();
    bad.push(SetDelta {
        set: last.name.clone(),
        remove: last.elements,
        add: Vec::new(),
    });
    let bad = Delta::Elements(bad);
    let err = nft
        .apply(&bad, &bad.to_nft_text(&old))
        .expect_err("deleting a missing element");
    let msg = err.to_string();
    assert!(
        matches!(err, BackendError::Rejected(_)) && msg.contains("No such file or directory"),
        "{msg}"
    );
    assert_eq!(kernel(&ns, &old).as_ref(), Some(&old));

    // The session goes on after a rejection.
    let new = with_elements([0, 13, 15]);
    let (d, r) = apply(&mut nft, Some(&old), &new);
    assert!(matches!(d, Delta::Elements(_)));
    r.unwrap();
    assert_eq!(kernel(&ns, &new).as_ref(), Some(&new));

    // A replacement (nft -f) in between, then elements again: the session
    // sees the new table.
    let mut other = with_elements([20, 21]);
    other.sets.pop();
    let (d, r) = apply(&mut nft, Some(&new), &other);
    assert!(d.is_replace());
    r.unwrap();
    assert_eq!(kernel(&ns, &other).as_ref(), Some(&other));
    let mut more = with_elements([20, 22]);
    more.sets.pop();
    let (d, r) = apply(&mut nft, Some(&other), &more);
    assert!(matches!(d, Delta::Elements(_)));
    r.unwrap();
    assert_eq!(kernel(&ns, &more).as_ref(), Some(&more));

    // Element deltas went through one nft -i; nft -f ran for the two
    // replacements and the rejected transaction's error text.
    let c = nft.counts();
    assert_eq!((c.session, c.once, c.sessions_started), (6, 3, 1), "{c:?}");
}

/// Random pod and policy events, through the incremental path, against the
/// kernel: after every sync and every idle collection the kernel's table
/// reads back as exactly what the agent believes it applied, and once the
/// deferred elements are collected it equals a fresh agent's full build.
/// Half the clusters carry admin policies (verdict maps).
#[test]
fn random_events_keep_the_kernel_equal_to_the_agent() {
    let Some(ns) = netns("random") else { return };
    let mut fresh = 50_000;
    for seed in 1..=8u64 {
        let mut params = Params::small(seed);
        params.pods = 24;
        params.policies = 8;
        params.nodes = 2;
        params.admin_policies = if seed % 2 == 0 { 2 + seed as usize } else { 0 };
        let mut c = synth::cluster(&params);
        let mut cfg = AgentConfig::new("node0", vec![SCOPE.to_string()]);
        // Sometimes patch whatever the size, sometimes replace above 4.
        cfg.replace_above_interval_removals = (seed % 3 == 0).then_some(4);
        // Collect by removals, or by one replacement.
        cfg.collect_replace_above = if seed % 4 < 2 { 0 } else { 10_000 };
        let mut a = Agent::new(cfg, Nft::new(Some(ns.0.clone())));
        a.handle(Input::Resync {
            scope: SCOPE.into(),
            entries: entries(&c),
        });
        a.sync().unwrap();
        let mut r = synth::Rng::new(seed);
        let mut incremental = 0;
        for k in 0..40 {
            let i = r.below(c.pods.len());
            let input = match r.below(5) {
                0 | 1 => {
                    // A replica, or a pod of a new workload, on either node.
                    let mut p = c.pods[i].clone();
                    p.name = format!("r{fresh}");
                    if r.chance(40) {
                        p.labels.insert("app".into(), format!("new{k}"));
                    }
                    p.ips = vec![synth::pod_ipv4(fresh), synth::pod_ipv6(fresh)];
                    p.node = Some(format!("node{}", r.below(2)));
                    fresh += 1;
                    c.pods.push(p.clone());
                    Input::Upsert(entry(Object::Pod(p)))
                }
                2 => {
                    let p = c.pods.remove(i);
                    Input::Delete {
                        origin: format!("{SCOPE}{}", Object::Pod(p).key()),
                    }
                }
                3 => {
                    let labels = c.pods[r.below(c.pods.len())].labels.clone();
                    c.pods[i].labels = labels;
                    Input::Upsert(entry(Object::Pod(c.pods[i].clone())))
                }
                _ => {
                    if c.policies.is_empty() || r.chance(50) {
                        let mut p = c
                            .policies
                            .first()
                            .cloned()
                            .unwrap_or_else(|| panic!("synthetic clusters have policies"));
                        p.namespace = c.pods[i].namespace.clone();
                        p.name = format!("np{k}");
                        p.pod_selector = palisade_model::LabelSelector::from_labels([(
                            "app",
                            c.pods[i].labels.get("app").map_or("x", String::as_str),
                        )]);
                        c.policies.push(p.clone());
                        Input::Upsert(entry(Object::NetworkPolicy(p)))
                    } else {
                        let p = c.policies.remove(r.below(c.policies.len()));
                        Input::Delete {
                            origin: format!("{SCOPE}{}", Object::NetworkPolicy(p).key()),
                        }
                    }
                }
            };
            a.handle(input);
            let rep = a.sync().unwrap();
            incremental += usize::from(rep.path == palisade_agent::SyncPath::Incremental);
            reads_back(&ns, a.applied().unwrap());
            if r.chance(30) {
                while a.collect_garbage().unwrap() > 0 {}
                reads_back(&ns, a.applied().unwrap());
            }
        }
        while a.collect_garbage().unwrap() > 0 {}
        reads_back(&ns, a.applied().unwrap());
        let mut fresh_agent = agent(&ns);
        fresh_agent.handle(Input::Resync {
            scope: SCOPE.into(),
            entries: entries(&c),
        });
        let r = fresh_agent.sync().unwrap();
        assert_eq!(
            (r.added, r.removed, r.replaced),
            (0, 0, false),
            "seed {seed}: a fresh build differs from what the events left"
        );
        assert!(
            incremental >= 20,
            "seed {seed}: {incremental} incremental syncs"
        );
    }
}

/// Regression: nft 1.0.6 split a large element list into netlink messages
/// and byte-swapped the host-endian marks of the element starting each
/// further message of a concatenated interval map (every 963rd, for the
/// admin tiers' maps): the kernel held keys nobody wrote and a removal of a
/// written one failed. Loads and deltas of thousands of elements must read
/// back exactly.
#[test]
fn large_interval_maps_read_back_exactly() {
    let Some(ns) = netns("large") else { return };
    let map = |elements: Vec<Element>| Ruleset {
        sets: vec![Set {
            name: "tier".into(),
            key: vec![Type::Mark, Type::Mark, Type::Proto, Type::Port],
            data: Some(Type::Verdict),
            interval: true,
            comment: String::new(),
            elements,
        }],
        chains: vec![denied_chain()],
    };
    let element = |g: u32, m: u32, p: u8| Element {
        key: vec![
            Value::Mark(0x8c0a_ce43 ^ g.wrapping_mul(2_654_435_761)),
            Value::Mark(0x145d_69db ^ m.wrapping_mul(40_503)),
            Value::Proto(p),
            Value::PortRange(8000, 8100),
        ],
        data: Some(Value::Verdict(if m.is_multiple_of(2) {
            Verdict::Return
        } else {
            Verdict::Deny(palisade_nft::Dir::Egress)
        })),
    };
    let build = |range: std::ops::Range<u32>| {
        let mut v: Vec<Element> = range
            .flat_map(|i| [6, 17, 132].map(|p| element(i / 50, i, p)))
            .collect();
        v.sort();
        map(v)
    };
    let mut nft = Nft::new(Some(ns.0.clone()));
    let first = build(0..1500);
    let d = delta::diff(None, &first);
    nft.apply(&d, &d.to_nft_text(&first)).unwrap();
    assert_eq!(kernel(&ns, &first).as_ref(), Some(&first), "a full load");
    // Few removals: each costs the kernel tens of milliseconds here.
    let second = build(10..2900);
    let d = delta::diff(Some(&first), &second);
    assert!(!d.is_replace());
    nft.apply(&d, &d.to_nft_text(&second)).unwrap();
    assert_eq!(
        kernel(&ns, &second).as_ref(),
        Some(&second),
        "an element delta"
    );
}

/// The chain a `Deny` verdict goes to, as compiled tables have it.
fn denied_chain() -> palisade_nft::Chain {
    palisade_nft::Chain {
        name: "egress_denied".into(),
        hook: None,
        rules: vec![palisade_nft::Rule {
            stmts: vec![palisade_nft::Stmt::Drop],
            comment: None,
        }],
    }
}
