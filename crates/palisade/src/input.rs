//! Reading manifests from disk and flows from the command line: the I/O edge
//! in front of the pure decoder and engine.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use palisade_agent::manifests::{self, Found};
use palisade_engine::{Engine, Flow, PortProto};
use palisade_k8s::{Diagnostic, Loaded, Severity};

fn diagnostic(severity: Severity, file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        severity,
        file: file.display().to_string(),
        line: None,
        object: None,
        field: None,
        message,
    }
}

/// Reads every manifest under `paths` and decodes them together. A path
/// that does not exist is an error; a file that cannot be read is an error
/// diagnostic naming it, and what was skipped on purpose (a FIFO, a link
/// to a directory already read) a warning.
pub fn load(paths: &[PathBuf]) -> Result<Loaded> {
    let found = manifests::walk(paths).map_err(|(p, e)| anyhow!("{}: {e}", p.display()))?;
    let mut inputs = Vec::with_capacity(found.len());
    let mut diagnostics = Vec::new();
    let bar = crate::progress::bar("reading files", found.len() as u64);
    for f in found {
        bar.inc(1);
        match f {
            Found::File { path, .. } => match manifests::read(&path) {
                Ok(bytes) => inputs.push((path.display().to_string(), bytes)),
                Err(e) => diagnostics.push(diagnostic(Severity::Error, &path, e.to_string())),
            },
            Found::Skipped { path, why } => diagnostics.push(diagnostic(
                Severity::Warning,
                &path,
                format!("skipped: {why}"),
            )),
            Found::Unreadable { path, error, .. } => {
                diagnostics.push(diagnostic(Severity::Error, &path, error))
            }
        }
    }
    bar.restart("decoding files", inputs.len() as u64);
    let mut loaded = palisade_k8s::load_with(&inputs, &mut |n| bar.set_position(n as u64));
    bar.finish();
    diagnostics.append(&mut loaded.diagnostics);
    loaded.diagnostics = diagnostics;
    Ok(loaded)
}

/// Prints diagnostics to stderr; returns the number of errors.
pub fn report(diags: &[Diagnostic]) -> usize {
    for d in diags {
        eprintln!("{}", crate::output::terminal(&d.to_string()));
    }
    diags.iter().filter(|d| d.is_error()).count()
}

/// Loads manifests and builds the engine; invalid input is an error, never
/// a guess.
pub fn engine(paths: &[PathBuf]) -> Result<Engine> {
    Ok(Engine::new(cluster(paths)?))
}

/// Loads manifests into a cluster; invalid input is an error.
pub fn cluster(paths: &[PathBuf]) -> Result<palisade_model::Cluster> {
    let loaded = load(paths)?;
    let errors = report(&loaded.diagnostics);
    if errors > 0 {
        bail!("{errors} error(s) in the manifests; nothing was decided");
    }
    Ok(loaded.cluster)
}

/// One line of a flow file: `SRC DST PORT/PROTO`, `#` comments; `None`
/// for a blank or comment line, an error naming what the line holds.
pub fn flow_line(raw: &str) -> Result<Option<(&str, &str, &str)>, String> {
    let line = raw.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(src), Some(dst), Some(port), None) => Ok(Some((src, dst, port))),
        _ => Err(format!(
            "expected `SRC DST PORT/PROTO`, got {}",
            palisade_k8s::limits::quoted(line)
        )),
    }
}

pub fn resolve_flow(engine: &Engine, src: &str, dst: &str, port: &str) -> Result<Flow> {
    let pp: PortProto = port
        .parse()
        .map_err(|e: palisade_engine::Error| anyhow!(e))?;
    engine
        .flow_between(src, dst, pp.protocol, pp.port)
        .map_err(|e| anyhow!(e))
}
