//! The page's escaping, read back by an HTML parser as a browser would,
//! and the namespace view of clusters too large to draw pod by pod.

use palisade_engine::{Engine, PortProto};
use palisade_model::{
    Cluster, ContainerPort, Labels, Namespace, Pod, PodPhase, PodSource, Protocol,
};
use scraper::{Html, Selector};

use super::model::ENDPOINT_LIMIT;
use super::{render, Report, ReportFinding};

const HOSTILE_NS: &str = "ns\"'&<b>bold</b><!--";
const HOSTILE: [&str; 3] = [
    "<script>alert(1)</script>",
    "</script>",
    "</SCRIPT ><img src=x onerror=alert(3)>",
];

fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> Pod {
    Pod {
        namespace: namespace.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![ip.parse().expect("test address")],
        node: None,
        host_network: false,
        source: PodSource::Live {
            phase: PodPhase::Running,
            owner: None,
        },
        ports: vec![ContainerPort {
            name: None,
            port: 80,
            protocol: Protocol::Tcp,
        }],
    }
}

/// Names and labels that the decoder would refuse, built directly: the
/// page must be safe whatever reaches it.
fn hostile_report() -> Report {
    let mut cluster = Cluster::default();
    cluster.namespaces.insert(
        HOSTILE_NS.into(),
        Namespace {
            name: HOSTILE_NS.into(),
            labels: Labels::new(),
        },
    );
    cluster.pods = vec![
        pod(HOSTILE_NS, "a", &[("app", HOSTILE[0])], "10.0.0.1"),
        pod(HOSTILE_NS, HOSTILE[1], &[("app", HOSTILE[1])], "10.0.0.2"),
        pod(HOSTILE_NS, "c", &[(HOSTILE[2], "v")], "10.0.0.3"),
    ];
    let engine = Engine::new(cluster);
    let finding = ReportFinding {
        id: "load".into(),
        severity: "warning".into(),
        location: format!("{}:3", HOSTILE[1]),
        object: HOSTILE[0].into(),
        field: HOSTILE[2].into(),
        message: format!("skipped: kind {} is not used", HOSTILE[1]),
        fix: HOSTILE[0].into(),
    };
    let ports = [PortProto {
        port: 80,
        protocol: Protocol::Tcp,
    }];
    Report::build(
        &engine,
        &ports,
        vec![format!("{}.yaml", HOSTILE[1])],
        vec![finding],
    )
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("valid selector")
}

#[test]
fn user_strings_stay_text_and_the_data_round_trips() {
    let report = hostile_report();
    let page = render(&report).expect("render");
    let doc = Html::parse_document(&page);

    // Only the page's own two scripts, the second exactly the drawing code.
    let scripts: Vec<_> = doc.select(&sel("script")).collect();
    assert_eq!(scripts.len(), 2);
    assert_eq!(scripts[0].value().attr("type"), Some("application/json"));
    assert_eq!(
        scripts[1].text().collect::<String>(),
        include_str!("assets/report.js")
    );
    assert_eq!(doc.select(&sel("img, b")).count(), 0, "user markup parsed");
    assert_eq!(page.to_ascii_lowercase().matches("</script").count(), 2);

    // The embedded JSON parses back to exactly the report.
    let json: serde_json::Value =
        serde_json::from_str(&scripts[0].text().collect::<String>()).expect("embedded JSON");
    assert_eq!(json, serde_json::to_value(&report).expect("report as JSON"));
    assert!(
        !scripts[0].inner_html().contains('<'),
        "unescaped < in the data"
    );

    // Server-rendered sections show the strings as they are.
    let text = |s: &str| -> String {
        let e = doc.select(&sel(s)).next().unwrap_or_else(|| panic!("{s}"));
        e.text().collect()
    };
    assert_eq!(text("#coverage tbody th"), HOSTILE_NS);
    assert_eq!(text("#findings .object"), HOSTILE[0]);
    assert_eq!(text("#findings .field"), HOSTILE[2]);
    assert_eq!(text("#findings .location"), format!("{}:3", HOSTILE[1]));
    assert_eq!(text("#findings .fix"), format!("Fix: {}", HOSTILE[0]));
    assert_eq!(text(".sources"), format!("From {}.yaml.", HOSTILE[1]));
}

#[test]
fn the_drawing_code_never_parses_data_as_html() {
    let js = include_str!("assets/report.js");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
        "</script",
        "://",
    ] {
        assert!(!js.contains(sink), "report.js uses {sink}");
    }
}

/// `n` pods in namespace `ns`, as manifests.
fn pods_yaml(ns: &str, n: usize, octet: u8) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {ns}, labels: {{app: a{i}}}}}\n\
                 spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n\
                 status: {{phase: Running, podIP: 10.{octet}.{}.{}}}\n",
                i / 200,
                i % 200 + 1
            )
        })
        .collect()
}

#[test]
fn more_endpoints_than_the_limit_are_shown_by_namespace() {
    let (na, nb) = (ENDPOINT_LIMIT / 2 + 1, ENDPOINT_LIMIT / 2);
    let deny_b = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                  metadata: {name: deny-in, namespace: b}\nspec: {podSelector: {}}\n";
    let text = format!("{}{}{deny_b}", pods_yaml("a", na, 1), pods_yaml("b", nb, 2));
    let loaded = palisade_k8s::load(&[("big.yaml".to_string(), text.into_bytes())]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let engine = Engine::new(loaded.cluster);
    let r = Report::build(&engine, &engine.default_ports(), vec![], vec![]);

    assert_eq!(r.level, "namespace");
    assert_eq!(r.summary.endpoints, na + nb);
    let nodes: Vec<(&str, &str)> = r
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.isolation))
        .collect();
    assert_eq!(nodes, [("a", "none"), ("b", "ingress")]);
    let cells: Vec<(&str, String)> = r.cells[0]
        .iter()
        .flatten()
        .map(|c| (c.0, r.reasons[c.1[0] as usize].clone()))
        .collect();
    let (na, nb) = (na as u64, nb as u64);
    assert_eq!(
        cells,
        [
            ("A", format!("{0} of {0} pod pairs allowed", na * na)),
            ("D", format!("0 of {} pod pairs allowed", na * nb)),
            ("A", format!("{0} of {0} pod pairs allowed", nb * na)),
            ("D", format!("0 of {} pod pairs allowed", nb * nb)),
        ]
    );
    let edges: Vec<(&str, &str, Vec<String>)> = r
        .edges
        .iter()
        .map(|e| (e.src.as_str(), e.dst.as_str(), e.ports.clone()))
        .collect();
    assert_eq!(edges, [("b", "a", vec!["80/TCP".to_string()])]);
    let page = render(&r).expect("render");
    assert!(page.contains(&format!(
        "More than {ENDPOINT_LIMIT} endpoints: the graph and the matrix show one node per namespace"
    )));
}
