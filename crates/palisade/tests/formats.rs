//! The output formats as documented: every `console` example in
//! docs/formats.md is run and its output compared whole, and every JSON
//! output is validated against its schema under docs/schemas/, so the
//! documentation cannot drift from the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run palisade")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = root().join("docs/schemas").join(name);
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::validator_for(&s).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every error of `doc` against `schema`, one a line ("" when valid).
fn violations(v: &jsonschema::Validator, doc: &Value) -> String {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}\n", e.instance_path))
        .collect()
}

const WEBAPP: [&str; 4] = [
    "-f",
    "examples/webapp/cluster.yaml",
    "-f",
    "examples/webapp/policies-refined",
];

/// The schema a command's `-o json` output follows.
fn schema_of(args: &[&str]) -> Option<&'static str> {
    if !args.windows(2).any(|w| w == ["-o", "json"]) {
        return None;
    }
    match args.first() {
        Some(&"check") => Some("check.json"),
        Some(&"matrix") => Some("matrix.json"),
        Some(&"compile") => Some("compile.json"),
        _ => None,
    }
}

/// The ```console blocks of the page: `$ palisade ARGS` then the output.
fn examples(page: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut lines = page.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "```console" {
            continue;
        }
        let cmd = lines.next().expect("a command after ```console");
        let args = cmd
            .strip_prefix("$ palisade ")
            .unwrap_or_else(|| panic!("not a palisade command: {cmd}"));
        let mut expected = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
        }
        out.push((
            args.split_whitespace().map(String::from).collect(),
            expected,
        ));
    }
    out
}

#[test]
fn documented_examples_print_what_the_page_shows() {
    let page = std::fs::read_to_string(root().join("docs/formats.md")).unwrap();
    let examples = examples(&page);
    assert!(examples.len() >= 8, "the page shows every format");
    let mut failures = String::new();
    for (args, expected) in &examples {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = palisade(&args);
        let got = text(&o.stdout);
        if got != *expected {
            failures.push_str(&format!(
                "$ palisade {}\n--- page\n{expected}--- binary (stderr: {})\n{got}\n",
                args.join(" "),
                text(&o.stderr)
            ));
        }
        if let Some(name) = schema_of(&args) {
            let v = schema(name);
            for line in got.lines() {
                let doc: Value = serde_json::from_str(line).unwrap();
                failures.push_str(&violations(&v, &doc));
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn json_outputs_follow_their_schemas() {
    let flows = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        flows.path(),
        "ingress-nginx/controller default/frontend 80/TCP\n\
         default/frontend default/database 5432/TCP\n\
         fd00:50:1::10 default/frontend 80/udp\n\
         10.0.0.1 203.0.113.9 53/SCTP\n",
    )
    .unwrap();
    let flows = flows.path().to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["check", "-o", "json", "--flows", flows],
        vec![
            "check",
            "-o",
            "json",
            "default/frontend",
            "default/backend",
            "8080/TCP",
        ],
        vec!["matrix", "-o", "json"],
        vec!["matrix", "-o", "json", "--by", "workload"],
        vec!["matrix", "-o", "json", "--ports", "80/TCP,53/UDP,9/SCTP"],
        vec!["compile", "-o", "json", "--node", "node-1"],
    ];
    let mut failures = String::new();
    for run in runs {
        let (cmd, rest) = run.split_at(1);
        let args: Vec<&str> = [cmd, &WEBAPP[..], rest].concat();
        let o = palisade(&args);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{args:?}: {}",
            text(&o.stderr)
        );
        let name = schema_of(&args).unwrap();
        let v = schema(name);
        let out = text(&o.stdout);
        assert!(!out.is_empty(), "{args:?} printed nothing");
        // check writes JSON Lines; matrix and compile one document each.
        let docs: Vec<Value> = serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"));
        let expected = if name == "check.json" {
            out.lines().count()
        } else {
            1
        };
        assert_eq!(docs.len(), expected, "{args:?}: {out}");
        for doc in &docs {
            let bad = violations(&v, doc);
            if !bad.is_empty() {
                failures.push_str(&format!("{args:?} against {name}:\n{bad}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

/// The schemas are not vacuous: each refuses a document that breaks it.
#[test]
fn schemas_refuse_what_the_formats_never_print() {
    let cases = [
        (
            "check.json",
            r#"{"src":"a/b","dst":"c/d","port":80,"protocol":"TCP","allowed":"yes","reasons":["x"]}"#,
        ),
        (
            "check.json",
            r#"{"src":"a/b","dst":"c/d","port":0,"protocol":"TCP","allowed":true,"reasons":["x"]}"#,
        ),
        (
            "matrix.json",
            r#"{"ports":["80/TCP"],"pods":["a/b"],"workloads":["w"],"matrix":{"80/TCP":[[true]]}}"#,
        ),
        (
            "matrix.json",
            r#"{"ports":["80/TCP"],"pods":["a/b"],"matrix":{"80":[[true]]}}"#,
        ),
        (
            "probe.json",
            r#"{"src":"a/b","dst":"c/d","src_ip":"10.0.0.1","dst_ip":"10.0.0.2","port":80,"protocol":"TCP","predicted":"allowed","observed":true,"agree":false}"#,
        ),
        (
            "compile.json",
            r#"{"nftables":[{"table":{"family":"ip","name":"palisade"}}]}"#,
        ),
    ];
    for (name, doc) in cases {
        let doc: Value = serde_json::from_str(doc).unwrap();
        assert!(
            !schema(name).is_valid(&doc),
            "{name} accepts {doc}, which no output looks like"
        );
    }
}

/// A flow file with bad lines: each is named with its line number on
/// stderr, every other line is answered in order, and the exit code is 2.
#[test]
fn a_bad_flow_line_is_named_and_the_others_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.txt");
    std::fs::write(
        &flows,
        "# seed flows\n\
         ingress-nginx/controller default/frontend 80/TCP\n\
         default/frontend default/backend\n\
         default/nobody default/frontend 80/TCP\n\
         default/frontend default/backend 8080/TCP\n\
         default/frontend default/backend 70000/TCP\n\
         default/frontend default/backend 80/ICMP\n\
         \n\
         monitoring/scraper default/frontend 80/TCP  # denied\n",
    )
    .unwrap();
    let f = flows.to_str().unwrap();
    let args: Vec<&str> = [&["check"], &WEBAPP[..], &["--flows", f]].concat();
    let o = palisade(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let answered: Vec<String> = text(&o.stdout)
        .lines()
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        answered,
        [
            "ingress-nginx/controller default/frontend 80/TCP allowed",
            "default/frontend default/backend 8080/TCP allowed",
            "monitoring/scraper default/frontend 80/TCP denied",
        ]
    );
    assert_eq!(
        text(&o.stderr).replace(f, "FLOWS"),
        "FLOWS:3: expected `SRC DST PORT/PROTO`, got \"default/frontend default/backend\"\n\
         FLOWS:4: pod default/nobody not found\n\
         FLOWS:6: invalid port \"70000\" in \"70000/TCP\" (expected 1-65535)\n\
         FLOWS:7: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)\n\
         FLOWS: 4 line(s) not answered\n"
    );

    // Not UTF-8, and a line past the length limit: named, then skipped.
    let mut bytes = b"default/frontend default/backend 8080/TCP\n\xff\xfe 80\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 70_000));
    bytes.extend(b"\ndefault/frontend default/backend 8080/TCP\n");
    std::fs::write(&flows, bytes).unwrap();
    let o = palisade(&args);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout).lines().count(), 2, "{}", text(&o.stdout));
    assert_eq!(
        text(&o.stderr).replace(f, "FLOWS"),
        "FLOWS:2: not UTF-8 text\n\
         FLOWS:3: line longer than 65536 bytes; skipped\n\
         FLOWS: 2 line(s) not answered\n"
    );
}

/// A pipe gets no progress bar, however long the work: stderr holds the
/// answers' diagnostics only.
#[test]
fn nothing_but_output_on_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows.txt");
    let line = "ingress-nginx/controller default/frontend 80/TCP\n";
    std::fs::write(&flows, line.repeat(20_000)).unwrap();
    let f = flows.to_str().unwrap();
    let o = palisade(&[&["check"], &WEBAPP[..], &["--flows", f]].concat());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout).lines().count(), 20_000);
    assert_eq!(text(&o.stderr), "");
}
