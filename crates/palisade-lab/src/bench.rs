//! The dataplane benchmark: what enforcing a large cluster's ruleset costs
//! a real connection, measured against no ruleset in the same run.
//!
//! A synthetic cluster ([`palisade_engine::synth`]) is indexed and compiled;
//! two of its pods, on different nodes, whose TCP flow its policies allow by
//! rule in both directions (egress of the client, ingress of the server),
//! become a lab of their own. Their nodes then run in turn with no table,
//! with a conntrack-only table, and with the ruleset compiled from the
//! *whole* synthetic cluster for that node (every pod of the node in its
//! sets, every policy in its allow sets), and each time we measure:
//!
//! - the new-connection rate: sequential connect and close (RST, no
//!   TIME_WAIT) from the client pod to a listener in the server pod;
//! - the same with one request and response per connection (connect, send
//!   one byte, receive the server's one byte, close), as netperf's TCP_CRR
//!   and the CNI benchmarks built on it measure it: the handshake alone is
//!   the cheapest connection there is, so it shows the per-connection cost
//!   of tracking at its largest, and this shows it for a connection that
//!   carries something;
//! - TCP throughput: one bulk stream client → server across both nodes and
//!   the fabric.
//!
//! The three setups are interleaved: every round measures each once, in an
//! order that rotates through all six permutations ([`round_order`]), and
//! the report gives per setup the median over rounds and the range, the
//! ratio of medians against no table, and the median of the per-round
//! (paired) ratios. On a small shared machine single measurements vary by
//! ±15 %: only medians over several interleaved rounds are worth comparing.
//!
//! Compile time (index build, compile, render) and `nft -f` load time are
//! measured on the way. Nothing here asserts on wall-clock numbers.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_engine::{synth, Decision, Endpoint, Engine, PodId, PortProto};
use palisade_model::Protocol;
use palisade_nft::{compile_with, interface_name, named_wiring, Local, Options};

use crate::{in_netns, sys, Config, Error, Lab, Result, Serve};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub params: synth::Params,
    /// Length of each measurement.
    pub duration: Duration,
    /// Rounds over (no table, conntrack only, full ruleset), each in the
    /// order [`round_order`] gives.
    pub rounds: usize,
    /// Pause after each table swap, before measuring: replacing a table of
    /// tens of thousands of elements leaves the kernel deferred work (the
    /// old table's elements are freed after an RCU grace period, hash sets
    /// are resized by a worker) that would otherwise run on the same cores
    /// as the measurement and be charged to whichever setup comes next.
    pub settle: Duration,
    /// Lab name.
    pub lab: String,
}

/// One node's ruleset: sizes and times.
#[derive(Clone, Debug)]
pub struct NodeRuleset {
    pub node: String,
    pub local_pods: usize,
    pub compile: Duration,
    pub render: Duration,
    pub text_bytes: usize,
    pub elements: usize,
    /// The largest sets and maps: (name, elements).
    pub largest: Vec<(String, usize)>,
    /// Every `nft -f` of the full ruleset.
    pub loads: Vec<Duration>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Measure {
    pub connections: u64,
    pub failed: u64,
    pub conn_seconds: f64,
    /// Connections with one request and response (TCP_CRR).
    pub crr_connections: u64,
    pub crr_failed: u64,
    pub crr_seconds: f64,
    pub bytes: u64,
    pub bulk_seconds: f64,
}

impl Measure {
    pub fn conn_rate(&self) -> f64 {
        self.connections as f64 / self.conn_seconds.max(1e-9)
    }
    pub fn crr_rate(&self) -> f64 {
        self.crr_connections as f64 / self.crr_seconds.max(1e-9)
    }
    pub fn gbits(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.bulk_seconds.max(1e-9) / 1e9
    }
}

/// One reported figure: its title, its value and failed attempts in one
/// measure, and the decimals it is printed with.
type Metric = (
    &'static str,
    fn(&Measure) -> f64,
    fn(&Measure) -> u64,
    usize,
);

/// The three dataplane states (measured in [`round_order`] within a round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    NoTable,
    ConntrackOnly,
    Full,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::NoTable, Setup::ConntrackOnly, Setup::Full];

    pub fn label(self) -> &'static str {
        match self {
            Setup::NoTable => "(a) no table",
            Setup::ConntrackOnly => "(c) conntrack-only table",
            Setup::Full => "(b) full ruleset",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub pods: usize,
    pub policies: usize,
    pub admin_policies: usize,
    pub identities: usize,
    pub index_build: Duration,
    pub client: String,
    pub server: String,
    pub dst: SocketAddr,
    /// The engine's explanation of the measured flow.
    pub why: Vec<String>,
    pub nodes: Vec<NodeRuleset>,
    /// Per setup, one measure per round.
    pub measures: Vec<(Setup, Vec<Measure>)>,
    /// A port the engine denies for the same pair: did the full ruleset
    /// block it (`Some(true)`)?
    pub denied_blocked: Option<(u16, bool)>,
    pub duration: Duration,
    pub settle: Duration,
}

/// The median of `v` (the mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The order of the three setups in round `round`: the six permutations in
/// turn, so over six rounds each setup is measured twice in each position
/// (first, second, last) and a drift of the machine's load does not favour
/// any of them.
pub fn round_order(round: usize) -> [Setup; 3] {
    use Setup::{ConntrackOnly as C, Full as B, NoTable as A};
    const ORDERS: [[Setup; 3]; 6] = [
        [A, C, B],
        [B, A, C],
        [C, B, A],
        [A, B, C],
        [C, A, B],
        [B, C, A],
    ];
    ORDERS[round % ORDERS.len()]
}

/// Median and range of one metric over the rounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(v: &[f64]) -> Summary {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Summary {
            median: median(v),
            min: if min.is_finite() { min } else { 0.0 },
            max: if max.is_finite() { max } else { 0.0 },
        }
    }

    /// Half the range, relative to the median, in percent.
    pub fn spread_pct(&self) -> f64 {
        100.0 * (self.max - self.min) / 2.0 / self.median.max(1e-9)
    }
}

impl Report {
    fn of(&self, s: Setup) -> &[Measure] {
        self.measures
            .iter()
            .find(|(x, _)| *x == s)
            .map_or(&[], |(_, m)| m.as_slice())
    }

    /// Per-round ratios `s / (a)` of one metric (same round, so the same
    /// background load), summarised.
    fn paired(&self, s: Setup, f: fn(&Measure) -> f64) -> Summary {
        let base = self.of(Setup::NoTable);
        let v: Vec<f64> = self
            .of(s)
            .iter()
            .zip(base)
            .map(|(x, b)| f(x) / f(b).max(1e-9))
            .collect();
        Summary::of(&v)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let _ = writeln!(
            s,
            "cluster: {} pods, {} policies, {} admin policies, {} identities; index built in {:.0} ms",
            self.pods,
            self.policies,
            self.admin_policies,
            self.identities,
            ms(self.index_build)
        );
        let _ = writeln!(
            s,
            "flow: {} -> {} ({}/TCP)",
            self.client, self.server, self.dst
        );
        for w in &self.why {
            let _ = writeln!(s, "  {w}");
        }
        for n in &self.nodes {
            let loads: Vec<f64> = n.loads.iter().map(|d| ms(*d)).collect();
            let l = Summary::of(&loads);
            let _ = writeln!(
                s,
                "ruleset of {} ({} local pods): compile {:.0} ms, render {:.0} ms, {} elements, {:.1} MB of nft text; nft -f load {:.0} ms (median; {:.0}-{:.0})",
                n.node,
                n.local_pods,
                ms(n.compile),
                ms(n.render),
                n.elements,
                n.text_bytes as f64 / 1e6,
                l.median,
                l.min,
                l.max,
            );
            let _ = writeln!(
                s,
                "  largest: {}",
                n.largest
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some((port, blocked)) = self.denied_blocked {
            let _ = writeln!(
                s,
                "check: port {port}/TCP, which the engine denies, is {} by the full ruleset",
                if blocked { "blocked" } else { "NOT blocked" }
            );
        }
        let metrics: [Metric; 3] = [
            (
                "connections/s, connect + close",
                Measure::conn_rate,
                |m| m.failed,
                0,
            ),
            (
                "connections/s, connect + request/response + close (TCP_CRR)",
                Measure::crr_rate,
                |m| m.crr_failed,
                0,
            ),
            ("TCP throughput, Gbit/s", Measure::gbits, |_| 0, 2),
        ];
        for (name, f, failed_of, digits) in metrics {
            let values = |setup| Summary::of(&self.of(setup).iter().map(f).collect::<Vec<_>>());
            let base = values(Setup::NoTable).median;
            let _ = writeln!(s, "{name}:");
            let _ = writeln!(
                s,
                "  {:<26} {:>24} {:>7} {:>8}",
                "setup", "median (min-max)", "ratio", "paired"
            );
            for setup in Setup::ALL {
                let v = values(setup);
                let failed: u64 = self.of(setup).iter().map(failed_of).sum();
                let _ = writeln!(
                    s,
                    "  {:<26} {:>24} {:>6.1}% {:>7.1}%{}",
                    setup.label(),
                    format!(
                        "{:.digits$} ({:.digits$}-{:.digits$})",
                        v.median, v.min, v.max
                    ),
                    100.0 * v.median / base.max(1e-9),
                    100.0 * self.paired(setup, f).median,
                    if failed > 0 {
                        format!("  ({failed} failed connects)")
                    } else {
                        String::new()
                    }
                );
            }
        }
        let _ = writeln!(
            s,
            "({} rounds of {:.1} s per measurement, each {:.1} s after its table swap, setups \
             interleaved in rotating order; medians over rounds; ratio: of medians against (a); \
             paired: median of the per-round ratios against (a))",
            self.of(Setup::NoTable).len(),
            self.duration.as_secs_f64(),
            self.settle.as_secs_f64()
        );
        for setup in Setup::ALL {
            let _ = writeln!(
                s,
                "  {:<26} per round (conn/s; CRR conn/s; Gbit/s): {}",
                setup.label(),
                self.of(setup)
                    .iter()
                    .map(|x| {
                        format!(
                            "{:.0}; {:.0}; {:.2}",
                            x.conn_rate(),
                            x.crr_rate(),
                            x.gbits()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        s
    }
}

/// Picks a client and a server pod on different nodes whose TCP flow to
/// the server's first container port both directions allow *by a rule*
/// (so the measured first packets walk the allow path), preferring
/// NetworkPolicy rules on both sides.
fn pick_pair(engine: &Engine) -> Option<(usize, usize, u16, u8)> {
    let c = engine.cluster();
    let idx = engine.index();
    let endpoints: Vec<usize> = (0..c.pods.len())
        .filter(|&i| idx.identity_of(PodId::new(i)).is_some() && !c.pods[i].host_network)
        .collect();
    let score = |d: Decision| match d {
        Decision::Allowed { .. } => 2,
        Decision::Admin { .. } => 1,
        _ => 0,
    };
    let mut best: Option<(usize, usize, u16, u8)> = None;
    let mut budget: u64 = 5_000_000;
    for &s in &endpoints {
        let Some(port) = c.pods[s]
            .ports
            .iter()
            .find(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
        else {
            continue;
        };
        for &cl in &endpoints {
            if budget == 0 {
                return best;
            }
            budget -= 1;
            if cl == s || c.pods[cl].node == c.pods[s].node {
                continue;
            }
            let Some(f) = engine.flow_in_family(
                Endpoint::Pod(cl),
                Endpoint::Pod(s),
                Protocol::Tcp,
                port,
                true,
            ) else {
                continue;
            };
            let e = engine.explain(&f);
            if !e.allowed() {
                continue;
            }
            let sc = score(e.egress.decision) + score(e.ingress.decision);
            if best.is_none_or(|b| sc > b.3) {
                best = Some((cl, s, port, sc));
                if sc == 4 {
                    return best;
                }
            }
        }
    }
    best
}

/// What the bench listener does with an accepted connection.
const MODE_DROP: u8 = 0;
const MODE_SINK: u8 = 1;
/// Read the one-byte request, answer one byte, close.
const MODE_ECHO: u8 = 2;

struct Listener {
    stop: Arc<AtomicBool>,
    mode: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(netns: &str, port: u16) -> Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(AtomicU8::new(MODE_DROP));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = netns.to_string();
        let (st, md) = (stop.clone(), mode.clone());
        let thread = std::thread::spawn(move || {
            let l = sys::enter_netns(&ns).and_then(|_| {
                let l = TcpListener::bind(SocketAddr::new(
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    port,
                ))?;
                l.set_nonblocking(true)?;
                // A deep accept queue: the client must never wait on a
                // listener thread the scheduler has not run yet.
                // SAFETY: listen(2) again on a listening socket only
                // changes its backlog.
                if unsafe { libc::listen(l.as_raw_fd(), 4096) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(l)
            });
            let l = match l {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut pfd = libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            while !st.load(Ordering::Relaxed) {
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 50) };
                if n <= 0 {
                    continue;
                }
                while let Ok((s, _)) = l.accept() {
                    match md.load(Ordering::Relaxed) {
                        MODE_SINK => {
                            std::thread::spawn(move || sink(s));
                        }
                        // Inline: the client waits for the answer before
                        // it opens the next connection.
                        MODE_ECHO => echo(s),
                        _ => {}
                    }
                }
            }
        });
        rx.recv()
            .map_err(|_| Error::Msg("bench listener died".into()))?
            .map_err(|e| Error::Io {
                context: format!("bench listener in {netns}"),
                error: e,
            })?;
        Ok(Listener {
            stop,
            mode,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads until end of stream, then closes (the client waits for that).
fn sink(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Answers a one-byte request with one byte. A client that never sends
/// costs the listener at most the timeout.
fn echo(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut b = [0u8; 1];
    if matches!(s.read(&mut b), Ok(1)) {
        let _ = s.write_all(&b);
    }
}

/// Close with RST: no TIME_WAIT, so the client never runs out of ports.
fn abort(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid socket with a linger struct of its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Runs `attempt` back to back for `d`: (successes, failures, seconds).
fn attempts_for(d: Duration, mut attempt: impl FnMut() -> io::Result<()>) -> (u64, u64, f64) {
    let start = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    while start.elapsed() < d {
        match attempt() {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed, start.elapsed().as_secs_f64())
}

/// Connect, close with RST.
fn connect_loop(dst: SocketAddr, d: Duration) -> io::Result<(u64, u64, f64)> {
    Ok(attempts_for(d, || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(1)).map(abort)
    }))
}

/// Connect, one-byte request, one-byte response, close with RST.
fn request_loop(dst: SocketAddr, d: Duration) -> io::Result<(u64, u64, f64)> {
    let exchange = |mut s: TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"q")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        abort(s);
        Ok(())
    };
    Ok(attempts_for(d, || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(1)).and_then(exchange)
    }))
}

fn bulk(dst: SocketAddr, d: Duration) -> io::Result<(u64, f64)> {
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
    let buf = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    // The server closes once it has read everything.
    let mut b = [0u8; 16];
    let _ = s.read(&mut b);
    Ok((sent, start.elapsed().as_secs_f64()))
}

fn measure(
    lab: &Lab,
    client: &str,
    listener: &Listener,
    dst: SocketAddr,
    d: Duration,
) -> Result<Measure> {
    let ns = lab
        .pod(client)
        .ok_or_else(|| Error::Msg(format!("no pod {client} in the lab")))?
        .netns
        .clone();
    listener.mode.store(MODE_DROP, Ordering::Relaxed);
    // A short warm-up, not counted: the first connections after a ruleset
    // load and a conntrack flush pay for cold caches.
    let warm = d / 10;
    let (connections, failed, conn_seconds) = in_netns(&ns, move || {
        connect_loop(dst, warm)?;
        connect_loop(dst, d)
    })?;
    listener.mode.store(MODE_ECHO, Ordering::Relaxed);
    let (crr_connections, crr_failed, crr_seconds) = in_netns(&ns, move || {
        request_loop(dst, warm)?;
        request_loop(dst, d)
    })?;
    listener.mode.store(MODE_SINK, Ordering::Relaxed);
    let (bytes, bulk_seconds) = in_netns(&ns, move || bulk(dst, d))?;
    listener.mode.store(MODE_DROP, Ordering::Relaxed);
    Ok(Measure {
        connections,
        failed,
        conn_seconds,
        crr_connections,
        crr_failed,
        crr_seconds,
        bytes,
        bulk_seconds,
    })
}

/// A table that only tracks connections: what conntrack alone costs.
const CONNTRACK_ONLY: &str = "table inet palisade {}\ndelete table inet palisade\n\
table inet palisade {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\
\t\tct state established,related accept\n\t\tct state invalid drop\n\t}\n}\n";

/// Runs the benchmark (root only).
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    if !sys::is_root() {
        return Err(Error::Msg(
            "the dataplane benchmark builds network namespaces and loads nftables rulesets: run it as root".into(),
        ));
    }
    progress("generating and indexing the synthetic cluster");
    let cluster = synth::cluster(&cfg.params);
    let t = Instant::now();
    let engine = Engine::new(cluster);
    let index_build = t.elapsed();
    let c = engine.cluster();

    let (cl, sv, port, _) = pick_pair(&engine).ok_or_else(|| {
        Error::Msg("no pod pair on two nodes whose TCP flow the policies allow".into())
    })?;
    let flow = engine
        .flow_in_family(
            Endpoint::Pod(cl),
            Endpoint::Pod(sv),
            Protocol::Tcp,
            port,
            true,
        )
        .expect("picked with an IPv4 flow");
    let why = engine.verdict(&flow).reasons;
    let dst = SocketAddr::new(flow.dst_ip, port);
    // A port the engine denies for the pair, to check enforcement.
    let denied = (1..1024u16).find(|&p| {
        engine
            .flow_in_family(Endpoint::Pod(cl), Endpoint::Pod(sv), Protocol::Tcp, p, true)
            .is_some_and(|f| !engine.allowed(&f))
    });

    // The lab holds only the two pods; their nodes get the whole cluster's
    // rulesets below.
    let mut small = c.clone();
    small.pods = vec![c.pods[cl].clone(), c.pods[sv].clone()];
    small.policies.clear();
    small.admin_policies.clear();
    let small = Engine::new(small);
    let _ = crate::down(&cfg.lab);
    progress("building the lab");
    let lab = crate::up(
        &small,
        &Config {
            name: cfg.lab.clone(),
            serve: Serve::Threads,
            ports: vec![PortProto {
                port: 9,
                protocol: Protocol::Udp,
            }],
            sources: Vec::new(),
            cni: None,
        },
    )?;
    let client = c.pods[cl].key();
    let server = c.pods[sv].key();
    for p in lab.state.pods.clone() {
        in_netns(&p.netns, || {
            sys::write_sysctls(&[("net.ipv4.ip_local_port_range", "1024 65535")])
        })?;
    }

    progress("compiling the nodes' rulesets");
    let mut nodes = Vec::new();
    let mut texts = Vec::new();
    for n in &lab.state.nodes {
        let name = n.node.clone().unwrap_or_default();
        let t = Instant::now();
        let rs = compile_with(
            &engine,
            &Options {
                local: Local::Node(name.clone()),
                wiring: named_wiring(&engine, &Local::Node(name.clone()), interface_name),
            },
        )?;
        let compile = t.elapsed();
        let t = Instant::now();
        let text = rs.to_nft_replace_text();
        let render = t.elapsed();
        let mut sizes: Vec<(String, usize)> = rs
            .sets
            .iter()
            .map(|s| (s.name.clone(), s.elements.len()))
            .collect();
        let elements = sizes.iter().map(|x| x.1).sum();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sizes.truncate(4);
        nodes.push(NodeRuleset {
            local_pods: c
                .pods
                .iter()
                .filter(|p| p.node.as_deref() == Some(name.as_str()) && p.is_endpoint())
                .count(),
            node: name,
            compile,
            render,
            text_bytes: text.len(),
            elements,
            largest: sizes,
            loads: Vec::new(),
        });
        texts.push(text);
    }

    let server_ns = lab
        .pod(&server)
        .ok_or_else(|| Error::Msg("server pod missing from the lab".into()))?
        .netns
        .clone();
    let listener = Listener::start(&server_ns, port)?;
    let mut measures: Vec<(Setup, Vec<Measure>)> =
        Setup::ALL.iter().map(|&s| (s, Vec::new())).collect();
    let mut denied_blocked = None;
    for round in 0..cfg.rounds.max(1) {
        for setup in round_order(round) {
            let k = Setup::ALL
                .iter()
                .position(|&s| s == setup)
                .expect("a known setup");
            progress(&format!("round {}: {}", round + 1, setup.label()));
            for n in 0..lab.state.nodes.len() {
                match setup {
                    Setup::NoTable => lab
                        .load_table(n, "table inet palisade {}\ndelete table inet palisade\n")
                        .map(|_| ())?,
                    Setup::ConntrackOnly => lab.load_table(n, CONNTRACK_ONLY).map(|_| ())?,
                    Setup::Full => {
                        let d = lab.load_table(n, &texts[n])?;
                        nodes[n].loads.push(d);
                    }
                }
            }
            // Old conntrack entries belong to the previous setup.
            for node in &lab.state.nodes {
                let _ = crate::run(
                    std::process::Command::new("ip").args([
                        "netns",
                        "exec",
                        &node.netns,
                        "conntrack",
                        "-F",
                    ]),
                    None,
                );
            }
            if setup == Setup::Full && denied_blocked.is_none() {
                if let Some(p) = denied {
                    let d = SocketAddr::new(flow.dst_ip, p);
                    let ns = lab.pod(&client).expect("in the lab").netns.clone();
                    let reached = in_netns(&ns, move || {
                        Ok(
                            match TcpStream::connect_timeout(&d, Duration::from_millis(500)) {
                                Ok(_) => true,
                                Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
                            },
                        )
                    })?;
                    denied_blocked = Some((p, !reached));
                }
            }
            std::thread::sleep(cfg.settle);
            let m = measure(&lab, &client, &listener, dst, cfg.duration)?;
            measures[k].1.push(m);
        }
    }
    drop(listener);
    lab.down()?;
    Ok(Report {
        pods: c.pods.len(),
        policies: c.policies.len(),
        admin_policies: c.admin_policies.len(),
        identities: engine.index().identities().len(),
        index_build,
        client,
        server,
        dst,
        why,
        nodes,
        measures,
        denied_blocked,
        duration: cfg.duration,
        settle: cfg.settle,
    })
}
