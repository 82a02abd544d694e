//! `palisade check`: one flow from the command line, or a file of flows
//! answered as a stream.
//!
//! Exit codes: a single flow exits 0 when allowed, 1 when denied; a flow
//! file exits 0 when every line was answered (allowed or denied) and 2 when
//! some line could not be (each such line is named on stderr as
//! `FILE:LINE: message`, and every other line is still answered). Invalid
//! manifests or arguments exit 2 before anything is decided.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use palisade_engine::Engine;

use crate::output::terminal;
use crate::{input, output, progress, CheckFormat};

/// A flow line longer than this is reported and skipped, so that one
/// runaway line cannot take the memory the stream is meant to bound.
const MAX_LINE_BYTES: usize = 64 * 1024;

pub fn check(
    mut files: Vec<PathBuf>,
    flows: Option<PathBuf>,
    format: CheckFormat,
    mut flow: Vec<String>,
) -> Result<ExitCode> {
    if flows.is_none() {
        // Values after `-f` that belong to the flow, not to the paths.
        while flow.len() < 3 && files.len() > 1 {
            let Some(last) = files.pop() else { break };
            flow.insert(0, last.to_string_lossy().into_owned());
        }
        if flow.len() != 3 {
            bail!("check needs -f PATH... SRC DST PORT/PROTO, or -f PATH... --flows FILE");
        }
    } else if !flow.is_empty() {
        bail!("give either SRC DST PORT/PROTO or --flows FILE, not both");
    }
    // Open the flow file before the (slower) manifests: a wrong path is
    // reported at once.
    let flow_file = match &flows {
        Some(path) => {
            Some(std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let engine = input::engine(&files)?;
    if let (Some(path), Some(file)) = (flows, flow_file) {
        return check_stream(&engine, &path, file, format);
    }
    let [src, dst, port] = <[String; 3]>::try_from(flow)
        .map_err(|_| anyhow::anyhow!("check needs SRC DST PORT/PROTO"))?;
    let f = input::resolve_flow(&engine, &src, &dst, &port)?;
    let v = engine.verdict(&f);
    let mut out = std::io::stdout().lock();
    output::write_check(&mut out, format, &src, &dst, &f, &v, true)?;
    Ok(if v.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Answers each line as it is read: memory stays one line and one verdict
/// whatever the length of the file.
fn check_stream(
    engine: &Engine,
    path: &Path,
    file: std::fs::File,
    format: CheckFormat,
) -> Result<ExitCode> {
    let name = path.display().to_string();
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes("flows", size);
    let mut reader = BufReader::new(file);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = Vec::new();
    let (mut line_no, mut bad) = (0usize, 0usize);
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
        bar.inc(n as u64);
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            let skipped = skip_line(&mut reader).with_context(|| format!("reading {name}"))?;
            bar.inc(skipped);
            let name = terminal(&name);
            eprintln!("{name}:{line_no}: line longer than {MAX_LINE_BYTES} bytes; skipped");
            bad += 1;
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            eprintln!("{}:{line_no}: not UTF-8 text", terminal(&name));
            bad += 1;
            continue;
        };
        match answer(engine, text, format, &mut out) {
            Ok(()) => {}
            Err(LineError::Bad(msg)) => {
                // Answers printed so far come first, so that stdout and
                // stderr interleaved read in file order.
                out.flush()?;
                eprintln!("{}", terminal(&format!("{name}:{line_no}: {msg}")));
                bad += 1;
            }
            Err(LineError::Output(e)) => return Err(e),
        }
    }
    out.flush()?;
    bar.finish();
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {bad} line(s) not answered", terminal(&name));
        ExitCode::from(2)
    })
}

/// Consumes the rest of an over-long line; returns the bytes skipped.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(skipped);
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(skipped + i as u64 + 1);
        }
        let n = chunk.len();
        reader.consume(n);
        skipped += n as u64;
    }
}

enum LineError {
    /// The line is not a flow Palisade can decide; the stream goes on.
    Bad(String),
    /// Writing the answer failed; the stream stops.
    Output(anyhow::Error),
}

/// Parses, decides and prints one line (`SRC DST PORT/PROTO`, `#`
/// comments, blank lines ignored).
fn answer(
    engine: &Engine,
    raw: &str,
    format: CheckFormat,
    out: &mut impl Write,
) -> Result<(), LineError> {
    let Some((src, dst, port)) = input::flow_line(raw).map_err(LineError::Bad)? else {
        return Ok(());
    };
    let f = input::resolve_flow(engine, src, dst, port)
        .map_err(|e| LineError::Bad(format!("{e:#}")))?;
    let v = engine.verdict(&f);
    output::write_check(out, format, src, dst, &f, &v, false).map_err(LineError::Output)
}
