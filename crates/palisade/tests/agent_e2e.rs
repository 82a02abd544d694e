//! End to end, as root: etcd, a two-node namespace lab, and one
//! `palisade agent` process per node (in the host namespace, applying into
//! its node's namespace). Policies written to etcd are enforced on both
//! nodes; relabels move pods in and out of reach; deleted pods lose their
//! elements; killing and restarting the agents cuts no established
//! connection. Skipped, with the reason printed, without root or etcd.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{converge, engine, free_port, get, lab_up, spawn_etcd, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn start_etcd(dir: &Path) -> (Proc, String) {
    let (p, client) = spawn_etcd(dir, "e2e");
    let t = Instant::now();
    while !Command::new("etcdctl")
        .args(["--endpoints", &client, "endpoint", "health"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(t.elapsed() < Duration::from_secs(20), "etcd never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (p, client)
}

fn palisade(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn datastore(verb: &str, file: &Path, etcd: &str) {
    let out = palisade(&[
        "datastore",
        verb,
        "-f",
        file.to_str().unwrap(),
        "--etcd",
        etcd,
    ]);
    assert!(
        out.status.success(),
        "datastore {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agent(node: &str, netns: &str, etcd: &str, port: u16, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .args(["agent", "--node", node, "--etcd", etcd, "--netns", netns])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn wait_ready(port: u16) {
    let t = Instant::now();
    while get(port, "/readyz").0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "agent on {port} never ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.77.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 192.168.77.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIPs: [{ip: 10.77.1.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIPs: [{ip: 10.77.2.10}]}
"#;

fn other(app: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: other, namespace: shop, labels: {{app: {app}}}}}
spec: {{nodeName: n2, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
status: {{phase: Running, podIPs: [{{ip: 10.77.2.11}}]}}
"#
    )
}

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
"#;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn table(netns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "nft", "list", "table", "inet", "palisade",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agents_enforce_etcd_state_on_two_nodes() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the namespace lab needs root");
        return;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("skipped: no etcd binary");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_etcd, ep) = start_etcd(tmp.path());
    let base = write(tmp.path(), "base.yaml", BASE);
    let other_file = write(tmp.path(), "other.yaml", &other("other"));
    datastore("apply", &base, &ep);
    datastore("apply", &other_file, &ep);

    let name = "agente2e";
    let (lab, nodes) = lab_up(
        name,
        &engine(&[BASE, &other("other")]),
        palisade_lab::CniPlugin::Ptp,
    );
    assert_eq!(nodes.len(), 2);
    let ports: Vec<u16> = nodes.iter().map(|_| free_port()).collect();
    let start = |i: usize, tag: &str| {
        agent(
            &nodes[i].0,
            &nodes[i].1,
            &ep,
            ports[i],
            &tmp.path().join(format!("agent-{i}-{tag}.log")),
        )
    };
    let mut agents: Vec<Proc> = (0..2).map(|i| start(i, "a")).collect();
    for &p in &ports {
        wait_ready(p);
    }
    let t0 = Instant::now();

    // No policy: everything reachable.
    let all = converge(&lab.state, &engine(&[BASE, &other("other")]), "no policy");
    // The policy, through etcd, on both nodes.
    let policy = write(tmp.path(), "policy.yaml", POLICY);
    datastore("apply", &policy, &ep);
    let allowed = converge(
        &lab.state,
        &engine(&[BASE, &other("other"), POLICY]),
        "policy",
    );
    assert!(
        allowed < all,
        "the policy denies something ({allowed} of {all})"
    );
    // `lab probe --etcd` compares the lab with what the agents were told.
    let out = palisade(&[
        "lab", "probe", "--name", name, "--etcd", &ep, "--ports", "80/TCP", "-o", "json",
    ]);
    assert!(
        out.status.success(),
        "lab probe --etcd: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let probed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per probe and line"))
        .collect();
    let denied = probed.iter().filter(|o| o["observed"] == "denied").count();
    assert!(denied > 0, "the probe saw the policy deny: {probed:?}");

    // Relabel `other` into the allowed peers.
    let relabelled = write(tmp.path(), "other2.yaml", &other("client"));
    datastore("apply", &relabelled, &ep);
    let after = converge(
        &lab.state,
        &engine(&[BASE, &other("client"), POLICY]),
        "relabel in",
    );
    assert!(after > allowed);

    // An established allowed connection survives agents killed and restarted.
    let web: SocketAddr = "10.77.1.10:80".parse().unwrap();
    let mut conn =
        palisade_lab::connect_from(&lab.state, "shop/client", web, Duration::from_secs(2))
            .expect("client reaches web");
    assert!(palisade_lab::echo_roundtrip(
        &mut conn,
        b"before",
        Duration::from_secs(2)
    ));
    agents.clear(); // SIGKILL both
    agents = (0..2).map(|i| start(i, "b")).collect();
    for &p in &ports {
        wait_ready(p);
        let m = get(p, "/metrics").1;
        assert!(
            !m.contains("palisade_agent_applies_total{mode=\"replace\"}"),
            "a restarted agent patches, never replaces: {m}"
        );
    }
    assert!(
        palisade_lab::echo_roundtrip(&mut conn, b"after restart", Duration::from_secs(2)),
        "the established connection was cut"
    );

    // Relabel back out of reach, then delete the pod: its elements go.
    datastore("apply", &other_file, &ep);
    converge(
        &lab.state,
        &engine(&[BASE, &other("other"), POLICY]),
        "relabel out",
    );
    for (_, ns) in &nodes {
        assert!(table(ns).contains("10.77.2.11"));
    }
    datastore("delete", &other_file, &ep);
    let t = Instant::now();
    while nodes.iter().any(|(_, ns)| table(ns).contains("10.77.2.11")) {
        assert!(t.elapsed() < Duration::from_secs(10), "pod elements remain");
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in &ports {
        let (code, body) = get(p, "/healthz");
        assert_eq!((code, body.as_str()), (200, "ok\n"));
    }
    eprintln!("e2e body took {:.1} s", t0.elapsed().as_secs_f64());
    drop(agents);
    lab.down().unwrap();
}
