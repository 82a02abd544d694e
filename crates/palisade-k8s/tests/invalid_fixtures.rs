//! Every file in `tests/invalid/` holds one malformed thing. Its first lines
//! say what must be reported:
//!
//! ```text
//! # expect: <substring of the error, field path included>
//! # object: <the object named in the error, or - for none>
//! ```

use std::fs;
use std::path::Path;

use palisade_k8s::load;

fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .map(str::trim)
}

#[test]
fn every_invalid_fixture_reports_its_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} invalid fixtures", files.len());

    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = fs::read(path).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let expect = header(&text, "expect").unwrap_or_else(|| panic!("{name}: no # expect"));
        let object = header(&text, "object").unwrap_or_else(|| panic!("{name}: no # object"));

        let loaded = load(&[(name.clone(), bytes)]);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        let hit = loaded.diagnostics.iter().find(|d| {
            d.is_error()
                && d.to_string().contains(expect)
                && d.to_string().starts_with(&format!("{name}:"))
                && match object {
                    "-" => d.object.is_none(),
                    o => {
                        d.object.as_deref() == Some(o)
                            && d.to_string().contains(&format!(": {o}: "))
                    }
                }
        });
        if hit.is_none() {
            failures.push(format!(
                "{name}: expected an error containing {expect:?} for {object}, got:\n  {}",
                errors.join("\n  ")
            ));
        }
        // An object with an error is never part of the cluster, except the
        // first of two duplicates.
        if !name.starts_with("duplicate") {
            let c = &loaded.cluster;
            assert!(
                c.policies.is_empty() && c.admin_policies.is_empty() && c.pods.is_empty(),
                "{name}: an invalid object was kept"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
