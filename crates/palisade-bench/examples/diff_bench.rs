//! `palisade diff` end to end on the synthetic 10,000-pod / 1,000-policy
//! cluster with one policy changed, against `palisade validate` on the same
//! files in the same run:
//!
//!     cargo build --release -p palisade
//!     cargo run --release -p palisade-bench --example diff_bench [-- PALISADE_BINARY]
//!
//! Writes BASE and HEAD as JSON manifests under a temporary directory
//! (HEAD = BASE with one rule of one policy edited), runs each command
//! five times alternately and prints the medians and their ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_bench::synth::{self, Params};
use palisade_model::{
    Cluster, LabelSelector, NamespaceScope, NetworkPolicy, Peer, PortSpec, Requirement, Rule,
};
use serde_json::{json, Value};

fn selector(s: &LabelSelector) -> Value {
    let exprs: Vec<Value> = s
        .requirements
        .iter()
        .map(|r| match r {
            Requirement::In { key, values } => {
                json!({"key": key, "operator": "In", "values": values})
            }
            Requirement::NotIn { key, values } => {
                json!({"key": key, "operator": "NotIn", "values": values})
            }
            Requirement::Exists { key } => json!({"key": key, "operator": "Exists"}),
            Requirement::DoesNotExist { key } => json!({"key": key, "operator": "DoesNotExist"}),
        })
        .collect();
    json!({ "matchExpressions": exprs })
}

fn peer(p: &Peer) -> Value {
    match p {
        Peer::IpBlock(b) => json!({"ipBlock": {
            "cidr": b.cidr.to_string(),
            "except": b.except.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        }}),
        Peer::Pods {
            namespaces: NamespaceScope::Own(_),
            pods,
        } => json!({ "podSelector": selector(pods) }),
        Peer::Pods {
            namespaces: NamespaceScope::Selector(ns),
            pods,
        } => json!({ "namespaceSelector": selector(ns), "podSelector": selector(pods) }),
    }
}

fn port(p: &PortSpec) -> Value {
    match p {
        PortSpec::AllPorts(proto) => json!({"protocol": proto.as_str()}),
        PortSpec::Range {
            protocol,
            start,
            end,
        } if start == end => json!({"protocol": protocol.as_str(), "port": start}),
        PortSpec::Range {
            protocol,
            start,
            end,
        } => json!({"protocol": protocol.as_str(), "port": start, "endPort": end}),
        PortSpec::Named { protocol, name } => json!({"protocol": protocol.as_str(), "port": name}),
    }
}

fn rules(rs: &[Rule], peers_key: &str) -> Vec<Value> {
    rs.iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            if let Some(ps) = &r.peers {
                o.insert(peers_key.into(), ps.iter().map(peer).collect());
            }
            if let Some(ps) = &r.ports {
                o.insert("ports".into(), ps.iter().map(port).collect());
            }
            Value::Object(o)
        })
        .collect()
}

fn policy(p: &NetworkPolicy) -> Value {
    let mut types = Vec::new();
    let mut spec = serde_json::Map::new();
    spec.insert("podSelector".into(), selector(&p.pod_selector));
    if let Some(r) = &p.ingress {
        types.push("Ingress");
        spec.insert("ingress".into(), rules(r, "from").into());
    }
    if let Some(r) = &p.egress {
        types.push("Egress");
        spec.insert("egress".into(), rules(r, "to").into());
    }
    spec.insert("policyTypes".into(), json!(types));
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": spec,
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The cluster as manifests: namespaces, nodes and pods in one file, the
/// policies in another.
fn write(c: &Cluster, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut objects: Vec<Value> = c
        .namespaces
        .values()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": n.labels}}))
        .collect();
    objects.extend(c.nodes.iter().map(|n| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name, "labels": n.labels},
            "status": {"addresses": n.addresses.iter().map(|a| json!({"type": "InternalIP", "address": a.to_string()})).collect::<Vec<_>>()}})
    }));
    objects.extend(c.pods.iter().map(|p| {
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|cp| json!({"name": cp.name, "containerPort": cp.port, "protocol": cp.protocol.as_str()}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
            "spec": {"nodeName": p.node, "containers": [{"name": "main", "image": "app", "ports": ports}]},
            "status": {"phase": "Running", "podIP": p.ips[0].to_string(),
                "podIPs": p.ips.iter().map(|a| json!({"ip": a.to_string()})).collect::<Vec<_>>()}})
    }));
    std::fs::write(dir.join("cluster.json"), list(objects).to_string())?;
    let policies = list(c.policies.iter().map(policy).collect());
    std::fs::write(dir.join("policies.json"), policies.to_string())
}

/// HEAD: the first policy with an ingress rule that names ports gets a
/// different port on that rule, the edit a pull request usually makes.
fn edit(mut c: Cluster) -> (Cluster, String) {
    let p = c
        .policies
        .iter_mut()
        .find(|p| {
            p.ingress
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r.ports.is_some()))
        })
        .expect("the synthetic cluster has a policy with ingress ports");
    let rule = p
        .ingress
        .as_mut()
        .and_then(|r| r.iter_mut().find(|r| r.ports.is_some()))
        .expect("found above");
    let before: Vec<String> = rule.ports.iter().flatten().map(|p| p.to_string()).collect();
    rule.ports = Some(vec![PortSpec::Range {
        protocol: palisade_model::Protocol::Tcp,
        start: 8443,
        end: 8443,
    }]);
    let what = format!(
        "{}: ingress rule ports [{}] -> [8443/TCP]",
        p.key(),
        before.join(", ")
    );
    (c, what)
}

fn run(bin: &Path, args: &[&str], out: &Path) -> Duration {
    let file = std::fs::File::create(out).expect("create output file");
    let t = Instant::now();
    let st = Command::new(bin)
        .args(args)
        .stdout(file)
        .status()
        .expect("run palisade");
    let d = t.elapsed();
    assert!(st.success(), "palisade {args:?}: {st}");
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("own path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/PROFILE/examples")
                .join("palisade")
        });
    let root = std::env::temp_dir().join(format!("palisade-diff-bench-{}", std::process::id()));
    let base = synth::cluster(&Params::large());
    let (head, what) = edit(base.clone());
    write(&base, &root.join("base")).expect("write BASE");
    write(&head, &root.join("head")).expect("write HEAD");
    let (b, h) = (root.join("base"), root.join("head"));
    let (b, h) = (
        b.to_str().expect("utf-8 path"),
        h.to_str().expect("utf-8 path"),
    );
    println!(
        "{} pods, {} policies; HEAD edits {what}",
        base.pods.len(),
        base.policies.len()
    );
    let out = root.join("out");
    let (mut validate, mut json, mut text) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        validate.push(run(&bin, &["validate", "-f", b], &out));
        json.push(run(&bin, &["diff", "-f", b, "--to", h, "-o", "json"], &out));
        text.push(run(
            &bin,
            &["diff", "-f", b, "--to", h],
            &root.join("out.txt"),
        ));
    }
    let changes = std::fs::read_to_string(root.join("out.txt"))
        .expect("read the diff")
        .lines()
        .count();
    let (v, j, t) = (median(validate), median(json), median(text));
    println!("changed connections (pod pairs x port ranges): {changes}");
    println!("validate (BASE):        {:7.3} s", v.as_secs_f64());
    println!(
        "diff -o json:           {:7.3} s  ({:.2} x validate)",
        j.as_secs_f64(),
        j.as_secs_f64() / v.as_secs_f64()
    );
    println!(
        "diff (text):            {:7.3} s  ({:.2} x validate)",
        t.as_secs_f64(),
        t.as_secs_f64() / v.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
}
