//! The dataplane commands: compile and apply the nftables ruleset, and the
//! namespace lab (up, probe, down, and the hidden listener).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use palisade_engine::PortProto;

use crate::input;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesetFormat {
    Nft,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeFormat {
    /// The predicted and the observed matrix per port, and a summary line.
    #[value(alias = "table")]
    Text,
    /// One line per probe (both families), and the summary line.
    Wide,
    /// One JSON object per probe and line (docs/formats.md).
    Json,
}

/// The CNI plugin that wires the lab's pods.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CniArg {
    /// One veth per pod and a host route to it.
    Ptp,
    /// One bridge `cni0` per node, the pods' veths its ports.
    Bridge,
}

impl From<CniArg> for palisade_lab::CniPlugin {
    fn from(a: CniArg) -> Self {
        match a {
            CniArg::Ptp => palisade_lab::CniPlugin::Ptp,
            CniArg::Bridge => palisade_lab::CniPlugin::Bridge,
        }
    }
}

#[derive(Subcommand)]
pub enum LabCommand {
    /// Create one network namespace per node and pod, wire them, start
    /// listeners and load each node's compiled ruleset (with `--cni`: wire
    /// the pods with a CNI plugin and load no ruleset).
    Up {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long, default_value = "default")]
        name: String,
        /// Ports the listeners serve (default: the pods' container ports).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<PortProto>,
        /// Wire each pod as a container runtime does, by running this CNI
        /// plugin (IPAM host-local, the pods keep the cluster's addresses),
        /// and load no ruleset: the node agents do. The plugins must be
        /// installed (Debian package `containernetworking-plugins`).
        #[arg(long, value_enum)]
        cni: Option<CniArg>,
        /// Where the CNI plugins are.
        #[arg(long, requires = "cni", default_value = palisade_lab::cni::DEFAULT_BIN_DIR)]
        cni_bin_dir: PathBuf,
    },
    /// Probe every pod pair with real connections (IPv4 and IPv6) and compare
    /// with the engine: the predicted and observed matrices and one summary
    /// line (`-o wide`: every probe). Exit 1 on any disagreement.
    Probe {
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long, value_delimiter = ',')]
        ports: Vec<PortProto>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: ProbeFormat,
        /// Timeout of a denied connection attempt, in milliseconds.
        #[arg(long, default_value_t = 300)]
        timeout_ms: u64,
        /// Expect what this etcd datastore says (as agents reading it are
        /// told), not the files the lab was made from.
        #[arg(long, value_delimiter = ',', conflicts_with = "kube")]
        etcd: Vec<String>,
        /// Expect what the Kubernetes API says (kubeconfig or in-cluster).
        #[arg(long)]
        kube: bool,
    },
    /// Make the connections of a flow file (`SRC DST PORT/PROTO` a line, as
    /// `check --flows` reads; TCP and UDP), each once, from the source pod
    /// to the destination pod's first address, and say which got through.
    /// Traffic for the agents' flow logs.
    Traffic {
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long)]
        flows: PathBuf,
        /// How long an attempt waits, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Remove everything the lab made.
    Down {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Measure what enforcement costs (root): new-connection rate and TCP
    /// throughput between two lab pods with no table, a conntrack-only
    /// table, and the ruleset compiled from a synthetic cluster (by default
    /// 10,000 pods and 1,000 policies) in which their flow is allowed by
    /// rule; also compile and `nft -f` load times. The setups are
    /// interleaved over the rounds; prints medians, ranges and ratios
    /// against no table, measured in the same run.
    Bench {
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        #[arg(long, default_value_t = 1_000)]
        policies: usize,
        /// AdminNetworkPolicies in the synthetic cluster (plus a baseline
        /// when > 0).
        #[arg(long, default_value_t = 0)]
        admin_policies: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Rounds over the three setups, interleaved in rotating order
        /// (medians and ranges are reported; 6 rounds put each setup twice
        /// in each position).
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Seconds to wait after each table swap before measuring, so that
        /// the kernel's deferred work from replacing a large table (freeing
        /// the old elements, resizing hash sets) is not charged to the
        /// measurement.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        #[arg(long, default_value = "bench")]
        name: String,
    },
    /// Listener run inside a pod namespace (started by `lab up`).
    #[command(hide = true)]
    Serve {
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
    },
}

/// How this machine (or `netns`) wires the engine's local pods, read from
/// its links and routes as the agent reads them.
pub fn node_wiring(
    engine: &palisade_engine::Engine,
    node: Option<&str>,
    netns: Option<&str>,
    mode: &palisade_agent::wiring::PodInterfaces,
) -> Result<palisade_nft::Wiring> {
    let facts =
        palisade_agent::netlink::read(netns).context("reading the node's links and routes")?;
    let local = match node {
        Some(n) => palisade_nft::Local::Node(n.to_string()),
        None => palisade_nft::Local::All,
    };
    let local = palisade_agent::wiring::LocalPod::all(engine, &local);
    let r = palisade_agent::wiring::Resolver::new(mode.clone()).resolve(&facts, &local);
    let unwired = r.unwired();
    if !unwired.is_empty() {
        let shown: Vec<&str> = unwired.iter().take(5).copied().collect();
        let more = unwired.len() - shown.len();
        eprintln!(
            "warning: {} of {} local pods have no interface on this node; their packets will be dropped: {}{}",
            unwired.len(),
            local.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
    }
    Ok(r.wiring)
}

/// Where local pods' interfaces are read from, for `compile` and `apply`.
#[derive(clap::Args, Clone, Debug)]
pub struct WiringArgs {
    /// Read the pods' wiring from this network namespace instead of this
    /// machine's.
    #[arg(long)]
    pub netns: Option<String>,
    /// How local pods' interfaces are found (see `agent --pod-interfaces`).
    #[arg(long, default_value = "auto")]
    pub pod_interfaces: palisade_agent::wiring::PodInterfaces,
}

impl WiringArgs {
    fn read(
        &self,
        engine: &palisade_engine::Engine,
        node: Option<&str>,
    ) -> Result<palisade_nft::Wiring> {
        node_wiring(engine, node, self.netns.as_deref(), &self.pod_interfaces)
    }
}

/// The node's wiring and ruleset compiled from the files.
fn compiled(
    files: &[PathBuf],
    node: Option<&str>,
    wiring: &WiringArgs,
) -> Result<(palisade_nft::Wiring, palisade_nft::Ruleset)> {
    let engine = input::engine(files)?;
    let w = wiring.read(&engine, node)?;
    let rs = palisade_nft::compile(&engine, node, &w)?;
    Ok((w, rs))
}

pub fn compile(
    files: &[PathBuf],
    node: Option<&str>,
    wiring: &WiringArgs,
    format: RulesetFormat,
) -> Result<ExitCode> {
    let (_, rs) = compiled(files, node, wiring)?;
    let mut out = std::io::stdout().lock();
    match format {
        RulesetFormat::Nft => out.write_all(rs.to_nft_text().as_bytes())?,
        RulesetFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &rs.to_json())?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces table `inet palisade` in one `nft -f` transaction.
pub fn apply(
    files: &[PathBuf],
    node: Option<&str>,
    wiring: &WiringArgs,
    dry_run: bool,
) -> Result<ExitCode> {
    let (w, rs) = compiled(files, node, wiring)?;
    // Both tables in one transaction: bridged pods' per-port check, or
    // its removal when no pod is bridged.
    let mut text = rs.to_nft_replace_text();
    text += &palisade_nft::bridge_text(palisade_nft::compile_bridge(&w.bridge).as_ref());
    if dry_run {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft rejected the ruleset ({status}); the previous table is unchanged");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn lab(cmd: LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up {
            files,
            name,
            ports,
            cni,
            cni_bin_dir,
        } => {
            let engine = input::engine(&files)?;
            let sources = files
                .iter()
                .map(|f| {
                    std::fs::canonicalize(f)
                        .unwrap_or_else(|_| f.clone())
                        .display()
                        .to_string()
                })
                .collect();
            let lab = palisade_lab::up(
                &engine,
                &palisade_lab::Config {
                    name: name.clone(),
                    serve: palisade_lab::Serve::Spawn(std::env::current_exe()?),
                    ports,
                    sources,
                    cni: cni.map(|c| palisade_lab::Cni {
                        plugin: c.into(),
                        bin_dir: cni_bin_dir,
                    }),
                },
            )?;
            println!(
                "lab {name}: {} nodes, {} pods{}; probe with `palisade lab probe --name {name}`",
                lab.state.nodes.len(),
                lab.state.pods.len(),
                match &lab.state.cni {
                    Some(p) => format!(", wired by CNI {}, no ruleset loaded", p.binary()),
                    None => String::new(),
                }
            );
            if lab.state.cni.is_some() {
                // Where the node agents are to run.
                for n in &lab.state.nodes {
                    println!(
                        "node {}: network namespace {}",
                        n.node.as_deref().unwrap_or("?"),
                        n.netns
                    );
                }
            }
            lab.keep();
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Traffic {
            name,
            flows,
            timeout_ms,
        } => traffic(&name, &flows, timeout_ms),
        LabCommand::Probe {
            name,
            ports,
            output,
            timeout_ms,
            etcd,
            kube,
        } => {
            let state = palisade_lab::load(&name)?;
            let engine = probe_engine(&state, etcd, kube)?;
            let ports = if ports.is_empty() {
                engine.default_ports()
            } else {
                ports
            };
            let opts = palisade_lab::ProbeOptions {
                timeout: std::time::Duration::from_millis(timeout_ms),
                ..Default::default()
            };
            let obs = palisade_lab::probe(&state, &engine, &ports, &opts)?;
            let bad = obs.iter().filter(|o| !o.agrees()).count();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = palisade_lab::render_summary(&obs);
            match output {
                ProbeFormat::Json => {
                    for o in &obs {
                        serde_json::to_writer(&mut out, &probe_json(o))?;
                        writeln!(out)?;
                    }
                    // stdout stays JSON Lines; people read the summary.
                    eprint!("{summary}");
                }
                ProbeFormat::Text => {
                    let pods: Vec<String> = state.pods.iter().map(|p| p.key.clone()).collect();
                    write!(
                        out,
                        "{}\n{summary}",
                        palisade_lab::render_matrices(&obs, &pods, &ports)
                    )?;
                }
                ProbeFormat::Wide => {
                    write_probe_table(&mut out, &obs)?;
                    write!(out, "{summary}")?;
                }
            }
            out.flush()?;
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        LabCommand::Down { name } => {
            palisade_lab::down(&name)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Bench {
            pods,
            policies,
            admin_policies,
            seconds,
            rounds,
            settle,
            name,
        } => lab_bench(
            pods,
            policies,
            admin_policies,
            seconds,
            rounds,
            settle,
            name,
        ),
        LabCommand::Serve { tcp, udp } => {
            palisade_lab::serve_forever(&tcp, &udp)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lab bench`: the command line's figures to the benchmark's config.
fn lab_bench(
    pods: usize,
    policies: usize,
    admin_policies: usize,
    seconds: f64,
    rounds: usize,
    settle: f64,
    name: String,
) -> Result<ExitCode> {
    if !palisade_lab::sys::is_root() {
        bail!("`lab bench` builds network namespaces and loads nftables rulesets: run it as root");
    }
    let large = palisade_bench::synth::Params::large();
    let params = palisade_bench::synth::Params {
        pods,
        policies,
        admin_policies,
        // The large shape's namespaces, scaled down for small runs.
        namespaces: large.namespaces.min(pods.div_ceil(10).max(1)),
        nodes: large.nodes.min(pods.max(2)),
        ..large
    };
    let cfg = palisade_bench::lab::BenchConfig {
        params,
        duration: std::time::Duration::from_secs_f64(seconds.max(0.05)),
        rounds,
        settle: std::time::Duration::from_secs_f64(settle.max(0.0)),
        lab: name,
    };
    let report = palisade_bench::lab::run(&cfg, &mut |m| eprintln!("... {m}"))?;
    print!("{}", report.render());
    Ok(ExitCode::SUCCESS)
}

/// One probe as `lab probe -o json` writes it (docs/schemas/probe.json).
#[derive(serde::Serialize)]
struct ProbeJson<'a> {
    src: &'a str,
    dst: &'a str,
    src_ip: std::net::IpAddr,
    dst_ip: std::net::IpAddr,
    port: u16,
    protocol: &'a str,
    predicted: &'static str,
    observed: &'static str,
    agree: bool,
}

fn probe_json(o: &palisade_lab::Observation) -> ProbeJson<'_> {
    let word = |b: bool| if b { "allowed" } else { "denied" };
    ProbeJson {
        src: &o.src,
        dst: &o.dst,
        src_ip: o.src_ip,
        dst_ip: o.dst_ip,
        port: o.port,
        protocol: &o.protocol,
        predicted: word(o.expected),
        observed: word(o.observed),
        agree: o.agrees(),
    }
}

fn write_probe_table(out: &mut impl Write, obs: &[palisade_lab::Observation]) -> Result<()> {
    let w = obs
        .iter()
        .map(|o| o.src.len().max(o.dst.len()))
        .max()
        .unwrap_or(3);
    writeln!(
        out,
        "{:w$}  {:w$}  {:>9}  {:4}  {:8}  KERNEL",
        "SRC", "DST", "PORT", "IP", "ENGINE"
    )?;
    let v = |b: bool| if b { "allowed" } else { "denied" };
    for o in obs {
        writeln!(
            out,
            "{:w$}  {:w$}  {:>9}  {:4}  {:8}  {}{}",
            o.src,
            o.dst,
            format!("{}/{}", o.port, o.protocol),
            if o.dst_ip.is_ipv4() { "v4" } else { "v6" },
            v(o.expected),
            v(o.observed),
            if o.agrees() { "" } else { "  <-- DISAGREES" }
        )?;
    }
    Ok(())
}

/// The cluster a lab is probed against: the datastore's when one is named,
/// else the files the lab was built from.
fn probe_engine(
    state: &palisade_lab::State,
    etcd: Vec<String>,
    kube: bool,
) -> Result<palisade_engine::Engine> {
    Ok(if kube || !etcd.is_empty() {
        use palisade_agent::snapshot::{read, Datastore};
        let ds = if kube {
            Datastore::Kube
        } else {
            Datastore::Etcd(etcd)
        };
        let (cluster, rejected) =
            read(ds, std::time::Duration::from_secs(60)).map_err(anyhow::Error::msg)?;
        for r in rejected {
            eprintln!("warning: refused, as agents refuse it: {r}");
        }
        palisade_engine::Engine::new(cluster)
    } else {
        let files: Vec<PathBuf> = state.sources.iter().map(PathBuf::from).collect();
        input::engine(&files)?
    })
}

/// `lab traffic`: each line's connection, made once.
fn traffic(name: &str, flows: &Path, timeout_ms: u64) -> Result<ExitCode> {
    let state = palisade_lab::load(name)?;
    let text = std::fs::read_to_string(flows).with_context(|| flows.display().to_string())?;
    let timeout = std::time::Duration::from_millis(timeout_ms);
    let mut bad = false;
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", flows.display(), i + 1);
        let (src, dst, port) = match input::flow_line(raw) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("{}", crate::output::terminal(&format!("{at}: {e}")));
                bad = true;
                continue;
            }
        };
        let pp: PortProto = match port.parse() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{at}: {e}");
                bad = true;
                continue;
            }
        };
        let Some(ip) = state
            .pod(dst)
            .and_then(|p| p.ips.iter().find(|a| a.is_ipv4()).or(p.ips.first()))
        else {
            eprintln!("{at}: no pod {dst} in lab {name}");
            bad = true;
            continue;
        };
        let dst_addr = std::net::SocketAddr::new(*ip, pp.port);
        match palisade_lab::connect(&state, src, dst_addr, pp.protocol, timeout) {
            Ok(through) => println!(
                "{}",
                crate::output::terminal(&format!(
                    "{src} -> {dst} {port}: {}",
                    if through { "connected" } else { "no answer" }
                ))
            ),
            Err(e) => {
                eprintln!("{}", crate::output::terminal(&format!("{at}: {e}")));
                bad = true;
            }
        }
    }
    Ok(if bad {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
