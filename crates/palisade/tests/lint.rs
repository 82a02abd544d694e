//! `palisade lint` as users and CI see it. Each case under `tests/lint/<id>/`
//! holds `cluster.yaml` (pods, namespaces), `bad.yaml` (policies that raise
//! finding `<id>`) and `fixed.yaml` (the corrected policies), with the exact
//! text output of `lint -f cluster.yaml bad.yaml` in `bad.txt` and of the
//! corrected files in `fixed.txt`. `UPDATE_EXPECT=1` rewrites the expected
//! files, to be reviewed in the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint")
}

fn lint_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(dir)
        .arg("lint")
        .args(args)
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compares with the expected file, or rewrites it under UPDATE_EXPECT.
fn golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run with UPDATE_EXPECT=1)", path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{}: output differs\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        ))
    }
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("tests/lint")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One side of a case: its golden output, and whether finding `id` is in
/// it as the case requires.
fn side(dir: &Path, id: &str, policies: &str, expect: &str, raised: bool) -> Result<(), String> {
    let o = lint_in(dir, &["-f", "cluster.yaml", policies]);
    let out = stdout(&o);
    golden(&dir.join(expect), &out)?;
    let has = out.contains(&format!("[{id}]"));
    if has != raised {
        return Err(format!(
            "{}: {policies}: finding {id} {} expected\n{out}",
            dir.display(),
            if raised { "is" } else { "is not" }
        ));
    }
    // Exit 1 exactly when an error-level finding is printed (the default
    // --fail-on error).
    let want = if out.lines().any(|l| l.contains(": error[")) {
        1
    } else {
        0
    };
    if o.status.code() != Some(want) {
        return Err(format!(
            "{}: {policies}: exit {:?}, expected {want}\n{}",
            dir.display(),
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

#[test]
fn lint_cases_raise_their_finding_and_not_on_the_fix() {
    let mut failures = Vec::new();
    for name in case_names() {
        let dir = cases_dir().join(&name);
        for (policies, expect, raised) in [
            ("bad.yaml", "bad.txt", true),
            ("fixed.yaml", "fixed.txt", false),
        ] {
            if let Err(e) = side(&dir, &name, policies, expect, raised) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_check_has_a_case() {
    let names = case_names();
    let o = lint_in(
        &cases_dir().join("allow-all-in-disguise"),
        &["-f", "cluster.yaml", "bad.yaml", "-o", "sarif"],
    );
    let log: Value = serde_json::from_slice(&o.stdout).expect("SARIF is JSON");
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    let ids: Vec<&str> = rules
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    for id in ids {
        assert!(names.iter().any(|n| n == id), "no case for {id}");
    }
}

#[test]
fn json_and_sarif_outputs_match_their_golden_files() {
    let dir = cases_dir().join("allow-all-in-disguise");
    let json = lint_in(&dir, &["-f", "cluster.yaml", "bad.yaml", "-o", "json"]);
    assert_eq!(json.status.code(), Some(1));
    golden(&dir.join("bad.json"), &stdout(&json)).unwrap();
    let sarif = lint_in(&dir, &["-f", "cluster.yaml", "bad.yaml", "-o", "sarif"]);
    assert_eq!(sarif.status.code(), Some(1));
    golden(&dir.join("bad.sarif"), &stdout(&sarif)).unwrap();
}

/// The properties SARIF 2.1.0 requires (`version`, `runs`, `tool.driver.name`,
/// `message` of each result, `id` of each rule) and those GitHub code
/// scanning reads for a result's place and rule.
#[test]
fn sarif_has_what_the_schema_requires_and_code_scanning_reads() {
    let dir = cases_dir().join("dns-blocked");
    let o = lint_in(&dir, &["-f", "cluster.yaml", "./bad.yaml", "-o", "sarif"]);
    let log: Value = serde_json::from_slice(&o.stdout).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"]
        .as_str()
        .is_some_and(|s| s.contains("sarif-2.1.0")));
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "palisade");
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    for r in rules {
        let id = r["id"].as_str().expect("rule id");
        assert!(r["shortDescription"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
        assert_eq!(r["helpUri"], format!("docs/lint.md#{id}"));
        let level = r["defaultConfiguration"]["level"].as_str().expect("level");
        assert!(["note", "warning", "error"].contains(&level), "{level}");
    }
    let results = run["results"].as_array().expect("results");
    assert!(!results.is_empty());
    for r in results {
        let id = r["ruleId"].as_str().expect("ruleId");
        let index = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], id);
        assert!(["note", "warning", "error"].contains(&r["level"].as_str().expect("level")));
        assert!(r["message"]["text"].as_str().is_some_and(|t| !t.is_empty()));
        let loc = &r["locations"][0]["physicalLocation"];
        // Relative, without the `./` the path was given with.
        assert_eq!(loc["artifactLocation"]["uri"], "bad.yaml");
        assert!(loc["region"]["startLine"].as_u64().is_some_and(|l| l >= 1));
    }
}

#[test]
fn fail_on_and_input_errors_set_the_exit_code() {
    let dir = cases_dir().join("coverage-gap");
    // Info only: 0 by default and with --fail-on warning.
    let o = lint_in(&dir, &["-f", "cluster.yaml", "bad.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = lint_in(
        &dir,
        &["-f", "cluster.yaml", "bad.yaml", "--fail-on", "warning"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // A warning fails only with --fail-on warning.
    let dir = cases_dir().join("policy-selects-nothing");
    let o = lint_in(&dir, &["-f", "cluster.yaml", "bad.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = lint_in(
        &dir,
        &["-f", "cluster.yaml", "bad.yaml", "--fail-on", "warning"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // Input errors: 2, with the decoder's message naming file and field.
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("p.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: a}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{}]\n",
    )
    .expect("write");
    let o = lint_in(tmp.path(), &["-f", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("p.yaml:1: NetworkPolicy a/x: spec.ingress[0].from[0]: empty peer"),
        "{err}"
    );
    let o = lint_in(tmp.path(), &["-f", "missing.yaml"]);
    assert_eq!(o.status.code(), Some(2));
}
