//! The data-driven case format, shared by every suite that decides flows
//! (engine now, real packets in the lab): `tests/cases/<name>/` holds
//! manifests and an `expect.yaml`:
//!
//! ```yaml
//! description: what the case shows
//! topology: xyz            # optional: tests/topologies/xyz.yaml is loaded too
//! flows:
//!   - "SRC DST PORT/PROTO allowed|denied [~ substring of the reasons]"
//! ```

pub mod fuzz;
pub mod oracle;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade_engine::{Engine, Flow, PortProto};
use palisade_model::Cluster;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    description: String,
    #[serde(default)]
    topology: Option<String>,
    flows: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Expectation {
    pub line: String,
    pub src: String,
    pub dst: String,
    pub port: PortProto,
    pub allowed: bool,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub description: String,
    pub dir: PathBuf,
    pub cluster: Cluster,
    pub expectations: Vec<Expectation>,
}

/// The repository root, from a crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_expectation(line: &str) -> Result<Expectation, String> {
    let (flow, reason) = match line.split_once('~') {
        Some((f, r)) => (f, Some(r.trim().to_string())),
        None => (line, None),
    };
    let words: Vec<&str> = flow.split_whitespace().collect();
    let [src, dst, port, verdict] = words[..] else {
        return Err(format!(
            "expected `SRC DST PORT/PROTO allowed|denied`: {line:?}"
        ));
    };
    let allowed = match verdict {
        "allowed" => true,
        "denied" => false,
        v => return Err(format!("verdict must be allowed or denied, not {v:?}")),
    };
    Ok(Expectation {
        line: line.to_string(),
        src: src.into(),
        dst: dst.into(),
        port: port
            .parse()
            .map_err(|e: palisade_engine::Error| e.to_string())?,
        allowed,
        reason,
    })
}

fn manifests_in(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| n != "expect.yaml")
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            Ok((f.display().to_string(), b))
        })
        .collect()
}

pub fn load_case(dir: &Path) -> Result<Case, String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expect_path = dir.join("expect.yaml");
    let text = std::fs::read_to_string(&expect_path)
        .map_err(|e| format!("{}: {e}", expect_path.display()))?;
    let ef: ExpectFile =
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", expect_path.display()))?;
    let mut inputs = Vec::new();
    if let Some(t) = &ef.topology {
        let p = repo_root()
            .join("tests/topologies")
            .join(format!("{t}.yaml"));
        let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        inputs.push((p.display().to_string(), b));
    }
    inputs.extend(manifests_in(dir)?);
    let loaded = palisade_k8s::load(&inputs);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "case {name}: invalid manifests:\n{}",
            errors.join("\n")
        ));
    }
    let expectations = ef
        .flows
        .iter()
        .map(|l| parse_expectation(l).map_err(|e| format!("case {name}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Case {
        name,
        description: ef.description,
        dir: dir.to_path_buf(),
        cluster: loaded.cluster,
        expectations,
    })
}

/// Every case under `tests/cases`, sorted by name.
pub fn all_cases() -> Vec<Result<Case, String>> {
    let root = repo_root().join("tests/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| load_case(d)).collect()
}

impl Case {
    /// The ports the case's flows use, or the engine's defaults where it
    /// names none, so that a lab listens on everything probed.
    pub fn ports(&self, engine: &Engine) -> Vec<PortProto> {
        let p: BTreeSet<PortProto> = self.expectations.iter().map(|e| e.port).collect();
        if p.is_empty() {
            engine.default_ports()
        } else {
            p.into_iter().collect()
        }
    }
}

/// Fails with every disagreement of a run at once, not just the first.
pub fn assert_agrees(bad: &[String]) {
    assert!(
        bad.is_empty(),
        "{} disagreements:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Resolves an expectation to a flow of the engine.
pub fn flow(engine: &Engine, e: &Expectation) -> Result<Flow, String> {
    engine
        .flow_between(&e.src, &e.dst, e.port.protocol, e.port.port)
        .map_err(|e| e.to_string())
}

/// Checks a case against the engine; returns one message per mismatch.
pub fn check_case(case: &Case) -> Vec<String> {
    let engine = Engine::new(case.cluster.clone());
    let mut failures = Vec::new();
    for e in &case.expectations {
        let f = match flow(&engine, e) {
            Ok(f) => f,
            Err(err) => {
                failures.push(format!("{}: {:?}: {err}", case.name, e.line));
                continue;
            }
        };
        let v = engine.verdict(&f);
        if v.allowed != e.allowed {
            failures.push(format!(
                "{}: {:?}: got {}; reasons: {:?}",
                case.name,
                e.line,
                if v.allowed { "allowed" } else { "denied" },
                v.reasons
            ));
        } else if let Some(r) = &e.reason {
            if !v.reasons.iter().any(|x| x.contains(r.as_str())) {
                failures.push(format!(
                    "{}: {:?}: reason {r:?} not in {:?}",
                    case.name, e.line, v.reasons
                ));
            }
        }
        // The fast path must agree with the explained one.
        if engine.allowed(&f) != v.allowed {
            failures.push(format!(
                "{}: {:?}: allowed() disagrees with verdict()",
                case.name, e.line
            ));
        }
    }
    failures
}
