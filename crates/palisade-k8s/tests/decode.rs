//! Decoding and defaulting of valid manifests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_k8s::limits::{MAX_FILE_BYTES, MAX_OBJECT_BYTES};
use palisade_k8s::{
    assemble, decode, decode_json_bytes, decode_value, decode_with, load, Diagnostic, Limits,
    Located, Object, ObjectKey, Severity,
};
use palisade_model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject, AdminTier, Cluster,
    ContainerPort, IpBlock, IpNet, LabelSelector, Labels, Namespace, NamespaceScope, NetworkPolicy,
    Node, Peer, Pod, PodPhase, PodSource, PortSpec, Protocol, Requirement, Rule, WorkloadKind,
};

fn ok(file: &str, text: &str) -> Vec<Object> {
    let (objects, diags) = decode(file, text.as_bytes());
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    objects.into_iter().map(|l| l.value).collect()
}

fn one_policy(spec: &str) -> NetworkPolicy {
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
    );
    match ok("p.yaml", &text).as_slice() {
        [Object::NetworkPolicy(p)] => p.clone(),
        other => panic!("expected one policy, got {other:?}"),
    }
}

fn sel(kv: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::from_labels(kv.iter().copied())
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const ALL: Rule = Rule {
    peers: None,
    ports: None,
};

#[test]
fn policy_types_default_to_ingress_only_without_egress_rules() {
    let p = one_policy("  podSelector: {}\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, None);
    assert!(p.pod_selector.is_everything());
}

#[test]
fn policy_types_default_adds_egress_with_egress_rules() {
    let p = one_policy("  podSelector: {}\n  egress: [{}]\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, Some(vec![ALL]));
}

#[test]
fn empty_egress_list_does_not_add_egress() {
    let p = one_policy("  podSelector: {}\n  egress: []\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, None);
}

#[test]
fn explicit_policy_types_drop_the_other_direction_with_a_warning() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n";
    let (objects, diags) = decode("p.yaml", text.as_bytes());
    let Object::NetworkPolicy(p) = &objects[0].value else {
        panic!()
    };
    assert_eq!(p.namespace, "default");
    assert_eq!(p.ingress, None);
    assert_eq!(p.egress, Some(vec![]));
    assert_eq!(diags.len(), 1);
    assert_eq!(
        diags[0].to_string(),
        "warning: p.yaml:1: NetworkPolicy default/p: spec.ingress: ignored: policyTypes does not include Ingress"
    );
}

#[test]
fn explicit_both_policy_types_without_rules_deny_both() {
    let p = one_policy("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, Some(vec![]));
}

#[test]
fn empty_policy_types_list_is_defaulted() {
    let p = one_policy("  podSelector: {}\n  policyTypes: []\n  egress: [{}]\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, Some(vec![ALL]));
}

#[test]
fn empty_rule_allows_everything() {
    let p = one_policy("  podSelector: {}\n  ingress: [{}]\n");
    assert_eq!(p.ingress, Some(vec![ALL]));
    let p = one_policy("  podSelector: {}\n  ingress: [{from: [], ports: []}]\n");
    assert_eq!(p.ingress, Some(vec![ALL]));
}

#[test]
fn explicit_nulls_are_absent_fields() {
    let p = one_policy(
        "  podSelector: null\n  policyTypes: null\n  egress: null\n  ingress:\n    - from: null\n      ports: null\n    -\n",
    );
    assert!(p.pod_selector.is_everything());
    assert_eq!(p.ingress, Some(vec![ALL, ALL]));
    assert_eq!(p.egress, None);
}

#[test]
fn peers_and_ports_are_normalized() {
    let p = one_policy(
        r#"  podSelector: {matchLabels: {app: web}}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: lb}}
        - namespaceSelector: {}
        - namespaceSelector: {matchLabels: {team: a}}
          podSelector: {matchLabels: {app: x}}
        - ipBlock: {cidr: "fd00::/8", except: ["fd00:1::/32"]}
      ports:
        - {}
        - {protocol: UDP}
        - {port: 53, protocol: UDP}
        - {port: 8000, endPort: 8080}
        - {port: web-http}
"#,
    );
    assert_eq!(p.pod_selector, sel(&[("app", "web")]));
    let rule = &p.ingress.as_ref().unwrap()[0];
    assert_eq!(
        rule.peers.as_deref().unwrap(),
        &[
            Peer::Pods {
                namespaces: NamespaceScope::Own("ns".into()),
                pods: sel(&[("app", "lb")]),
            },
            Peer::Pods {
                namespaces: NamespaceScope::Selector(LabelSelector::everything()),
                pods: LabelSelector::everything(),
            },
            Peer::Pods {
                namespaces: NamespaceScope::Selector(sel(&[("team", "a")])),
                pods: sel(&[("app", "x")]),
            },
            Peer::IpBlock(IpBlock {
                cidr: net("fd00::/8"),
                except: vec![net("fd00:1::/32")],
            }),
        ]
    );
    assert_eq!(
        rule.ports.as_deref().unwrap(),
        &[
            PortSpec::AllPorts(Protocol::Tcp),
            PortSpec::AllPorts(Protocol::Udp),
            PortSpec::Range {
                protocol: Protocol::Udp,
                start: 53,
                end: 53
            },
            PortSpec::Range {
                protocol: Protocol::Tcp,
                start: 8000,
                end: 8080
            },
            PortSpec::Named {
                protocol: Protocol::Tcp,
                name: "web-http".into()
            },
        ]
    );
}

#[test]
fn selectors_fold_match_labels_and_expressions() {
    let p = one_policy(
        r#"  podSelector:
    matchLabels: {app: web, tier: ""}
    matchExpressions:
      - {key: env, operator: NotIn, values: [prod, dev, prod]}
      - {key: example.com/legacy, operator: DoesNotExist}
      - {key: app, operator: In, values: [web]}
      - {key: canary, operator: Exists, values: []}
"#,
    );
    assert_eq!(
        p.pod_selector,
        LabelSelector::new(vec![
            Requirement::In {
                key: "app".into(),
                values: vec!["web".into()]
            },
            Requirement::In {
                key: "tier".into(),
                values: vec!["".into()]
            },
            Requirement::NotIn {
                key: "env".into(),
                values: vec!["dev".into(), "prod".into()]
            },
            Requirement::DoesNotExist {
                key: "example.com/legacy".into()
            },
            Requirement::Exists {
                key: "canary".into()
            },
        ])
    );
    // `app=web` appears twice and is deduplicated.
    assert_eq!(p.pod_selector.requirements.len(), 5);
}

#[test]
fn cidr_host_bits_are_cleared_with_a_warning() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  egress:\n    - to: [{ipBlock: {cidr: 10.0.0.1/16, except: [10.0.1.7/24]}}]\n";
    let (objects, diags) = decode("p.yaml", text.as_bytes());
    let Object::NetworkPolicy(p) = &objects[0].value else {
        panic!()
    };
    let rule = &p.egress.as_ref().unwrap()[0];
    assert_eq!(
        rule.peers.as_deref().unwrap(),
        &[Peer::IpBlock(IpBlock {
            cidr: net("10.0.0.0/16"),
            except: vec![net("10.0.1.0/24")]
        })]
    );
    let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "warning: p.yaml:1: NetworkPolicy default/p: spec.egress[0].to[0].ipBlock.cidr: 10.0.0.1/16 has host bits set; it is read as 10.0.0.0/16",
            "warning: p.yaml:1: NetworkPolicy default/p: spec.egress[0].to[0].ipBlock.except[0]: 10.0.1.7/24 has host bits set; it is read as 10.0.1.0/24",
        ]
    );
}

#[test]
fn except_must_be_strictly_inside_and_same_family() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  egress:\n    - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16, \"fd00::/8\", 10.0.0.0/8]}}]\n";
    let (objects, diags) = decode("p.yaml", text.as_bytes());
    assert!(objects.is_empty());
    let msgs: Vec<String> = diags.iter().map(|d| d.message.clone()).collect();
    assert_eq!(
        msgs,
        [
            "10.0.0.0/16 is not strictly inside cidr 10.0.0.0/16: it would except the whole block",
            "fd00::/8 is not inside cidr 10.0.0.0/16 (different address family)",
            "10.0.0.0/8 is not inside cidr 10.0.0.0/16",
        ]
    );
}

#[test]
fn every_error_in_a_file_is_reported() {
    let text = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {matchLabels: {"a b": c}}
  ingres: []
  ingress:
    - ports: [{port: 0}, {port: 80, endPort: 70}, {protocol: tcp}]
---
apiVersion: v1
kind: Pod
metadata: {name: BAD}
---
: : bad yaml [
---
apiVersion: v1
kind: Namespace
metadata: {name: fine}
"#;
    let (objects, diags) = decode("many.yaml", text.as_bytes());
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    let fields: Vec<Option<&str>> = errors.iter().map(|d| d.field.as_deref()).collect();
    assert_eq!(
        fields,
        [
            Some("spec.ingres"),
            Some("spec.podSelector.matchLabels"),
            Some("spec.ingress[0].ports[0].port"),
            Some("spec.ingress[0].ports[1].endPort"),
            Some("spec.ingress[0].ports[2].protocol"),
            Some("metadata.name"),
            None,
        ],
        "{errors:#?}"
    );
    assert_eq!(errors[5].line, Some(10));
    assert_eq!(errors[5].object.as_deref(), Some("Pod default/BAD"));
    assert_eq!(errors[6].line, Some(14));
    assert!(errors[6].message.starts_with("YAML syntax error"));
    // The valid namespace after the broken document is still read.
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].line, Some(16));
    assert_eq!(
        objects[0].value.key(),
        ObjectKey {
            kind: "Namespace".into(),
            namespace: None,
            name: "fine".into()
        }
    );
}

#[test]
fn lists_multiple_documents_and_json() {
    let yaml = "# leading comment\n---\napiVersion: v1\nkind: NamespaceList\nitems:\n  - metadata: {name: a}\n  - metadata: {name: b}\n---\n---\napiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Namespace, metadata: {name: c}}\n...\n";
    let (objects, diags) = decode("ns.yaml", yaml.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    let names: Vec<(String, Option<usize>)> = objects
        .iter()
        .map(|o| (o.value.key().name, o.line))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_string(), Some(3)),
            ("b".to_string(), Some(3)),
            ("c".to_string(), Some(10))
        ]
    );

    let json = r#"
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "p", "namespace": "x", "labels": {"app": "a"}},
 "status": {"podIP": "10.1.1.1"}}"#;
    let objects = ok("pod.json", json);
    assert_eq!(
        objects,
        [Object::Pod(Pod {
            namespace: "x".into(),
            name: "p".into(),
            labels: labels(&[("app", "a")]),
            ips: vec![ip("10.1.1.1")],
            node: None,
            host_network: false,
            source: PodSource::Live {
                phase: PodPhase::Running,
                owner: None,
            },
            ports: vec![],
        })]
    );

    let (objects, diags) = decode("bad.json", b"{\n  \"kind\": \"Pod\",\n}");
    assert!(objects.is_empty());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].line, Some(3));
    assert!(diags[0]
        .to_string()
        .starts_with("bad.json:3: JSON syntax error"));
}

#[test]
fn decode_value_reads_one_object() {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"zone": "z"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                 {"type": "Hostname", "address": "n1"}]}
    });
    let (objects, diags) = decode_value("etcd:/registry/minions/n1", v);
    assert!(diags.is_empty());
    assert_eq!(
        objects,
        [Located {
            file: "etcd:/registry/minions/n1".into(),
            line: None,
            value: Object::Node(Node {
                name: "n1".into(),
                labels: labels(&[("zone", "z")]),
                addresses: vec![ip("10.0.0.1")],
            })
        }]
    );
    let (_, diags) = decode_value(
        "etcd:x",
        serde_json::json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "status": {"phase": "Sleeping"}}),
    );
    assert_eq!(
        diags[0].to_string(),
        "etcd:x: Pod default/p: status.phase: unknown phase \"Sleeping\" (expected Pending, Running, Succeeded, Failed or Unknown)"
    );
}

#[test]
fn other_kinds_are_skipped_silently_and_missing_fields_are_errors() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: v1\nmetadata: {name: q}\n---\napiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: w}\n---\nreplicaCount: 3\n";
    let (objects, diags) = decode("d.yaml", text.as_bytes());
    assert!(objects.is_empty());
    let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "d.yaml:5: Pod default/p: apiVersion: missing apiVersion (expected v1)",
            "d.yaml:8: kind: missing kind (object named \"q\")",
            "warning: d.yaml:11: Deploymnet w: kind: skipped: kind Deploymnet is not used by Palisade (did you mean Deployment?)",
            "warning: d.yaml:15: not a Kubernetes object (no apiVersion and no kind); skipped",
        ]
    );
    assert_eq!(diags[2].severity, Severity::Warning);
    assert_eq!(diags[3].severity, Severity::Warning);
}

#[test]
fn pods_are_lenient_but_checked() {
    let text = r#"apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: n
  uid: 1234
  managedFields: [{manager: kubectl}]
spec:
  unknownField: true
  containers:
    - name: c
      ports: [{containerPort: 80, name: "HTTP"}, {containerPort: "80"}]
status:
  podIPs: []
  podIP: ""
  phase: Pending
"#;
    let (objects, diags) = decode("pod.yaml", text.as_bytes());
    assert!(objects.is_empty());
    let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "pod.yaml:1: Pod n/p: spec.containers[0].ports[0].name: \"HTTP\" is not a valid port name: must contain only lower case alphanumeric characters and '-'",
            "pod.yaml:1: Pod n/p: spec.containers[0].ports[1].containerPort: expected an integer, found string \"80\"",
        ]
    );
}

#[test]
fn assemble_reports_duplicates_ties_and_sorts() {
    let a = r#"apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: zeta}
spec: {priority: 5, subject: {namespaces: {}}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: alpha}
spec: {tier: Admin, priority: 5, subject: {namespaces: {}}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: first}
spec: {priority: 1, subject: {namespaces: {}}}
"#;
    let b = "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: z}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: z}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: first}\nspec: {priority: 9, subject: {namespaces: {}}}\n";
    let loaded = load(&[
        ("a.yaml".to_string(), a.as_bytes().to_vec()),
        ("b.yaml".to_string(), b.as_bytes().to_vec()),
    ]);
    let msgs: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "b.yaml:9: AdminNetworkPolicy first: duplicate AdminNetworkPolicy first: already defined at a.yaml:11; the first definition is kept",
            "warning: a.yaml:1: AdminNetworkPolicy zeta: same tier (Admin) and priority (5) as ClusterNetworkPolicy alpha; the tie is broken by name, lexicographically, so ClusterNetworkPolicy alpha is evaluated first",
        ]
    );
    let c = &loaded.cluster;
    let admin: Vec<(&str, u32)> = c
        .admin_policies
        .iter()
        .map(|p| (p.name.as_str(), p.priority))
        .collect();
    assert_eq!(admin, [("first", 1), ("alpha", 5), ("zeta", 5)]);
    let pods: Vec<String> = c.pods.iter().map(Pod::key).collect();
    assert_eq!(pods, ["z/a", "z/b"]);
    assert_eq!(c.namespaces["z"], Namespace::implicit("z"));
}

#[test]
fn diagnostic_display_omits_missing_parts() {
    let d = Diagnostic {
        severity: Severity::Error,
        file: "policies.yaml".into(),
        line: Some(12),
        object: Some("NetworkPolicy default/web".into()),
        field: Some("spec.ingress[0].ports[1].endPort".into()),
        message: "70 is below port 80".into(),
    };
    assert_eq!(
        d.to_string(),
        "policies.yaml:12: NetworkPolicy default/web: spec.ingress[0].ports[1].endPort: 70 is below port 80"
    );
    let w = Diagnostic {
        severity: Severity::Warning,
        line: None,
        object: None,
        field: None,
        ..d
    };
    assert!(!w.is_error());
    assert_eq!(w.to_string(), "warning: policies.yaml: 70 is below port 80");
}

#[test]
fn valid_fixture_decodes_to_the_expected_cluster() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/valid/cluster.yaml");
    let bytes = std::fs::read(path).unwrap();
    let (objects, diags) = decode("cluster.yaml", &bytes);
    let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(msgs.is_empty(), "{msgs:?}");
    let loaded = assemble(objects);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);

    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "shop".to_string(),
        Namespace {
            name: "shop".into(),
            labels: labels(&[("team", "web"), ("kubernetes.io/metadata.name", "shop")]),
        },
    );
    namespaces.insert("default".to_string(), Namespace::implicit("default"));

    let tcp = |name: &str, port| ContainerPort {
        name: Some(name.into()),
        port,
        protocol: Protocol::Tcp,
    };
    let pods = vec![
        Pod {
            namespace: "default".into(),
            name: "db-0".into(),
            labels: Labels::new(),
            ips: vec![ip("192.168.1.10")],
            node: None,
            host_network: true,
            source: PodSource::Live {
                phase: PodPhase::Running,
                owner: None,
            },
            ports: vec![],
        },
        Pod {
            namespace: "shop".into(),
            name: "web-1".into(),
            labels: labels(&[("app", "web")]),
            ips: vec![ip("10.0.0.5"), ip("fd00::5")],
            node: Some("node-a".into()),
            host_network: false,
            source: PodSource::Live {
                phase: PodPhase::Running,
                owner: None,
            },
            ports: vec![
                tcp("http", 8080),
                ContainerPort {
                    name: None,
                    port: 53,
                    protocol: Protocol::Udp,
                },
                tcp("envoy", 15001),
            ],
        },
    ];
    let nodes = vec![Node {
        name: "node-a".into(),
        labels: labels(&[("zone", "a")]),
        addresses: vec![ip("192.168.1.10"), ip("2001:db8::1")],
    }];
    let policies = vec![NetworkPolicy {
        namespace: "shop".into(),
        name: "web".into(),
        pod_selector: sel(&[("app", "web")]),
        ingress: Some(vec![Rule {
            peers: Some(vec![
                Peer::Pods {
                    namespaces: NamespaceScope::Own("shop".into()),
                    pods: sel(&[("app", "lb")]),
                },
                Peer::Pods {
                    namespaces: NamespaceScope::Selector(LabelSelector::new(vec![
                        Requirement::In {
                            key: "team".into(),
                            values: vec!["ops".into(), "web".into()],
                        },
                    ])),
                    pods: LabelSelector::everything(),
                },
                Peer::IpBlock(IpBlock {
                    cidr: net("10.1.0.0/16"),
                    except: vec![net("10.1.2.0/24")],
                }),
            ]),
            ports: Some(vec![
                PortSpec::Range {
                    protocol: Protocol::Tcp,
                    start: 8080,
                    end: 8080,
                },
                PortSpec::Named {
                    protocol: Protocol::Tcp,
                    name: "http".into(),
                },
                PortSpec::Range {
                    protocol: Protocol::Udp,
                    start: 9000,
                    end: 9010,
                },
                PortSpec::AllPorts(Protocol::Sctp),
            ]),
        }]),
        egress: Some(vec![ALL]),
        staged: false,
    }];
    let admin_policies = vec![
        AdminPolicy {
            kind: "ClusterNetworkPolicy".into(),
            name: "allow-monitoring".into(),
            tier: AdminTier::Admin,
            priority: 5,
            subject: AdminSubject::Namespaces(sel(&[("team", "web")])),
            ingress: vec![AdminRule {
                name: "prom".into(),
                action: AdminAction::Allow,
                peers: vec![AdminPeer::Namespaces(sel(&[("team", "ops")]))],
                ports: Some(vec![
                    AdminPort::Number {
                        protocol: Protocol::Tcp,
                        port: 9090,
                    },
                    AdminPort::Range {
                        protocol: Protocol::Udp,
                        start: 100,
                        end: 200,
                    },
                    AdminPort::Named("metrics".into()),
                ]),
            }],
            egress: vec![AdminRule {
                name: String::new(),
                action: AdminAction::Pass,
                peers: vec![AdminPeer::Nodes(LabelSelector::new(vec![
                    Requirement::Exists { key: "zone".into() },
                ]))],
                ports: None,
            }],
            staged: false,
        },
        AdminPolicy {
            kind: "AdminNetworkPolicy".into(),
            name: "deny-imds".into(),
            tier: AdminTier::Admin,
            priority: 10,
            subject: AdminSubject::Namespaces(LabelSelector::everything()),
            ingress: vec![],
            egress: vec![
                AdminRule {
                    name: "imds".into(),
                    action: AdminAction::Deny,
                    peers: vec![AdminPeer::Networks(vec![net("169.254.169.254/32")])],
                    ports: None,
                },
                AdminRule {
                    name: "dns".into(),
                    action: AdminAction::Allow,
                    peers: vec![AdminPeer::Pods {
                        namespaces: sel(&[("kubernetes.io/metadata.name", "kube-system")]),
                        pods: sel(&[("k8s-app", "kube-dns")]),
                    }],
                    ports: Some(vec![
                        AdminPort::Number {
                            protocol: Protocol::Udp,
                            port: 53,
                        },
                        AdminPort::Range {
                            protocol: Protocol::Tcp,
                            start: 1000,
                            end: 2000,
                        },
                        AdminPort::Named("dns-tcp".into()),
                    ]),
                },
            ],
            staged: false,
        },
        AdminPolicy {
            kind: "BaselineAdminNetworkPolicy".into(),
            name: "default".into(),
            tier: AdminTier::Baseline,
            priority: 0,
            subject: AdminSubject::Pods {
                namespaces: LabelSelector::everything(),
                pods: sel(&[("app", "web")]),
            },
            ingress: vec![AdminRule {
                name: String::new(),
                action: AdminAction::Deny,
                peers: vec![AdminPeer::Namespaces(LabelSelector::everything())],
                ports: None,
            }],
            egress: vec![],
            staged: false,
        },
    ];
    let expected = Cluster {
        namespaces,
        pods,
        nodes,
        policies,
        admin_policies,
    };
    assert_eq!(loaded.cluster, expected);
}

#[test]
fn mangled_inputs_never_panic() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/valid/cluster.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Every line removed in turn, and every line with its value replaced by
    // values of the wrong type.
    for i in 0..lines.len() {
        for replacement in [
            None,
            Some("[]"),
            Some("{}"),
            Some("7"),
            Some("null"),
            Some("x"),
        ] {
            let mut l = lines.clone();
            let changed;
            match replacement {
                None => {
                    l.remove(i);
                }
                Some(r) => {
                    if let Some((k, _)) = lines[i].split_once(": ") {
                        changed = format!("{k}: {r}");
                        l[i] = &changed;
                        let _ = load(&[("m.yaml".to_string(), l.join("\n").into_bytes())]);
                    }
                    continue;
                }
            }
            let _ = load(&[("m.yaml".to_string(), l.join("\n").into_bytes())]);
        }
    }
    // Every prefix, in both formats.
    for cut in (0..text.len()).step_by(7) {
        let _ = decode("t.yaml", &text.as_bytes()[..cut]);
        let _ = decode("t.json", &text.as_bytes()[..cut]);
    }
    let _ = decode("bin.yaml", &[0xff, 0xfe, 0x00]);
    let _ = decode_value("v", serde_json::json!([1, {"kind": "List", "items": 3}]));
}

/// Every diagnostic of decoding `text`, displayed, and how many objects
/// were read.
fn messages(file: &str, text: &str) -> (usize, Vec<String>) {
    let (objects, diags) = decode(file, text.as_bytes());
    (objects.len(), diags.iter().map(|d| d.to_string()).collect())
}

const NP_PORT: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web}\nspec:\n  podSelector: {}\n  ingress:\n    - ports:\n        - port: PORT\n";

#[test]
fn non_finite_numbers_are_refused_where_they_are() {
    // A plain JSON value reads these as null, an absent port: every port.
    for (yaml, shown) in [
        (".inf", ".inf"),
        (".Inf", ".inf"),
        ("+.inf", ".inf"),
        ("-.inf", "-.inf"),
        (".nan", ".nan"),
        (".NaN", ".nan"),
    ] {
        let text = format!("# web\n{}", NP_PORT.replace("PORT", yaml));
        assert_eq!(
            messages("policy.yaml", &text),
            (
                0,
                vec![format!(
                    "policy.yaml:9: NetworkPolicy default/web: spec.ingress[0].ports[0].port: {shown} is not a finite number"
                )]
            ),
            "{yaml}"
        );
    }

    // Anywhere in a document, read by Palisade or not, in any kind; in a
    // list, the item is named.
    let text = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: a, namespace: x}\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: b, namespace: x}\n    spec:\n      terminationGracePeriodSeconds: .inf\n";
    assert_eq!(
        messages("pods.yaml", text),
        (
            0,
            vec!["pods.yaml:11: Pod x/b: spec.terminationGracePeriodSeconds: .inf is not a finite number".to_string()]
        )
    );
    let text = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\nspec:\n  priority: 1\n  subject: {namespaces: {}}\n  egress:\n    - action: Deny\n      to: [{networks: [10.0.0.0/8]}]\n      ports: [{portRange: {start: 1, end: .inf}}]\n";
    assert_eq!(
        messages("anp.yaml", text),
        (
            1,
            vec!["anp.yaml:15: AdminNetworkPolicy a: spec.egress[0].ports[0].portRange.end: .inf is not a finite number".to_string()]
        )
    );
    let (n, msgs) = messages("c.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, ports: [{containerPort: .nan}]}]\n");
    assert_eq!(
        (n, msgs),
        (
            0,
            vec!["c.yaml:5: Pod default/p: spec.containers[0].ports[0].containerPort: .nan is not a finite number".to_string()]
        )
    );
    // A document that is nothing but one.
    assert_eq!(
        messages("n.yaml", "\n.nan\n"),
        (0, vec!["n.yaml:2: .nan is not a finite number".to_string()])
    );
}

#[test]
fn non_integer_ports_are_refused_where_they_are() {
    for (port, message) in [
        ("80.5", "expected an integer, found number 80.5"),
        ("1e3", "expected an integer, found number 1000.0"),
        ("80.0", "expected an integer, found number 80.0"),
        ("-1", "-1 is not a valid port (must be 1-65535)"),
        ("0", "0 is not a valid port (must be 1-65535)"),
        ("70000", "70000 is not a valid port (must be 1-65535)"),
    ] {
        let np = NP_PORT.replace("PORT", port);
        assert_eq!(
            messages("p.yaml", &np),
            (
                0,
                vec![format!(
                    "p.yaml:1: NetworkPolicy default/web: spec.ingress[0].ports[0].port: {message}"
                )]
            ),
            "port {port}"
        );
        let np = NP_PORT.replace("PORT", &format!("80\n          endPort: {port}"));
        assert_eq!(
            messages("p.yaml", &np).1,
            [format!(
                "p.yaml:1: NetworkPolicy default/web: spec.ingress[0].ports[0].endPort: {message}"
            )],
            "endPort {port}"
        );
        for (ports, field) in [
            (
                format!("{{portNumber: {{port: {port}}}}}"),
                "portNumber.port",
            ),
            (
                format!("{{portRange: {{start: {port}, end: 80000}}}}"),
                "portRange.start",
            ),
        ] {
            let anp = format!("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: a}}\nspec:\n  priority: 1\n  subject: {{namespaces: {{}}}}\n  ingress:\n    - action: Deny\n      from: [{{namespaces: {{}}}}]\n      ports: [{ports}]\n");
            let msgs = messages("a.yaml", &anp).1;
            let want = format!(
                "a.yaml:1: AdminNetworkPolicy a: spec.ingress[0].ports[0].{field}: {message}"
            );
            assert!(msgs.contains(&want), "{want} not in {msgs:#?}");
        }
        let pod = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: c, ports: [{{containerPort: {port}}}]}}]\n");
        assert_eq!(
            messages("pod.yaml", &pod),
            (
                0,
                vec![format!(
                    "pod.yaml:1: Pod default/p: spec.containers[0].ports[0].containerPort: {message}"
                )]
            ),
            "containerPort {port}"
        );
    }
}

#[test]
fn duplicate_keys_are_refused_in_yaml_and_json() {
    // A plain JSON value keeps the last: this policy would select every pod.
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web}\nspec:\n  podSelector:\n    matchLabels: {app: web}\n  podSelector: {}\n  ingress: []\n";
    assert_eq!(
        messages("np.yaml", yaml),
        (
            0,
            vec![
                "np.yaml:7: NetworkPolicy default/web: spec.podSelector: duplicate field \"podSelector\"".to_string()
            ]
        )
    );
    let json = "{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\",\n \"metadata\": {\"name\": \"web\", \"namespace\": \"shop\"},\n \"spec\": {\"podSelector\": {\"matchLabels\": {\"app\": \"web\"}},\n          \"podSelector\": {}}}\n";
    assert_eq!(
        messages("np.json", json),
        (
            0,
            vec![
                "np.json:4: NetworkPolicy shop/web: spec.podSelector: duplicate field \"podSelector\"".to_string()
            ]
        )
    );
    // In lenient kinds too, at any depth, at the file's line in a later
    // document; the other documents are still read.
    let pods = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# pods\napiVersion: v1\nkind: PodList\nitems:\n  - metadata: {name: a, namespace: x}\n  - metadata:\n      name: b\n      namespace: x\n      labels: {app: b, tier: x, app: c}\n";
    assert_eq!(
        messages("pods.yaml", pods),
        (
            1,
            vec!["pods.yaml:13: Pod x/b: metadata.labels.app: duplicate field \"app\"".to_string()]
        )
    );
    let top = "kind: Pod\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
    assert_eq!(
        messages("top.yaml", top).1,
        ["top.yaml:3: Pod default/p: kind: duplicate field \"kind\""]
    );
    // The same key in different mappings is no duplicate.
    ok(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {name: x}}\nspec:\n  containers: [{name: a}, {name: b}]\n",
    );
}

#[test]
fn syntax_errors_keep_the_file_lines() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: [b}\n";
    let (n, msgs) = messages("s.yaml", text);
    assert_eq!(n, 1);
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with("s.yaml:7: YAML syntax error: ") && msgs[0].contains("line 7"),
        "{msgs:?}"
    );
}

#[test]
fn json_bytes_are_read_strictly_whatever_their_origin() {
    let v = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x", "name": "q"}}"#;
    let (objects, diags) = decode_json_bytes("etcd:/registry/pods/x/p", v);
    assert!(objects.is_empty());
    assert_eq!(
        diags.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        ["etcd:/registry/pods/x/p:1: Pod x/q: metadata.name: duplicate field \"name\""]
    );
    let v = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}"#;
    let (objects, diags) = decode_json_bytes("etcd:/registry/pods/default/p", v);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(objects[0].value.key().name, "p");
    // JSON has no non-finite numbers; one too large for a float is refused.
    let (objects, diags) = decode_json_bytes("etcd:k", b"{\"kind\": \"Pod\", \"x\": 1e999}");
    assert!(objects.is_empty());
    assert!(diags[0]
        .to_string()
        .starts_with("etcd:k:1: JSON syntax error: number out of range"));
}

/// `text` padded with a trailing comment to exactly `len` bytes.
fn padded(text: &str, len: usize) -> String {
    let mut s = format!("{text}#");
    s.push_str(&"x".repeat(len - s.len() - 1));
    s.push('\n');
    assert_eq!(s.len(), len);
    s
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";

#[test]
fn a_file_over_the_limit_is_refused_before_it_is_read() {
    let limits = Limits {
        file_bytes: 1000,
        object_bytes: 1000,
    };
    let text = padded(POD, 1000);
    let (objects, diags) = decode_with(&limits, "f.yaml", text.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(objects.len(), 1);
    // One byte more, even of bytes that are no YAML, and nothing is parsed.
    for text in [padded(POD, 1001), "\u{1}".repeat(1001)] {
        let (objects, diags) = decode_with(&limits, "f.yaml", text.as_bytes());
        assert!(objects.is_empty());
        assert_eq!(
            diags.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["f.yaml: the file is 1001 bytes, over the limit of 1000 bytes for one file; nothing in it was read"]
        );
    }
    // The default, for JSON as well.
    assert_eq!(MAX_FILE_BYTES, 64 << 20);
    let big = vec![b' '; (MAX_FILE_BYTES + 1) as usize];
    for name in ["big.yaml", "big.json"] {
        let (_, diags) = decode(name, &big);
        assert_eq!(
            diags.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            [format!("{name}: the file is 64.0 MiB, over the limit of 64 MiB for one file; nothing in it was read")]
        );
    }
    let (_, diags) = decode_json_bytes("etcd:k", &big);
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.contains("over the limit of 64 MiB"));
}

#[test]
fn an_object_over_the_limit_is_refused_but_a_list_may_fill_the_file() {
    let limits = Limits {
        file_bytes: 10_000,
        object_bytes: 500,
    };
    // A document's size counts from its `---` line.
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: small}\n";
    let pod = format!("---\n{POD}");
    let text = format!("{ns}{}", padded(&pod, 500));
    let (objects, diags) = decode_with(&limits, "o.yaml", text.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(objects.len(), 2);
    let text = format!("{ns}{}", padded(&pod, 501));
    let (objects, diags) = decode_with(&limits, "o.yaml", text.as_bytes());
    assert_eq!(objects.len(), 1, "the other document is still read");
    assert_eq!(
        diags.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        ["o.yaml:5: Pod default/p: the document is 501 bytes, over the limit of 500 bytes for one object (the Kubernetes API server's request limit; only a List may be larger); nothing in it was read"]
    );
    // JSON is one document.
    let json = format!(
        "{{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {{\"name\": \"n\"}}}}{}",
        " ".repeat(450)
    );
    let (objects, diags) = decode_with(&limits, "o.json", json.as_bytes());
    assert!(objects.is_empty());
    assert!(
        diags[0]
            .to_string()
            .starts_with("o.json:1: Namespace n: the document is 5"),
        "{diags:?}"
    );

    let items: String = (0..40)
        .map(|i| format!("  - {{apiVersion: v1, kind: Namespace, metadata: {{name: n{i}}}}}\n"))
        .collect();
    let list = format!("apiVersion: v1\nkind: List\nitems:\n{items}");
    assert!(list.len() > 2000);
    let (objects, diags) = decode_with(&limits, "l.yaml", list.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(objects.len(), 40);

    // The default.
    assert_eq!(MAX_OBJECT_BYTES, 3 << 20);
    let text = padded(POD, (MAX_OBJECT_BYTES + 1) as usize);
    let (objects, diags) = decode("big.yaml", text.as_bytes());
    assert!(objects.is_empty());
    assert_eq!(diags.len(), 1);
    assert!(
        diags[0].to_string().starts_with("big.yaml:1: Pod default/p: the document is 3.0 MiB, over the limit of 3 MiB for one object"),
        "{diags:?}"
    );
    let text = padded(POD, MAX_OBJECT_BYTES as usize);
    let (objects, diags) = decode("big.yaml", text.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(objects.len(), 1);
}

#[test]
fn a_workload_is_its_pod_template() {
    let text = r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: ops, labels: {team: ops}}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: nightly}}
        spec:
          hostNetwork: false
          initContainers:
            - {name: setup, image: x, ports: [{containerPort: 9000, name: setup}]}
            - {name: proxy, image: x, restartPolicy: Always, ports: [{containerPort: 15001, name: envoy}]}
          containers:
            - {name: job, image: x, ports: [{containerPort: 8080, name: http}, {containerPort: 53, protocol: UDP}]}
"#;
    let objects = ok("cron.yaml", text);
    let tcp = |name: &str, port| ContainerPort {
        name: Some(name.into()),
        port,
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        objects,
        [Object::Workload(palisade_k8s::Template {
            endpoint: Pod::template(
                WorkloadKind::CronJob,
                "ops".into(),
                "nightly".into(),
                labels(&[("app", "nightly")]),
                false,
                vec![
                    tcp("http", 8080),
                    ContainerPort {
                        name: None,
                        port: 53,
                        protocol: Protocol::Udp
                    },
                    tcp("envoy", 15001),
                ],
            ),
            owner: None,
        })]
    );
    assert_eq!(
        objects[0].key().to_string(),
        "CronJob ops/nightly",
        "the workload's kind names it"
    );
}

/// Pods join their top-level workload; a workload with live pods, or with
/// a controller in the input, is not an endpoint of its own.
#[test]
fn live_pods_are_grouped_by_their_owners() {
    let pod = |name: &str, labels: &str, owner: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: s, labels: {{{labels}}}, ownerReferences: [{owner}]}}\nstatus: {{podIP: 10.0.0.1}}\n---\n")
    };
    let rs = |name: &str, owner: &str| {
        format!("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {name}, namespace: s, ownerReferences: [{owner}]}}\nspec: {{template: {{spec: {{containers: [{{name: c}}]}}}}}}\n---\n")
    };
    let text = [
        pod("a-1f2e-x", "pod-template-hash: 1f2e", "{kind: ReplicaSet, name: a-1f2e, controller: true}"),
        pod("b-7a7-x", "pod-template-hash: 7a7", "{kind: ReplicaSet, name: b-7a7, controller: true}"),
        rs("b-7a7", "{kind: Deployment, name: bee, controller: true}"),
        pod("c-x", "pod-template-hash: 9b9", "{kind: ReplicaSet, name: c-x1, controller: true}"),
        pod("d-x", "", "{kind: Job, name: d-1, controller: true}"),
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: d-1, namespace: s, ownerReferences: [{kind: CronJob, name: d, controller: true}]}\nspec: {template: {spec: {containers: [{name: c}]}}}\n---\n".to_string(),
        pod("e-0", "", "{kind: StatefulSet, name: e, controller: true}"),
        pod("f", "", "{kind: Node, name: n1, controller: true}"),
        pod("g", "", "{kind: ReplicaSet, name: g-1, controller: false}"),
        rs("h-5", "{kind: Deployment, name: h, controller: true}"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: h, namespace: s}\nspec: {template: {spec: {containers: [{name: c}]}}}\n---\n".to_string(),
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: i, namespace: s}\nspec: {template: {spec: {containers: [{name: c}]}}}\n".to_string(),
    ]
    .concat();
    let (objects, diags) = decode("w.yaml", text.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    let loaded = assemble(objects);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let got: Vec<String> = loaded
        .cluster
        .pods
        .iter()
        .map(|p| match p.workload() {
            Some((k, n)) => format!("{} -> {k} {n}", p.display_name()),
            None => p.display_name(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "s/a-1f2e-x -> Deployment a",
            "s/b-7a7-x -> Deployment bee",
            "s/c-x -> ReplicaSet c-x1",
            "s/d-x -> CronJob d",
            "s/e-0 -> StatefulSet e",
            "s/f",
            "s/g",
            "s/h[Deployment] -> Deployment h",
            "s/i[ReplicationController] -> ReplicationController i",
        ]
    );
}

#[test]
fn load_remembers_the_file_and_document_line_of_each_object() {
    let a = "# comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec: {podSelector: {}}\n";
    let b = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: shop}\n";
    let loaded = palisade_k8s::load(&[("a.yaml".into(), a.into()), ("b.yaml".into(), b.into())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let got: Vec<(String, String, Option<usize>)> = loaded
        .origins
        .iter()
        .map(|(k, o)| (k.to_string(), o.file.clone(), o.line))
        .collect();
    assert_eq!(
        got,
        [
            ("Namespace shop".to_string(), "a.yaml".to_string(), Some(3)),
            (
                "NetworkPolicy shop/web".to_string(),
                "a.yaml".to_string(),
                Some(7)
            ),
            ("Pod shop/p".to_string(), "b.yaml".to_string(), Some(1)),
        ]
    );
}
