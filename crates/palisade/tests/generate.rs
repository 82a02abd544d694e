//! `palisade generate` and `palisade replay` as users and scripts see
//! them. Each case under `tests/generate/<case>/` is a cluster (`cluster/`)
//! and flow files (`flows*`); the manifests written (`expect.yaml`,
//! `expect.json`) and the report on stderr (`expect.stderr`) are compared
//! whole, and the YAML must read back through `palisade validate` with no
//! diagnostic. Each case under `tests/replay/<case>/` is a candidate
//! (`candidate/`) and flow files, with its output in every format.
//! `UPDATE_GOLDEN=1` rewrites the expected files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn palisade(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run palisade")
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn check_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the output (UPDATE_GOLDEN=1 to refresh)\n--- actual ---\n{actual}",
        path.display()
    );
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The case's flow files, by name.
fn flows(case: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(case)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flows"))
        })
        .map(|p| rel(&p))
        .collect();
    v.sort();
    v
}

fn generate_args(case: &Path, format: &str) -> Vec<String> {
    let mut args = vec!["generate".to_string(), "--flows".into()];
    args.extend(flows(case));
    args.extend(["-f".into(), rel(&case.join("cluster"))]);
    args.extend(["-o".into(), format.into()]);
    args
}

#[test]
fn generate_every_case_writes_the_expected_policies_and_check() {
    let all = cases("generate");
    assert!(all.len() >= 2, "{all:?}");
    for case in all {
        let o = palisade(&generate_args(&case, "yaml"));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{}: {err}", case.display());
        let yaml = String::from_utf8(o.stdout).unwrap();
        check_golden(&case.join("expect.yaml"), &yaml);
        check_golden(&case.join("expect.stderr"), &err);

        let o = palisade(&generate_args(&case, "json"));
        assert_eq!(o.status.code(), Some(0));
        let json = String::from_utf8(o.stdout).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kind"], "List");
        check_golden(&case.join("expect.json"), &json);

        // The manifests read back, in both forms, with no diagnostic.
        let dir = tempfile::tempdir().unwrap();
        let as_json = dir.path().join("generated.json");
        std::fs::write(&as_json, &json).unwrap();
        let o = palisade(&[
            "validate".into(),
            "-f".into(),
            as_json.to_string_lossy().into_owned(),
        ]);
        assert_eq!(
            (o.status.code(), String::from_utf8_lossy(&o.stderr).as_ref()),
            (Some(0), ""),
            "{}",
            case.display()
        );
        let out = dir.path().join("generated.yaml");
        let mut args = generate_args(&case, "yaml");
        args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
        let o = palisade(&args);
        assert_eq!(o.status.code(), Some(0));
        assert!(o.stdout.is_empty());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), yaml);
        let o = palisade(&[
            "validate".into(),
            "-f".into(),
            out.to_string_lossy().into_owned(),
        ]);
        assert_eq!(
            (o.status.code(), String::from_utf8_lossy(&o.stderr).as_ref()),
            (Some(0), ""),
            "{}",
            case.display()
        );
    }
}

const FORMATS: [(&str, &str); 4] = [
    ("text", "expect.txt"),
    ("json", "expect.json"),
    ("md", "expect.md"),
    ("csv", "expect.csv"),
];

fn replay_args(case: &Path, format: &str) -> Vec<String> {
    let mut args = vec!["replay".to_string(), "--flows".into()];
    args.extend(flows(case));
    args.extend(["-f".into(), rel(&case.join("candidate"))]);
    args.extend(["-o".into(), format.into()]);
    args
}

#[test]
fn replay_every_case_in_every_format() {
    let all = cases("replay");
    assert!(!all.is_empty());
    for case in all {
        for (format, file) in FORMATS {
            let o = palisade(&replay_args(&case, format));
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert_eq!(
                o.status.code(),
                Some(0),
                "{} {format}: {err}",
                case.display()
            );
            check_golden(&case.join("expect.stderr"), &err);
            check_golden(&case.join(file), &String::from_utf8(o.stdout).unwrap());
        }
        let mut args = replay_args(&case, "text");
        args.push("--exit-code".into());
        assert_eq!(palisade(&args).status.code(), Some(1));
    }
}

fn run(args: &[&str], files: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix('@') {
            Some(name) => dir.path().join(name).to_string_lossy().into_owned(),
            None => a.to_string(),
        })
        .collect();
    let o = palisade(&args);
    // `--out` is never written when the command fails.
    if o.status.code() != Some(0) {
        assert!(!dir.path().join("out.yaml").exists());
    }
    let err = String::from_utf8_lossy(&o.stderr).replace(&*dir.path().to_string_lossy(), "DIR");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        err,
    )
}

const CLUSTER: &str = "crates/palisade/tests/generate/shop/cluster";

#[test]
fn bad_lines_are_named_with_file_line_and_field_and_nothing_is_written() {
    let csv = "src,dst,port,protocol\nshop/cache,shop/db-0,5432,TCP\nshop/cache,shop/db-0,0,TCP\nshop/cache,shop/db-0,80,ICMP\nshop/cache,shop/db-0\n";
    let json = "{\"src\":\"shop/cache\",\"dst\":\"shop/db-0\",\"port\":80}\n{\"src\":\"shop/cache\",\"dst\":\"shop/db-0\",\"port\":80,\"protocol\":\"UDP\"}\n";
    let (code, out, err) = run(
        &["generate", "--flows", "@a.csv", "@b.jsonl", "-f", CLUSTER],
        &[("a.csv", csv), ("b.jsonl", json)],
    );
    assert_eq!(code, Some(2));
    assert_eq!(out, "");
    assert_eq!(
        err,
        "note: the cluster's 1 NetworkPolicy is not part of the result: the check runs with the generated set in its place (admin policies kept)\n\
         DIR/a.csv:3: port: \"0\" is not a port (1-65535)\n\
         DIR/a.csv:4: protocol: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)\n\
         DIR/a.csv:5: 2 fields where the header has 4\n\
         DIR/b.jsonl:1: missing field `protocol`\n\
         error: 4 bad line(s) in the flow files; nothing was generated\n"
    );
}

#[test]
fn a_file_of_neither_format_is_named() {
    let (code, out, err) = run(
        &["generate", "--flows", "@f.txt", "-f", CLUSTER],
        &[("f.txt", "shop/cache shop/db-0 5432/TCP\n")],
    );
    assert_eq!((code, out.as_str()), (Some(2), ""));
    assert!(
        err.ends_with("error: DIR/f.txt:1: neither a flow log nor JSON lines (an object a line with src, dst, port and protocol) nor CSV with a header naming src, dst, port and protocol\n"),
        "{err}"
    );
}

#[test]
fn unknown_endpoints_are_counted_and_named_never_dropped_silently() {
    let csv = "src,dst,port,protocol\nshop/nope,shop/db-0,5432,TCP\nshop/cache,10.99.0.1,80,TCP\nshop/cache,shop/ghost,80,TCP\nweird,shop/db-0,1,TCP\n\u{1b}[2Jns/x,shop/db-0,1,TCP\n";
    let (code, _, err) = run(
        &["generate", "--flows", "@a.csv", "-f", CLUSTER],
        &[("a.csv", csv)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: 4 records name endpoints the cluster does not have (shop/nope: pod shop/nope not found; shop/ghost: pod shop/ghost not found; weird: \"weird\" is neither namespace/pod nor an IP address; \\u{1b}[2Jns/x: pod \\u{1b}[2Jns/x not found); left out\n"),
        "{err}"
    );
    assert!(err.contains("check: 1 observed flow allowed;"), "{err}");
}

#[test]
fn replay_refuses_files_without_verdicts() {
    let (code, _, err) = run(
        &["replay", "--flows", "@a.csv", "-f", CLUSTER],
        &[(
            "a.csv",
            "src,dst,port,protocol\nshop/cache,shop/db-0,5432,TCP\n",
        )],
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "error: DIR/a.csv: a CSV file has no recorded verdicts; replay needs a flow log\n"
    );
}

#[test]
fn a_failed_check_names_what_failed_writes_nothing_and_exits_2() {
    let anp = "apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: monitoring-to-db}
spec:
  priority: 10
  subject: {namespaces: {}}
  ingress:
  - name: from-monitoring
    action: Allow
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
    ports: [{portNumber: {protocol: TCP, port: 5432}}]
  egress:
  - name: to-shop
    action: Allow
    to: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}]
    ports: [{portNumber: {protocol: TCP, port: 5432}}]
";
    let case = "crates/palisade/tests/generate/shop";
    let (flows, csv) = (format!("{case}/flows.jsonl"), format!("{case}/flows.csv"));
    let (code, out, err) = run(
        &[
            "generate",
            "--flows",
            &flows,
            &csv,
            "-f",
            CLUSTER,
            "@anp.yaml",
            "--out",
            "@out.yaml",
        ],
        &[("anp.yaml", anp)],
    );
    assert_eq!((code, out.as_str()), (Some(2), ""));
    assert_eq!(
        err,
        "note: the cluster's 1 NetworkPolicy is not part of the result: the check runs with the generated set in its place (admin policies kept)
warning: 1 record names endpoints the cluster does not have (shop/gone-pod: pod shop/gone-pod not found); left out
check failed: 0 of 13 observed flows not allowed; 5 connections allowed beyond what was observed
  monitoring/prom[StatefulSet] => shop/batch[Deployment] : TCP 5432 allowed, never observed
  monitoring/prom[StatefulSet] => shop/cache : TCP 5432 allowed, never observed
  monitoring/prom[StatefulSet] => shop/db[StatefulSet] : TCP 5432 allowed, never observed
  monitoring/prom[StatefulSet] => shop/reports[Deployment] : TCP 5432 allowed, never observed
  monitoring/prom[StatefulSet] => shop/web[Deployment] : TCP 5432 allowed, never observed
nothing was written
"
    );
}

/// docs/generate.md quotes the goldens; a change to the output that the
/// page does not follow fails here.
#[test]
fn the_documentation_quotes_the_goldens() {
    let doc = std::fs::read_to_string(root().join("docs/generate.md")).unwrap();
    let golden = |p: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(p))
            .unwrap()
    };
    let yaml = golden("generate/shop/expect.yaml");
    let web = yaml
        .split("---\n")
        .find(|d| d.contains("name: web-generated"))
        .unwrap();
    for quoted in [
        web.to_string(),
        golden("generate/shop/expect.stderr"),
        golden("generate/union/expect.stderr"),
        golden("replay/shop/expect.txt"),
        golden("replay/shop/expect.json")
            .lines()
            .nth(1)
            .unwrap()
            .to_string(),
    ] {
        assert!(
            doc.contains(&quoted),
            "docs/generate.md does not quote:\n{quoted}"
        );
    }
}

#[test]
fn staged_policies_carry_the_annotation_and_nothing_else_changes() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/generate/union");
    let mut args = generate_args(&case, "yaml");
    args.push("--staged".into());
    let o = palisade(&args);
    assert_eq!(o.status.code(), Some(0));
    let staged = String::from_utf8(o.stdout).unwrap();
    let plain = std::fs::read_to_string(case.join("expect.yaml")).unwrap();
    let annotation = "  annotations:\n    palisade.dev/staged: 'true'\n";
    assert_eq!(
        staged.matches(annotation).count(),
        plain.matches("---\n").count()
    );
    assert_eq!(staged.replace(annotation, ""), plain);
}

/// A staged candidate replays as if promoted: the same answer as the same
/// policies enforced.
#[test]
fn replay_counts_the_candidates_staged_policies_as_enforced() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay/shop");
    let generated = std::fs::read_to_string(case.join("candidate/generated.yaml")).unwrap();
    let staged = generated.replace(
        "metadata:\n  labels:",
        "metadata:\n  annotations:\n    palisade.dev/staged: 'true'\n  labels:",
    );
    assert_ne!(staged, generated);
    let cluster = rel(&case.join("candidate/cluster.yaml"));
    let flows = rel(&case.join("flows.jsonl"));
    let (code, out, err) = run(
        &["replay", "--flows", &flows, "-f", &cluster, "@staged.yaml"],
        &[("staged.yaml", &staged)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        std::fs::read_to_string(case.join("expect.txt")).unwrap()
    );
}
