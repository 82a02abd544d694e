//! Runs every `tests/cases/*` case against the engine.

#[test]
fn every_case_decides_as_expected() {
    let cases = palisade_testkit::all_cases();
    assert!(
        cases.len() >= 20,
        "expected the full case set, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut flows = 0;
    for c in &cases {
        match c {
            Ok(c) => {
                assert!(!c.expectations.is_empty(), "case {} has no flows", c.name);
                flows += c.expectations.len();
                failures.extend(palisade_testkit::check_case(c));
            }
            Err(e) => failures.push(e.clone()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} cases, {flows} flows", cases.len());
}
