//! The `palisade` binary: commands, output formats and exit codes
//! (0 ok / 1 denied or findings / 2 error). All semantics live in the
//! library crates; this file only reads files and prints.

mod agent_cmd;
mod dataplane;
mod doctor;
mod input;
mod lint_cmd;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use palisade_engine::PortProto;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Microsegmentation engine: decides, explains and enforces Kubernetes network policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MatrixFormat {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum By {
    Pod,
    Workload,
}

#[derive(Subcommand)]
enum Command {
    /// Decide one flow (SRC DST PORT/PROTO) or every flow of a file (--flows).
    ///
    /// SRC and DST are namespace/pod or an IP address; PROTO is TCP, UDP or
    /// SCTP (default TCP). Exit 0 when allowed, 1 when denied, 2 on error.
    Check {
        /// Manifest files or directories (recursive: *.yaml, *.yml, *.json).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// A file of flows, one `SRC DST PORT/PROTO` a line (# comments).
        #[arg(long)]
        flows: Option<PathBuf>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: CheckFormat,
        /// SRC DST PORT/PROTO. `-f` takes several paths, so the last three
        /// values after it are the flow, as in `check -f a.yaml b/ SRC DST PORT`.
        #[arg(value_name = "SRC DST PORT/PROTO", num_args = 0..=3)]
        flow: Vec<String>,
    },
    /// Decode and validate manifests; print every diagnostic. Exit 2 if invalid.
    Validate {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Print the reachability matrix (rows sources, columns destinations).
    Matrix {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Ports to probe, e.g. 80/TCP,53/UDP (default: the pods' container ports).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<PortProto>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: MatrixFormat,
        /// `workload` groups pods that no policy can tell apart.
        #[arg(long, value_enum, default_value = "pod")]
        by: By,
    },
    /// Find policies that are valid but probably wrong: selectors that
    /// match nothing, shadowed rules, allow-all peers on sensitive ports,
    /// blocked DNS, ineffective admin rules (docs/lint.md). Exit 1 when a
    /// finding reaches --fail-on, 2 on input errors.
    Lint(lint_cmd::LintArgs),
    /// Measure engine throughput on a synthetic cluster; prints ratios
    /// against baselines measured in the same run.
    Bench {
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        #[arg(long, default_value_t = 1_000)]
        policies: usize,
        /// Fewer iterations, for a smoke run.
        #[arg(long)]
        quick: bool,
    },
    /// Compile the nftables ruleset of one node (default: every pod).
    Compile {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long)]
        node: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "nft")]
        output: dataplane::RulesetFormat,
        #[command(flatten)]
        wiring: dataplane::WiringArgs,
    },
    /// Replace table inet palisade in the kernel in one nft transaction.
    Apply {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long)]
        node: Option<String>,
        /// Print the transaction instead of running it.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wiring: dataplane::WiringArgs,
    },
    /// Check what enforcement on this node relies on: nft and the kernel
    /// features the tables use, how pods are wired, br_netfilter, other
    /// tables on the same hooks (root). Exit 1 when enforcement would not
    /// work.
    Doctor(doctor::DoctorArgs),
    /// Run the node agent: watch a datastore, keep the node's nftables
    /// table in sync with minimal transactions (or `agent bench`).
    Agent(agent_cmd::AgentArgs),
    /// Write validated manifests to, or read them from, etcd.
    Datastore {
        #[command(subcommand)]
        command: agent_cmd::DatastoreCommand,
    },
    /// A network-namespace lab that enforces the compiled rulesets (root).
    Lab {
        #[command(subcommand)]
        command: dataplane::LabCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => {
            let loaded = input::load(&files)?;
            let errors = input::report(&loaded.diagnostics);
            if errors > 0 {
                eprintln!("{errors} error(s)");
                return Ok(ExitCode::from(2));
            }
            let c = &loaded.cluster;
            println!(
                "valid: {} namespaces, {} pods, {} nodes, {} network policies, {} admin policies",
                c.namespaces.len(),
                c.pods.len(),
                c.nodes.len(),
                c.policies.len(),
                c.admin_policies.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            mut files,
            flows,
            output,
            flow,
        } => {
            let mut flow = flow;
            if flows.is_none() {
                // Values after `-f` that belong to the flow, not to the paths.
                while flow.len() < 3 && files.len() > 1 {
                    let last = files.pop().expect("checked non-empty");
                    flow.insert(0, last.to_string_lossy().into_owned());
                }
                if flow.len() != 3 {
                    bail!("check needs -f PATH... SRC DST PORT/PROTO, or -f PATH... --flows FILE");
                }
            } else if !flow.is_empty() {
                bail!("give either SRC DST PORT/PROTO or --flows FILE, not both");
            }
            let engine = input::engine(&files)?;
            if let Some(path) = flows {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let lines = input::parse_flow_lines(&path.display().to_string(), &text)?;
                // Resolve every line before printing any: a bad line is an
                // error for the whole file, not a partial answer.
                let mut resolved = Vec::with_capacity(lines.len());
                for l in &lines {
                    resolved.push(
                        input::resolve_flow(&engine, &l.src, &l.dst, &l.port)
                            .with_context(|| format!("{}:{}", path.display(), l.line))?,
                    );
                }
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for (l, f) in lines.iter().zip(&resolved) {
                    let v = engine.verdict(f);
                    output::write_check(&mut out, output, &l.src, &l.dst, f, &v, false)?;
                }
                use std::io::Write;
                out.flush()?;
                return Ok(ExitCode::SUCCESS);
            }
            let [src, dst, port] =
                <[String; 3]>::try_from(flow).expect("three values checked above");
            let f = input::resolve_flow(&engine, &src, &dst, &port)?;
            let v = engine.verdict(&f);
            let mut out = std::io::stdout().lock();
            output::write_check(&mut out, output, &src, &dst, &f, &v, true)?;
            Ok(if v.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Matrix {
            files,
            ports,
            output,
            by,
        } => {
            let engine = input::engine(&files)?;
            let ports = if ports.is_empty() {
                engine.default_ports()
            } else {
                ports
            };
            let m = engine.matrix(&ports);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            output::write_matrix(&mut out, &engine, &m, output, by == By::Workload)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile {
            files,
            node,
            output,
            wiring,
        } => dataplane::compile(&files, node.as_deref(), &wiring, output),
        Command::Apply {
            files,
            node,
            dry_run,
            wiring,
        } => dataplane::apply(&files, node.as_deref(), &wiring, dry_run),
        Command::Lint(args) => lint_cmd::run(args),
        Command::Lab { command } => dataplane::lab(command),
        Command::Agent(args) => agent_cmd::agent(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Datastore { command } => agent_cmd::datastore(command),
        Command::Bench {
            pods,
            policies,
            quick,
        } => {
            palisade_bench::engine::run(pods, policies, quick);
            Ok(ExitCode::SUCCESS)
        }
    }
}
