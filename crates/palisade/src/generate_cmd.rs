//! `palisade generate --flows FILE... -f CLUSTER...`: least-privilege
//! NetworkPolicies from observed connections, checked by the engine before
//! they are printed. The engine generates and checks; this file reads the
//! files, reports and writes the manifests.
//!
//! Exit codes: 0 written; 2 on bad input (a bad flow line, an invalid
//! manifest) or when the check fails, and then nothing is written.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use palisade_engine::generate::{self, Observed};
use palisade_model::Labels;

use crate::{flow_files, input};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateFormat {
    Yaml,
    Json,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Observed connections: flow logs, JSON lines or CSV (src, dst, port,
    /// protocol), told apart by content.
    #[arg(long, required = true, num_args = 1..)]
    flows: Vec<PathBuf>,
    /// The cluster: manifest files or directories (its NetworkPolicies are
    /// replaced by the generated ones).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    output: GenerateFormat,
    /// Write the manifests to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the policies staged (annotation `palisade.dev/staged: "true"`):
    /// evaluated on every connection, enforced on none, until promoted.
    #[arg(long)]
    staged: bool,
}

/// How many failures of the check are printed before the rest are counted.
const SHOWN: usize = 20;

pub fn generate(args: GenerateArgs) -> Result<ExitCode> {
    for f in &args.flows {
        std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?;
    }
    let engine = input::engine(&args.files)?;
    let existing = engine.cluster().policies.len();
    if existing > 0 {
        let (n, verb) = if existing == 1 {
            ("NetworkPolicy", "is")
        } else {
            ("NetworkPolicies", "are")
        };
        eprintln!(
            "note: the cluster's {existing} {n} {verb} not part of the result: the check runs with the generated set in {} place (admin policies kept)",
            if existing == 1 { "its" } else { "their" }
        );
    }
    let mut observed: BTreeSet<Observed> = BTreeSet::new();
    let mut unknown = flow_files::Unknown::default();
    let mut bad = 0;
    for path in &args.flows {
        let (_, b) = flow_files::read(path, |e| {
            if let Some((src, dst)) = flow_files::resolve(&engine, &e, &mut unknown) {
                observed.insert(Observed {
                    src,
                    dst,
                    protocol: e.protocol,
                    port: e.port,
                });
            }
        })?;
        bad += b;
    }
    if bad > 0 {
        anyhow::bail!("{bad} bad line(s) in the flow files; nothing was generated");
    }
    unknown.warn("the cluster");
    let observed: Vec<Observed> = observed.into_iter().collect();
    let g = generate::generate(&engine, &observed);
    for w in &g.warnings {
        eprintln!("warning: {w}");
    }
    let checked = generate::with_generated(&engine, &g);
    let c = generate::check(&checked, &g, &observed);
    eprintln!("{}", c.summary());
    for w in &c.widened {
        eprintln!("  widened: {w}");
    }
    if !c.passed() {
        let all: Vec<&String> = c.not_allowed.iter().chain(&c.beyond).collect();
        for line in all.iter().take(SHOWN) {
            eprintln!("  {line}");
        }
        if all.len() > SHOWN {
            eprintln!("  ... and {} more", all.len() - SHOWN);
        }
        eprintln!("nothing was written");
        return Ok(ExitCode::from(2));
    }
    let labels: Labels = [(
        "app.kubernetes.io/managed-by".to_string(),
        "palisade".to_string(),
    )]
    .into();
    // Staged only in the output: the check above ran them enforced.
    let objects: Vec<_> = g
        .policies
        .into_iter()
        .map(|mut p| {
            p.staged = args.staged;
            palisade_k8s::encode::network_policy(&p, &labels)
        })
        .collect();
    let text = match args.output {
        GenerateFormat::Yaml => {
            let mut s = String::new();
            for o in &objects {
                s.push_str("---\n");
                s.push_str(&serde_norway::to_string(o)?);
            }
            s
        }
        GenerateFormat::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": serde_json::to_value(&objects)?,
            });
            let mut s = serde_json::to_string_pretty(&list)?;
            s.push('\n');
            s
        }
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
