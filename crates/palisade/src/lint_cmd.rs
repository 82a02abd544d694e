//! `palisade lint`: the engine's findings placed at the file and line of
//! the object they are about, as text, JSON or SARIF 2.1.0 (what GitHub
//! code scanning reads). Exit 0 when no finding reaches `--fail-on`, 1 when
//! one does, 2 when the manifests cannot be read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use palisade_engine::lint::{self, Finding, Severity, CHECKS};
use palisade_engine::Engine;
use palisade_k8s::{ObjectKey, Origin};
use serde::Serialize;
use serde_sarif::sarif;

use crate::input;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Warning,
    Error,
}

#[derive(Args)]
pub struct LintArgs {
    /// Manifest files or directories (recursive: *.yaml, *.yml, *.json).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: LintFormat,
    /// Exit 1 when a finding of this severity or above is found.
    #[arg(long, value_enum, default_value = "error")]
    fail_on: FailOn,
    /// Where the checks are documented: SARIF rules link to `URL#<id>`.
    #[arg(long, value_name = "URL", default_value = "docs/lint.md")]
    docs_url: String,
}

/// A finding with the place of its object.
#[derive(Serialize)]
pub struct Placed {
    #[serde(flatten)]
    pub finding: Finding,
    pub file: Option<String>,
    pub line: Option<usize>,
}

pub fn run(args: LintArgs) -> Result<ExitCode> {
    let loaded = input::load(&args.files)?;
    let errors = input::report(&loaded.diagnostics);
    if errors > 0 {
        eprintln!("{errors} error(s) in the manifests; nothing was linted");
        return Ok(ExitCode::from(2));
    }
    let origins = loaded.origins;
    let engine = Engine::new(loaded.cluster);
    let placed = place(lint::lint(&engine), &origins);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.output {
        LintFormat::Text => write_text(&mut out, &placed)?,
        LintFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &placed)?;
            writeln!(out)?;
        }
        LintFormat::Sarif => {
            serde_json::to_writer_pretty(&mut out, &sarif_log(&placed, &args.docs_url)?)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let threshold = match args.fail_on {
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    };
    let failed = placed.iter().any(|p| p.finding.severity >= threshold);
    Ok(ExitCode::from(u8::from(failed)))
}

pub fn place(findings: Vec<Finding>, origins: &BTreeMap<ObjectKey, Origin>) -> Vec<Placed> {
    let mut placed: Vec<Placed> = findings
        .into_iter()
        .map(|finding| {
            let key = ObjectKey {
                kind: finding.object.kind.clone(),
                namespace: finding.object.namespace.clone(),
                name: finding.object.name.clone(),
            };
            let origin = origins.get(&key);
            Placed {
                file: origin.map(|o| o.file.clone()),
                line: origin.and_then(|o| o.line),
                finding,
            }
        })
        .collect();
    // Stable for a given set of files: by place, then as the engine sorts.
    placed.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    placed
}

/// `policies.yaml:12: warning[policy-selects-nothing] NetworkPolicy shop/web:
/// spec.podSelector: selects no endpoint ...; fix: ...`, then a count.
fn write_text(out: &mut impl Write, placed: &[Placed]) -> Result<()> {
    for p in placed {
        let f = &p.finding;
        let place = match (&p.file, p.line) {
            (Some(file), Some(line)) => format!("{file}:{line}: "),
            (Some(file), None) => format!("{file}: "),
            _ => String::new(),
        };
        let line = format!(
            "{place}{}[{}] {}: {}: {}; fix: {}",
            f.severity, f.id, f.object, f.field, f.message, f.fix
        );
        writeln!(out, "{}", crate::output::terminal(&line))?;
    }
    let count = |s: Severity| placed.iter().filter(|p| p.finding.severity == s).count();
    if placed.is_empty() {
        writeln!(out, "no findings")?;
    } else {
        writeln!(
            out,
            "{} finding(s): {} error(s), {} warning(s), {} info",
            placed.len(),
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info)
        )?;
    }
    Ok(())
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

fn result_level(s: Severity) -> sarif::ResultLevel {
    match s {
        Severity::Error => sarif::ResultLevel::Error,
        Severity::Warning => sarif::ResultLevel::Warning,
        Severity::Info => sarif::ResultLevel::Note,
    }
}

/// A path as SARIF wants it: relative (to the working directory when it
/// is under it), with forward slashes.
fn artifact_uri(file: &str) -> String {
    let path = Path::new(file);
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf());
    let s = rel.to_string_lossy().replace('\\', "/");
    s.strip_prefix("./").map_or(s.clone(), str::to_string)
}

fn sarif_log(placed: &[Placed], docs: &str) -> Result<sarif::Sarif> {
    let rules: Vec<sarif::ReportingDescriptor> = CHECKS
        .iter()
        .map(|c| {
            sarif::ReportingDescriptor::builder()
                .id(c.id.to_string())
                .short_description(sarif::MultiformatMessageString::from(
                    &c.summary.to_string(),
                ))
                .help_uri(format!("{docs}#{}", c.id))
                .default_configuration(
                    sarif::ReportingConfiguration::builder()
                        .level(serde_json::Value::from(level(c.severity)))
                        .build(),
                )
                .build()
        })
        .collect();
    let results: Vec<sarif::Result> = placed
        .iter()
        .map(|p| {
            let f = &p.finding;
            let text = format!("{}: {}: {}. Fix: {}.", f.object, f.field, f.message, f.fix);
            let rule_index = CHECKS.iter().position(|c| c.id == f.id).unwrap_or(0) as i64;
            let locations = p.file.as_ref().map(|file| {
                let artifact = sarif::ArtifactLocation::builder()
                    .uri(artifact_uri(file))
                    .build();
                let physical = match p.line {
                    Some(line) => sarif::PhysicalLocation::builder()
                        .artifact_location(artifact)
                        .region(sarif::Region::builder().start_line(line as i64).build())
                        .build(),
                    None => sarif::PhysicalLocation::builder()
                        .artifact_location(artifact)
                        .build(),
                };
                vec![sarif::Location::builder()
                    .physical_location(physical)
                    .build()]
            });
            let r = sarif::Result::builder()
                .rule_id(f.id.to_string())
                .rule_index(rule_index)
                .level(result_level(f.severity))
                .message(sarif::Message::from(&text));
            match locations {
                Some(l) => r.locations(l).build(),
                None => r.build(),
            }
        })
        .collect();
    let driver = sarif::ToolComponent::builder()
        .name("palisade".to_string())
        .rules(rules)
        .build();
    Ok(sarif::Sarif::builder()
        .schema(sarif::SCHEMA_URL.to_string())
        .version(serde_json::to_value(sarif::Version::V2_1_0)?)
        .runs(vec![sarif::Run::builder()
            .tool(sarif::Tool::from(driver))
            .results(results)
            .build()])
        .build())
}
