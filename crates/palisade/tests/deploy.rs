//! `deploy/agent.yaml` runs the agent hardened: every field of its
//! container's security context, the pod's exposure, and a ClusterRole
//! that grants exactly what the Kubernetes source watches (taken from the
//! source's own list of resources).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

fn documents() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agent.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind(kind: &str) -> Value {
    let found: Vec<Value> = documents()
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/agent.yaml");
    found[0].clone()
}

#[test]
fn the_agent_container_is_hardened() {
    let ds = of_kind("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["securityContext"],
        json!({
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    // What the agent drops to by itself (privileges::needed without
    // --netns) is what the deployment grants.
    let granted: BTreeSet<String> = palisade_agent::privileges::needed(false)
        .iter()
        .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
        .collect();
    assert_eq!(granted, BTreeSet::from(["NET_ADMIN".to_string()]));
    // No --netns (which would need CAP_SYS_ADMIN), the endpoint on
    // loopback, the API as its datastore.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--listen=127.0.0.1:9464"), "{args:?}");
    assert!(args.contains(&"--kube"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--netns")), "{args:?}");
    assert_eq!(c["readinessProbe"]["httpGet"]["host"], "127.0.0.1");
    assert!(c.get("ports").is_none(), "no port is published: {c}");
    // Nothing writable and nothing of the host is mounted: nft's
    // transactions live in a memfd (backend.rs).
    assert!(c.get("volumeMounts").is_none(), "{c}");
    assert!(pod.get("volumes").is_none(), "{pod}");
    // The token is needed (--kube) and belongs to the agent's own account.
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], "palisade-agent");
    // No pod-level override of the container's context, no host PID or
    // IPC namespace; the host network is what the agent enforces.
    assert!(pod.get("securityContext").is_none(), "{pod}");
    assert!(pod.get("hostPID").is_none() && pod.get("hostIPC").is_none());
    assert_eq!(pod["hostNetwork"], true);
}

#[test]
fn the_cluster_role_grants_exactly_what_the_kube_source_watches() {
    let role = of_kind("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let verbs: BTreeSet<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            verbs,
            palisade_agent::kube::VERBS.into_iter().collect(),
            "{rule}"
        );
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                let pair = (
                    g.as_str().unwrap().to_string(),
                    r.as_str().unwrap().to_string(),
                );
                assert!(granted.insert(pair), "granted twice: {g}/{r}");
            }
        }
    }
    let watched: BTreeSet<(String, String)> = palisade_agent::kube::resources()
        .into_iter()
        .map(|(ar, _)| (ar.group, ar.plural))
        .collect();
    assert_eq!(granted, watched);
    // Bound to the agent's ServiceAccount alone.
    let binding = of_kind("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "palisade-agent");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "palisade-agent", "namespace": "palisade-system"}])
    );
}
