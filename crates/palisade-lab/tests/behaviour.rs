//! Dataplane behaviour beyond single verdicts: connections across ruleset
//! changes, anti-spoofing, the probes' ability to see an allowed flow, and
//! cleanup. Needs root; without it each test says why and returns.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use palisade_engine::{Engine, PortProto};
use palisade_lab::{Config, Lab, ProbeOptions, Serve};

fn root() -> bool {
    if palisade_lab::sys::is_root() {
        return true;
    }
    eprintln!("skipped: the namespace lab needs root");
    false
}

fn engine(policies: &str) -> Engine {
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/topologies/xyz.yaml");
    let loaded = palisade_k8s::load(&[
        (topo.display().to_string(), std::fs::read(&topo).unwrap()),
        ("policies.yaml".to_string(), policies.as_bytes().to_vec()),
    ]);
    assert!(
        loaded.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    Engine::new(loaded.cluster)
}

fn up(name: &str, engine: &Engine) -> Lab {
    let _ = palisade_lab::down(name);
    palisade_lab::up(
        engine,
        &Config {
            name: name.into(),
            serve: Serve::Threads,
            ports: vec![
                "80/TCP".parse().unwrap(),
                "81/TCP".parse().unwrap(),
                "80/UDP".parse().unwrap(),
            ],
            sources: Vec::new(),
            cni: None,
        },
    )
    .unwrap()
}

const B_FROM_A: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 80}, {port: 81}]
"#;

/// `B_FROM_A` narrowed to port 80, beside a policy of another namespace.
fn b_from_a_80() -> String {
    B_FROM_A.replace(", {port: 81}", "") + UNRELATED
}

const UNRELATED: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: unrelated, namespace: y}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}}]}]
"#;

#[test]
fn established_connections_survive_a_ruleset_change() {
    if !root() {
        return;
    }
    let before = engine(B_FROM_A);
    let lab = up("tcpkeep", &before);
    let b: IpAddr = "10.0.1.2".parse().unwrap();
    let b6: IpAddr = "fd00::1:2".parse().unwrap();
    let t = Duration::from_secs(2);
    let mut on80 =
        palisade_lab::connect_from(&lab.state, "x/a", SocketAddr::new(b, 80), t).unwrap();
    let mut on81 =
        palisade_lab::connect_from(&lab.state, "x/a", SocketAddr::new(b6, 81), t).unwrap();
    assert!(palisade_lab::echo_roundtrip(&mut on80, b"one", t));
    assert!(palisade_lab::echo_roundtrip(&mut on81, b"one", t));

    // Replace the ruleset (one transaction per node): 80 still allowed,
    // 81 no longer.
    let after = engine(&b_from_a_80());
    lab.apply(&after).unwrap();
    assert!(
        palisade_lab::echo_roundtrip(&mut on80, b"two", t),
        "established flow on 80 broke"
    );
    assert!(
        palisade_lab::echo_roundtrip(&mut on81, b"two", t),
        "conntrack keeps established flows"
    );
    let short = Duration::from_millis(400);
    assert!(
        palisade_lab::connect_from(&lab.state, "x/a", SocketAddr::new(b, 81), short).is_err(),
        "a new connection to a newly forbidden port was opened"
    );
    assert!(palisade_lab::connect_from(&lab.state, "x/a", SocketAddr::new(b6, 81), short).is_err());
    assert!(palisade_lab::connect_from(&lab.state, "x/a", SocketAddr::new(b, 80), t).is_ok());
    // And the whole matrix agrees with the new engine.
    let ports: Vec<PortProto> = vec!["80/TCP".parse().unwrap(), "81/TCP".parse().unwrap()];
    let obs = palisade_lab::probe(&lab.state, &after, &ports, &ProbeOptions::default()).unwrap();
    assert!(
        obs.iter().all(|o| o.agrees()),
        "{:?}",
        obs.iter().filter(|o| !o.agrees()).collect::<Vec<_>>()
    );
    drop((on80, on81));
    lab.down().unwrap();
}

/// Sends a UDP datagram from pod `src`'s namespace with source address
/// `from` (added to the pod's interface if it is not its own) and reports
/// whether it arrived in `dst`'s namespace.
fn udp_arrives(lab: &Lab, src: &str, from: IpAddr, dst: IpAddr, dst_pod: &str) -> bool {
    let v4 = from.is_ipv4();
    let dst_ns = lab.pod(dst_pod).unwrap().netns.clone();
    let rx =
        palisade_lab::in_netns(&dst_ns, move || palisade_lab::sys::raw_socket(v4, 17)).unwrap();
    let src_ns = lab.pod(src).unwrap().netns.clone();
    let marker = format!("spoof-test-{from}");
    let payload = marker.clone();
    palisade_lab::in_netns(&src_ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0))?;
        s.send_to(payload.as_bytes(), SocketAddr::new(dst, 80))?;
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 2048];
    while let Ok((n, src_ip)) = palisade_lab::sys::recv_from(&rx, &mut buf) {
        let data = &buf[..n];
        if src_ip == from && data.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            return true;
        }
    }
    false
}

#[test]
fn spoofed_source_addresses_are_dropped() {
    if !root() {
        return;
    }
    // No policy: everything is allowed, so only anti-spoofing can drop.
    let e = engine("");
    let lab = up("spoof", &e);
    // x/a and x/c share node-1; x/b is on node-2. Each row: source pod,
    // its own address, another pod's address, destination.
    for (src, own, other, dst, dst_pod) in [
        ("x/a", "10.0.1.1", "10.0.1.2", "10.0.1.3", "x/c"),
        ("x/a", "fd00::1:1", "fd00::1:2", "fd00::1:3", "x/c"),
        ("x/c", "10.0.1.3", "10.0.1.1", "10.0.1.2", "x/b"),
        ("x/c", "fd00::1:3", "fd00::1:1", "fd00::1:2", "x/b"),
    ] {
        let (own, other, dst): (IpAddr, IpAddr, IpAddr) = (
            own.parse().unwrap(),
            other.parse().unwrap(),
            dst.parse().unwrap(),
        );
        assert!(
            udp_arrives(&lab, src, own, dst, dst_pod),
            "control: {own} -> {dst} must arrive"
        );
        let ns = lab.pod(src).unwrap().netns.clone();
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["-n", &ns, "addr", "add"]);
        if other.is_ipv4() {
            cmd.args([&format!("{other}/32"), "dev", "eth0"]);
        } else {
            cmd.args([&format!("{other}/128"), "dev", "eth0", "nodad"]);
        }
        assert!(cmd.status().unwrap().success());
        assert!(
            !udp_arrives(&lab, src, other, dst, dst_pod),
            "spoofed {other} -> {dst} arrived"
        );
    }
    lab.down().unwrap();
}

#[test]
fn probes_see_what_the_ruleset_would_hide() {
    if !root() {
        return;
    }
    // Deny all ingress in x; with the table removed from every node, the
    // probes must observe the denied flows as delivered (TCP, UDP, SCTP).
    let e = engine(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d, namespace: x}\nspec: {podSelector: {}}\n",
    );
    let lab = up("control", &e);
    let ports: Vec<PortProto> = ["80/TCP", "80/UDP", "80/SCTP"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let obs = palisade_lab::probe(&lab.state, &e, &ports, &ProbeOptions::default()).unwrap();
    assert!(obs.iter().all(|o| o.agrees()));
    for proto in ["TCP", "UDP", "SCTP"] {
        assert!(
            obs.iter().any(|o| o.protocol == proto && !o.observed),
            "{proto}: nothing denied"
        );
        assert!(
            obs.iter().any(|o| o.protocol == proto && o.observed),
            "{proto}: nothing allowed"
        );
    }
    for n in &lab.state.nodes {
        let st = std::process::Command::new("ip")
            .args([
                "netns", "exec", &n.netns, "nft", "delete", "table", "inet", "palisade",
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let open = palisade_lab::probe(&lab.state, &e, &ports, &ProbeOptions::default()).unwrap();
    assert!(
        open.iter().all(|o| o.observed),
        "{:?}",
        open.iter().filter(|o| !o.observed).collect::<Vec<_>>()
    );
    lab.down().unwrap();
}

#[test]
fn nothing_is_left_after_down_even_after_a_failed_probe() {
    if !root() {
        return;
    }
    let e = engine(B_FROM_A);
    // Explicit down.
    let lab = up("leftover", &e);
    assert!(!palisade_lab::existing_netns("leftover").is_empty());
    lab.down().unwrap();
    assert!(palisade_lab::existing_netns("leftover").is_empty());
    assert!(!Path::new("/run/palisade-lab/leftover.json").exists());

    // A probe that fails (its assertion panics) while the lab is up.
    let r = std::panic::catch_unwind(|| {
        let lab = up("leftover", &e);
        let obs = palisade_lab::probe(
            &lab.state,
            &e,
            &["80/TCP".parse().unwrap()],
            &ProbeOptions::default(),
        )
        .unwrap();
        assert!(
            obs.iter().all(|o| o.observed),
            "deliberately failing: some flows are denied"
        );
    });
    assert!(r.is_err());
    assert!(palisade_lab::existing_netns("leftover").is_empty());
    assert!(!Path::new("/run/palisade-lab/leftover.json").exists());
    // Other labs' and the host's namespaces are untouched by a down of a lab
    // that does not exist.
    let before: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    palisade_lab::down("leftover").unwrap();
    let after: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(before.len(), after.len());
}

/// Runs an nft script (`-f -`) or command in network namespace `ns`.
fn nft_in(ns: &str, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn counter(ns: &str, table: &str, name: &str) -> u64 {
    let out = nft_in(ns, &["-j", "list", "counter", "inet", table, name], None);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["counter"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {out}"))
}

/// kube-proxy marks a Service connection that must be masqueraded with
/// bit 0x4000 of the packet mark in nat prerouting, before `forward`, and
/// masquerades in nat postrouting when the bit is still set. The policy
/// checks use the marks as scratch: an allowed new connection must leave
/// with that bit as it came (set or not) and nothing else of ours. Here a
/// table of the test stands for kube-proxy on x/c's node and counts, in
/// postrouting, the first packets by their mark.
#[test]
fn the_masquerade_mark_survives_the_checks() {
    if !root() {
        return;
    }
    // x/a and x/c share node-1; x/c is isolated and admits x/a, so both
    // its group and x/a's identity are written to the marks.
    let e = engine(&B_FROM_A.replace("pod: b}", "pod: c}"));
    let lab = up("marks", &e);
    let c = lab.pod("x/c").unwrap();
    let node = lab.state.nodes[c.node].netns.clone();
    let mut script = String::from("table inet marks_test {\n");
    for name in ["kept", "kept_other", "unmarked", "unmarked_other"] {
        script += &format!("  counter {name} {{}}\n");
    }
    script += "  chain pre { type filter hook prerouting priority -150; policy accept;\n";
    for ip in &c.ips {
        let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
        script += &format!("    {fam} daddr {ip} tcp dport 80 meta mark set meta mark | 0x4000\n");
    }
    script += "  }\n  chain post { type filter hook postrouting priority 100; policy accept;\n";
    for ip in &c.ips {
        let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
        let first = format!("{fam} daddr {ip} tcp flags & (syn|ack) == syn");
        script += &format!(
            "    {first} tcp dport 80 meta mark 0x4000 counter name kept\n\
             \x20   {first} tcp dport 80 meta mark != 0x4000 counter name kept_other\n\
             \x20   {first} tcp dport 81 meta mark 0 counter name unmarked\n\
             \x20   {first} tcp dport 81 meta mark != 0 counter name unmarked_other\n"
        );
    }
    script += "  }\n}\n";
    nft_in(&node, &["-f", "-"], Some(&script));

    let t = Duration::from_secs(2);
    for ip in &c.ips {
        for port in [80, 81] {
            let mut s =
                palisade_lab::connect_from(&lab.state, "x/a", SocketAddr::new(*ip, port), t)
                    .unwrap_or_else(|e| panic!("x/a -> {ip}:{port}: {e}"));
            assert!(palisade_lab::echo_roundtrip(&mut s, b"mark", t));
        }
    }
    let n = c.ips.len() as u64;
    let counts: Vec<(&str, u64)> = ["kept", "kept_other", "unmarked", "unmarked_other"]
        .into_iter()
        .map(|name| (name, counter(&node, "marks_test", name)))
        .collect();
    // At least one first packet per connection (a retransmitted SYN
    // counts again); none with any other mark.
    assert!(counts[0].1 >= n && counts[2].1 >= n, "{counts:?}");
    assert_eq!((counts[1].1, counts[3].1), (0, 0), "{counts:?}");
    lab.down().unwrap();
}
