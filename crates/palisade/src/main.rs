//! The `palisade` binary: commands, output formats and exit codes
//! (0 ok / 1 denied or findings / 2 error). All semantics live in the
//! library crates; this file only reads files and prints.

mod agent_cmd;
mod check_cmd;
mod dataplane;
mod diff_cmd;
mod doctor;
mod flow_files;
mod flows_cmd;
mod generate_cmd;
mod input;
mod lint_cmd;
mod matrix_cmd;
mod output;
mod progress;
mod promote_cmd;
mod replay_cmd;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
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
    /// With --flows: exit 0 when every line was answered, 2 when a line
    /// could not be (named on stderr as FILE:LINE; the others are answered).
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
        /// `workload` groups pods by the workload that owns them (`ns/name[Kind]`).
        #[arg(long, value_enum, default_value = "pod")]
        by: By,
    },
    /// Write one self-contained HTML page: the graph of allowed connections
    /// grouped by namespace, the reachability matrix with each cell's
    /// explanation, isolation coverage per namespace and the findings.
    Report {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Ports to probe, e.g. 80/TCP,53/UDP (default: the pods' container ports).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<PortProto>,
        /// The HTML file to write.
        #[arg(short = 'o', long = "output", default_value = "report.html")]
        output: PathBuf,
    },
    /// The connectivity change from BASE (-f) to HEAD (--to): every pair of
    /// endpoints and outside address range, protocol and port range whose
    /// verdict differs, with the policies that decided it. Exit 0, or with
    /// --exit-code 1 when something changed; 2 on error.
    Diff(diff_cmd::DiffArgs),
    /// Find policies that are valid but probably wrong: selectors that
    /// match nothing, shadowed rules, allow-all peers on sensitive ports,
    /// blocked DNS, ineffective admin rules (docs/lint.md). Exit 1 when a
    /// finding reaches --fail-on, 2 on input errors.
    Lint(lint_cmd::LintArgs),
    /// Write least-privilege NetworkPolicies from observed connections (a
    /// flow log, JSON lines or CSV): one per workload of the cluster,
    /// allowing exactly what was observed plus DNS, checked by the engine
    /// before printing (docs/generate.md). Exit 2 on bad input or when the
    /// check fails (nothing is written then).
    Generate(generate_cmd::GenerateArgs),
    /// What a candidate set of manifests would have done to recorded
    /// traffic: every recorded connection whose verdict would differ,
    /// formatted like diff. Exit 0, or with --exit-code 1 when something
    /// would change; 2 on error.
    Replay(replay_cmd::ReplayArgs),
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
    ///
    /// Once its HTTP port is bound and before anything else starts, the
    /// agent keeps only CAP_NET_ADMIN (and CAP_SYS_ADMIN with --netns) in
    /// its effective, permitted and bounding sets, empties the inheritable
    /// and ambient ones and sets no_new_privs (docs/agent-security.md).
    Agent(agent_cmd::AgentArgs),
    /// Read a running agent's flow log (`palisade agent --flows`): each
    /// decision the kernel reported, with the policy and rule that made it.
    Flows(flows_cmd::FlowsArgs),
    /// Turn staged policies (annotation `palisade.dev/staged: "true"`) into
    /// enforced ones where they are kept: a directory of manifests, etcd or
    /// the Kubernetes API. Names that do not exist or are not staged are an
    /// error and nothing is written. Exit 0, or 2 on error.
    Promote(promote_cmd::PromoteArgs),
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
            eprintln!("error: {}", output::terminal(&format!("{e:#}")));
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
            // Live pods and the workloads behind them, each counted once:
            // a workload's template stands for pods the input does not have.
            let live = c.pods.iter().filter(|p| p.template_kind().is_none());
            let workloads: std::collections::BTreeSet<_> = c
                .pods
                .iter()
                .filter_map(|p| Some((&p.namespace, p.workload()?)))
                .collect();
            let staged = c.policies.iter().filter(|p| p.staged).count()
                + c.admin_policies.iter().filter(|p| p.staged).count();
            println!(
                "valid: {} namespaces, {} pods, {} workloads, {} nodes, {} network policies, {} admin policies{}",
                c.namespaces.len(),
                live.count(),
                workloads.len(),
                c.nodes.len(),
                c.policies.len(),
                c.admin_policies.len(),
                if staged > 0 {
                    format!(" ({staged} staged: not enforced)")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            files,
            flows,
            output,
            flow,
        } => check_cmd::check(files, flows, output, flow),
        Command::Matrix {
            files,
            ports,
            output,
            by,
        } => matrix_cmd::matrix(&files, ports, output, by == By::Workload),
        Command::Report {
            files,
            ports,
            output,
        } => {
            let r = report::write(&files, ports, &output)?;
            let s = &r.summary;
            println!(
                "wrote {}: {} endpoints in {} namespaces, {} allowed connections on {} ports, {} findings",
                output.display(),
                s.endpoints,
                s.namespaces,
                s.edges,
                s.ports,
                r.findings.len()
            );
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
        Command::Diff(args) => diff_cmd::diff(args),
        Command::Generate(args) => generate_cmd::generate(args),
        Command::Replay(args) => replay_cmd::replay(args),
        Command::Datastore { command } => agent_cmd::datastore(command),
        Command::Flows(args) => flows_cmd::run(args),
        Command::Promote(args) => promote_cmd::run(args),
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
