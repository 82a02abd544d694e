//! Reading manifests from disk and flows from the command line: the I/O edge
//! in front of the pure decoder and engine.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use palisade_engine::{Engine, Flow, PortProto};
use palisade_k8s::{Diagnostic, Loaded};

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for e in entries {
            if e.is_dir() || is_manifest(&e) {
                walk(&e, out)?;
            }
        }
    } else {
        // A file named explicitly is read whatever its extension.
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Reads every manifest under `paths` and decodes them together.
pub fn load(paths: &[PathBuf]) -> Result<Loaded> {
    let mut files = Vec::new();
    for p in paths {
        walk(p, &mut files)?;
    }
    let mut inputs = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        inputs.push((f.display().to_string(), bytes));
    }
    Ok(palisade_k8s::load(&inputs))
}

/// Prints diagnostics to stderr; returns the number of errors.
pub fn report(diags: &[Diagnostic]) -> usize {
    for d in diags {
        eprintln!("{d}");
    }
    diags.iter().filter(|d| d.is_error()).count()
}

/// Loads manifests and builds the engine; invalid input is an error, never
/// a guess.
pub fn engine(paths: &[PathBuf]) -> Result<Engine> {
    let loaded = load(paths)?;
    let errors = report(&loaded.diagnostics);
    if errors > 0 {
        bail!("{errors} error(s) in the manifests; nothing was decided");
    }
    Ok(Engine::new(loaded.cluster))
}

pub struct FlowLine {
    pub line: usize,
    pub src: String,
    pub dst: String,
    pub port: String,
}

pub fn parse_flow_lines(file: &str, text: &str) -> Result<Vec<FlowLine>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [src, dst, port] = words[..] else {
            bail!(
                "{file}:{}: expected `SRC DST PORT/PROTO`, got {line:?}",
                i + 1
            );
        };
        out.push(FlowLine {
            line: i + 1,
            src: src.into(),
            dst: dst.into(),
            port: port.into(),
        });
    }
    Ok(out)
}

pub fn resolve_flow(engine: &Engine, src: &str, dst: &str, port: &str) -> Result<Flow> {
    let pp: PortProto = port.parse().map_err(|e: String| anyhow!(e))?;
    engine
        .flow_between(src, dst, pp.protocol, pp.port)
        .map_err(|e| anyhow!(e))
}
