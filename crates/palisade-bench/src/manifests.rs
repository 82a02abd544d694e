//! A cluster written back as the manifests users keep (JSON, one object
//! per document), so that benchmarks of the command line read files as
//! users' clusters are read, and tests can check the round trip.
//!
//! Admin policies are not written: the benchmark shapes that need files
//! have none, and [`write`] refuses a cluster with some rather than drop
//! them silently.

use std::path::{Path, PathBuf};

use palisade_model::{
    Cluster, LabelSelector, Labels, NamespaceScope, NetworkPolicy, Peer, Pod, PodPhase, PortSpec,
    Requirement, Rule,
};
use serde_json::{json, Map, Value};

fn labels(l: &Labels) -> Value {
    Value::Object(l.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

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
            Requirement::DoesNotExist { key } => {
                json!({"key": key, "operator": "DoesNotExist"})
            }
        })
        .collect();
    if exprs.is_empty() {
        json!({})
    } else {
        json!({ "matchExpressions": exprs })
    }
}

fn peer(p: &Peer) -> Value {
    match p {
        Peer::Pods { namespaces, pods } => {
            let mut m = Map::new();
            m.insert("podSelector".into(), selector(pods));
            if let NamespaceScope::Selector(ns) = namespaces {
                m.insert("namespaceSelector".into(), selector(ns));
            }
            Value::Object(m)
        }
        Peer::IpBlock(b) => {
            let except: Vec<String> = b.except.iter().map(|n| n.to_string()).collect();
            if except.is_empty() {
                json!({"ipBlock": {"cidr": b.cidr.to_string()}})
            } else {
                json!({"ipBlock": {"cidr": b.cidr.to_string(), "except": except}})
            }
        }
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

fn rule(r: &Rule, peers_key: &str) -> Value {
    let mut m = Map::new();
    if let Some(peers) = &r.peers {
        m.insert(peers_key.into(), peers.iter().map(peer).collect());
    }
    if let Some(ports) = &r.ports {
        m.insert("ports".into(), ports.iter().map(port).collect());
    }
    Value::Object(m)
}

/// One NetworkPolicy with explicit `policyTypes`, so that decoding gives
/// back the same isolation.
pub fn policy(p: &NetworkPolicy) -> Value {
    let mut spec = Map::new();
    spec.insert("podSelector".into(), selector(&p.pod_selector));
    let mut types = Vec::new();
    if let Some(rules) = &p.ingress {
        types.push("Ingress");
        let rules: Vec<Value> = rules.iter().map(|r| rule(r, "from")).collect();
        spec.insert("ingress".into(), rules.into());
    }
    if let Some(rules) = &p.egress {
        types.push("Egress");
        let rules: Vec<Value> = rules.iter().map(|r| rule(r, "to")).collect();
        spec.insert("egress".into(), rules.into());
    }
    spec.insert("policyTypes".into(), json!(types));
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": spec,
    })
}

pub fn pod(p: &Pod) -> Value {
    let ports: Vec<Value> = p
        .ports
        .iter()
        .map(|c| {
            let mut m = json!({"containerPort": c.port, "protocol": c.protocol.as_str()});
            if let Some(n) = &c.name {
                m["name"] = json!(n);
            }
            m
        })
        .collect();
    // `write` refuses templates, so every pod here is live.
    let phase = match p.phase().unwrap_or(PodPhase::Running) {
        PodPhase::Pending => "Pending",
        PodPhase::Running => "Running",
        PodPhase::Succeeded => "Succeeded",
        PodPhase::Failed => "Failed",
        PodPhase::Unknown => "Unknown",
    };
    let mut status = json!({ "phase": phase });
    if let Some(first) = p.ips.first() {
        status["podIP"] = json!(first.to_string());
        let ips: Vec<Value> = p
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        status["podIPs"] = json!(ips);
    }
    let mut spec = json!({
        "containers": [{"name": "c", "image": "x", "ports": ports}],
        "hostNetwork": p.host_network,
    });
    if let Some(n) = &p.node {
        spec["nodeName"] = json!(n);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": labels(&p.labels)},
        "spec": spec,
        "status": status,
    })
}

fn list(items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Writes `c` under `dir`: `cluster.json` (namespaces and nodes), pods in
/// `pods/NNN.json` and policies in `policies/NNN.json`, `per_file`
/// objects a file. Returns the files written.
pub fn write(dir: &Path, c: &Cluster, per_file: usize) -> Result<Vec<PathBuf>, String> {
    if !c.admin_policies.is_empty() {
        return Err("admin policies are not written as manifests".into());
    }
    if c.pods.iter().any(|p| p.phase().is_none()) {
        return Err("workload templates are not written as manifests".into());
    }
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut files = Vec::new();
    let mut base: Vec<Value> = c
        .namespaces
        .values()
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": n.name, "labels": labels(&n.labels)}})
        })
        .collect();
    base.extend(c.nodes.iter().map(|n| {
        let addrs: Vec<Value> = n
            .addresses
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": n.name, "labels": labels(&n.labels)},
               "status": {"addresses": addrs}})
    }));
    let f = dir.join("cluster.json");
    std::fs::write(&f, list(base)).map_err(|e| io(&f, e))?;
    files.push(f);
    let per_file = per_file.max(1);
    let groups: [(&str, Vec<Value>); 2] = [
        ("pods", c.pods.iter().map(pod).collect()),
        ("policies", c.policies.iter().map(policy).collect()),
    ];
    for (sub, items) in groups {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
        for (i, chunk) in items.chunks(per_file).enumerate() {
            let f = d.join(format!("{i:04}.json"));
            std::fs::write(&f, list(chunk.to_vec())).map_err(|e| io(&f, e))?;
            files.push(f);
        }
    }
    Ok(files)
}
