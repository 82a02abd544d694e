//! User-supplied text never reaches the terminal raw: names, file names
//! and flow-file lines with newlines, escape sequences or bidirectional
//! overrides are printed escaped, so no input can forge a line of output
//! (a name ending "\nvalid: ...") or restyle the terminal.

use std::path::Path;
use std::process::{Command, Output};

fn palisade_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run palisade")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

#[test]
fn a_name_cannot_forge_a_line_of_validate_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: \"p\\nvalid: 3 pods \\e[32m\\u202e\", namespace: shop}\n",
    )
    .unwrap();
    let o = palisade_in(dir.path(), &["validate", "-f", "pod.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(o.stdout, b"");
    assert_eq!(
        stderr(&o),
        "pod.yaml:1: Pod shop/p\\nvalid: 3 pods \\u{1b}[32m\\u{202e}: metadata.name: invalid name \"p\\nvalid: 3 pods \\u{1b}[32m\\u{202e}\": must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character\n1 error(s)\n"
    );
}

#[test]
fn a_file_name_is_escaped_in_diagnostics_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let name = "ns\nvalid: 9 namespaces\u{1b}[2J.yaml";
    std::fs::write(
        dir.path().join(name),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {a: \"b c\"}\n",
    )
    .unwrap();
    let o = palisade_in(dir.path(), &["validate", "-f", name]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "ns\\nvalid: 9 namespaces\\u{1b}[2J.yaml:1: Namespace shop: metadata.labels.a: invalid label value \"b c\": must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character\n1 error(s)\n"
    );
    let missing = "gone\r\nvalid: 1 namespaces\u{7}.yaml";
    let o = palisade_in(dir.path(), &["validate", "-f", missing]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: gone\\r\\nvalid: 1 namespaces\\u{7}.yaml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_flow_file_line_is_escaped_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ns.yaml"), NAMESPACE).unwrap();
    let long = "x".repeat(1000);
    std::fs::write(
        dir.path().join("flows"),
        format!("a\u{1b}[31m b\n{long} y z w\n"),
    )
    .unwrap();
    let o = palisade_in(dir.path(), &["check", "-f", "ns.yaml", "--flows", "flows"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "flows:1: expected `SRC DST PORT/PROTO`, got \"a\\u{{1b}}[31m b\"\n\
             flows:2: expected `SRC DST PORT/PROTO`, got \"{}…\" (1006 bytes)\n\
             flows: 2 line(s) not answered\n",
            "x".repeat(64)
        )
    );
}

#[test]
fn a_flow_file_line_may_be_64_kib_long() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pods.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\nstatus: {podIP: 10.0.0.1}\n",
    )
    .unwrap();
    // Padded with a comment to the limit (the newline not counted), then
    // one byte past it.
    let flow = "shop/a 10.0.0.9 80/TCP #";
    let at = format!("{flow}{}", "x".repeat(65536 - flow.len()));
    assert_eq!(at.len(), 65536);
    std::fs::write(dir.path().join("flows"), format!("{at}\n{at}x\n{flow}\n")).unwrap();
    let o = palisade_in(
        dir.path(),
        &["check", "-f", "pods.yaml", "--flows", "flows"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "shop/a 10.0.0.9 80/TCP allowed: egress allowed: shop/a is not isolated for egress; ingress not restricted: 10.0.0.9 is not a pod\n".repeat(2)
    );
    assert_eq!(
        stderr(&o),
        "flows:2: line longer than 65536 bytes; skipped\nflows: 1 line(s) not answered\n"
    );
}
