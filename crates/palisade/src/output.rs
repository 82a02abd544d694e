//! Output formats. The JSON Lines form of `check --flows -o json` is one
//! object a line: `{"src","dst","port","protocol","allowed","reasons"}`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

use anyhow::Result;
use palisade_engine::matrix::Cell;
use palisade_engine::{Engine, Flow, IdentityId, MatrixRows, PodId, Verdict};
use serde_json::json;

use crate::CheckFormat;

/// Text that came from the input (names, file names, messages quoting
/// them) as a terminal line shows it: control characters (newlines,
/// escape sequences, C1 controls) and bidirectional overrides written as
/// escapes (`\n`, `\u{1b}`), so that no input can forge a line of output
/// or restyle the terminal. Every line of terminal text goes through here;
/// JSON is escaped by serde instead.
pub fn terminal(s: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

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
                writeln!(out, "  {}", terminal(r))?;
            }
        }
        CheckFormat::Text => {
            let line = format!(
                "{src} {dst} {}/{} {word}: {}",
                flow.port,
                flow.protocol,
                v.reasons.join("; ")
            );
            writeln!(out, "{}", terminal(&line))?;
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
