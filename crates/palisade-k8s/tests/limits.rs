//! Every limit of docs/limits.md that this crate applies, at the limit
//! (accepted) and just past it (a clear error), with hostile input built in
//! memory. The file and object size limits are tested in `decode.rs`.

use palisade_k8s::limits::{build_budget, quoted, MAX_DEPTH, MAX_FLOW_DEPTH, MAX_QUOTED_CHARS};
use palisade_k8s::{decode, Diagnostic};

fn messages(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().map(|d| d.to_string()).collect()
}

/// Decodes `text` and returns its error messages (warnings left out: a
/// document that is no Kubernetes object is a warning, and is accepted).
fn errors(file: &str, text: &str) -> Vec<String> {
    let (_, diags) = decode(file, text.as_bytes());
    let errors: Vec<Diagnostic> = diags.into_iter().filter(|d| d.is_error()).collect();
    messages(&errors)
}

#[test]
fn values_nest_at_most_max_depth_deep() {
    assert_eq!(MAX_DEPTH, 100);
    // JSON: no bracket count before parsing, so the value builder decides.
    // The root mapping and n - 1 lists.
    let json = |n: usize| format!("{{\"a\": {}{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
    assert_eq!(errors("d.json", &json(MAX_DEPTH)), Vec::<String>::new());
    let past = errors("d.json", &json(MAX_DEPTH + 1));
    let path = format!("a{}", "[0]".repeat(MAX_DEPTH - 1));
    assert_eq!(
        past,
        [format!(
            "d.json:1: {path}: mappings and lists nested more than 100 deep"
        )]
    );
    // YAML block mappings, which no bracket counts.
    let yaml = |n: usize| -> String {
        (0..n)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .chain([format!("{}v", " ".repeat(n))])
            .collect()
    };
    assert_eq!(errors("d.yaml", &yaml(MAX_DEPTH)), Vec::<String>::new());
    let past = errors("d.yaml", &yaml(MAX_DEPTH + 1));
    assert_eq!(past.len(), 1);
    assert!(
        past[0].ends_with(": mappings and lists nested more than 100 deep"),
        "{past:?}"
    );
    assert!(past[0].starts_with("d.yaml:"), "{past:?}");
}

#[test]
fn flow_collections_nest_at_most_max_flow_depth_deep_before_parsing() {
    assert_eq!(MAX_FLOW_DEPTH, 100);
    // A flow mapping and n - 1 lists inside it: n brackets.
    let flow = |n: usize| {
        format!(
            "# flow\n{{a: {}{}}}\n",
            "[".repeat(n - 1),
            "]".repeat(n - 1)
        )
    };
    assert_eq!(
        errors("f.yaml", &flow(MAX_FLOW_DEPTH)),
        Vec::<String>::new()
    );
    assert_eq!(
        errors("f.yaml", &flow(MAX_FLOW_DEPTH + 1)),
        ["f.yaml:2: [ and { nested more than 100 deep (an opening bracket inside a string or comment counts too)"]
    );
    // The hostile form: `{a: ` 100,000 times is refused without parsing,
    // and so in linear time (parsed, it took minutes: the suite's time
    // limit, not a clock here, would catch that again).
    let hostile = "{a: ".repeat(100_000);
    assert_eq!(
        errors("h.yaml", &hostile),
        ["h.yaml:1: [ and { nested more than 100 deep (an opening bracket inside a string or comment counts too)"]
    );
}

/// A document whose budget is `short` more than the values it builds: a
/// scalar of `len` bytes, aliased `k` times, the text padded with a comment.
fn aliased(len: usize, k: usize, short: u64) -> String {
    let body = format!(
        "a: &x {}\nb: [{}]\n",
        "s".repeat(len),
        vec!["*x"; k].join(", ")
    );
    // Values built: the root mapping, keys `a` and `b` (1 + 1 byte each),
    // the list, and the scalar k + 1 times.
    let built = 1 + 2 + 2 + 1 + (k as u64 + 1) * (1 + len as u64);
    // Each byte of padding adds two to the budget.
    let bytes = (built + short - build_budget(0)) / 2;
    let pad = bytes as usize - body.len() - 2;
    let text = format!("{body}#{}\n", "p".repeat(pad));
    assert_eq!(build_budget(text.len()), built + short);
    text
}

#[test]
fn aliases_build_at_most_the_budget() {
    let (len, k) = (1001, 199);
    let at = aliased(len, k, 0);
    assert_eq!(errors("a.yaml", &at), Vec::<String>::new());
    // One byte of padding less: two values short.
    let past = at.replacen("#p", "#", 1);
    assert_eq!(build_budget(past.len()) + 2, build_budget(at.len()));
    assert_eq!(
        errors("a.yaml", &past),
        ["a.yaml:1: b[198]: the document builds more values than its size allows (twice its size plus 64 KiB, each value counting 1 plus the bytes of its text): its YAML aliases expand it too far"]
    );
}

#[test]
fn an_alias_bomb_is_refused_in_bounded_memory() {
    // A 600 KiB scalar aliased 120,000 times: 70 GB if expanded. Refused
    // once its budget (about 3.5 MB) is spent.
    let text = format!(
        "a: &a {}\nb: [{}]\n",
        "x".repeat(600 << 10),
        vec!["*a"; 120_000].join(",")
    );
    let errs = errors("bomb.yaml", &text);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("its YAML aliases expand it too far"),
        "{errs:?}"
    );
    // Nested lists of aliases ("billion laughs").
    let mut laughs = vec![
        "l0: &l0 \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"".to_string(),
    ];
    for i in 1..10 {
        laughs.push(format!(
            "l{i}: &l{i} [{}]",
            vec![format!("*l{}", i - 1); 10].join(",")
        ));
    }
    let errs = errors("laughs.yaml", &laughs.join("\n"));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("its YAML aliases expand it too far"),
        "{errs:?}"
    );
}

#[test]
fn many_broken_documents_take_linear_time() {
    // Each document's message used to come from parsing it again at its
    // place in the file: quadratic in the number of documents (the suite's
    // time limit, not a clock here, would catch that again).
    let text = "---\nkind: [\n".repeat(20_000);
    let (_, diags) = decode("b.yaml", text.as_bytes());
    assert_eq!(diags.len(), 20_000);
    // Positions are still the file's.
    assert_eq!(
        diags[19_999].to_string(),
        "b.yaml:40001: YAML syntax error: did not find expected node content at line 40001 column 1, while parsing a flow node"
    );
}

#[test]
fn tags_outside_the_core_schema_are_errors() {
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
    assert_eq!(
        errors("t.yaml", &ns("!!binary bnM=")),
        ["t.yaml:4: the YAML tag \"!!binary\" is not supported (Kubernetes manifests use no tags)"]
    );
    assert_eq!(
        errors("t.yaml", &ns("!secret ns")),
        ["t.yaml:4: Namespace ns: metadata.name: the YAML tag \"!secret\" is not supported"]
    );
    assert_eq!(errors("t.yaml", &ns("!!str ns")), Vec::<String>::new());
}

#[test]
fn quoted_input_is_cut_at_max_quoted_chars() {
    assert_eq!(MAX_QUOTED_CHARS, 64);
    let at = "v".repeat(MAX_QUOTED_CHARS);
    assert_eq!(quoted(&at), format!("\"{at}\""));
    let past = "v".repeat(MAX_QUOTED_CHARS + 1);
    assert_eq!(quoted(&past), format!("\"{at}…\" (65 bytes)"));
    assert_eq!(quoted("a\nb\u{1b}"), "\"a\\nb\\u{1b}\"");

    // A 10 MiB label value in a List (which may be larger than one object).
    let value = "v".repeat(10 << 20);
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: ns\n    labels:\n      a: {value}\n"
    );
    assert_eq!(
        errors("l.yaml", &list),
        [format!("l.yaml:1: Namespace ns: metadata.labels.a: invalid label value \"{at}…\" (10485760 bytes): must be no more than 63 characters (is 10485760)")]
    );
}

#[test]
fn a_long_unknown_field_is_cut_in_its_path_and_message() {
    let key = "k".repeat(1 << 20);
    // JSON: a YAML plain key may not be this long.
    let text = format!(
        r#"{{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {{"name": "p"}}, "spec": {{"podSelector": {{}}, "{key}": 1}}}}"#
    );
    let cut = format!("{}… (1048576 bytes)", "k".repeat(MAX_QUOTED_CHARS));
    let quoted_key = format!("\"{}…\" (1048576 bytes)", "k".repeat(MAX_QUOTED_CHARS));
    assert_eq!(
        errors("k.json", &text),
        [format!("k.json:1: NetworkPolicy default/p: spec.{cut}: unknown field {quoted_key} (expected one of: podSelector, ingress, egress, policyTypes)")]
    );
}

#[test]
fn addresses_that_read_two_ways_are_errors() {
    let text = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: addrs, namespace: default}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: "::ffff:10.0.0.1/128"}
    - ipBlock: {cidr: 010.0.0.0/8}
    - ipBlock: {cidr: 10.0.0.0/08}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.01.0.0/16]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
status: {podIPs: [{ip: 010.0.0.1}, {ip: "::ffff:10.0.0.2"}]}
---
apiVersion: v1
kind: Node
metadata: {name: n}
status:
  addresses:
  - {type: Hostname, address: node-1}
  - {type: InternalIP, address: 10.0.0.010}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: a}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress:
  - action: Deny
    to:
    - networks: ["::ffff:0.0.0.0/96"]
"#;
    let zeros =
        "must not have leading 0s (an octet like 010 is 10 to some software and 8 to other)";
    assert_eq!(
        errors("addrs.yaml", text),
        [
            "addrs.yaml:1: NetworkPolicy default/addrs: spec.ingress[0].from[0].ipBlock.cidr: \"::ffff:10.0.0.1/128\" is not a valid CIDR: must not be an IPv4-mapped IPv6 address (write 10.0.0.1/32)".to_string(),
            format!("addrs.yaml:1: NetworkPolicy default/addrs: spec.ingress[0].from[1].ipBlock.cidr: \"010.0.0.0/8\" is not a valid CIDR: {zeros}"),
            format!("addrs.yaml:1: NetworkPolicy default/addrs: spec.ingress[0].from[2].ipBlock.cidr: \"10.0.0.0/08\" is not a valid CIDR: {zeros}"),
            format!("addrs.yaml:1: NetworkPolicy default/addrs: spec.ingress[0].from[3].ipBlock.except[0]: \"10.01.0.0/16\" is not a valid CIDR: {zeros}"),
            format!("addrs.yaml:13: Pod default/p: status.podIPs[0].ip: \"010.0.0.1\" is not a valid IP address: {zeros}"),
            "addrs.yaml:13: Pod default/p: status.podIPs[1].ip: \"::ffff:10.0.0.2\" is not a valid IP address: must not be an IPv4-mapped IPv6 address (write 10.0.0.2)".to_string(),
            format!("addrs.yaml:18: Node n: status.addresses[1].address: \"10.0.0.010\" is not a valid IP address: {zeros}"),
            "addrs.yaml:26: AdminNetworkPolicy a: spec.egress[0].to[0].networks[0]: \"::ffff:0.0.0.0/96\" is not a valid CIDR: must not be an IPv4-mapped IPv6 address (write 0.0.0.0/0)".to_string(),
        ]
    );
}
