//! Output formats. The JSON Lines form of `check --flows -o json` is one
//! object a line: `{"src","dst","port","protocol","allowed","reasons"}`.

use std::io::Write;

use anyhow::Result;
use palisade_engine::matrix::Cell;
use palisade_engine::{Engine, Flow, IdentityId, MatrixRows, PodId, Verdict};
use serde_json::json;

use crate::CheckFormat;

/// `detailed`: a single check prints the verdict then one reason a line;
/// a flow file prints one line a flow.
pub fn write_check(
    out: &mut impl Write,
    format: CheckFormat,
    src: &str,
    dst: &str,
    flow: &Flow,
    v: &Verdict,
    detailed: bool,
) -> Result<()> {
    let word = if v.allowed { "allowed" } else { "denied" };
    match format {
        CheckFormat::Json => {
            let j = json!({
                "src": src,
                "dst": dst,
                "port": flow.port,
                "protocol": flow.protocol.as_str(),
                "allowed": v.allowed,
                "reasons": v.reasons,
            });
            writeln!(out, "{j}")?;
        }
        CheckFormat::Text if detailed => {
            writeln!(out, "{word}")?;
            for r in &v.reasons {
                writeln!(out, "  {r}")?;
            }
        }
        CheckFormat::Text => {
            writeln!(
                out,
                "{src} {dst} {}/{} {word}: {}",
                flow.port,
                flow.protocol,
                v.reasons.join("; ")
            )?;
        }
    }
    Ok(())
}

/// One row/column of the printed matrix: a pod, or a workload (identity).
pub struct Axis {
    pub names: Vec<String>,
    /// For each name, its row in the identity matrix.
    pub identity_row: Vec<usize>,
}

pub fn axis(engine: &Engine, m: &MatrixRows, by_workload: bool) -> Axis {
    let idx = engine.index();
    let mut names = Vec::new();
    let mut identity_row = Vec::new();
    if by_workload {
        for (row, &id) in m.identities.iter().enumerate() {
            let ident = idx.identity(id);
            let labels: Vec<String> = ident
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            names.push(format!(
                "{}/{{{}}}[{}]",
                ident.namespace,
                labels.join(","),
                ident.members.len()
            ));
            identity_row.push(row);
        }
    } else {
        let row_of: std::collections::HashMap<IdentityId, usize> = m
            .identities
            .iter()
            .enumerate()
            .map(|(row, &id)| (id, row))
            .collect();
        for (i, pod) in engine.cluster().pods.iter().enumerate() {
            let Some(id) = idx.identity_of(PodId::new(i)) else {
                continue;
            };
            if let Some(&row) = row_of.get(&id) {
                names.push(pod.key());
                identity_row.push(row);
            }
        }
    }
    Axis {
        names,
        identity_row,
    }
}

pub fn mark(c: Cell) -> &'static str {
    // The Kubernetes e2e suite prints "." for connected and "X" for blocked.
    match c {
        Cell::Allowed => ".",
        Cell::Denied => "X",
        Cell::NoFamily => "-",
    }
}
