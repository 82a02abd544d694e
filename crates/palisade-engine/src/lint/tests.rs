//! The definitions of shadowing and of an ineffective Pass rule on the
//! cases that are easy to get wrong: named ports (resolved per subject or
//! per peer), `except` blocks, rules of several policies, admin precedence.

use palisade_model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject, AdminTier, Cluster,
    ContainerPort, IpBlock, LabelSelector, NamespaceScope, NetworkPolicy, Peer, Pod, PodPhase,
    PodSource, PortSpec, Protocol, Rule,
};

use super::{lint, PASS_RULE_NO_EFFECT, RULE_SHADOWED};
use crate::Engine;

fn pod(ns: &str, name: &str, app: &str, ip: &str, ports: &[(&str, u16)]) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ips: vec![ip.parse().unwrap()],
        node: None,
        host_network: false,
        source: PodSource::Live {
            phase: PodPhase::Running,
            owner: None,
        },
        ports: ports
            .iter()
            .map(|&(n, port)| ContainerPort {
                name: Some(n.into()),
                port,
                protocol: Protocol::Tcp,
            })
            .collect(),
    }
}

fn app(a: &str) -> LabelSelector {
    LabelSelector::from_labels([("app", a)])
}

fn pods_peer(a: &str) -> Peer {
    Peer::Pods {
        namespaces: NamespaceScope::Own("shop".into()),
        pods: app(a),
    }
}

fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::IpBlock(IpBlock {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    })
}

fn tcp(p: u16) -> PortSpec {
    PortSpec::Range {
        protocol: Protocol::Tcp,
        start: p,
        end: p,
    }
}

fn range(start: u16, end: u16) -> PortSpec {
    PortSpec::Range {
        protocol: Protocol::Tcp,
        start,
        end,
    }
}

fn named(n: &str) -> PortSpec {
    PortSpec::Named {
        protocol: Protocol::Tcp,
        name: n.into(),
    }
}

fn rule(peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule {
        peers: Some(peers),
        ports: Some(ports),
    }
}

fn np(
    name: &str,
    sel: LabelSelector,
    ingress: Vec<Rule>,
    egress: Option<Vec<Rule>>,
) -> NetworkPolicy {
    NetworkPolicy {
        namespace: "shop".into(),
        name: name.into(),
        pod_selector: sel,
        ingress: Some(ingress),
        egress,
        staged: false,
    }
}

fn cluster(pods: Vec<Pod>, policies: Vec<NetworkPolicy>, admin: Vec<AdminPolicy>) -> Cluster {
    let mut c = Cluster {
        pods,
        policies,
        admin_policies: admin,
        ..Cluster::default()
    };
    c.complete_namespaces();
    c
}

/// `(policy, field)` of every finding with this id.
fn found(c: Cluster, id: &str) -> Vec<(String, String)> {
    lint(&Engine::new(c))
        .into_iter()
        .filter(|f| f.id == id)
        .map(|f| (f.object.name, f.field))
        .collect()
}

fn web_and_api(web_http: u16) -> Vec<Pod> {
    vec![
        pod("shop", "web", "web", "10.0.0.10", &[("http", web_http)]),
        pod("shop", "api", "api", "10.0.0.11", &[]),
    ]
}

#[test]
fn named_port_rule_is_shadowed_by_a_range_holding_the_port_it_resolves_to() {
    let p = np(
        "web",
        app("web"),
        vec![
            rule(vec![pods_peer("api")], vec![named("http")]),
            rule(vec![pods_peer("api")], vec![range(8000, 8100)]),
        ],
        None,
    );
    let c = cluster(web_and_api(8080), vec![p.clone()], vec![]);
    assert_eq!(
        found(c, RULE_SHADOWED),
        [("web".into(), "spec.ingress[0]".into())]
    );
    // Where `http` is another port the named rule is needed.
    let c = cluster(web_and_api(80), vec![p], vec![]);
    assert_eq!(found(c, RULE_SHADOWED), []);
}

#[test]
fn named_port_needed_by_one_subject_is_not_shadowed() {
    let mut pods = web_and_api(8080);
    pods.push(pod("shop", "web2", "web", "10.0.0.12", &[("http", 9090)]));
    let p = np(
        "web",
        app("web"),
        vec![
            rule(vec![pods_peer("api")], vec![named("http")]),
            rule(vec![pods_peer("api")], vec![tcp(8080)]),
        ],
        None,
    );
    assert_eq!(found(cluster(pods, vec![p], vec![]), RULE_SHADOWED), []);
}

#[test]
fn egress_named_ports_resolve_on_the_peers() {
    let pods = vec![
        pod("shop", "web", "web", "10.0.0.10", &[]),
        pod("shop", "db", "db", "10.0.0.20", &[("pg", 5432)]),
    ];
    let p = np(
        "web",
        app("web"),
        vec![],
        Some(vec![
            rule(vec![pods_peer("db")], vec![named("pg")]),
            rule(vec![pods_peer("db")], vec![tcp(5432)]),
        ]),
    );
    // The two allow exactly the same: only the later is reported.
    assert_eq!(
        found(cluster(pods, vec![p], vec![]), RULE_SHADOWED),
        [("web".into(), "spec.egress[1]".into())]
    );
}

#[test]
fn except_makes_the_narrower_block_the_shadowed_one() {
    let p = np(
        "web",
        app("web"),
        vec![
            rule(vec![block("10.0.0.0/8", &["10.1.0.0/16"])], vec![tcp(443)]),
            rule(vec![block("10.0.0.0/8", &[])], vec![tcp(443)]),
        ],
        None,
    );
    // Rule 1 allows 10.1.0.0/16, which rule 0 excepts: only rule 0 is
    // shadowed.
    assert_eq!(
        found(cluster(web_and_api(80), vec![p], vec![]), RULE_SHADOWED),
        [("web".into(), "spec.ingress[0]".into())]
    );
}

#[test]
fn a_block_holding_a_pod_is_not_shadowed_by_the_pod_selector_alone() {
    // Rule 0 allows the api pod (by address) and every other address in
    // 10.0.0.0/24; rule 1 only the api pod.
    let p = np(
        "web",
        app("web"),
        vec![
            rule(vec![block("10.0.0.0/24", &[])], vec![tcp(80)]),
            rule(vec![pods_peer("api")], vec![tcp(80)]),
        ],
        None,
    );
    assert_eq!(
        found(cluster(web_and_api(80), vec![p], vec![]), RULE_SHADOWED),
        [("web".into(), "spec.ingress[1]".into())]
    );
}

#[test]
fn rules_of_other_policies_shadow_only_where_they_select_too() {
    let mut pods = web_and_api(80);
    pods.push(pod("shop", "admin", "admin", "10.0.0.13", &[]));
    let narrow = np(
        "narrow",
        app("web"),
        vec![rule(vec![pods_peer("api")], vec![tcp(80)])],
        None,
    );
    let broad = np(
        "broad",
        LabelSelector::everything(),
        vec![rule(vec![pods_peer("api")], vec![tcp(80), tcp(443)])],
        None,
    );
    assert_eq!(
        found(
            cluster(pods.clone(), vec![narrow.clone(), broad], vec![]),
            RULE_SHADOWED
        ),
        [("narrow".into(), "spec.ingress[0]".into())]
    );
    // A covering policy that misses one of narrow's subjects shadows nothing.
    let partial = np(
        "partial",
        app("admin"),
        vec![rule(vec![pods_peer("api")], vec![tcp(80)])],
        None,
    );
    let narrow_both = NetworkPolicy {
        pod_selector: LabelSelector::new(vec![palisade_model::Requirement::In {
            key: "app".into(),
            values: vec!["web".into(), "admin".into()],
        }]),
        ..narrow
    };
    let other_web = np(
        "web-only",
        app("web"),
        vec![rule(vec![pods_peer("api")], vec![tcp(80)])],
        None,
    );
    let c = cluster(pods, vec![narrow_both, partial, other_web], vec![]);
    // For web, narrow and web-only allow the same; for admin, narrow and
    // partial: narrow comes first, so the copies are the ones reported.
    let mut got = found(c, RULE_SHADOWED);
    got.sort();
    assert_eq!(
        got,
        [
            ("partial".into(), "spec.ingress[0]".into()),
            ("web-only".into(), "spec.ingress[0]".into()),
        ]
    );
}

fn anp(name: &str, priority: u32, rules: Vec<AdminRule>) -> AdminPolicy {
    AdminPolicy {
        kind: "AdminNetworkPolicy".into(),
        name: name.into(),
        tier: AdminTier::Admin,
        priority,
        subject: AdminSubject::Namespaces(LabelSelector::everything()),
        ingress: rules,
        egress: vec![],
        staged: false,
    }
}

fn admin_rule(name: &str, action: AdminAction, ports: Option<Vec<AdminPort>>) -> AdminRule {
    AdminRule {
        name: name.into(),
        action,
        peers: vec![AdminPeer::Namespaces(LabelSelector::everything())],
        ports,
    }
}

fn number(p: u16) -> AdminPort {
    AdminPort::Number {
        protocol: Protocol::Tcp,
        port: p,
    }
}

fn pass_findings(admin: Vec<AdminPolicy>) -> Vec<(String, String)> {
    found(
        cluster(web_and_api(8080), vec![], admin),
        PASS_RULE_NO_EFFECT,
    )
}

#[test]
fn pass_with_a_later_overlapping_rule_changes_verdicts() {
    let a = anp(
        "a",
        10,
        vec![admin_rule("p", AdminAction::Pass, Some(vec![number(80)]))],
    );
    let b = anp("b", 20, vec![admin_rule("d", AdminAction::Deny, None)]);
    assert_eq!(pass_findings(vec![a, b]), []);
}

#[test]
fn pass_with_nothing_after_it_changes_nothing() {
    let a = anp(
        "a",
        10,
        vec![admin_rule("p", AdminAction::Pass, Some(vec![number(80)]))],
    );
    assert_eq!(
        pass_findings(vec![a]),
        [("a".into(), "spec.ingress[0]".into())]
    );
}

#[test]
fn pass_hidden_by_an_earlier_rule_changes_nothing() {
    let first = anp("first", 5, vec![admin_rule("d", AdminAction::Deny, None)]);
    let a = anp(
        "a",
        10,
        vec![admin_rule("p", AdminAction::Pass, Some(vec![number(80)]))],
    );
    let b = anp("b", 20, vec![admin_rule("allow", AdminAction::Allow, None)]);
    assert_eq!(
        pass_findings(vec![first, a, b]),
        [("a".into(), "spec.ingress[0]".into())]
    );
}

#[test]
fn pass_before_a_rule_on_other_ports_or_another_pass_changes_nothing() {
    let a = anp(
        "a",
        10,
        vec![
            admin_rule("p", AdminAction::Pass, Some(vec![number(80)])),
            admin_rule("p2", AdminAction::Pass, None),
        ],
    );
    let b = anp(
        "b",
        20,
        vec![admin_rule("d", AdminAction::Deny, Some(vec![number(443)]))],
    );
    // p: what it passes (80) is passed by p2 anyway; p2 passes 443, which
    // b would deny, so p2 matters.
    assert_eq!(
        pass_findings(vec![a, b]),
        [("a".into(), "spec.ingress[0]".into())]
    );
}

#[test]
fn pass_meets_a_later_named_port_where_the_subject_defines_it() {
    let a = anp(
        "a",
        10,
        vec![admin_rule("p", AdminAction::Pass, Some(vec![number(8080)]))],
    );
    let b = anp(
        "b",
        20,
        vec![admin_rule(
            "d",
            AdminAction::Deny,
            Some(vec![AdminPort::Named("http".into())]),
        )],
    );
    // web's http is 8080: the Pass matters for web.
    assert_eq!(pass_findings(vec![a.clone(), b.clone()]), []);
    // With http on 80 nowhere, nothing later matches 8080.
    let c = cluster(web_and_api(80), vec![], vec![a, b]);
    assert_eq!(
        found(c, PASS_RULE_NO_EFFECT),
        [("a".into(), "spec.ingress[0]".into())]
    );
}
