//! The etcd source against a real etcd started by the test (skipped, with
//! the reason printed, when no `etcd` binary is installed).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_agent::{datastore, etcd, Agent, AgentConfig, Health, Recording};

struct Etcd {
    child: Child,
    dir: PathBuf,
    client: String,
    peer: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start(dir: &Path) -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!("skipped: no etcd binary");
            return None;
        }
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut e = Etcd {
            child: Command::new("true").spawn().unwrap(),
            dir: dir.to_path_buf(),
            client,
            peer,
        };
        e.restart();
        Some(e)
    }

    fn restart(&mut self) {
        self.child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client])
            .args(["--advertise-client-urls", &self.client])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("t={}", self.peer)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let t = Instant::now();
        while etcdctl(&self.client, &["endpoint", "health"]).is_none() {
            assert!(t.elapsed() < Duration::from_secs(20), "etcd never came up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=2s"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.50.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIPs: [{ip: 10.9.0.1}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
"#;

fn pod(name: &str, ip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}
spec: {{nodeName: n1, containers: [{{name: c}}]}}
status: {{phase: Running, podIPs: [{{ip: {ip}}}]}}
"#
    )
}

/// Waits until the recorded table's `identity4` holds exactly `ips`.
fn converge(rec: &Recording, ips: &[&str], what: &str) {
    let t = Instant::now();
    loop {
        let got: Vec<String> = rec
            .state()
            .table
            .as_ref()
            .and_then(|t| t.set("identity4").cloned())
            .map(|s| {
                s.elements
                    .iter()
                    .map(|e| format!("{:?}", e.key[0]))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<String> = ips
            .iter()
            .map(|ip| format!("{:?}", palisade_nft::Value::Ipv4(ip.parse().unwrap())))
            .collect();
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what}: identity4 is {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_health(h: &Arc<Mutex<Health>>, degraded: bool, what: &str) -> String {
    let t = Instant::now();
    loop {
        let s = h.lock().unwrap().status();
        if s.starts_with("degraded") == degraded {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{what}: health {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_agent_follows_etcd_through_outages_and_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut etcd) = Etcd::start(tmp.path()) else {
        return;
    };
    let ep = vec![etcd.client.clone()];

    // Invalid manifests are refused and nothing is written.
    let bad = write(
        tmp.path(),
        "bad.yaml",
        &format!("{BASE}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: \"Bad_Name\", namespace: shop}}\n"),
    );
    match datastore::apply(&ep, &[bad]) {
        Err(datastore::DatastoreError::Invalid(d)) => assert!(!d.is_empty()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        etcdctl(
            &etcd.client,
            &["get", "--prefix", "/palisade/", "--keys-only"]
        )
        .as_deref(),
        Some("")
    );

    let base = write(tmp.path(), "base.yaml", BASE);
    let keys = datastore::apply(&ep, std::slice::from_ref(&base)).unwrap();
    assert!(
        keys.contains(&"/palisade/v1/Pod/shop/web".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"/palisade/v1/Namespace/_/shop".to_string()),
        "{keys:?}"
    );

    let rec = Recording::new();
    let mut cfg = AgentConfig::new("n1", vec![etcd::SCOPE.to_string()]);
    cfg.max_backoff = Duration::from_millis(500);
    let agent = Agent::new(cfg, rec.clone());
    let health = agent.health();
    let (tx, rx) = channel();
    etcd::spawn(ep.clone(), tx).unwrap();
    std::thread::spawn(move || agent.run(rx));
    converge(&rec, &["10.9.0.1"], "initial snapshot");
    wait_health(&health, false, "initial");

    // A watched update.
    let p2 = write(tmp.path(), "p2.yaml", &pod("api", "10.9.0.2"));
    datastore::apply(&ep, std::slice::from_ref(&p2)).unwrap();
    converge(&rec, &["10.9.0.1", "10.9.0.2"], "watched put");

    // etcd goes away: the last state stays, health says why.
    etcd.kill();
    let s = wait_health(&health, true, "outage");
    assert!(s.contains("etcd"), "{s}");
    std::thread::sleep(Duration::from_millis(300));
    converge(&rec, &["10.9.0.1", "10.9.0.2"], "during the outage");

    // Back, with a deletion and a compaction racing the reconnect: the
    // agent converges either through the watch or through its snapshot.
    etcd.restart();
    datastore::delete(&ep, std::slice::from_ref(&p2)).unwrap();
    let rev = etcdctl(
        &etcd.client,
        &["get", "/palisade/v1/Namespace/_/shop", "-w", "json"],
    )
    .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
    .and_then(|v| v["header"]["revision"].as_i64())
    .unwrap();
    etcdctl(&etcd.client, &["compact", &rev.to_string()]).expect("compaction");
    converge(&rec, &["10.9.0.1"], "after restart and compaction");
    wait_health(&health, false, "after restart");

    // Still watching after the compaction.
    let p3 = write(tmp.path(), "p3.yaml", &pod("db", "10.9.0.3"));
    datastore::apply(&ep, &[p3]).unwrap();
    converge(&rec, &["10.9.0.1", "10.9.0.3"], "watch after compaction");

    // An invalid value written behind the tool's back is ignored.
    etcdctl(
        &etcd.client,
        &["put", "/palisade/v1/Pod/shop/web", "{\"kind\": \"Pod\"}"],
    )
    .unwrap();
    let s = wait_health(&health, true, "invalid value");
    assert!(s.contains("/palisade/v1/Pod/shop/web"), "{s}");
    converge(&rec, &["10.9.0.1", "10.9.0.3"], "invalid value ignored");
}
