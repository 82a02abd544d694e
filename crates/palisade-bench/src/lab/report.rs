//! The benchmark's figures and their rendering: what the report prints is
//! quoted in BENCHMARKS.md, so its wording and layout are part of the
//! benchmark.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

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

/// The dataplane states (measured in [`round_order`] within a round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    NoTable,
    ConntrackOnly,
    Full,
    /// The full ruleset reporting denials to the agent's flow log (the
    /// measured flow is allowed: this is what logging costs it).
    LogDenials,
    /// The full ruleset reporting every new connection too (sample rate 1),
    /// each attributed by the agent's flow log on the same machine.
    LogAll,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::NoTable,
        Setup::ConntrackOnly,
        Setup::Full,
        Setup::LogDenials,
        Setup::LogAll,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Setup::NoTable => "(a) no table",
            Setup::ConntrackOnly => "(c) conntrack-only table",
            Setup::Full => "(b) full ruleset",
            Setup::LogDenials => "(d) (b) + flow log, denials",
            Setup::LogAll => "(e) (b) + flow log, all",
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

/// The order of the setups in round `round`: a rotation of [`Setup::ALL`]
/// by the round, reversed in odd rounds, so that over rounds each setup
/// comes first, last and in between, next to each of the others, and a
/// drift of the machine's load does not favour any of them.
pub fn round_order(round: usize) -> Vec<Setup> {
    let mut v = Setup::ALL.to_vec();
    let n = v.len();
    v.rotate_left(round % n);
    if round % 2 == 1 {
        v.reverse();
    }
    v
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
        self.paired_against(Setup::NoTable, s, f)
    }

    /// Per-round ratios `s / base` of one metric, summarised.
    fn paired_against(&self, base: Setup, s: Setup, f: fn(&Measure) -> f64) -> Summary {
        let base = self.of(base);
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
        self.render_metrics(&mut s);
        self.render_rounds(&mut s);
        s
    }

    /// Per metric, each setup's median, range and ratios against (a).
    fn render_metrics(&self, s: &mut String) {
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
                "  {:<28} {:>24} {:>7} {:>8} {:>8} {:>8}",
                "setup", "median (min-max)", "ratio", "paired", "vs (c)", "vs (b)"
            );
            let conntrack = values(Setup::ConntrackOnly).median;
            for setup in Setup::ALL {
                if self.of(setup).is_empty() {
                    continue;
                }
                let v = values(setup);
                let failed: u64 = self.of(setup).iter().map(failed_of).sum();
                let _ = writeln!(
                    s,
                    "  {:<28} {:>24} {:>6.1}% {:>7.1}% {:>7.1}% {:>7.1}%{}",
                    setup.label(),
                    format!(
                        "{:.digits$} ({:.digits$}-{:.digits$})",
                        v.median, v.min, v.max
                    ),
                    100.0 * v.median / base.max(1e-9),
                    100.0 * self.paired(setup, f).median,
                    100.0 * v.median / conntrack.max(1e-9),
                    100.0 * self.paired_against(Setup::Full, setup, f).median,
                    if failed > 0 {
                        format!("  ({failed} failed connects)")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }

    /// How the figures were measured, and every round's raw figures.
    fn render_rounds(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "({} rounds of {:.1} s per measurement, each {:.1} s after its table swap, setups \
             interleaved in rotating order; medians over rounds; ratio: of medians against (a); \
             paired: median of the per-round ratios against (a); vs (c): of medians against \
             the conntrack-only table; vs (b): median of the per-round ratios against the \
             ruleset without flow log)",
            self.of(Setup::NoTable).len(),
            self.duration.as_secs_f64(),
            self.settle.as_secs_f64()
        );
        for setup in Setup::ALL {
            if self.of(setup).is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "  {:<28} per round (conn/s; CRR conn/s; Gbit/s): {}",
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
    }
}
