//! Output formats. The JSON Lines form of `check --flows -o json` is one
//! object a line: `{"src","dst","port","protocol","allowed","reasons"}`.

use std::io::Write;

use anyhow::Result;
use palisade_engine::matrix::Cell;
use palisade_engine::{Engine, Flow, IdentityId, Matrix, PodId, Verdict};
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
struct Axis {
    names: Vec<String>,
    /// For each name, its (first) row in the identity matrix.
    identity_row: Vec<usize>,
    /// For each name, every row of the identity matrix its pods have: a
    /// workload's pods may fall in several identities (a pod relabelled by
    /// hand, a rollout between two templates).
    rows: Vec<Vec<usize>>,
}

impl Axis {
    /// The cell between two names; `None` when the pods behind them do not
    /// all get the same answer.
    fn cell(&self, m: &Matrix, port: usize, from: usize, to: usize) -> Option<Cell> {
        let mut cells = self.rows[from]
            .iter()
            .flat_map(|&r| self.rows[to].iter().map(move |&c| m.cell(port, r, c)));
        let first = cells.next()?;
        cells.all(|c| c == first).then_some(first)
    }
}

fn axis(engine: &Engine, m: &Matrix, by_workload: bool) -> Axis {
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
        identity_row: named.iter().map(|(_, rows)| rows[0]).collect(),
        names: named.iter().map(|(n, _)| n.clone()).collect(),
        rows: named.into_iter().map(|(_, rows)| rows).collect(),
    }
}

fn mark(c: Option<Cell>) -> &'static str {
    // The Kubernetes e2e suite prints "." for connected and "X" for blocked.
    match c {
        Some(Cell::Allowed) => ".",
        Some(Cell::Denied) => "X",
        Some(Cell::NoFamily) => "-",
        None => "~",
    }
}

pub fn write_matrix(
    out: &mut impl Write,
    engine: &Engine,
    m: &Matrix,
    format: crate::MatrixFormat,
    by_workload: bool,
) -> Result<()> {
    let ax = axis(engine, m, by_workload);
    match format {
        crate::MatrixFormat::Table => {
            let w = ax.names.iter().map(|n| n.len()).max().unwrap_or(1).max(1);
            for (pi, pp) in m.ports.iter().enumerate() {
                if pi > 0 {
                    writeln!(out)?;
                }
                let mixed = if by_workload {
                    ", ~ not the same for all the workload's pods"
                } else {
                    ""
                };
                writeln!(out, "reachability {pp} (rows: from, columns: to; . allowed, X denied, - no common IP family{mixed})")?;
                write!(out, "{:w$}", "-")?;
                for n in &ax.names {
                    write!(out, " {n}")?;
                }
                writeln!(out)?;
                for (ri, rn) in ax.names.iter().enumerate() {
                    write!(out, "{rn:w$}")?;
                    for (ci, cn) in ax.names.iter().enumerate() {
                        let c = ax.cell(m, pi, ri, ci);
                        write!(out, " {:>width$}", mark(c), width = cn.len())?;
                    }
                    writeln!(out)?;
                }
            }
        }
        crate::MatrixFormat::Csv => {
            write!(out, "port,from")?;
            for n in &ax.names {
                write!(out, ",{n}")?;
            }
            writeln!(out)?;
            for (pi, pp) in m.ports.iter().enumerate() {
                for (ri, rn) in ax.names.iter().enumerate() {
                    write!(out, "{pp},{rn}")?;
                    for ci in 0..ax.names.len() {
                        let c = m.cell(pi, ax.identity_row[ri], ax.identity_row[ci]);
                        write!(out, ",{}", u8::from(c == Cell::Allowed))?;
                    }
                    writeln!(out)?;
                }
            }
        }
        crate::MatrixFormat::Json => {
            let mut matrix = serde_json::Map::new();
            for (pi, pp) in m.ports.iter().enumerate() {
                let rows: Vec<Vec<bool>> = (0..ax.names.len())
                    .map(|ri| {
                        (0..ax.names.len())
                            .map(|ci| {
                                m.cell(pi, ax.identity_row[ri], ax.identity_row[ci])
                                    == Cell::Allowed
                            })
                            .collect()
                    })
                    .collect();
                matrix.insert(pp.to_string(), json!(rows));
            }
            let j = json!({
                "ports": m.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                if by_workload { "workloads" } else { "pods" }: ax.names,
                "matrix": matrix,
            });
            writeln!(out, "{j}")?;
        }
    }
    Ok(())
}
