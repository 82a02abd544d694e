//! `palisade promote --dir`: staged policies become enforced by editing
//! the files that hold them, nothing but the annotation changed; a name
//! that is missing or not staged writes nothing. `check` enforces only
//! what is not staged, before and after. With etcd (when installed):
//! `datastore apply --staged`, then `promote --etcd`.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn text(o: &Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const WEB: &str = r#"# The web tier: pods and their policy.
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.2}
---
# Only the frontend may reach web; staged until the traffic says so.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
  annotations:
    owner: team-web   # who to ask
    palisade.dev/staged: "true"
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 80}]
"#;

const ADMIN: &str = r#"apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: guard
  annotations: {palisade.dev/staged: "true", owner: platform}
spec:
  priority: 10
  subject: {namespaces: {}}
  egress:
  - {name: no-metadata, action: Deny, to: [{networks: [169.254.169.254/32]}]}
"#;

const DB: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop, annotations: {palisade.dev/staged: "false"}}
spec: {podSelector: {matchLabels: {app: db}}}
"#;

fn setup(dir: &Path) {
    std::fs::write(dir.join("web.yaml"), WEB).unwrap();
    std::fs::write(dir.join("admin.yaml"), ADMIN).unwrap();
    std::fs::write(dir.join("db.yaml"), DB).unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn check(dir: &str, src: &str, dst: &str, port: &str) -> String {
    let (_, out, err) = text(&palisade(&["check", "-f", dir, src, dst, port]));
    assert_eq!(err, "");
    out.lines().next().unwrap_or_default().to_string()
}

#[test]
fn promote_edits_only_the_annotation_lines() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);
    let d = dir.to_str().unwrap();
    // Staged: counted, not enforced.
    let (code, out, _) = text(&palisade(&["validate", "-f", d]));
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "valid: 1 namespaces, 2 pods, 0 workloads, 0 nodes, 2 network policies, 1 admin policies (2 staged: not enforced)\n"
    );
    assert_eq!(check(d, "shop/client", "shop/web", "80"), "allowed");
    assert_eq!(check(d, "shop/client", "169.254.169.254", "80"), "allowed");

    let o = palisade(&[
        "promote",
        "--dir",
        d,
        "shop/web",
        "AdminNetworkPolicy/guard",
        "shop/web",
    ]);
    assert_eq!(
        text(&o),
        (
            Some(0),
            format!("promoted AdminNetworkPolicy/guard ({d}/admin.yaml)\npromoted shop/web ({d}/web.yaml)\n"),
            String::new()
        )
    );
    assert_eq!(
        read(dir, "web.yaml"),
        WEB.replace("    palisade.dev/staged: \"true\"\n", "")
    );
    assert_eq!(
        read(dir, "admin.yaml"),
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata:\n  name: guard\n  annotations: {owner: platform}\nspec:\n  priority: 10\n  subject: {namespaces: {}}\n  egress:\n  - {name: no-metadata, action: Deny, to: [{networks: [169.254.169.254/32]}]}\n"
    );
    assert_eq!(read(dir, "db.yaml"), DB);
    assert_eq!(listing(dir), ["admin.yaml", "db.yaml", "web.yaml"]);
    // Enforced now.
    assert_eq!(check(d, "shop/client", "shop/web", "80"), "denied");
    assert_eq!(check(d, "shop/client", "169.254.169.254", "80"), "denied");
}

#[test]
fn a_name_missing_or_not_staged_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);
    let d = dir.to_str().unwrap();
    let o = palisade(&["promote", "--dir", d, "shop/web", "shop/db", "shop/nope"]);
    assert_eq!(
        text(&o),
        (
            Some(2),
            String::new(),
            format!("error: shop/db: not staged\nerror: shop/nope: not found under {d}\nerror: nothing was promoted\n")
        )
    );
    assert_eq!(read(dir, "web.yaml"), WEB);
    assert_eq!(read(dir, "admin.yaml"), ADMIN);
    assert_eq!(read(dir, "db.yaml"), DB);
    assert_eq!(listing(dir), ["admin.yaml", "db.yaml", "web.yaml"]);

    // A policy the decoder rejects is named with its error.
    let typo = DB
        .replace("name: db", "name: typo")
        .replace("\"false\"", "\"ture\"");
    std::fs::write(dir.join("typo.yaml"), &typo).unwrap();
    let o = palisade(&["promote", "--dir", d, "shop/typo"]);
    assert_eq!(
        text(&o),
        (
            Some(2),
            String::new(),
            format!("error: shop/typo: invalid: {d}/typo.yaml:1: NetworkPolicy shop/typo: metadata.annotations[\"palisade.dev/staged\"]: expected \"true\" (staged) or \"false\" (enforced), found \"ture\"\nerror: nothing was promoted\n")
        )
    );
    assert_eq!(read(dir, "typo.yaml"), typo);

    let o = palisade(&["promote", "--dir", d, "Service/web"]);
    assert_eq!(
        text(&o),
        (
            Some(2),
            String::new(),
            "error: \"Service/web\": expected namespace/name (a NetworkPolicy) or Kind/name (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)\n".to_string()
        )
    );
    let o = palisade(&["promote", "shop/web"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_policy_defined_twice_is_not_guessed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);
    std::fs::write(dir.join("copy.yaml"), WEB).unwrap();
    let d = dir.to_str().unwrap();
    let o = palisade(&["promote", "--dir", d, "shop/web"]);
    assert_eq!(
        text(&o),
        (
            Some(2),
            String::new(),
            format!("error: shop/web: defined more than once ({d}/copy.yaml, {d}/web.yaml)\nerror: nothing was promoted\n")
        )
    );
    assert_eq!(read(dir, "web.yaml"), WEB);
}

/// A throwaway etcd on free loopback ports, stopped when dropped.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd serving in `dir`, and its client URL; `None` without etcd.
fn etcd(dir: &Path) -> Option<(Etcd, String)> {
    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("skipped: no etcd binary");
        return None;
    }
    let client = format!("http://127.0.0.1:{}", port());
    let peer = format!("http://127.0.0.1:{}", port());
    let child = Command::new("etcd")
        .args(["--name", "promote", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("promote={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let e = Etcd(child);
    let t = Instant::now();
    while !Command::new("etcdctl")
        .args(["--endpoints", &client, "endpoint", "health"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(t.elapsed() < Duration::from_secs(20), "etcd never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((e, client))
}

#[test]
fn datastore_apply_staged_then_promote_through_etcd() {
    let t = tempfile::tempdir().unwrap();
    let Some((_etcd, ep)) = etcd(t.path()) else {
        return;
    };
    let dir = t.path();
    let plain = WEB.replace("    palisade.dev/staged: \"true\"\n", "");
    std::fs::write(dir.join("web.yaml"), &plain).unwrap();
    std::fs::write(dir.join("admin.yaml"), ADMIN).unwrap();
    let f = |n: &str| dir.join(n).display().to_string();
    let o = palisade(&[
        "datastore",
        "apply",
        "--staged",
        "-f",
        &f("web.yaml"),
        &f("admin.yaml"),
        "--etcd",
        &ep,
    ]);
    assert_eq!(
        text(&o),
        (
            Some(0),
            "applied /palisade/v1/Pod/shop/web\napplied /palisade/v1/Pod/shop/client\napplied /palisade/v1/NetworkPolicy/shop/web (staged)\napplied /palisade/v1/AdminNetworkPolicy/_/guard (staged)\n".to_string(),
            String::new()
        )
    );
    std::fs::write(
        dir.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    )
    .unwrap();
    let o = palisade(&[
        "datastore",
        "apply",
        "--staged",
        "-f",
        &f("ns.yaml"),
        "--etcd",
        &ep,
    ]);
    assert_eq!(
        text(&o),
        (
            Some(0),
            "applied /palisade/v1/Namespace/_/shop\n".to_string(),
            "warning: --staged: none of the objects is a policy; they were written as they are\n"
                .to_string()
        )
    );

    let o = palisade(&[
        "promote",
        "--etcd",
        &ep,
        "shop/web",
        "AdminNetworkPolicy/guard",
    ]);
    assert_eq!(
        text(&o),
        (
            Some(0),
            "promoted AdminNetworkPolicy/guard (/palisade/v1/AdminNetworkPolicy/_/guard)\npromoted shop/web (/palisade/v1/NetworkPolicy/shop/web)\n".to_string(),
            String::new()
        )
    );
    let o = palisade(&["datastore", "get", "NetworkPolicy", "--etcd", &ep]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        list["items"][0]["metadata"]["annotations"],
        serde_json::json!({"owner": "team-web"})
    );
    let o = palisade(&["promote", "--etcd", &ep, "shop/web"]);
    assert_eq!(
        text(&o),
        (
            Some(2),
            String::new(),
            "error: shop/web: not staged\nerror: nothing was promoted\n".to_string()
        )
    );
}
