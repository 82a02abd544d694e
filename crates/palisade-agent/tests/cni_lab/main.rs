//! Agents enforcing pods wired by the reference CNI plugins (`ptp`:
//! routed, `bridge`: bridged), with real packets: every case of
//! `tests/cases` and random clusters agree with the engine; spoofed
//! sources are dropped; a pod whose interface appears after the agent
//! knows it is never a hole. Root only (CI runs as root).

mod flows;
mod harness;

use harness::{agents, lab_up, probe, root, wait_settled, NodeAgent};
use palisade_bench::synth;
use palisade_engine::{Engine, PortProto};
use palisade_lab::{CniPlugin, Lab};
use palisade_testkit::assert_agrees;

/// The plugins to run (`PALISADE_CNI_PLUGINS=ptp,bridge`, the default).
fn plugins() -> Vec<CniPlugin> {
    let want = std::env::var("PALISADE_CNI_PLUGINS").unwrap_or_default();
    [CniPlugin::Ptp, CniPlugin::Bridge]
        .into_iter()
        .filter(|p| want.is_empty() || want.split(',').any(|w| w == tag(p)))
        .collect()
}

/// The cases to run (`PALISADE_CNI_CASES=name,...`; default all).
fn wanted(case: &str) -> bool {
    let want = std::env::var("PALISADE_CNI_CASES").unwrap_or_default();
    want.is_empty() || want.split(',').any(|w| w == case)
}

fn tag(p: &CniPlugin) -> &'static str {
    match p {
        CniPlugin::Ptp => "ptp",
        CniPlugin::Bridge => "bridge",
    }
}

/// Lab, agents, settle, probe, tear down: the disagreements.
fn run(
    name: &str,
    what: &str,
    engine: &Engine,
    plugin: CniPlugin,
    ports: &[PortProto],
) -> Vec<String> {
    let lab = lab_up(name, engine, plugin.clone(), ports);
    let agents = agents(&lab, engine);
    wait_settled(&agents, what);
    let (bad, n) = probe(&lab, engine, ports, what);
    assert!(n > 0 || lab.state.pods.len() < 2, "{what}: nothing probed");
    eprintln!("{what}: {n} probes, {} disagreements", bad.len());
    drop(agents);
    lab.down().unwrap();
    bad
}

/// Each scenario is two tests, one a plugin, so that a failure names the
/// mode and one mode can be run alone.
macro_rules! per_plugin {
    ($scenario:ident, $routed:ident, $bridged:ident) => {
        #[test]
        fn $routed() {
            let _alone = harness::alone();
            $scenario(CniPlugin::Ptp);
        }

        #[test]
        fn $bridged() {
            let _alone = harness::alone();
            $scenario(CniPlugin::Bridge);
        }
    };
}

fn every_case(plugin: CniPlugin) {
    if !root() || !plugins().contains(&plugin) {
        return;
    }
    let mut bad = Vec::new();
    for case in palisade_testkit::all_cases() {
        let case = case.unwrap();
        if !wanted(&case.name) {
            continue;
        }
        let engine = Engine::new(case.cluster.clone());
        let ports = case.ports(&engine);
        let what = format!("{} ({})", case.name, tag(&plugin));
        let name = format!("cnic{}", tag(&plugin));
        bad.extend(run(&name, &what, &engine, plugin.clone(), &ports));
    }
    assert_agrees(&bad);
}

/// `PALISADE_CNI_CLUSTERS` random clusters (default 10); even seeds add
/// two AdminNetworkPolicies and a baseline. The same generator's clusters
/// also meet the kernel 50 at a time in `palisade-lab/tests/synth.rs`,
/// and fuzzed ones in `fuzz_corpus.rs`; here they meet the CNI wiring.
fn random_clusters(plugin: CniPlugin) {
    if !root() || !plugins().contains(&plugin) {
        return;
    }
    let n: u64 = std::env::var("PALISADE_CNI_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut bad = Vec::new();
    for seed in 1..=n {
        let params = synth::Params {
            admin_policies: if seed % 2 == 0 { 2 } else { 0 },
            ..synth::Params::small(seed)
        };
        let engine = Engine::new(synth::cluster(&params));
        let ports = engine.default_ports();
        let what = format!("seed {seed} ({})", tag(&plugin));
        let name = format!("cnis{}", tag(&plugin));
        bad.extend(run(&name, &what, &engine, plugin.clone(), &ports));
    }
    assert_agrees(&bad);
}

per_plugin!(
    every_case,
    every_case_agrees_with_the_engine_routed,
    every_case_agrees_with_the_engine_bridged
);

per_plugin!(
    random_clusters,
    random_clusters_agree_with_the_engine_routed,
    random_clusters_agree_with_the_engine_bridged
);

mod spoof;

use std::time::Duration;

use spoof::{arrives, flood, ip, ip_cmd, listen, netns, received, send};

const FAMILIES: [(&str, &str, &str, &str, &str); 2] = [
    // a1, a2, a3, b1, prefix length
    ("10.78.1.10", "10.78.1.11", "10.78.1.12", "10.78.2.10", "32"),
    (
        "fd78::1:10",
        "fd78::1:11",
        "fd78::1:12",
        "fd78::2:10",
        "128",
    ),
];

fn tcp80() -> Vec<PortProto> {
    vec![PortProto {
        port: 80,
        protocol: palisade_model::Protocol::Tcp,
    }]
}

/// The lab of [`spoof::CLUSTER`] (named `prefix` and the plugin's tag)
/// with its agents settled; `None` where the plugin is not to run here.
fn spoof_lab(prefix: &str, plugin: &CniPlugin, what: &str) -> Option<(Lab, Vec<NodeAgent>)> {
    if !root() || !plugins().contains(plugin) {
        return None;
    }
    let engine = spoof::engine();
    let lab = lab_up(
        &format!("{prefix}{}", tag(plugin)),
        &engine,
        plugin.clone(),
        &tcp80(),
    );
    let agents = agents(&lab, &engine);
    wait_settled(&agents, what);
    Some((lab, agents))
}

fn mac_of(netns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", "eth0"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// A pod sending as another pod is dropped, same node and across nodes,
/// IPv4 and IPv6, routed and bridged; bridged, also with the other pod's
/// MAC. The real pod still gets through afterwards.
fn spoofing(plugin: CniPlugin) {
    let Some((lab, agents)) = spoof_lab("cnif", &plugin, "spoofing") else {
        return;
    };
    let [n1, n2, n3, nb] = ["a1", "a2", "a3", "b1"].map(|p| netns(&lab, p));
    let wait = Duration::from_millis(700);
    for (a1, a2, a3, b1, len) in FAMILIES {
        let (a1, a2, a3, b1) = (ip(a1), ip(a2), ip(a3), ip(b1));
        let (l3, lb) = (listen(&n3, a3), listen(&nb, b1));
        send(&n2, a2, a3);
        send(&n2, a2, b1);
        assert!(arrives(&l3, a2), "trusted {a2} reaches {a3}");
        assert!(arrives(&lb, a2), "trusted {a2} reaches {b1}");
        send(&n1, a1, a3);
        send(&n1, a1, b1);
        assert!(received(&l3, wait).is_empty(), "policy denies {a1} -> {a3}");
        assert!(received(&lb, wait).is_empty(), "policy denies {a1} -> {b1}");
        // a1 takes a2's address.
        let spoofed = format!("{a2}/{len}");
        ip_cmd(&n1, &["addr", "add", &spoofed, "dev", "eth0", "nodad"]);
        send(&n1, a2, a3);
        send(&n1, a2, b1);
        let got = (received(&l3, wait), received(&lb, wait));
        assert_eq!(got, (vec![], vec![]), "{} mode: a1 as {a2}", tag(&plugin));
        if plugin == CniPlugin::Bridge {
            // ...and its MAC.
            let own = mac_of(&n1);
            let theirs = mac_of(&n2);
            ip_cmd(&n1, &["link", "set", "eth0", "address", &theirs]);
            send(&n1, a2, a3);
            send(&n1, a2, b1);
            let got = (received(&l3, wait), received(&lb, wait));
            ip_cmd(&n1, &["link", "set", "eth0", "address", &own]);
            assert_eq!(got, (vec![], vec![]), "a1 as {a2} with its MAC {theirs}");
        }
        ip_cmd(&n1, &["addr", "del", &spoofed, "dev", "eth0"]);
        send(&n2, a2, a3);
        send(&n2, a2, b1);
        assert!(arrives(&l3, a2), "{a2} still reaches {a3}");
        assert!(arrives(&lb, a2), "{a2} still reaches {b1}");
    }
    drop(agents);
    lab.down().unwrap();
}

per_plugin!(
    spoofing,
    spoofed_sources_are_dropped_routed,
    spoofed_sources_are_dropped_bridged
);

/// The runtime deletes a pod's interface and makes it again while the
/// agents run: from the first packet the new interface carries, the pod's
/// egress policy holds (a2 may send only to targets; a1 is none), and once
/// the agents know the interface the pod's allowed traffic flows.
fn late_interface(plugin: CniPlugin) {
    let Some((mut lab, agents)) = spoof_lab("cnil", &plugin, "late interface") else {
        return;
    };
    let [n1, n2, n3] = ["a1", "a2", "a3"].map(|p| netns(&lab, p));
    lab.cni_del("s/a2").unwrap();
    let t = std::time::Instant::now();
    while !agents[0]
        .health
        .lock()
        .unwrap()
        .unwired
        .contains(&"s/a2".to_string())
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the agent never saw a2's interface go"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut watch = Vec::new();
    for (a1, a2, ..) in FAMILIES {
        watch.push((listen(&n1, ip(a1)), flood(&n2, ip(a2), ip(a1))));
    }
    lab.cni_add("s/a2").unwrap();
    wait_settled(&agents, "late interface: after ADD");
    std::thread::sleep(Duration::from_millis(300));
    for (l1, (stop, h)) in watch {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = h.join().unwrap();
        assert!(sent > 0, "the new interface carried nothing");
        let got = received(&l1, Duration::from_millis(300));
        assert!(
            got.is_empty(),
            "{} mode: {} of {sent} denied datagrams passed",
            tag(&plugin),
            got.len()
        );
    }
    for (_, a2, a3, ..) in FAMILIES {
        let l3 = listen(&n3, ip(a3));
        send(&n2, ip(a2), ip(a3));
        assert!(
            received(&l3, Duration::from_millis(700)).contains(&ip(a2)),
            "{a2} reaches {a3} again"
        );
    }
    drop(agents);
    lab.down().unwrap();
}

per_plugin!(
    late_interface,
    a_late_interface_is_enforced_from_its_first_packet_routed,
    a_late_interface_is_enforced_from_its_first_packet_bridged
);

fn flow_denials(plugin: CniPlugin) {
    if plugins().contains(&plugin) {
        flows::denials(plugin.clone(), tag(&plugin));
    }
}

per_plugin!(
    flow_denials,
    every_denial_is_logged_with_its_rule_routed,
    every_denial_is_logged_with_its_rule_bridged
);

#[test]
fn allowed_connections_sampled_at_rate_one_are_logged_once() {
    let _alone = harness::alone();
    if plugins().contains(&CniPlugin::Ptp) {
        flows::sampled(CniPlugin::Ptp, "ptp");
    }
}

#[test]
fn a_burst_beyond_the_queue_is_counted_as_lost() {
    let _alone = harness::alone();
    if plugins().contains(&CniPlugin::Ptp) {
        flows::burst(CniPlugin::Ptp, "ptp");
    }
}

#[test]
fn a_staged_policy_logs_would_deny_and_blocks_nothing_until_promoted() {
    let _alone = harness::alone();
    if plugins().contains(&CniPlugin::Ptp) {
        flows::staged(CniPlugin::Ptp, "ptp");
    }
}

mod hostile;
