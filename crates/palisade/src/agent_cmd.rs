//! `palisade agent` (the node agent and its benchmark) and `palisade
//! datastore` (validated writes to etcd).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::channel;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use palisade_agent::datastore::{self, DatastoreError};
use palisade_agent::flowlog::{FlowLog, FlowLogConfig};
use palisade_agent::{dir, etcd, http, kube, privileges, Agent, AgentConfig, Backend, DryRun, Nft};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// The node whose pods this agent enforces.
    #[arg(long)]
    node: Option<String>,
    /// Watch a directory of manifests (the default source).
    #[arg(long, conflicts_with_all = ["etcd", "kube"])]
    dir: Option<PathBuf>,
    /// Watch etcd (comma-separated endpoints, e.g. http://127.0.0.1:2379).
    #[arg(long, value_delimiter = ',', conflicts_with = "kube")]
    etcd: Vec<String>,
    /// Watch the Kubernetes API (kubeconfig or in-cluster service account).
    #[arg(long)]
    kube: bool,
    /// Enforce in this network namespace: its links and routes say how
    /// pods are wired, and its nftables tables are written (`ip netns exec
    /// NS nft`).
    #[arg(long)]
    netns: Option<String>,
    /// How local pods' interfaces are found: `auto` (routed or bridged,
    /// from the node's routes), `routes` (a host route through a per-pod
    /// interface), `bridge:NAME` (pods behind that bridge), `prefix:NAME`
    /// (routed through interfaces so named, e.g. `prefix:cali`).
    #[arg(long, default_value = "auto")]
    pod_interfaces: palisade_agent::wiring::PodInterfaces,
    /// Bits of the packet mark that an allowed new connection keeps as it
    /// came, for the hooks after this agent's (the policy checks use the
    /// marks as scratch; every other bit leaves at 0). The default is
    /// kube-proxy's masquerade bit: give `1 << N` for
    /// `--iptables-masquerade-bit N`, `0` for nothing. At most 4 bits.
    #[arg(long, default_value = "0x4000")]
    kept_mark_bits: palisade_nft::KeptMark,
    /// Address of /metrics, /healthz, /readyz and /flows (GET only). The
    /// default is the node's loopback: the flow log names pods and
    /// policies, which is nobody else's business.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: String,
    /// Print transactions instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Quiet period that ends a burst of changes, in milliseconds.
    #[arg(long, default_value_t = 10)]
    debounce_ms: u64,
    /// Keep a flow log: the kernel reports every denied connection attempt
    /// (and a sample of allowed ones) and the agent names the policy and
    /// rule that decided it; served at GET /flows.
    #[arg(long)]
    flows: bool,
    /// Also write the flow log to this file (JSON lines, rotated by size);
    /// implies --flows.
    #[arg(long)]
    flow_log: Option<PathBuf>,
    /// Rotate the flow log file at this many bytes (keeping 4 older ones).
    #[arg(long, default_value_t = 64 << 20)]
    flow_log_max_bytes: u64,
    /// Share of allowed new connections reported, 0 (denials only) to 1.
    #[arg(long, default_value_t = 0.0)]
    flow_sample: f64,
    /// The NFLOG group the kernel reports to (one agent per group and
    /// network namespace).
    #[arg(long, default_value_t = 1729)]
    flow_group: u16,
    /// Records kept in memory for GET /flows.
    #[arg(long, default_value_t = 10_000)]
    flow_ring: usize,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Event-to-kernel latency against a full rebuild and reload, on the
    /// synthetic cluster, in a scratch network namespace (root).
    Bench {
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        #[arg(long, default_value_t = 1_000)]
        policies: usize,
        /// Events measured per kind.
        #[arg(long, default_value_t = 50)]
        events: usize,
        /// AdminNetworkPolicies in the cluster (plus a baseline policy
        /// when more than zero).
        #[arg(long, default_value_t = 0)]
        admin_policies: usize,
    },
}

#[derive(Subcommand)]
pub enum DatastoreCommand {
    /// Validate manifests and write their objects (nothing is written if
    /// any is invalid; exit 2).
    Apply {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long, value_delimiter = ',', required = true)]
        etcd: Vec<String>,
        /// Write the policy objects staged (annotation
        /// `palisade.dev/staged: "true"`): compared with, never enforced,
        /// until `palisade promote`. Other kinds are written as they are.
        #[arg(long)]
        staged: bool,
    },
    /// Delete the objects the manifests name.
    Delete {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long, value_delimiter = ',', required = true)]
        etcd: Vec<String>,
    },
    /// Print stored objects (of one kind, if given) as a JSON List.
    Get {
        kind: Option<String>,
        #[arg(long, value_delimiter = ',', required = true)]
        etcd: Vec<String>,
    },
}

/// Logs go to stderr, coloured only when it is a terminal (and `NO_COLOR`
/// is unset): escape codes in a pipe or a log file are noise to every
/// reader but a terminal.
fn init_logs() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| LogSink(std::io::stderr()))
        .try_init();
}

/// stderr, where a line that cannot be written is dropped: the logging
/// library reports a failed write with `eprintln!`, which panics when
/// stderr is a closed pipe, so a log reader that went away would take the
/// agent down with it.
struct LogSink(std::io::Stderr);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

pub fn agent(args: AgentArgs) -> Result<ExitCode> {
    init_logs();
    if let Some(AgentCommand::Bench {
        pods,
        policies,
        events,
        admin_policies,
    }) = args.command
    {
        let mut p = palisade_bench::synth::Params::large();
        p.pods = pods;
        p.policies = policies;
        p.admin_policies = admin_policies;
        palisade_bench::agent::run(p, events).map_err(anyhow::Error::msg)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(node) = args.node.clone() else {
        bail!("--node is required");
    };
    let listener = http::bind(&args.listen).map_err(anyhow::Error::msg)?;
    // Before the first thread: capabilities are per thread.
    let dropped = privileges::restrict(&privileges::needed(args.netns.is_some()))
        .map_err(anyhow::Error::msg)?;
    let dropped = format!("{}; no_new_privs set", dropped.summary());
    if args.dry_run {
        run(args, node, (listener, dropped), DryRun)
    } else {
        let backend = Nft::new(args.netns.clone());
        run(args, node, (listener, dropped), backend)
    }
}

fn run<B: Backend + 'static>(
    args: AgentArgs,
    node: String,
    (listener, dropped): (std::net::TcpListener, String),
    backend: B,
) -> Result<ExitCode> {
    let (tx, rx) = channel();
    let mut scopes = if args.kube {
        kube::scopes()
    } else if !args.etcd.is_empty() {
        vec![etcd::SCOPE.to_string()]
    } else {
        vec![dir::SCOPE.to_string()]
    };
    // Nothing is applied before the node's wiring is read: a table
    // without it would drop every local pod's traffic.
    scopes.push(palisade_agent::agent::NODE_SCOPE.to_string());
    let mut cfg = AgentConfig::new(&node, scopes);
    cfg.debounce = Duration::from_millis(args.debounce_ms);
    cfg.pod_interfaces = args.pod_interfaces.clone();
    cfg.kept_mark = args.kept_mark_bits;
    let mut agent = Agent::new(cfg, backend);
    let netns = args.netns.clone();
    agent.set_poke(Box::new(move |stale, ips| {
        if let Err(e) = palisade_agent::netlink::refresh_neighbours(netns.as_deref(), stale, ips) {
            tracing::warn!("cannot reach bridged pods to learn their ports: {e}");
        }
    }));
    let _node = palisade_agent::node::spawn(args.netns.clone(), tx.clone())
        .context("reading the node's links and routes")?;
    let mut ring = None;
    if args.flows || args.flow_log.is_some() {
        let Some(sample_ppm) = FlowLogConfig::sample_ppm_of(args.flow_sample) else {
            bail!("--flow-sample {}: a share from 0 to 1", args.flow_sample);
        };
        let mut fc = FlowLogConfig::new(args.flow_group);
        fc.sample_ppm = sample_ppm;
        fc.file = args.flow_log.clone();
        fc.max_file_bytes = args.flow_log_max_bytes;
        fc.ring = args.flow_ring;
        let log = FlowLog::start(fc, &node, args.netns.as_deref(), agent.metrics())?;
        ring = Some(log.ring());
        agent.set_flow_log(log);
    }
    let addr = http::serve(listener, agent.metrics(), agent.health(), ring.clone())
        .map_err(anyhow::Error::msg)?;
    tracing::info!(%addr, %node, flows = ring.is_some(), "serving /metrics, /healthz, /readyz and /flows");
    // Said after the address, which readers of the log look for first.
    tracing::info!("{dropped}");
    if args.kube {
        kube::spawn(tx).context("starting the Kubernetes source")?;
    } else if !args.etcd.is_empty() {
        etcd::spawn(args.etcd.clone(), tx).context("starting the etcd source")?;
    } else {
        let d = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        dir::spawn(d, tx).map_err(anyhow::Error::msg)?;
    }
    agent.run(rx);
    Ok(ExitCode::SUCCESS)
}

pub fn datastore(cmd: DatastoreCommand) -> Result<ExitCode> {
    let report = |r: Result<Vec<String>, DatastoreError>, verb: &str| -> Result<ExitCode> {
        match r {
            Ok(keys) => {
                for k in keys {
                    println!("{verb} {}", crate::output::terminal(&k));
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(DatastoreError::Invalid(diags)) => {
                for d in &diags {
                    eprintln!("{}", crate::output::terminal(&d.to_string()));
                }
                eprintln!("error: {} invalid; nothing was written", diags.len());
                Ok(ExitCode::from(2))
            }
            Err(e) => Err(e.into()),
        }
    };
    match cmd {
        DatastoreCommand::Apply {
            files,
            etcd,
            staged: false,
        } => report(datastore::apply(&etcd, &files), "applied"),
        DatastoreCommand::Apply {
            files,
            etcd,
            staged: true,
        } => {
            let r = datastore::apply_staged(&etcd, &files);
            if let Ok(a) = &r {
                if a.staged.is_empty() {
                    eprintln!(
                        "warning: --staged: none of the objects is a policy; they were written as they are"
                    );
                }
            }
            let keys = r.map(|a| {
                let staged: std::collections::HashSet<String> = a.staged.into_iter().collect();
                a.keys
                    .into_iter()
                    .map(|k| {
                        if staged.contains(&k) {
                            format!("{k} (staged)")
                        } else {
                            k
                        }
                    })
                    .collect()
            });
            report(keys, "applied")
        }
        DatastoreCommand::Delete { files, etcd } => {
            report(datastore::delete(&etcd, &files), "deleted")
        }
        DatastoreCommand::Get { kind, etcd } => {
            let list = datastore::get(&etcd, kind.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
