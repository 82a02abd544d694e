//! The model back to Kubernetes objects: a NetworkPolicy as k8s-openapi's
//! type, which serializes to the manifest that decodes to the same model
//! (tested below, through YAML).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_model::{
    IpBlock, LabelSelector, Labels, NamespaceScope, NetworkPolicy, Peer, PortSpec, Requirement,
    Rule,
};

use crate::staged::STAGED_ANNOTATION;

/// `policy` as a manifest with `labels` on its metadata, and the staging
/// annotation when it is staged. `policyTypes` is always written, so that
/// the direction a policy isolates never depends on defaulting.
pub fn network_policy(policy: &NetworkPolicy, labels: &Labels) -> net::NetworkPolicy {
    let annotations: Option<Labels> = policy
        .staged
        .then(|| [(STAGED_ANNOTATION.to_string(), "true".to_string())].into());
    let mut types = Vec::new();
    if policy.ingress.is_some() {
        types.push("Ingress".to_string());
    }
    if policy.egress.is_some() {
        types.push("Egress".to_string());
    }
    let ingress = policy
        .ingress
        .as_ref()
        .filter(|r| !r.is_empty())
        .map(|rules| {
            rules
                .iter()
                .map(|r| net::NetworkPolicyIngressRule {
                    from: peers(r),
                    ports: ports(r),
                })
                .collect()
        });
    let egress = policy
        .egress
        .as_ref()
        .filter(|r| !r.is_empty())
        .map(|rules| {
            rules
                .iter()
                .map(|r| net::NetworkPolicyEgressRule {
                    to: peers(r),
                    ports: ports(r),
                })
                .collect()
        });
    net::NetworkPolicy {
        metadata: meta::ObjectMeta {
            name: Some(policy.name.clone()),
            namespace: Some(policy.namespace.clone()),
            labels: (!labels.is_empty()).then(|| labels.clone()),
            annotations,
            ..Default::default()
        },
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(selector(&policy.pod_selector)),
            policy_types: Some(types),
            ingress,
            egress,
        }),
    }
}

/// `matchLabels` for one-value `In` requirements, `matchExpressions` for
/// the rest; the decoder folds them back into the same requirements.
pub fn selector(s: &LabelSelector) -> meta::LabelSelector {
    let mut labels = BTreeMap::new();
    let mut exprs = Vec::new();
    for r in &s.requirements {
        let (key, operator, values) = match r {
            Requirement::In { key, values } if values.len() == 1 && !labels.contains_key(key) => {
                labels.insert(key.clone(), values[0].clone());
                continue;
            }
            Requirement::In { key, values } => (key, "In", Some(values.clone())),
            Requirement::NotIn { key, values } => (key, "NotIn", Some(values.clone())),
            Requirement::Exists { key } => (key, "Exists", None),
            Requirement::DoesNotExist { key } => (key, "DoesNotExist", None),
        };
        exprs.push(meta::LabelSelectorRequirement {
            key: key.clone(),
            operator: operator.to_string(),
            values,
        });
    }
    meta::LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    }
}

fn peers(r: &Rule) -> Option<Vec<net::NetworkPolicyPeer>> {
    let list = r.peers.as_ref()?;
    Some(list.iter().map(peer).collect())
}

fn peer(p: &Peer) -> net::NetworkPolicyPeer {
    match p {
        Peer::IpBlock(b) => net::NetworkPolicyPeer {
            ip_block: Some(ip_block(b)),
            ..Default::default()
        },
        Peer::Pods {
            namespaces: NamespaceScope::Own(_),
            pods,
        } => net::NetworkPolicyPeer {
            pod_selector: Some(selector(pods)),
            ..Default::default()
        },
        Peer::Pods {
            namespaces: NamespaceScope::Selector(ns),
            pods,
        } => net::NetworkPolicyPeer {
            namespace_selector: Some(selector(ns)),
            // `namespaceSelector` alone means every pod there.
            pod_selector: (!pods.is_everything()).then(|| selector(pods)),
            ..Default::default()
        },
    }
}

fn ip_block(b: &IpBlock) -> net::IPBlock {
    net::IPBlock {
        cidr: b.cidr.to_string(),
        except: (!b.except.is_empty()).then(|| b.except.iter().map(ToString::to_string).collect()),
    }
}

fn ports(r: &Rule) -> Option<Vec<net::NetworkPolicyPort>> {
    let list = r.ports.as_ref()?;
    Some(
        list.iter()
            .map(|p| {
                let (protocol, port, end_port) = match p {
                    PortSpec::AllPorts(protocol) => (protocol, None, None),
                    PortSpec::Range {
                        protocol,
                        start,
                        end,
                    } => (
                        protocol,
                        Some(IntOrString::Int((*start).into())),
                        (end > start).then_some(i32::from(*end)),
                    ),
                    PortSpec::Named { protocol, name } => {
                        (protocol, Some(IntOrString::String(name.clone())), None)
                    }
                };
                net::NetworkPolicyPort {
                    protocol: Some(protocol.as_str().to_string()),
                    port,
                    end_port,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Object;
    use palisade_model::{IpNet, Protocol};

    fn sel(kv: &[(&str, &str)]) -> LabelSelector {
        LabelSelector::from_labels(kv.iter().copied())
    }

    fn policies() -> Vec<NetworkPolicy> {
        let block = |s: &str| IpBlock {
            cidr: s.parse::<IpNet>().unwrap(),
            except: vec![],
        };
        vec![
            NetworkPolicy {
                namespace: "shop".into(),
                name: "web-generated".into(),
                pod_selector: sel(&[("app", "web"), ("tier", "front")]),
                ingress: Some(vec![
                    Rule {
                        peers: Some(vec![Peer::Pods {
                            namespaces: NamespaceScope::Own("shop".into()),
                            pods: LabelSelector::everything(),
                        }]),
                        ports: Some(vec![PortSpec::Named {
                            protocol: Protocol::Tcp,
                            name: "http".into(),
                        }]),
                    },
                    Rule {
                        peers: Some(vec![Peer::IpBlock(IpBlock {
                            cidr: "10.0.0.0/8".parse().unwrap(),
                            except: vec!["10.1.0.0/16".parse().unwrap()],
                        })]),
                        ports: None,
                    },
                ]),
                egress: Some(vec![Rule {
                    peers: Some(vec![
                        Peer::Pods {
                            namespaces: NamespaceScope::Selector(sel(&[(
                                "kubernetes.io/metadata.name",
                                "db",
                            )])),
                            pods: LabelSelector::new(vec![
                                Requirement::In {
                                    key: "app".into(),
                                    values: vec!["pg".into(), "redis".into()],
                                },
                                Requirement::Exists { key: "x".into() },
                                Requirement::NotIn {
                                    key: "y".into(),
                                    values: vec!["1".into()],
                                },
                                Requirement::DoesNotExist { key: "z".into() },
                            ]),
                        },
                        Peer::Pods {
                            namespaces: NamespaceScope::Selector(LabelSelector::everything()),
                            pods: LabelSelector::everything(),
                        },
                        Peer::IpBlock(block("203.0.113.7/32")),
                        Peer::IpBlock(block("2001:db8::1/128")),
                    ]),
                    ports: Some(vec![
                        PortSpec::Range {
                            protocol: Protocol::Udp,
                            start: 53,
                            end: 53,
                        },
                        PortSpec::Range {
                            protocol: Protocol::Sctp,
                            start: 9000,
                            end: 9002,
                        },
                        PortSpec::AllPorts(Protocol::Tcp),
                    ]),
                }]),
                staged: false,
            },
            NetworkPolicy {
                namespace: "shop".into(),
                name: "idle-generated".into(),
                pod_selector: sel(&[("app", "idle")]),
                ingress: Some(vec![]),
                egress: Some(vec![]),
                staged: true,
            },
            NetworkPolicy {
                namespace: "shop".into(),
                name: "egress-only".into(),
                pod_selector: LabelSelector::everything(),
                ingress: None,
                egress: Some(vec![Rule {
                    peers: None,
                    ports: None,
                }]),
                staged: false,
            },
        ]
    }

    #[test]
    fn policies_read_back_through_yaml_as_the_same_model() {
        let labels: Labels = [("app.kubernetes.io/managed-by".into(), "palisade".into())].into();
        for p in policies() {
            let yaml = serde_norway::to_string(&network_policy(&p, &labels)).unwrap();
            let (objects, diags) = crate::decode("gen.yaml", yaml.as_bytes());
            assert!(diags.is_empty(), "{yaml}\n{diags:?}");
            let [obj] = &objects[..] else {
                panic!("{yaml}")
            };
            assert_eq!(obj.value, Object::NetworkPolicy(p.clone()), "{yaml}");
        }
    }

    #[test]
    fn one_value_in_becomes_match_labels_and_the_rest_expressions() {
        let yaml = serde_norway::to_string(&selector(&LabelSelector::new(vec![
            Requirement::In {
                key: "app".into(),
                values: vec!["web".into()],
            },
            Requirement::Exists { key: "x".into() },
        ])))
        .unwrap();
        assert_eq!(
            yaml,
            "matchExpressions:\n- key: x\n  operator: Exists\nmatchLabels:\n  app: web\n"
        );
    }
}
