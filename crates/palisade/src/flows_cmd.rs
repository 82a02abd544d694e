//! `palisade flows --agent URL`: a running agent's flow log, read from its
//! `GET /flows`, as one line per record (`-o table`) or the records
//! themselves (`-o json`, JSON lines as the agent writes them).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use palisade_engine::flowlog::{FlowRecord, FlowVerdict};

#[derive(Args)]
pub struct FlowsArgs {
    /// The agent's HTTP address (`--listen` of `palisade agent`).
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    agent: String,
    /// Keep reading: print each new record as the agent makes it.
    #[arg(long)]
    follow: bool,
    /// Only records of this verdict.
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
    /// Only records at or after this time (RFC 3339) or this long ago (5m).
    #[arg(long)]
    since: Option<String>,
    /// Only records the staged policies would change.
    #[arg(long)]
    staged: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: FlowsFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerdictArg {
    Allowed,
    Denied,
}

#[derive(Clone, Copy, ValueEnum)]
enum FlowsFormat {
    Table,
    Json,
}

pub fn run(a: FlowsArgs) -> Result<ExitCode> {
    let host = a
        .agent
        .strip_prefix("http://")
        .unwrap_or(&a.agent)
        .trim_end_matches('/');
    if host.contains('/') || a.agent.starts_with("https://") {
        bail!("--agent {}: an http://HOST:PORT address", a.agent);
    }
    let mut query = Vec::new();
    if let Some(v) = a.verdict {
        let v = match v {
            VerdictArg::Allowed => FlowVerdict::Allowed,
            VerdictArg::Denied => FlowVerdict::Denied,
        };
        query.push(format!("verdict={}", v.as_str()));
    }
    if let Some(s) = &a.since {
        query.push(format!(
            "since={}",
            form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        ));
    }
    if a.staged {
        query.push("staged=1".into());
    }
    if a.follow {
        query.push("follow=1".into());
    }
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("--agent {}", a.agent))?
        .next()
        .with_context(|| format!("--agent {}: no address", a.agent))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot reach the agent at {addr}"))?;
    let mut w = stream.try_clone()?;
    write!(
        w,
        "GET /flows?{} HTTP/1.0\r\nHost: {host}\r\n\r\n",
        query.join("&")
    )?;
    let mut r = BufReader::new(stream);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Headers end at the first empty line.
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    if code != 200 {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut body);
        bail!("the agent answered {code}: {}", body.trim());
    }
    let mut out = std::io::stdout().lock();
    if let FlowsFormat::Table = a.output {
        writeln!(
            out,
            "TIME                     NODE  DIRECTION  SRC -> DST  PROTO/PORT  VERDICT  POLICY  RULE  REASON"
        )?;
    }
    for line in r.lines() {
        let line = line?;
        // Followers get an empty line while nothing happens.
        if line.trim().is_empty() {
            continue;
        }
        match a.output {
            FlowsFormat::Json => writeln!(out, "{line}")?,
            FlowsFormat::Table => {
                let rec: FlowRecord = serde_json::from_str(&line)
                    .with_context(|| format!("the agent sent a record that is not one: {line}"))?;
                // Names and reasons come from objects; the terminal gets
                // them escaped.
                writeln!(out, "{}", crate::output::terminal(&table_line(&rec)))?;
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn table_line(r: &FlowRecord) -> String {
    let mut verdict = r.verdict.as_str().to_string();
    if let Some(s) = r.staged {
        verdict.push_str(" (staged: ");
        verdict.push_str(s.as_str());
        if let Some(p) = &r.staged_policy {
            verdict.push_str(" by ");
            verdict.push_str(p);
        }
        verdict.push(')');
    }
    let mut s = format!(
        "{}  {}  {}  {} -> {}  {}/{}  {}  {}  {}  {}",
        r.time,
        r.node,
        r.direction.as_str(),
        r.src,
        r.dst,
        r.protocol.as_str(),
        r.port,
        verdict,
        r.policy.as_deref().unwrap_or("-"),
        r.rule.map_or("-".to_string(), |i| i.to_string()),
        r.reason
    );
    if r.lost > 0 {
        s.push_str(&format!("  [{} reports lost before this one]", r.lost));
    }
    s
}
