//! The counts and lengths of docs/limits.md that come from the Kubernetes
//! APIs (rules, peers, ports and networks per admin policy; name and label
//! lengths) and the nesting of Lists, each at the limit (accepted) and just
//! past it (a clear error).

use palisade_k8s::decode;

/// The error messages of decoding `text`, warnings left out.
fn errors(text: &str) -> Vec<String> {
    let (_, diags) = decode("c.yaml", text.as_bytes());
    diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

/// An AdminNetworkPolicy (or, with `cnp`, a ClusterNetworkPolicy) with
/// `rules` egress rules, the first with `peers` peers, `ports` ports and a
/// networks peer of `nets` CIDRs.
fn admin(cnp: bool, rules: usize, peers: usize, ports: usize, nets: usize) -> String {
    let (api, kind, allow, ports_key, tier) = if cnp {
        (
            "policy.networking.k8s.io/v1alpha2",
            "ClusterNetworkPolicy",
            "Accept",
            "protocols",
            "  tier: Admin\n",
        )
    } else {
        (
            "policy.networking.k8s.io/v1alpha1",
            "AdminNetworkPolicy",
            "Allow",
            "ports",
            "",
        )
    };
    let port = |i: usize| {
        if cnp {
            format!("{{tcp: {{destinationPort: {{number: {}}}}}}}", i + 1)
        } else {
            format!("{{portNumber: {{protocol: TCP, port: {}}}}}", i + 1)
        }
    };
    let mut to: Vec<String> = (1..peers).map(|_| "{namespaces: {}}".to_string()).collect();
    let networks: Vec<String> = (0..nets).map(|i| format!("10.{i}.0.0/16")).collect();
    to.push(format!("{{networks: [{}]}}", networks.join(", ")));
    let ports: Vec<String> = (0..ports).map(port).collect();
    let mut text = format!(
        "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: a}}\nspec:\n{tier}  priority: 1\n  subject: {{namespaces: {{}}}}\n  egress:\n  - action: {allow}\n    to: [{}]\n    {ports_key}: [{}]\n",
        to.join(", "),
        ports.join(", ")
    );
    for _ in 1..rules {
        text.push_str(&format!(
            "  - action: {allow}\n    to: [{{namespaces: {{}}}}]\n"
        ));
    }
    text
}

#[test]
fn admin_policy_counts_are_the_apis() {
    for (cnp, max, obj) in [
        (false, 100, "AdminNetworkPolicy a"),
        (true, 25, "ClusterNetworkPolicy a"),
    ] {
        let (ports_key, nets) = if cnp {
            ("protocols", 25)
        } else {
            ("ports", 25)
        };
        assert_eq!(
            errors(&admin(cnp, max, max, max, nets)),
            Vec::<String>::new(),
            "{obj}"
        );
        let past = max + 1;
        assert_eq!(
            errors(&admin(cnp, past, 1, 1, 1)),
            [format!(
                "c.yaml:1: {obj}: spec.egress: {past} rules; at most {max} are allowed"
            )]
        );
        assert_eq!(
            errors(&admin(cnp, 1, past, 1, 1)),
            [format!(
                "c.yaml:1: {obj}: spec.egress[0].to: {past} peers; at most {max} are allowed"
            )]
        );
        assert_eq!(
            errors(&admin(cnp, 1, 1, past, 1)),
            [format!("c.yaml:1: {obj}: spec.egress[0].{ports_key}: {past} entries; at most {max} are allowed")]
        );
        assert_eq!(
            errors(&admin(cnp, 1, 1, 1, nets + 1)),
            [format!(
                "c.yaml:1: {obj}: spec.egress[0].to[0].networks: 26 CIDRs; at most 25 are allowed"
            )]
        );
    }
}

#[test]
fn admin_rule_names_are_at_most_100_characters() {
    let named = |n: usize| {
        admin(false, 1, 1, 1, 1).replace(
            "  - action: Allow\n",
            &format!("  - name: {}\n    action: Allow\n", "r".repeat(n)),
        )
    };
    assert_eq!(errors(&named(100)), Vec::<String>::new());
    assert_eq!(
        errors(&named(101)),
        ["c.yaml:1: AdminNetworkPolicy a: spec.egress[0].name: rule name is 101 characters; at most 100 are allowed"]
    );
}

#[test]
fn names_and_labels_have_the_apis_lengths() {
    let pod = |name: &str, ns: &str, key: &str, value: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{key}: {value}}}\n")
    };
    let (n253, n63) = ("n".repeat(253), "n".repeat(63));
    assert_eq!(errors(&pod(&n253, &n63, &n63, &n63)), Vec::<String>::new());
    let prefixed = format!("{}/{n63}", "p".repeat(253));
    assert_eq!(
        errors(&pod("p", "ns", &prefixed, "v")),
        Vec::<String>::new()
    );

    let n254 = "n".repeat(254);
    let n64 = "n".repeat(64);
    assert_eq!(
        errors(&pod(&n254, "ns", "a", "v")),
        [format!("c.yaml:1: Pod ns/{}… (254 bytes): metadata.name: invalid name \"{}…\" (254 bytes): must be no more than 253 characters (is 254)", "n".repeat(64), "n".repeat(64))]
    );
    assert_eq!(
        errors(&pod("p", &n64, "a", "v")),
        [format!("c.yaml:1: Pod {n64}/p: metadata.namespace: invalid namespace {n64:?}: must be no more than 63 characters (is 64)")]
    );
    assert_eq!(
        errors(&pod("p", "ns", &n64, "v")),
        [format!("c.yaml:1: Pod ns/p: metadata.labels: invalid label key {n64:?}: name part must be no more than 63 characters (is 64)")]
    );
    assert_eq!(
        errors(&pod("p", "ns", "a", &n64)),
        [format!("c.yaml:1: Pod ns/p: metadata.labels.a: invalid label value {n64:?}: must be no more than 63 characters (is 64)")]
    );
}

#[test]
fn lists_nest_at_most_8_deep() {
    let nested = |depth: usize| {
        let mut doc = "{apiVersion: v1, kind: Namespace, metadata: {name: n}}".to_string();
        for _ in 0..depth {
            doc = format!("{{apiVersion: v1, kind: List, items: [{doc}]}}");
        }
        doc
    };
    assert_eq!(errors(&nested(8)), Vec::<String>::new());
    let past = errors(&nested(9));
    assert_eq!(past, ["c.yaml:1: items: lists nested too deeply"]);
}
