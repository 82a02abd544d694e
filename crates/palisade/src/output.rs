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

/// One row/column of the printed matrix: a pod, or a workload.
pub struct Axis {
    pub names: Vec<String>,
    /// For each name, every row of the identity matrix its pods have: a
    /// workload's pods may fall in several identities (a pod relabelled by
    /// hand, a rollout between two templates).
    pub rows: Vec<Vec<usize>>,
}

pub fn axis(engine: &Engine, m: &MatrixRows, by_workload: bool) -> Axis {
    let idx = engine.index();
    let row_of: std::collections::HashMap<IdentityId, usize> = m
        .identities
        .iter()
        .enumerate()
        .map(|(row, &id)| (id, row))
        .collect();
    let pods = engine
        .cluster()
        .pods
        .iter()
        .enumerate()
        .filter_map(|(i, pod)| {
            let id = idx.identity_of(PodId::new(i))?;
            Some((pod, *row_of.get(&id)?))
        });
    let mut named: Vec<(String, Vec<usize>)> = Vec::new();
    if by_workload {
        let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for (pod, row) in pods {
            // Its owning workload (`ns/name[Kind]`), its own for a
            // template, else the pod itself.
            let name = match pod.workload() {
                Some((kind, name)) => format!("{}/{name}[{kind}]", pod.namespace),
                None => pod.key(),
            };
            let rows = groups.entry(name).or_default();
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
        named.extend(groups);
    } else {
        named.extend(pods.map(|(pod, row)| (pod.display_name(), vec![row])));
    }
    Axis {
        names: named.iter().map(|(n, _)| n.clone()).collect(),
        rows: named.into_iter().map(|(_, rows)| rows).collect(),
    }
}

pub fn mark(c: Option<Cell>) -> &'static str {
    // The Kubernetes e2e suite prints "." for connected and "X" for blocked.
    match c {
        Some(Cell::Allowed) => ".",
        Some(Cell::Denied) => "X",
        Some(Cell::NoFamily) => "-",
        None => "~",
    }
}
