//! CNI mode: the lab wires pods with the standard `ptp` and `bridge`
//! plugins (IPAM `host-local`) as a container runtime does, and loads no
//! ruleset. Checks what the plugins made in the kernel, that every pod pair
//! connects, that the plugin's errors reach the caller naming the pod, and
//! that teardown runs DEL and removes everything. The lab tests need root
//! and the plugins; without them each says why and returns (under CI it
//! fails instead).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use palisade_engine::{Engine, PortProto};
use palisade_lab::cni::{self, CniResult, VersionInfo};
use palisade_lab::{Cni, CniPlugin, Config, Lab, ProbeOptions, Serve};
use serde_json::{json, Value};

/// Two nodes; node-b's b2 shares node-a's subnets (10.78.1.0/24,
/// fd78::/64), a2 is IPv4 only and b3 IPv6 only.
const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: web, labels: {app: a1}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.78.1.10, podIPs: [{ip: 10.78.1.10}, {ip: "fd78::1:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a2, namespace: web, labels: {app: a2}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.78.1.11, podIPs: [{ip: 10.78.1.11}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, namespace: web, labels: {app: b1}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.78.2.10, podIPs: [{ip: 10.78.2.10}, {ip: "fd78::2:10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b2, namespace: web, labels: {app: b2}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.78.1.20, podIPs: [{ip: 10.78.1.20}, {ip: "fd78::1:20"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b3, namespace: web, labels: {app: b3}}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: "fd78::2:30", podIPs: [{ip: "fd78::2:30"}]}
"#;

fn engine(yaml: &str) -> Engine {
    let loaded = palisade_k8s::load(&[("cluster.yaml".into(), yaml.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    Engine::new(loaded.cluster)
}

/// Root and the plugins, or why not (a failure under CI).
fn can_run() -> bool {
    let why = if !palisade_lab::sys::is_root() {
        "needs root".to_string()
    } else if let Some(p) = ["ptp", "bridge", "host-local"]
        .iter()
        .map(|p| Path::new(cni::DEFAULT_BIN_DIR).join(p))
        .find(|p| !p.exists())
    {
        format!(
            "needs the CNI plugins (no {}; Debian package containernetworking-plugins)",
            p.display()
        )
    } else {
        return true;
    };
    assert!(std::env::var_os("CI").is_none(), "under CI: {why}");
    eprintln!("skipped: {why}");
    false
}

fn ports() -> Vec<PortProto> {
    vec!["80/TCP".parse().unwrap(), "80/UDP".parse().unwrap()]
}

fn config(name: &str, cni: Cni) -> Config {
    Config {
        name: name.into(),
        serve: Serve::Threads,
        ports: ports(),
        sources: Vec::new(),
        cni: Some(cni),
    }
}

/// A plugin directory whose `plugins` log each call (`name command
/// container exit-status`) to `log` and run the real plugin.
fn wrapper_dir(tag: &str, plugins: &[&str]) -> (tempfile::TempDir, PathBuf) {
    wrapper_dir_with(tag, plugins, "")
}

/// [`wrapper_dir`], with shell lines `prelude` run first.
fn wrapper_dir_with(tag: &str, plugins: &[&str], prelude: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("palisade-cni-{tag}-"))
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let log = dir.join("calls.log");
    for p in plugins {
        let real = Path::new(cni::DEFAULT_BIN_DIR).join(p);
        let script = format!(
            "#!/bin/sh\n{prelude}\"{}\" \"$@\"\nrc=$?\necho \"{p} $CNI_COMMAND $CNI_CONTAINERID $rc\" >> \"{}\"\nexit $rc\n",
            real.display(),
            log.display()
        );
        let path = dir.join(p);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (tmp, log)
}

fn ip_json(netns: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-j", "-n", netns])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?} in {netns}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {args:?}: {e}: {text}"))
}

fn host_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The global addresses of `eth0` in `netns`.
fn eth0_addresses(netns: &str) -> BTreeSet<IpAddr> {
    ip_json(netns, &["addr", "show", "dev", "eth0"])
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["scope"] == "global")
        .map(|a| a["local"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Every route of `netns` (IPv4 and IPv6, main table).
fn routes(netns: &str) -> Vec<Value> {
    let mut v = ip_json(netns, &["-4", "route", "show"]);
    v.extend(ip_json(netns, &["-6", "route", "show"]));
    v
}

fn read_sysctl(netns: &str, key: &'static str) -> String {
    palisade_lab::in_netns(netns, move || {
        std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
    })
    .unwrap()
    .trim()
    .to_string()
}

fn check_wiring(lab: &Lab, engine: &Engine, plugin: &CniPlugin) {
    let st = &lab.state;
    assert_eq!(st.cni.as_ref(), Some(plugin));
    assert_eq!(st.nodes.len(), 2);
    assert_eq!(st.pods.len(), 5);
    for pod in &st.pods {
        let want: BTreeSet<IpAddr> = engine
            .cluster()
            .pods
            .iter()
            .find(|p| p.key() == pod.key)
            .unwrap()
            .ips
            .iter()
            .copied()
            .collect();
        assert_eq!(eth0_addresses(&pod.netns), want, "{}: eth0", pod.key);
        let recorded: BTreeSet<IpAddr> = pod.addresses.iter().map(|a| a.addr()).collect();
        assert_eq!(recorded, want, "{}: recorded addresses", pod.key);
        let host = pod.host_interface.as_deref().unwrap();
        assert!(
            host.starts_with("veth"),
            "{}: host interface {host}",
            pod.key
        );
    }
    for (n, node) in st.nodes.iter().enumerate() {
        let local: Vec<_> = st.pods.iter().filter(|p| p.node == n).collect();
        let all = routes(&node.netns);
        let links = ip_json(&node.netns, &["link", "show"]);
        let has_bridge = links.iter().any(|l| l["ifname"] == cni::BRIDGE);
        match plugin {
            CniPlugin::Ptp => {
                assert!(!has_bridge, "{}: a bridge in ptp mode", node.netns);
                for pod in &local {
                    for ip in &pod.ips {
                        let r: Vec<_> = all
                            .iter()
                            .filter(|r| {
                                r["dst"] == ip.to_string()
                                    || r["dst"] == format!("{ip}/{}", host_len(ip))
                            })
                            .collect();
                        assert_eq!(r.len(), 1, "{}: routes to {ip}: {r:?}", node.netns);
                        assert_eq!(
                            r[0]["dev"].as_str(),
                            pod.host_interface.as_deref(),
                            "{}: route to {ip}",
                            node.netns
                        );
                    }
                }
            }
            CniPlugin::Bridge => {
                assert!(has_bridge, "{}: no {}", node.netns, cni::BRIDGE);
                let ports: BTreeSet<String> =
                    ip_json(&node.netns, &["link", "show", "master", cni::BRIDGE])
                        .iter()
                        .map(|l| l["ifname"].as_str().unwrap().to_string())
                        .collect();
                for pod in &local {
                    assert!(
                        ports.contains(pod.host_interface.as_deref().unwrap()),
                        "{}: {} is not a port of {}: {ports:?}",
                        node.netns,
                        pod.key,
                        cni::BRIDGE
                    );
                    for ip in &pod.ips {
                        assert!(
                            !all.iter().any(|r| r["dst"] == ip.to_string()
                                || r["dst"] == format!("{ip}/{}", host_len(ip))),
                            "{}: a host route to local pod {ip}: {all:?}",
                            node.netns
                        );
                    }
                }
                assert!(
                    !all.iter().any(|r| r["dst"] != "fe80::/64"
                        && r["dev"].as_str().is_some_and(|d| d.starts_with("veth"))),
                    "{}: a route via a pod's veth: {all:?}",
                    node.netns
                );
                for key in [
                    "net.bridge.bridge-nf-call-iptables",
                    "net.bridge.bridge-nf-call-ip6tables",
                ] {
                    assert_eq!(read_sysctl(&node.netns, key), "1", "{}: {key}", node.netns);
                }
            }
        }
        // Remote pods go to the fabric.
        for pod in st.pods.iter().filter(|p| p.node != n) {
            for ip in &pod.ips {
                let dst = format!("{ip}/{}", host_len(ip));
                assert!(
                    all.iter()
                        .any(|r| (r["dst"] == dst || r["dst"] == ip.to_string())
                            && r["dev"] == "fab0"),
                    "{}: no route to remote {ip} via fab0",
                    node.netns
                );
            }
        }
    }
}

fn nft(netns: &str, text: &str) {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "nft in {netns}:\n{text}");
}

fn connects(lab: &Lab, src: &str, dst: &str) -> bool {
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    palisade_lab::connect_from(&lab.state, src, dst, Duration::from_millis(500)).is_ok()
}

/// Pods of one node in one subnet talk over the bridge, and the node's
/// `inet` forward hook still sees them: a drop rule there stops them.
fn bridged_traffic_passes_the_forward_hook(lab: &Lab) {
    // a1 -> a2 (IPv4) on node-a, b1 -> b3 (IPv6) on node-b.
    let cases = [
        (0, "web/a1", "10.78.1.11:80", "ip daddr 10.78.1.11"),
        (1, "web/b1", "[fd78::2:30]:80", "ip6 daddr fd78::2:30"),
    ];
    for (n, src, dst, m) in cases {
        let ns = &lab.state.nodes[n].netns;
        assert!(connects(lab, src, dst), "{src} -> {dst} before the rule");
        nft(
            ns,
            &format!(
                "table inet cnitest {{\n  chain f {{\n    type filter hook forward priority 0;\n    \
                 {m} tcp dport 80 counter drop\n  }}\n}}\n"
            ),
        );
        assert!(
            !connects(lab, src, dst),
            "{src} -> {dst} bypassed the forward hook"
        );
        nft(ns, "delete table inet cnitest\n");
        assert!(connects(lab, src, dst), "{src} -> {dst} after the rule");
    }
}

fn lab_wires_and_connects(name: &str, plugin: CniPlugin) {
    if !can_run() {
        return;
    }
    let engine = engine(CLUSTER);
    let _ = palisade_lab::down(name);
    let (tmp, log) = wrapper_dir(name, &["ptp", "bridge", "host-local"]);
    let lab = palisade_lab::up(
        &engine,
        &config(
            name,
            Cni {
                plugin: plugin.clone(),
                bin_dir: tmp.path().to_path_buf(),
            },
        ),
    )
    .unwrap_or_else(|e| panic!("lab {name}: {e}"));
    check_wiring(&lab, &engine, &plugin);

    // Another process could probe and remove it from the state file alone.
    let loaded = palisade_lab::load(name).unwrap();
    assert_eq!(loaded.cni, Some(plugin.clone()));
    assert!(loaded.pods.iter().all(|p| p.cni.is_some()));

    // No ruleset and no policy: every pair connects, IPv4 and IPv6, TCP
    // and UDP, within a node and across the fabric.
    let obs = palisade_lab::probe(&lab.state, &engine, &ports(), &ProbeOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let families = |p: &str| -> BTreeSet<bool> {
        engine
            .cluster()
            .pods
            .iter()
            .find(|x| x.key() == p)
            .unwrap()
            .ips
            .iter()
            .map(IpAddr::is_ipv4)
            .collect()
    };
    let keys: Vec<String> = lab.state.pods.iter().map(|p| p.key.clone()).collect();
    let expected: usize = keys
        .iter()
        .flat_map(|s| keys.iter().map(move |d| (s, d)))
        .filter(|(s, d)| s != d)
        .map(|(s, d)| families(s).intersection(&families(d)).count() * 2)
        .sum();
    assert_eq!(obs.len(), expected, "{name}: probes");
    let bad: Vec<String> = obs
        .iter()
        .filter(|o| !o.observed || !o.agrees())
        .map(|o| o.to_string())
        .collect();
    assert!(bad.is_empty(), "{name}: {}", bad.join("\n"));
    for v4 in [true, false] {
        assert!(obs.iter().any(|o| o.dst_ip.is_ipv4() == v4));
    }
    // Across nodes within one subnet (a1 on node-a, b2 on node-b).
    assert!(obs
        .iter()
        .any(|o| o.src == "web/a1" && o.dst == "web/b2" && o.dst_ip.is_ipv6() && o.observed));

    if plugin == CniPlugin::Bridge {
        bridged_traffic_passes_the_forward_hook(&lab);
    }

    // host-local holds exactly the cluster's addresses, in the lab's dir.
    let ipam = cni::ipam_dir(name);
    let want: Vec<IpAddr> = {
        let mut v: Vec<IpAddr> = engine
            .cluster()
            .pods
            .iter()
            .flat_map(|p| p.ips.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(cni::leases(&ipam), want);
    assert!(!Path::new("/var/lib/cni/networks")
        .join(cni::NETWORK)
        .exists());

    let ids: Vec<String> = lab.state.pods.iter().map(|p| p.netns.clone()).collect();
    lab.down().unwrap();
    assert_eq!(palisade_lab::existing_netns(name), Vec::<String>::new());
    assert!(!ipam.exists(), "{} is left", ipam.display());
    assert!(palisade_lab::load(name).is_err(), "state file is left");
    let calls = std::fs::read_to_string(&log).unwrap();
    for id in &ids {
        for (p, cmd) in [
            (plugin.binary(), "ADD"),
            (plugin.binary(), "DEL"),
            ("host-local", "ADD"),
            ("host-local", "DEL"),
        ] {
            let line = format!("{p} {cmd} {id} 0");
            assert!(
                calls.lines().any(|l| l == line),
                "{name}: no `{line}` in\n{calls}"
            );
        }
    }
}

#[test]
fn ptp_wires_pods_and_everything_connects() {
    lab_wires_and_connects("cniptp", CniPlugin::Ptp);
}

#[test]
fn bridge_wires_pods_and_everything_connects() {
    lab_wires_and_connects("cnibridge", CniPlugin::Bridge);
}

fn assert_removed(name: &str) {
    assert_eq!(palisade_lab::existing_netns(name), Vec::<String>::new());
    assert!(!cni::ipam_dir(name).exists(), "{name}: IPAM dir is left");
    assert!(
        palisade_lab::load(name).is_err(),
        "{name}: state file is left"
    );
}

fn up_err(name: &str, engine: &Engine, cni: Cni) -> String {
    let _ = palisade_lab::down(name);
    match palisade_lab::up(engine, &config(name, cni)) {
        Ok(_) => panic!("{name}: lab up succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_plugin_error_names_the_pod_and_the_lab_is_removed() {
    if !can_run() {
        return;
    }
    // The plugin cannot find its IPAM plugin.
    let engine = engine(CLUSTER);
    let (tmp, _) = wrapper_dir("cninohl", &["ptp"]);
    let e = up_err(
        "cninohl",
        &engine,
        Cni {
            plugin: CniPlugin::Ptp,
            bin_dir: tmp.path().to_path_buf(),
        },
    );
    assert!(
        e.contains("pod web/a1") && e.contains(r#"failed to find plugin "host-local""#),
        "{e}"
    );
    assert_removed("cninohl");

    // host-local is asked for an address outside its ranges: for the last
    // pod (b3), after the others were wired, its request is rewritten.
    let (tmp, log) = wrapper_dir_with(
        "cnibadip",
        &["bridge", "host-local"],
        "if [ \"$CNI_CONTAINERID\" = pl-cnibadip-p4 ] && [ \"${0##*/}\" = host-local ]; then\n\
         sed 's|fd78::2:30/64|fd99::1/64|' | /usr/lib/cni/host-local; exit $?\nfi\n",
    );
    let e = up_err(
        "cnibadip",
        &engine,
        Cni {
            plugin: CniPlugin::Bridge,
            bin_dir: tmp.path().to_path_buf(),
        },
    );
    assert!(
        e.contains("pod web/b3: CNI bridge ADD failed")
            && e.contains("failed to allocate all requested IPs: fd99::1"),
        "{e}"
    );
    assert_removed("cnibadip");
    let calls = std::fs::read_to_string(&log).unwrap();
    for j in 0..5 {
        let line = format!("bridge DEL pl-cnibadip-p{j} 0");
        assert!(calls.lines().any(|l| l == line), "no `{line}` in\n{calls}");
    }

    // No plugin at all.
    let e = up_err(
        "cninobin",
        &engine,
        Cni {
            plugin: CniPlugin::Ptp,
            bin_dir: PathBuf::from("/nonexistent/cni"),
        },
    );
    assert!(
        e.contains("/nonexistent/cni/ptp") && e.contains("containernetworking-plugins"),
        "{e}"
    );
    assert_removed("cninobin");
}

// ------------------------------------------------ pure, without root

fn taken(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| s.parse().unwrap()).collect()
}

fn range(subnet: &str, gateway: &str) -> cni::Range {
    cni::Range {
        subnet: subnet.parse().unwrap(),
        gateway: gateway.parse().unwrap(),
    }
}

#[test]
fn netconf_requests_the_addresses_in_one_range_set_per_family() {
    let ips: Vec<IpAddr> = vec!["10.78.1.10".parse().unwrap(), "fd78::1:10".parse().unwrap()];
    let ranges = [
        range("10.78.0.0/22", "10.78.0.1"),
        range("fd78::/64", "fd78::1"),
    ];
    let c = cni::netconf(
        &CniPlugin::Bridge,
        "1.0.0",
        Path::new("/run/palisade-lab/x-ipam/n0"),
        &ips,
        &ranges,
    )
    .unwrap();
    assert_eq!(
        c,
        json!({
            "cniVersion": "1.0.0",
            "name": "palisade-lab",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": false,
            "capabilities": {"ips": true},
            "runtimeConfig": {"ips": ["10.78.1.10/22", "fd78::1:10/64"]},
            "ipam": {
                "type": "host-local",
                "dataDir": "/run/palisade-lab/x-ipam/n0",
                "ranges": [
                    [{"subnet": "10.78.0.0/22", "gateway": "10.78.0.1"}],
                    [{"subnet": "fd78::/64", "gateway": "fd78::1"}],
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            },
        })
    );

    // Single stack: no range set (host-local would allocate from it) and
    // no route for the other family; ptp has no bridge settings.
    let c = cni::netconf(
        &CniPlugin::Ptp,
        "0.4.0",
        Path::new("/d"),
        &["fd78::2:30".parse().unwrap()],
        &ranges,
    )
    .unwrap();
    assert_eq!(c["type"], "ptp");
    assert_eq!(c["cniVersion"], "0.4.0");
    assert!(c.get("bridge").is_none() && c.get("isGateway").is_none());
    assert_eq!(c["runtimeConfig"]["ips"], json!(["fd78::2:30/64"]));
    assert_eq!(
        c["ipam"]["ranges"],
        json!([[{"subnet": "fd78::/64", "gateway": "fd78::1"}]])
    );
    assert_eq!(c["ipam"]["routes"], json!([{"dst": "::/0"}]));

    let d = Path::new("/d");
    assert!(cni::netconf(&CniPlugin::Ptp, "1.0.0", d, &[], &ranges).is_err());
    let two: Vec<IpAddr> = vec!["10.78.0.2".parse().unwrap(), "10.78.0.3".parse().unwrap()];
    assert!(cni::netconf(&CniPlugin::Ptp, "1.0.0", d, &two, &ranges).is_err());
    let e = cni::netconf(
        &CniPlugin::Ptp,
        "1.0.0",
        d,
        &["10.9.0.1".parse().unwrap()],
        &ranges,
    )
    .unwrap_err();
    assert!(e.contains("no range holds 10.9.0.1"), "{e}");
}

#[test]
fn a_node_range_holds_the_node_addresses_and_a_free_gateway() {
    let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|s| s.parse().unwrap()).collect() };
    // One address: its /24 (/64); the gateway is no address of the cluster.
    let r = cni::node_range(
        &ips(&["10.0.1.3"]),
        &taken(&["10.0.1.1", "10.0.1.2", "10.0.1.3"]),
    )
    .unwrap();
    assert_eq!(r, range("10.0.1.0/24", "10.0.1.4"));
    let r = cni::node_range(&ips(&["fd00::1:1"]), &taken(&["fd00::1:1"])).unwrap();
    assert_eq!(r, range("fd00::/64", "fd00::1"));
    // Several: the subnet covering them all.
    let r = cni::node_range(&ips(&["10.78.2.10", "10.78.1.20"]), &BTreeSet::new()).unwrap();
    assert_eq!(r, range("10.78.0.0/22", "10.78.0.1"));
    let r = cni::node_range(&ips(&["10.0.1.1", "10.0.1.3"]), &taken(&["10.0.1.2"])).unwrap();
    assert_eq!(r, range("10.0.1.0/24", "10.0.1.4"));
    // A network or broadcast address widens the subnet.
    let r = cni::node_range(&ips(&["10.78.3.0"]), &BTreeSet::new()).unwrap();
    assert_eq!(r, range("10.78.2.0/23", "10.78.2.1"));
    let r = cni::node_range(&ips(&["10.78.3.255", "10.78.3.1"]), &BTreeSet::new()).unwrap();
    assert_eq!(r, range("10.78.0.0/21", "10.78.0.1"));
    let r = cni::node_range(&ips(&["fd00::1:0"]), &BTreeSet::new()).unwrap();
    assert_eq!(r, range("fd00::/64", "fd00::1"));
    // ... but not forever: fd00:: is the network address of every subnet
    // that holds it, up to fc00::/7.
    let e = cni::node_range(&ips(&["fd00::"]), &BTreeSet::new()).unwrap_err();
    assert!(e.contains("/64 to /56"), "{e}");
    // No gateway left.
    let full: BTreeSet<IpAddr> = (1..=254)
        .map(|i| format!("10.0.9.{i}").parse().unwrap())
        .collect();
    let e = cni::node_range(&ips(&["10.0.9.7"]), &full).unwrap_err();
    assert!(e.contains("10.0.9.0/24"), "{e}");
    assert!(cni::node_range(&ips(&["10.0.0.1", "fd00::1"]), &full).is_err());
}

/// What `ptp` v1.1.1 answers (two dual-stack addresses).
const PTP_RESULT: &str = r#"{
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "veth990b6ff4", "mac": "26:35:03:43:d4:1c"},
        {"name": "eth0", "mac": "36:4e:b9:23:c2:93", "sandbox": "/run/netns/pl-x-p0"}
    ],
    "ips": [
        {"interface": 1, "address": "10.78.1.10/24", "gateway": "10.78.1.1"},
        {"interface": 1, "address": "fd78::1:10/64", "gateway": "fd78::1"}
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    "dns": {}
}"#;

/// What `bridge` v1.1.1 answers: the bridge, the host veth, the pod's.
/// The 0.4.0 `version` field is accepted too.
const BRIDGE_RESULT: &str = r#"{
    "cniVersion": "0.4.0",
    "interfaces": [
        {"name": "cni0", "mac": "c6:ba:cb:6a:6a:e6"},
        {"name": "veth5b63de9c", "mac": "66:ec:46:7e:46:9d"},
        {"name": "eth0", "mac": "2e:91:9b:7b:2a:da", "sandbox": "/run/netns/pl-x-p0"}
    ],
    "ips": [
        {"version": "4", "interface": 2, "address": "10.78.1.11/24", "gateway": "10.78.1.1"}
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.78.1.1"}],
    "dns": {}
}"#;

#[test]
fn results_give_the_addresses_and_the_host_interface() {
    let ips: Vec<IpAddr> = vec!["10.78.1.10".parse().unwrap(), "fd78::1:10".parse().unwrap()];
    let r: CniResult = cni::parse_result(PTP_RESULT).unwrap();
    let (addrs, host) = r.check(&ips, None).unwrap();
    assert_eq!(host, "veth990b6ff4");
    assert_eq!(
        addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.78.1.10/24", "fd78::1:10/64"]
    );
    assert_eq!(r.routes.len(), 2);

    // Not what was asked for.
    let e = r.check(&ips[..1], None).unwrap_err();
    assert!(e.contains("not the requested 10.78.1.10"), "{e}");
    let other: Vec<IpAddr> = vec!["10.78.1.99".parse().unwrap(), ips[1]];
    assert!(r.check(&other, None).is_err());

    let r = cni::parse_result(BRIDGE_RESULT).unwrap();
    let (addrs, host) = r
        .check(&["10.78.1.11".parse().unwrap()], Some("cni0"))
        .unwrap();
    assert_eq!(host, "veth5b63de9c");
    assert_eq!(addrs.len(), 1);
    // Without knowing the bridge, two host interfaces are ambiguous.
    assert!(r.host_interface(None).is_err());
    assert_eq!(r.routes[0].gw, Some("10.78.1.1".parse::<IpAddr>().unwrap()));

    assert!(cni::parse_result("not json").is_err());
}

#[test]
fn plugin_errors_versions_and_del_config() {
    assert_eq!(
        cni::failure_message(
            r#"{"code": 999, "msg": "failed to allocate all requested IPs: 10.78.3.0"}"#,
            ""
        ),
        "failed to allocate all requested IPs: 10.78.3.0"
    );
    assert_eq!(
        cni::failure_message(r#"{"code": 7, "msg": "m", "details": "d"}"#, ""),
        "m (d)"
    );
    assert_eq!(cni::failure_message("", "exec failed\n"), "exec failed");

    let v: VersionInfo = serde_json::from_str(
        r#"{"cniVersion":"1.0.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]}"#,
    )
    .unwrap();
    assert_eq!(cni::choose_version(&v), Some("1.0.0"));
    let v: VersionInfo =
        serde_json::from_str(r#"{"supportedVersions":["0.3.0","0.3.1","0.4.0"]}"#).unwrap();
    assert_eq!(cni::choose_version(&v), Some("0.4.0"));
    let v: VersionInfo = serde_json::from_str(r#"{"supportedVersions":["0.2.0"]}"#).unwrap();
    assert_eq!(cni::choose_version(&v), None);

    let result: Value = serde_json::from_str(PTP_RESULT).unwrap();
    let conf = json!({"cniVersion": "1.0.0", "type": "ptp"});
    assert_eq!(cni::del_netconf(&conf, Some(&result))["prevResult"], result);
    assert!(cni::del_netconf(&conf, None).get("prevResult").is_none());
    let old = json!({"cniVersion": "0.3.1", "type": "ptp"});
    assert_eq!(cni::del_netconf(&old, Some(&result)), old);
}

#[test]
fn state_files_without_cni_fields_still_load() {
    let st: palisade_lab::State = serde_json::from_value(json!({
        "name": "old",
        "netns": ["pl-old-fab", "pl-old-n0", "pl-old-p0"],
        "nodes": [{"netns": "pl-old-n0", "node": null, "pods": ["x/a"]}],
        "pods": [{"key": "x/a", "netns": "pl-old-p0", "node": 0, "ips": ["10.0.0.1"]}],
        "pids": [],
        "tcp_ports": [80],
        "udp_ports": []
    }))
    .unwrap();
    assert_eq!(st.cni, None);
    assert_eq!(st.cni_bin_dir, None);
    assert!(st.pods[0].addresses.is_empty());
    assert_eq!(st.pods[0].host_interface, None);
    assert!(st.pods[0].cni.is_none());
}
