//! `palisade replay --flows FILE... -f CANDIDATE...`: what a candidate
//! set of manifests would have done to recorded traffic. Records reduce to
//! connections (source, destination, protocol, port): denied if a record
//! of it was denied, else allowed. Every connection whose verdict under
//! the candidate (`Engine::allowed`) differs is printed, grouped and
//! formatted as `diff` does, with the number of records behind it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use palisade_engine::diff::PortRange;
use palisade_engine::flowlog::FlowVerdict;
use palisade_model::Protocol;
use serde::Serialize;

use crate::diff_cmd::{cell, verdict, DiffFormat};
use crate::flow_files::{self, Entry, Format};
use crate::input;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Flow logs, as the agent writes them (a file without verdicts is
    /// an error).
    #[arg(long, required = true, num_args = 1..)]
    flows: Vec<PathBuf>,
    /// CANDIDATE: manifest files or directories of the version to replay.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: DiffFormat,
    /// Exit 1 when some connection would change, 0 when none would.
    #[arg(long)]
    exit_code: bool,
}

/// A recorded connection: what its records say.
#[derive(Default)]
struct Conn {
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    src_workload: Option<String>,
    dst_workload: Option<String>,
    records: usize,
    denied: bool,
    /// Policies of the allowing and the denying records.
    allowed_by: Vec<String>,
    denied_by: Vec<String>,
}

type Key = (String, String, Protocol, u16);

/// Connections whose verdict would change: between two endpoints, on a
/// range of ports of one protocol.
#[derive(Serialize)]
struct Change {
    src: String,
    dst: String,
    protocol: &'static str,
    #[serde(serialize_with = "as_text")]
    ports: PortRange,
    before: &'static str,
    after: &'static str,
    policies: Vec<String>,
    records: usize,
}

fn as_text<S: serde::Serializer>(r: &PortRange, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(r)
}

impl Change {
    /// Whether `next` (sorted after this one) continues it: the same
    /// endpoints, protocol, verdicts and policies, on the next port.
    fn extends(&self, next: &Change) -> bool {
        (
            &self.src,
            &self.dst,
            self.protocol,
            self.before,
            self.after,
            &self.policies,
        ) == (
            &next.src,
            &next.dst,
            next.protocol,
            next.before,
            next.after,
            &next.policies,
        ) && u32::from(self.ports.end) + 1 == u32::from(next.ports.start)
    }
}

fn push(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

fn add(conns: &mut BTreeMap<Key, Conn>, e: Entry) {
    let Some(r) = e.record else { return };
    let c = conns.entry((e.src, e.dst, e.protocol, e.port)).or_default();
    c.records += 1;
    c.src_ip = c.src_ip.or(e.src_ip);
    c.dst_ip = c.dst_ip.or(e.dst_ip);
    c.src_workload = c.src_workload.take().or(e.src_workload);
    c.dst_workload = c.dst_workload.take().or(e.dst_workload);
    let policy = r.policy.map(|p| flow_files::printable(&p));
    match (r.verdict, policy) {
        (FlowVerdict::Denied, p) => {
            c.denied = true;
            push(&mut c.denied_by, p.unwrap_or_else(|| "default deny".into()));
        }
        (FlowVerdict::Allowed, Some(p)) => push(&mut c.allowed_by, p),
        (FlowVerdict::Allowed, None) => {}
    }
}

/// The recorded connections on the candidate, keyed by the candidate's own
/// names (a pod recorded once by name and once by address is one
/// endpoint), with the flow each stands for; the others are counted in
/// `unknown`, per record.
fn resolve(
    engine: &palisade_engine::Engine,
    conns: BTreeMap<Key, Conn>,
    unknown: &mut flow_files::Unknown,
) -> BTreeMap<Key, (Conn, palisade_engine::Flow)> {
    let mut out: BTreeMap<Key, (Conn, palisade_engine::Flow)> = BTreeMap::new();
    for ((src, dst, protocol, port), c) in conns {
        let entry = Entry {
            src,
            dst,
            src_ip: c.src_ip,
            dst_ip: c.dst_ip,
            src_workload: c.src_workload.clone(),
            dst_workload: c.dst_workload.clone(),
            protocol,
            port,
            record: None,
        };
        let resolved = flow_files::resolve(engine, &entry, unknown)
            .and_then(|(s, d)| Some((s, d, flow_files::flow(engine, &entry, s, d).ok()?)));
        let Some((s, d, f)) = resolved else {
            unknown.count += c.records - 1;
            continue;
        };
        let key = (
            engine.who(s).to_string(),
            engine.who(d).to_string(),
            protocol,
            port,
        );
        match out.get_mut(&key) {
            None => {
                out.insert(key, (c, f));
            }
            Some((m, _)) => {
                m.records += c.records;
                m.denied |= c.denied;
                for p in c.allowed_by {
                    push(&mut m.allowed_by, p);
                }
                for p in c.denied_by {
                    push(&mut m.denied_by, p);
                }
            }
        }
    }
    out
}

pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let mut conns: BTreeMap<Key, Conn> = BTreeMap::new();
    let mut bad = 0;
    for path in &args.flows {
        let (format, b) = flow_files::read(path, |e| add(&mut conns, e))?;
        if format != Format::Log {
            bail!(
                "{}: a {} file has no recorded verdicts; replay needs a flow log",
                path.display(),
                format.as_str()
            );
        }
        bad += b;
    }
    if bad > 0 {
        bail!("{bad} bad line(s) in the flow files; nothing was replayed");
    }
    // Staged policies of the candidate count as enforced: replay answers
    // what promoting them would do.
    let engine = palisade_engine::Engine::with_staged(input::cluster(&args.files)?);
    let mut unknown = flow_files::Unknown::default();
    let mut changes: Vec<Change> = Vec::new();
    for ((src, dst, protocol, port), (c, f)) in resolve(&engine, conns, &mut unknown) {
        let after = engine.allowed(&f);
        // Unchanged: allowed now as it was, or denied now as it was.
        if after != c.denied {
            continue;
        }
        let mut policies = if c.denied { c.denied_by } else { c.allowed_by };
        for p in engine.deciding_policies(&f) {
            push(&mut policies, p);
        }
        let change = Change {
            src,
            dst,
            protocol: protocol.as_str(),
            ports: PortRange {
                start: port,
                end: port,
            },
            before: verdict(!c.denied),
            after: verdict(after),
            policies,
            records: c.records,
        };
        // Adjacent ports that changed alike are one range, as in `diff`.
        match changes.last_mut() {
            Some(last) if last.extends(&change) => {
                last.ports.end = port;
                last.records += change.records;
            }
            _ => changes.push(change),
        }
    }
    unknown.warn("the candidate");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let summary = Summary::of(&changes, unknown.count);
    match args.output {
        DiffFormat::Text => write_text(&mut out, &changes)?,
        DiffFormat::Json => write_json(&mut out, &changes, &summary)?,
        DiffFormat::Md => write_md(&mut out, &changes, &summary)?,
        DiffFormat::Csv => write_csv(&mut out, &changes)?,
    }
    out.flush()?;
    Ok(if args.exit_code && !changes.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Serialize)]
struct Summary {
    changed: usize,
    allowed: usize,
    denied: usize,
    /// Records behind the changed connections.
    records: usize,
    /// Records naming endpoints the candidate does not have.
    unknown: usize,
}

impl Summary {
    fn of(changes: &[Change], unknown: usize) -> Summary {
        let allowed = changes.iter().filter(|c| c.after == "allowed").count();
        Summary {
            changed: changes.len(),
            allowed,
            denied: changes.len() - allowed,
            records: changes.iter().map(|c| c.records).sum(),
            unknown,
        }
    }

    /// `2 connections would change: 1 allowed, 1 denied (5 records)`.
    fn line(&self) -> String {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        format!(
            "{} connection{} would change: {} allowed, {} denied ({} record{})",
            self.changed,
            s(self.changed),
            self.allowed,
            self.denied,
            self.records,
            s(self.records)
        )
    }
}

fn records(n: usize) -> String {
    format!("{n} record{}", if n == 1 { "" } else { "s" })
}

/// `shop/web => shop/db : TCP 5432 allowed -> denied (shop/db-allow, default deny (isolated by shop/db)) [3 records]`.
fn write_text(out: &mut impl Write, changes: &[Change]) -> Result<()> {
    if changes.is_empty() {
        writeln!(out, "no recorded connection would change")?;
    }
    for c in changes {
        write!(
            out,
            "{} => {} : {} {} {} -> {}",
            c.src, c.dst, c.protocol, c.ports, c.before, c.after
        )?;
        if !c.policies.is_empty() {
            write!(out, " ({})", c.policies.join(", "))?;
        }
        writeln!(out, " [{}]", records(c.records))?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, changes: &[Change], summary: &Summary) -> Result<()> {
    write!(out, "{{\"changes\":[")?;
    for (i, c) in changes.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, c)?;
    }
    if !changes.is_empty() {
        writeln!(out)?;
    }
    write!(out, "],\"summary\":")?;
    serde_json::to_writer(&mut *out, summary)?;
    writeln!(out, "}}")?;
    Ok(())
}

fn write_md(out: &mut impl Write, changes: &[Change], summary: &Summary) -> Result<()> {
    writeln!(out, "{}", summary.line())?;
    if changes.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "| source | destination | protocol | ports | before | after | policies | records |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for c in changes {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.src),
            cell(&c.dst),
            c.protocol,
            c.ports,
            c.before,
            c.after,
            cell(&c.policies.join(", ")),
            c.records
        )?;
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, changes: &[Change]) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "src", "dst", "protocol", "ports", "before", "after", "policies", "records",
    ])?;
    for c in changes {
        w.write_record([
            c.src.as_str(),
            &c.dst,
            c.protocol,
            &c.ports.to_string(),
            c.before,
            c.after,
            &c.policies.join("; "),
            &c.records.to_string(),
        ])?;
    }
    w.flush()?;
    Ok(())
}
