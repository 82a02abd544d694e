//! `palisade diff -f BASE... --to HEAD...`: what a change to the manifests
//! does to connectivity, as text, JSON, a pull-request comment (Markdown)
//! or CSV. The engine computes the change; this file loads and prints.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use palisade_engine::diff::{self, Change, ChangeKind, Diff, DiffEndpoint, Summary};
use serde::Serialize;

use crate::input;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    Md,
    Csv,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// BASE: manifest files or directories of the version before.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    base: Vec<PathBuf>,
    /// HEAD: manifest files or directories of the version after.
    #[arg(long = "to", required = true, num_args = 1..)]
    head: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: DiffFormat,
    /// Exit 1 when some connection changed, 0 when none did (as `git diff
    /// --exit-code`); without it, 0 either way.
    #[arg(long)]
    exit_code: bool,
}

pub fn diff(args: DiffArgs) -> Result<ExitCode> {
    // The two versions are independent until compared: load them side by side.
    let (base, head) = std::thread::scope(|s| {
        let base = s.spawn(|| input::engine(&args.base).context("BASE (-f)"));
        let head = input::engine(&args.head).context("HEAD (--to)");
        (base.join(), head)
    });
    let base = base.map_err(|_| anyhow::anyhow!("loading BASE failed"))??;
    let head = head?;
    let d = diff::diff(&base, &head);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.output {
        DiffFormat::Text => write_text(&mut out, &d)?,
        DiffFormat::Json => write_json(&mut out, &d)?,
        DiffFormat::Md => write_md(&mut out, &d)?,
        DiffFormat::Csv => write_csv(&mut out, &d)?,
    }
    out.flush()?;
    Ok(if args.exit_code && !d.changes.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

/// Which endpoints of a change are present in one version only.
fn marker(d: &Diff, c: &Change) -> Option<String> {
    let one = |i: u32| {
        matches!(
            d.endpoints[i as usize],
            DiffEndpoint::Pod { base: None, .. } | DiffEndpoint::Pod { head: None, .. }
        )
    };
    let what = c.kind.as_str();
    match (one(c.src), one(c.dst)) {
        _ if c.kind == ChangeKind::Changed => None,
        (true, true) => Some(format!("src and dst {what}")),
        (true, false) => Some(format!("src {what}")),
        _ => Some(format!("dst {what}")),
    }
}

/// `shop/web => shop/db : TCP 5432 denied -> allowed (default/db-allow)`.
fn write_text(out: &mut impl Write, d: &Diff) -> Result<()> {
    if d.changes.is_empty() {
        writeln!(out, "no connection changed")?;
    }
    for c in &d.changes {
        write!(
            out,
            "{} => {} : {} {} {} -> {}",
            d.name(c.src),
            d.name(c.dst),
            c.protocol,
            c.ports,
            verdict(c.before),
            verdict(c.after)
        )?;
        let p = d.policies_of(c);
        if !p.is_empty() {
            write!(out, " ({})", p.join(", "))?;
        }
        if let Some(m) = marker(d, c) {
            write!(out, " [{m}]")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonChange<'a> {
    src: &'a str,
    dst: &'a str,
    protocol: &'a str,
    ports: String,
    before: &'static str,
    after: &'static str,
    change: &'static str,
    policies: &'a [String],
}

#[derive(Serialize)]
struct JsonSummary {
    changed: usize,
    allowed: usize,
    denied: usize,
    added: usize,
    removed: usize,
}

impl From<Summary> for JsonSummary {
    fn from(s: Summary) -> JsonSummary {
        JsonSummary {
            changed: s.changed,
            allowed: s.allowed,
            denied: s.denied,
            added: s.added,
            removed: s.removed,
        }
    }
}

fn json_change<'a>(d: &'a Diff, c: &'a Change) -> JsonChange<'a> {
    JsonChange {
        src: d.name(c.src),
        dst: d.name(c.dst),
        protocol: c.protocol.as_str(),
        ports: c.ports.to_string(),
        before: verdict(c.before),
        after: verdict(c.after),
        change: c.kind.as_str(),
        policies: d.policies_of(c),
    }
}

/// `{"changes":[...],"summary":{...}}`, one change a line, written as it
/// goes rather than built whole.
fn write_json(out: &mut impl Write, d: &Diff) -> Result<()> {
    write!(out, "{{\"changes\":[")?;
    for (i, c) in d.changes.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, &json_change(d, c))?;
    }
    if !d.changes.is_empty() {
        writeln!(out)?;
    }
    write!(out, "],\"summary\":")?;
    serde_json::to_writer(&mut *out, &JsonSummary::from(d.summary()))?;
    writeln!(out, "}}")?;
    Ok(())
}

/// `3 connections changed: 2 allowed, 1 denied`.
fn summary_line(s: &Summary) -> String {
    let mut line = format!(
        "{} connection{} changed: {} allowed, {} denied",
        s.changed,
        if s.changed == 1 { "" } else { "s" },
        s.allowed,
        s.denied
    );
    if s.added + s.removed > 0 {
        line.push_str(&format!(
            " ({} with added endpoints, {} with removed ones)",
            s.added, s.removed
        ));
    }
    line
}

/// Table cells hold names, port ranges and policy names; a `|` in one
/// would end the cell.
pub(crate) fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A pull-request comment: the summary line, then one table row a change.
fn write_md(out: &mut impl Write, d: &Diff) -> Result<()> {
    writeln!(out, "{}", summary_line(&d.summary()))?;
    if d.changes.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "| source | destination | protocol | ports | before | after | policies |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for c in &d.changes {
        let mut policies = d.policies_of(c).join(", ");
        if let Some(m) = marker(d, c) {
            policies = if policies.is_empty() {
                format!("({m})")
            } else {
                format!("{policies} ({m})")
            };
        }
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(d.name(c.src)),
            cell(d.name(c.dst)),
            c.protocol,
            c.ports,
            verdict(c.before),
            verdict(c.after),
            cell(&policies)
        )?;
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, d: &Diff) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "src", "dst", "protocol", "ports", "before", "after", "change", "policies",
    ])?;
    for c in &d.changes {
        let ports = c.ports.to_string();
        let policies = d.policies_of(c).join("; ");
        w.write_record([
            d.name(c.src),
            d.name(c.dst),
            c.protocol.as_str(),
            &ports,
            verdict(c.before),
            verdict(c.after),
            c.kind.as_str(),
            &policies,
        ])?;
    }
    w.flush()?;
    Ok(())
}
