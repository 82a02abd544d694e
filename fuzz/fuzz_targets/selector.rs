//! Label selectors (`matchLabels`, `matchExpressions`) as a NetworkPolicy's
//! `podSelector`, read as JSON and as YAML, then matched against random
//! labels. The two readings agree when both succeed; the decoded selector
//! encodes to one that decodes the same; and the engine, asked which pods
//! the policy isolates and which peers a rule with the selector admits,
//! answers exactly what the requirements say, evaluated here by hand.
//!
//! Input: the selector's text, a zero byte, then bytes that choose labels.

#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use palisade_engine::{Decision, Direction, Endpoint, Engine};
use palisade_k8s::Object;
use palisade_model::{
    Cluster, LabelSelector, Labels, NamespaceScope, NetworkPolicy, Peer, Pod, PodPhase, PodSource,
    Protocol, Requirement, Rule,
};

const VOCAB: [&str; 6] = ["app", "web", "tier", "", "a.b/c", "x"];

fn policy_text(selector: &[u8]) -> Vec<u8> {
    let mut text = br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"s","namespace":"default"},"spec":{"policyTypes":["Ingress"],"podSelector":"#.to_vec();
    text.extend_from_slice(selector);
    text.extend_from_slice(b"}}\n");
    text
}

/// The pod selector of the one NetworkPolicy `text` holds, if it decodes
/// without an error.
fn decoded(name: &str, text: &[u8]) -> Option<LabelSelector> {
    let (objects, diagnostics) = palisade_k8s::decode(name, text);
    if diagnostics.iter().any(|d| d.is_error()) {
        return None;
    }
    match objects.as_slice() {
        [o] => match &o.value {
            Object::NetworkPolicy(p) => Some(p.pod_selector.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The requirements read by hand, as the API defines them.
fn by_hand(s: &LabelSelector, labels: &Labels) -> bool {
    s.requirements.iter().all(|r| match r {
        Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
        Requirement::NotIn { key, values } => match labels.get(key) {
            None => true,
            Some(v) => !values.contains(v),
        },
        Requirement::Exists { key } => labels.contains_key(key),
        Requirement::DoesNotExist { key } => !labels.contains_key(key),
    })
}

fn random_labels(u: &mut Unstructured, s: &LabelSelector) -> arbitrary::Result<Labels> {
    let mut words: Vec<String> = VOCAB.iter().map(|w| w.to_string()).collect();
    for r in &s.requirements {
        words.push(r.key().to_string());
        if let Requirement::In { values, .. } | Requirement::NotIn { values, .. } = r {
            words.extend(values.iter().cloned());
        }
    }
    let word = |u: &mut Unstructured| -> arbitrary::Result<String> {
        Ok(if u.ratio(7, 8)? {
            u.choose(&words)?.clone()
        } else {
            u.arbitrary::<String>()?
        })
    };
    let mut labels = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=5u8)? {
        let (k, v) = (word(u)?, word(u)?);
        labels.insert(k, v);
    }
    Ok(labels)
}

fn pod(namespace: &str, name: String, labels: Labels, ip: IpAddr) -> Pod {
    Pod {
        namespace: namespace.into(),
        name,
        labels,
        ips: vec![ip],
        node: None,
        host_network: false,
        source: PodSource::Live {
            phase: PodPhase::Running,
            owner: None,
        },
        ports: vec![],
    }
}

/// Pods labelled `sets` in `default`, isolated by a policy selecting `s`;
/// one pod in `peers` whose only ingress is from pods `s` selects.
fn cluster(s: &LabelSelector, sets: &[Labels]) -> Cluster {
    let mut c = Cluster::default();
    for (i, l) in sets.iter().enumerate() {
        let ip = IpAddr::from([10, 0, 0, i as u8 + 2]);
        c.pods.push(pod("default", format!("p{i}"), l.clone(), ip));
    }
    c.pods.push(pod(
        "peers",
        "target".into(),
        Labels::new(),
        IpAddr::from([10, 1, 0, 1]),
    ));
    c.policies.push(NetworkPolicy {
        namespace: "default".into(),
        name: "subject".into(),
        pod_selector: s.clone(),
        ingress: Some(vec![]),
        egress: None,
        staged: false,
    });
    c.policies.push(NetworkPolicy {
        namespace: "peers".into(),
        name: "peer".into(),
        pod_selector: LabelSelector::everything(),
        ingress: Some(vec![Rule {
            peers: Some(vec![Peer::Pods {
                namespaces: NamespaceScope::Selector(LabelSelector::everything()),
                pods: s.clone(),
            }]),
            ports: None,
        }]),
        egress: None,
        staged: false,
    });
    c.complete_namespaces();
    c
}

fn check_engine(s: &LabelSelector, sets: &[Labels]) {
    let engine = Engine::new(cluster(s, sets));
    let outside = Endpoint::Ip(IpAddr::from([203, 0, 113, 1]));
    let target = Endpoint::Pod(sets.len());
    for (i, l) in sets.iter().enumerate() {
        let want = by_hand(s, l);
        assert_eq!(s.matches(l), want, "{s} on {l:?}");
        let p = Endpoint::Pod(i);
        let from_outside = engine.flow(outside, p, Protocol::Tcp, 80).expect("IPv4");
        let isolated =
            engine.outcome(Direction::Ingress, &from_outside).decision != Decision::NotIsolated;
        assert_eq!(isolated, want, "{s} isolates {l:?}");
        let to_peer = engine.flow(p, target, Protocol::Tcp, 80).expect("IPv4");
        assert_eq!(engine.allowed(&to_peer), want, "{s} admits {l:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let policy = policy_text(text);
    let json = decoded("s.json", &policy);
    let yaml = decoded("s.yaml", &policy);
    if let (Some(j), Some(y)) = (&json, &yaml) {
        assert_eq!(
            j,
            y,
            "JSON and YAML read {:?} two ways",
            String::from_utf8_lossy(text)
        );
    }
    let Some(s) = json.or(yaml) else {
        return;
    };
    let encoded = serde_json::to_vec(&palisade_k8s::encode::selector(&s)).expect("JSON");
    assert_eq!(
        decoded("encoded.json", &policy_text(&encoded)).as_ref(),
        Some(&s),
        "{s} encoded as {}",
        String::from_utf8_lossy(&encoded)
    );
    let mut u = Unstructured::new(rest);
    let mut sets = Vec::new();
    while !u.is_empty() && sets.len() < 16 {
        match random_labels(&mut u, &s) {
            Ok(l) => sets.push(l),
            Err(_) => break,
        }
    }
    check_engine(&s, &sets);
});
