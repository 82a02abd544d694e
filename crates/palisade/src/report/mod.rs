//! `palisade report`: one self-contained HTML page with the graph of
//! allowed connections, the reachability matrix with every cell's
//! explanation, isolation coverage per namespace and the findings.
//!
//! `model` computes the data from the engine, `html` renders it; the page's
//! own script draws the graph and the matrix from the embedded data.

mod html;
mod model;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use palisade_engine::{Engine, PortProto};
use palisade_k8s::{Diagnostic, Severity};

pub use html::render;
pub use model::{Report, ReportFinding};

/// A decoding diagnostic as a finding, so that what the load warned about
/// is on the page with everything else.
pub fn diagnostic_finding(d: &Diagnostic) -> ReportFinding {
    ReportFinding {
        id: "load".into(),
        severity: match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
        .into(),
        location: match d.line {
            Some(line) => format!("{}:{line}", d.file),
            None => d.file.clone(),
        },
        object: d.object.clone().unwrap_or_default(),
        field: d.field.clone().unwrap_or_default(),
        message: d.message.clone(),
        fix: String::new(),
    }
}

/// A lint finding, placed at its object's file and line.
pub fn lint_finding(p: &crate::lint_cmd::Placed) -> ReportFinding {
    let f = &p.finding;
    ReportFinding {
        id: f.id.into(),
        severity: f.severity.as_str().into(),
        location: match (&p.file, p.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            (None, _) => String::new(),
        },
        object: f.object.to_string(),
        field: f.field.clone(),
        message: f.message.clone(),
        fix: f.fix.clone(),
    }
}

/// Loads the manifests, builds the report and writes it to `out`; returns
/// the report for the summary the command prints.
pub fn write(paths: &[PathBuf], ports: Vec<PortProto>, out: &Path) -> Result<Report> {
    let loaded = crate::input::load(paths)?;
    let errors = crate::input::report(&loaded.diagnostics);
    if errors > 0 {
        bail!("{errors} error(s) in the manifests; no report was written");
    }
    let mut findings: Vec<ReportFinding> =
        loaded.diagnostics.iter().map(diagnostic_finding).collect();
    let engine = Engine::new(loaded.cluster);
    let placed = crate::lint_cmd::place(palisade_engine::lint::lint(&engine), &loaded.origins);
    findings.extend(placed.iter().map(lint_finding));
    let ports = if ports.is_empty() {
        engine.default_ports()
    } else {
        ports
    };
    let sources = paths.iter().map(|p| p.display().to_string()).collect();
    let report = Report::build(&engine, &ports, sources, findings);
    let page = render(&report)?;
    std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    Ok(report)
}
