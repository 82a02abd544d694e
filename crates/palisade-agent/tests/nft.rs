//! The agent against the kernel, in a scratch network namespace (root; skipped
//! with the reason printed otherwise): element deltas are accepted by nft,
//! and a restarted agent reads the table back and patches it.

use std::process::Command;

use palisade_agent::backend::Backend;
use palisade_agent::bench::{entries, entry, SCOPE};
use palisade_agent::{Agent, AgentConfig, Input, Nft};
use palisade_engine::synth::{self, Params};
use palisade_k8s::Object;

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
        Nft {
            netns: Some(ns.0.clone()),
        },
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
    let kt = Nft {
        netns: Some(ns.0.clone()),
    }
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
