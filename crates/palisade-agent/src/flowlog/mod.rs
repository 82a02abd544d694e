//! The flow log: the kernel reports decisions over NFLOG (see
//! [`palisade_nft::FlowLog`]); each becomes a [`FlowRecord`] attributed by
//! the engine of the policy generation that decided it, written to a
//! size-rotated JSON-lines file and kept in a bounded ring that
//! `GET /flows` serves. Loss is counted (metrics, and the next record's
//! `lost`), never silent.
//!
//! Threads: a reader blocks on the netlink socket and hands reports to the
//! worker through a bounded queue (full: counted as lost); the worker owns
//! the generations' engines, built only when a report needs one.

mod file;
mod nflog;
mod packet;
mod ring;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use palisade_engine::flowlog::{FlowRecord, FlowVerdict};
use palisade_engine::{Direction, Engine};
use palisade_model::Cluster;
use tracing::warn;

use crate::metrics::{label, Metrics};
use crate::Error;

pub use nflog::Report;
pub use packet::Headers;
pub use ring::{Filter, Ring};

#[derive(Clone, Debug)]
pub struct FlowLogConfig {
    /// The NFLOG group; one reader per group and network namespace.
    pub group: u16,
    /// Allowed new connections reported, in millionths.
    pub sample_ppm: u32,
    /// JSON lines, rotated at `max_file_bytes` into `FILE.1` ... `FILE.N`.
    pub file: Option<PathBuf>,
    pub max_file_bytes: u64,
    pub keep_files: usize,
    /// Records kept in memory for `GET /flows`.
    pub ring: usize,
    /// The NFLOG socket's receive buffer, in bytes: what absorbs a burst.
    pub receive_buffer: usize,
    /// Reports waiting between the socket's reader and the worker.
    pub queue: usize,
}

impl FlowLogConfig {
    pub fn new(group: u16) -> FlowLogConfig {
        FlowLogConfig {
            group,
            sample_ppm: 0,
            file: None,
            max_file_bytes: 64 << 20,
            keep_files: 4,
            ring: 10_000,
            receive_buffer: 4 << 20,
            queue: 65_536,
        }
    }

    /// `--flow-sample`: a rate in 0..=1, as millionths.
    pub fn sample_ppm_of(rate: f64) -> Option<u32> {
        (0.0..=1.0)
            .contains(&rate)
            .then(|| (rate * f64::from(palisade_nft::FlowLog::SAMPLE_ALL)).round() as u32)
    }
}

/// The policy a generation enforced: the engine the full path built (of a
/// cluster without staged policies), or the store's cluster (the
/// incremental path builds no engine; staged policies are compared with),
/// made into engines when a report first needs them.
pub enum Snapshot {
    Engine(Box<Engine>),
    Cluster(Cluster),
}

enum Msg {
    Report(Report),
    Generation(u32, Snapshot),
}

/// The agent's handle: what the compiler needs, and where generations go.
pub struct FlowLog {
    cfg: FlowLogConfig,
    tx: SyncSender<Msg>,
    ring: Arc<Ring>,
    /// Tells the reader to close the socket (which holds the node's
    /// network namespace) when the agent is done.
    stop: Arc<AtomicBool>,
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Generations kept for late reports (the kernel's queue, the reader).
const KEEP_GENERATIONS: usize = 8;
/// How long a report of a generation not announced yet waits for it.
const WAIT_FOR_GENERATION: Duration = Duration::from_secs(2);

impl FlowLog {
    /// Binds the NFLOG group in `netns` and starts the reader and worker.
    pub fn start(
        cfg: FlowLogConfig,
        node: &str,
        netns: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<FlowLog, Error> {
        let mut reader = nflog::open(netns, cfg.group, cfg.receive_buffer).map_err(|e| {
            Error::FlowLog(format!(
                "cannot read NFLOG group {} in network namespace {}: {e}",
                cfg.group,
                netns.unwrap_or("(the agent's)")
            ))
        })?;
        let file = match &cfg.file {
            Some(p) => Some(
                file::Rotating::open(p, cfg.max_file_bytes, cfg.keep_files)
                    .map_err(|e| Error::FlowLog(format!("{}: {e}", p.display())))?,
            ),
            None => None,
        };
        let ring = Arc::new(Ring::new(cfg.ring));
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let reader_tx = tx.clone();
        let m = metrics.clone();
        let queue_lost = Arc::new(AtomicU64::new(0));
        let dropped = queue_lost.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::Builder::new()
            .name("flow-reader".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    if let Err(e) = reader.next_batch(&mut batch) {
                        warn!(error = %e, "the flow log's NFLOG socket failed; no more flow records");
                        m.error("flow_log");
                        return;
                    }
                    for ev in batch.drain(..) {
                        // Losses and unreadable reports are counted here,
                        // not queued: a full queue must not hide them.
                        let r = match ev {
                            nflog::Event::Report(r) => r,
                            nflog::Event::Lost(n) => {
                                m.flow_lost.get_or_create(&label("cause", "kernel")).inc_by(n);
                                dropped.fetch_add(n, Ordering::Relaxed);
                                continue;
                            }
                            nflog::Event::Unreadable => {
                                m.flow_unreadable.inc();
                                continue;
                            }
                        };
                        match reader_tx.try_send(Msg::Report(r)) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                m.flow_lost.get_or_create(&label("cause", "queue")).inc();
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                }
            })
            .map_err(|error| Error::Start {
                what: "the flow log reader",
                error,
            })?;
        let worker = Worker {
            node: node.to_string(),
            generations: VecDeque::new(),
            pending: VecDeque::new(),
            queue_lost,
            ring: ring.clone(),
            file,
            metrics,
        };
        thread::Builder::new()
            .name("flow-log".into())
            .spawn(move || worker.run(rx))
            .map_err(|error| Error::Start {
                what: "the flow log",
                error,
            })?;
        Ok(FlowLog {
            cfg,
            tx,
            ring,
            stop,
        })
    }

    /// The compiler's options for generation `generation`.
    pub fn options(&self, generation: u32) -> palisade_nft::FlowLog {
        palisade_nft::FlowLog {
            group: self.cfg.group,
            sample_ppm: self.cfg.sample_ppm,
            generation,
        }
    }

    /// Generation `generation` is in force in the kernel (announced again
    /// when only the staged policies changed).
    pub fn publish(&self, generation: u32, snapshot: Snapshot) {
        // Blocking: a generation must not be lost, and the worker drains
        // the queue quickly.
        let _ = self.tx.send(Msg::Generation(generation, snapshot));
    }

    pub fn ring(&self) -> Arc<Ring> {
        self.ring.clone()
    }
}

struct Generation {
    id: u32,
    snapshot: Option<Snapshot>,
    /// What the kernel enforced, and the same with the staged policies
    /// (`None` without any).
    engines: OnceLock<(Engine, Option<Engine>)>,
}

impl Generation {
    fn engines(&mut self) -> &(Engine, Option<Engine>) {
        if self.engines.get().is_none() {
            let e = match self.snapshot.take() {
                Some(Snapshot::Engine(e)) => (*e, None),
                Some(Snapshot::Cluster(c)) => {
                    let staged = c.has_staged().then(|| Engine::with_staged(c.clone()));
                    (Engine::new(c), staged)
                }
                None => (Engine::new(Cluster::default()), None),
            };
            let _ = self.engines.set(e);
        }
        self.engines.get().expect("set above")
    }
}

struct Worker {
    node: String,
    generations: VecDeque<Generation>,
    /// Reports of a generation not announced yet, with when they came.
    pending: VecDeque<(Instant, String, Report)>,
    /// Reports lost since the last record, in the kernel or the queue
    /// (counted by the reader).
    queue_lost: Arc<AtomicU64>,
    ring: Arc<Ring>,
    file: Option<file::Rotating>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Report(r)) => {
                    let time = now();
                    if self.is_future(r.generation) {
                        self.pending.push_back((Instant::now(), time, r));
                    } else {
                        self.record(time, r);
                    }
                }
                Ok(Msg::Generation(id, snapshot)) => {
                    // The same generation again: the kernel did not change,
                    // the staged policies did.
                    if self.generations.back().is_some_and(|g| g.id == id) {
                        self.generations.pop_back();
                    }
                    self.generations.push_back(Generation {
                        id,
                        snapshot: Some(snapshot),
                        engines: OnceLock::new(),
                    });
                    if self.generations.len() > KEEP_GENERATIONS {
                        self.generations.pop_front();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.ring.close();
                    return;
                }
            }
            self.flush_pending();
        }
    }

    /// A generation newer than any announced: its announcement is on the
    /// way (the kernel applied it before the agent said so).
    fn is_future(&self, id: u32) -> bool {
        self.generations
            .back()
            .is_some_and(|g| id.wrapping_sub(g.id) != 0 && id.wrapping_sub(g.id) < u32::MAX / 2)
    }

    fn flush_pending(&mut self) {
        while let Some((at, _, r)) = self.pending.front() {
            if self.is_future(r.generation) && at.elapsed() < WAIT_FOR_GENERATION {
                return;
            }
            let (_, time, r) = self.pending.pop_front().expect("front exists");
            self.record(time, r);
        }
    }

    fn record(&mut self, time: String, r: Report) {
        let mut rec = match self.generations.iter_mut().find(|g| g.id == r.generation) {
            Some(g) => {
                let (enforced, staged) = g.engines();
                let mut rec = attributed(enforced, &self.node, &time, &r);
                if let Some(s) = staged {
                    compare_staged(&self.metrics, enforced, s, &r, &mut rec);
                }
                rec
            }
            None => {
                self.metrics.flow_unattributed.inc();
                unattributed(&self.node, &time, &r)
            }
        };
        rec.lost = self.queue_lost.swap(0, Ordering::Relaxed);
        let verdict = rec.verdict.as_str();
        self.metrics
            .flow_records
            .get_or_create(&vec![
                ("verdict".to_string(), verdict.to_string()),
                ("direction".to_string(), rec.direction.as_str().to_string()),
            ])
            .inc();
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(&rec).expect("a record serializes");
            if let Err(e) = f.write_line(&line) {
                self.metrics
                    .flow_lost
                    .get_or_create(&label("cause", "file"))
                    .inc();
                warn!(error = %e, "cannot write the flow log file");
            }
        }
        self.ring.push(rec);
    }
}

/// Where the staged policies would decide the reported direction
/// otherwise: the record says so, and the staged policy's metric counts it.
fn compare_staged(
    metrics: &Metrics,
    enforced: &Engine,
    staged: &Engine,
    r: &Report,
    rec: &mut FlowRecord,
) {
    let h = &r.headers;
    let diff = palisade_engine::staged::compare(
        enforced,
        staged,
        h.src.into(),
        h.dst.into(),
        h.protocol,
        h.port,
        r.direction,
    );
    let Ok(Some(d)) = diff else { return };
    let verdict = d.verdict.as_str();
    metrics
        .flow_staged
        .get_or_create(&vec![
            ("policy".to_string(), d.policy.clone().unwrap_or_default()),
            ("verdict".to_string(), verdict.to_string()),
        ])
        .inc();
    rec.staged = Some(d.verdict);
    rec.staged_policy = d.policy;
}

/// Record times: UTC, milliseconds, fixed width, so that they sort as text.
pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn attributed(engine: &Engine, node: &str, time: &str, r: &Report) -> FlowRecord {
    let h = &r.headers;
    let flow = engine.packet_flow(h.src, h.dst, h.protocol, h.port);
    let a = engine.attribute(&flow, r.direction);
    let mut rec = unattributed(node, time, r);
    (rec.src, rec.src_workload) = engine.record_names(flow.src);
    (rec.dst, rec.dst_workload) = engine.record_names(flow.dst);
    rec.reason = if a.allowed == r.allowed {
        a.reason
    } else {
        // The kernel and the engine of the same generation disagree: a
        // defect, to be seen rather than hidden.
        format!(
            "the kernel {} this, but the policies of its generation say: {}",
            FlowVerdict::of(r.allowed).as_str(),
            a.reason
        )
    };
    rec.policy = a.policy;
    rec.rule = a.rule;
    rec.generation = Some(u64::from(r.generation));
    rec
}

fn unattributed(node: &str, time: &str, r: &Report) -> FlowRecord {
    let h = &r.headers;
    let dir = match r.direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    };
    FlowRecord {
        time: time.to_string(),
        node: node.to_string(),
        direction: r.direction,
        src: h.src.to_string(),
        src_workload: None,
        src_ip: Some(h.src),
        dst: h.dst.to_string(),
        dst_workload: None,
        dst_ip: Some(h.dst),
        protocol: h.protocol,
        port: h.port,
        verdict: FlowVerdict::of(r.allowed),
        policy: None,
        rule: None,
        reason: format!(
            "unknown: decided for {dir} by a policy generation the agent no longer holds"
        ),
        staged: None,
        staged_policy: None,
        generation: None,
        lost: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::flowlog::StagedVerdict;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: s, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: s, labels: {app: b}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: lockdown, namespace: s, annotations: {palisade.dev/staged: "true"}}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress: []
"#;

    fn worker() -> (Worker, Arc<Ring>, Arc<Metrics>) {
        let ring = Arc::new(Ring::new(10));
        let metrics = Arc::new(Metrics::new());
        let w = Worker {
            node: "n1".into(),
            generations: VecDeque::new(),
            pending: VecDeque::new(),
            queue_lost: Arc::new(AtomicU64::new(0)),
            ring: ring.clone(),
            file: None,
            metrics: metrics.clone(),
        };
        (w, ring, metrics)
    }

    fn report(generation: u32) -> Report {
        Report {
            allowed: true,
            direction: Direction::Ingress,
            generation,
            headers: Headers {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                protocol: palisade_model::Protocol::Tcp,
                port: 80,
            },
        }
    }

    #[test]
    fn reports_are_compared_with_the_staged_policies_of_their_generation() {
        let loaded = palisade_k8s::load(&[("c.yaml".into(), CLUSTER.as_bytes().to_vec())]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let (mut w, ring, metrics) = worker();
        w.generations.push_back(Generation {
            id: 5,
            snapshot: Some(Snapshot::Cluster(loaded.cluster)),
            engines: OnceLock::new(),
        });
        w.record("t".into(), report(5));
        w.record("t".into(), report(4));
        let (recs, _) = ring.snapshot(&Filter::default());
        assert_eq!(
            recs[0].staged,
            Some(StagedVerdict::WouldDeny),
            "{:?}",
            recs[0]
        );
        assert_eq!(recs[0].staged_policy.as_deref(), Some("s/lockdown"));
        assert_eq!(
            recs[0].reason,
            "ingress allowed: s/b is not isolated for ingress"
        );
        assert_eq!((recs[1].generation, recs[1].policy.as_ref()), (None, None));
        assert!(recs[1].reason.starts_with("unknown:"), "{}", recs[1].reason);
        assert_eq!(metrics.flow_unattributed.get(), 1);
    }
}
