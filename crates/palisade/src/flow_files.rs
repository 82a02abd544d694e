//! Reading observed connections: the flow log (JSON lines of
//! `FlowRecord`), plain JSON lines and CSV with at least `src`, `dst`,
//! `port` and `protocol`. The format is told per file by its first line;
//! files are read a bounded line at a time, and every bad line is named
//! `FILE:LINE` with the field at fault.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use palisade_engine::flowlog::FlowRecord;
use palisade_engine::{Endpoint, Engine};
use palisade_model::Protocol;
use serde::Deserialize;

/// A line longer than this is a bad line (not read into memory).
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many unknown endpoints a warning names before it only counts.
pub const NAMED: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The agent's flow log: one `FlowRecord` a line, with verdicts.
    Log,
    JsonLines,
    Csv,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Log => "flow log",
            Format::JsonLines => "JSON lines",
            Format::Csv => "CSV",
        }
    }
}

/// One observed connection attempt as a file states it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub src: String,
    pub dst: String,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    /// `ns/name[Kind]` of the endpoint's workload, as the flow log names it.
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    /// The whole record, for a flow log.
    pub record: Option<FlowRecord>,
}

/// The keys a plain JSON line needs; others are ignored.
#[derive(Deserialize)]
struct Plain {
    src: String,
    dst: String,
    port: u16,
    protocol: String,
}

/// Column positions of a CSV header.
struct Columns {
    src: usize,
    dst: usize,
    port: usize,
    protocol: usize,
    width: usize,
}

const NEITHER: &str = "neither a flow log nor JSON lines (an object a line with src, dst, port and protocol) nor CSV with a header naming src, dst, port and protocol";

/// serde_json's message without its "at line 1 column 9": the position in
/// the one-line document says nothing the FILE:LINE does not.
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("port: {text:?} is not a port (1-65535)"))
}

fn protocol(text: &str) -> Result<Protocol, String> {
    text.trim()
        .parse::<Protocol>()
        .map_err(|e| format!("protocol: {e}"))
}

fn parse_log(line: &str) -> Result<Entry, String> {
    let r: FlowRecord = serde_json::from_str(line).map_err(|e| json_message(&e))?;
    if r.port == 0 {
        return Err("port: 0 is not a port (1-65535)".into());
    }
    Ok(Entry {
        src: r.src.clone(),
        dst: r.dst.clone(),
        src_ip: r.src_ip,
        dst_ip: r.dst_ip,
        src_workload: r.src_workload.clone(),
        dst_workload: r.dst_workload.clone(),
        protocol: r.protocol,
        port: r.port,
        record: Some(r),
    })
}

fn parse_plain(line: &str) -> Result<Entry, String> {
    let p: Plain = serde_json::from_str(line).map_err(|e| json_message(&e))?;
    if p.port == 0 {
        return Err("port: 0 is not a port (1-65535)".into());
    }
    Ok(Entry {
        src: p.src,
        dst: p.dst,
        src_ip: None,
        dst_ip: None,
        src_workload: None,
        dst_workload: None,
        protocol: protocol(&p.protocol)?,
        port: p.port,
        record: None,
    })
}

fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    match r.records().next() {
        Some(Ok(rec)) => Ok(rec.iter().map(|f| f.trim().to_string()).collect()),
        Some(Err(e)) => Err(format!("not CSV: {e}")),
        None => Ok(Vec::new()),
    }
}

fn columns(header: &[String]) -> Option<Columns> {
    let at = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    Some(Columns {
        src: at("src")?,
        dst: at("dst")?,
        port: at("port")?,
        protocol: at("protocol")?,
        width: header.len(),
    })
}

fn parse_csv(cols: &Columns, line: &str) -> Result<Entry, String> {
    let f = csv_fields(line)?;
    if f.len() != cols.width {
        return Err(format!(
            "{} fields where the header has {}",
            f.len(),
            cols.width
        ));
    }
    let (src, dst) = (f[cols.src].clone(), f[cols.dst].clone());
    for (name, v) in [("src", &src), ("dst", &dst)] {
        if v.is_empty() {
            return Err(format!("{name}: empty"));
        }
    }
    Ok(Entry {
        src,
        dst,
        src_ip: None,
        dst_ip: None,
        src_workload: None,
        dst_workload: None,
        protocol: protocol(&f[cols.protocol])?,
        port: port(&f[cols.port])?,
        record: None,
    })
}

/// Tells the format from a file's first non-blank line.
fn detect(line: &str) -> Option<(Format, Option<Columns>)> {
    let t = line.trim();
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let log = v.get("verdict").is_some() && v.get("direction").is_some();
        return Some((if log { Format::Log } else { Format::JsonLines }, None));
    }
    let cols = columns(&csv_fields(t).ok()?)?;
    Some((Format::Csv, Some(cols)))
}

/// Reads one file, calling `each` with every entry. Bad lines are printed
/// (`FILE:LINE: field: message`) and counted; the count is returned with
/// the format, so that a caller decides nothing from a partial file.
pub fn read(path: &Path, mut each: impl FnMut(Entry)) -> Result<(Format, usize)> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("reading {name}"))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let (mut line_no, mut bad) = (0usize, 0usize);
    let mut format: Option<(Format, Option<Columns>)> = None;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {name}"))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            skip_line(&mut reader).with_context(|| format!("reading {name}"))?;
            eprintln!("{name}:{line_no}: line longer than {MAX_LINE_BYTES} bytes");
            bad += 1;
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            eprintln!("{name}:{line_no}: not UTF-8 text");
            bad += 1;
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if format.is_none() {
            let Some(f) = detect(text) else {
                bail!("{name}:{line_no}: {NEITHER}");
            };
            let header = f.0 == Format::Csv;
            format = Some(f);
            // A CSV header is no record; a JSON first line is one.
            if header {
                continue;
            }
        }
        parse_one(&format, text, &name, line_no, &mut bad, &mut each);
    }
    match format {
        Some((f, _)) => Ok((f, bad)),
        None => bail!("{name}: empty: {NEITHER}"),
    }
}

fn parse_one(
    format: &Option<(Format, Option<Columns>)>,
    text: &str,
    name: &str,
    line_no: usize,
    bad: &mut usize,
    each: &mut impl FnMut(Entry),
) {
    let parsed = match format {
        Some((Format::Log, _)) => parse_log(text),
        Some((Format::JsonLines, _)) => parse_plain(text),
        Some((Format::Csv, Some(cols))) => parse_csv(cols, text),
        _ => return,
    };
    match parsed {
        Ok(e) => each(e),
        Err(msg) => {
            eprintln!("{name}:{line_no}: {msg}");
            *bad += 1;
        }
    }
}

/// Consumes the rest of an over-long line.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// Endpoints a file names that the cluster does not have: counted, the
/// first few named.
#[derive(Default)]
pub struct Unknown {
    pub count: usize,
    pub named: Vec<String>,
    /// Some endpoint is not among `named`.
    more: bool,
}

impl Unknown {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.named.contains(&what) {
            return;
        }
        if self.named.len() < NAMED {
            self.named.push(what);
        } else {
            self.more = true;
        }
    }

    /// `3 records name endpoints the cluster does not have (a, b, c); they are left out`.
    pub fn warn(&self, whose: &str) {
        if self.count == 0 {
            return;
        }
        eprintln!(
            "warning: {} record{} name{} endpoints {whose} does not have ({}{}); left out",
            self.count,
            if self.count == 1 { "" } else { "s" },
            if self.count == 1 { "s" } else { "" },
            self.named.join("; "),
            if self.more { "; ..." } else { "" }
        );
    }
}

/// Control characters of a name read from a file, escaped, so that a
/// message quoting it cannot drive the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

/// An endpoint by name through the engine. A pod the cluster does not
/// have falls back to the address the record gives, where a pod of the
/// cluster holds it (the pod recreated under another name), then to the
/// workload the record names, where the cluster has its template (a
/// cluster read from the manifests a log's pods were made from).
fn endpoint(
    engine: &Engine,
    name: &str,
    ip: Option<IpAddr>,
    workload: Option<&str>,
) -> Result<Endpoint, String> {
    let err = match engine.endpoint(name) {
        Ok(e) => return Ok(e),
        Err(e) => e,
    };
    if let Some(found @ Endpoint::Pod(_)) = ip.map(|ip| engine.endpoint_for_ip(ip)) {
        return Ok(found);
    }
    if let Some(Ok(found)) = workload.map(|w| engine.endpoint(w)) {
        return Ok(found);
    }
    Err(printable(&format!("{name}: {err}")))
}

/// The entry's two endpoints, or why they cannot be (recorded in
/// `unknown`): an endpoint the cluster does not have, or no address family
/// in common.
pub fn resolve(engine: &Engine, e: &Entry, unknown: &mut Unknown) -> Option<(Endpoint, Endpoint)> {
    let pair = endpoint(engine, &e.src, e.src_ip, e.src_workload.as_deref()).and_then(|s| {
        let d = endpoint(engine, &e.dst, e.dst_ip, e.dst_workload.as_deref())?;
        flow(engine, e, s, d)
            .map(|_| (s, d))
            .map_err(|err| printable(&err.to_string()))
    });
    match pair {
        Ok(p) => Some(p),
        Err(what) => {
            unknown.add(what);
            None
        }
    }
}

/// The connection an entry records, on `engine`: at the recorded addresses
/// where they still belong to the resolved endpoints (which fixes the
/// address family), else between the endpoints in the family the engine
/// picks.
pub fn flow(
    engine: &Engine,
    e: &Entry,
    src: Endpoint,
    dst: Endpoint,
) -> Result<palisade_engine::Flow, palisade_engine::Error> {
    if let (Some(s), Some(d)) = (e.src_ip, e.dst_ip) {
        if engine.endpoint_for_ip(s) == src && engine.endpoint_for_ip(d) == dst {
            return engine.flow_between(&s.to_string(), &d.to_string(), e.protocol, e.port);
        }
    }
    engine.flow(src, dst, e.protocol, e.port)
}
