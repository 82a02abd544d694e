//! Probes: every ordered pair of lab pods, every port, both families, with
//! real packets, next to what the engine predicts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use palisade_engine::{Endpoint, Engine, PortProto};
use palisade_model::Protocol;
use serde::Serialize;

use crate::{in_netns, sys, Error, Result, State};

/// One probed flow: predicted by the engine, observed with packets.
#[derive(Clone, Debug, Serialize)]
pub struct Observation {
    pub src: String,
    pub dst: String,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub expected: bool,
    pub observed: bool,
}

impl Observation {
    pub fn agrees(&self) -> bool {
        self.expected == self.observed
    }
}

/// `src -> dst (src_ip -> dst_ip) port/proto: engine allowed, kernel denied`.
impl std::fmt::Display for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = |b: bool| if b { "allowed" } else { "denied" };
        write!(
            f,
            "{} -> {} ({} -> {}) {}/{}: engine {}, kernel {}",
            self.src,
            self.dst,
            self.src_ip,
            self.dst_ip,
            self.port,
            self.protocol,
            word(self.expected),
            word(self.observed)
        )
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// How long a denied connection attempt waits.
    pub timeout: Duration,
    pub threads: usize,
    /// Source pods to probe from (keys); empty: all.
    pub only_src: Vec<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: Duration::from_millis(300),
            threads: 64,
            only_src: Vec::new(),
        }
    }
}

struct Task {
    src: usize,
    dst: usize,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    port: PortProto,
    expected: bool,
}

static TAG: AtomicUsize = AtomicUsize::new(1);

fn probe_tcp(dst: SocketAddr, timeout: Duration) -> bool {
    match TcpStream::connect_timeout(&dst, timeout) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

fn probe_udp(dst: SocketAddr, timeout: Duration) -> bool {
    let any: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let Ok(s) = UdpSocket::bind(any) else {
        return false;
    };
    if s.connect(dst).is_err() || s.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    if s.send(b"palisade-probe").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.recv(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// One task per probed flow (source, destination, port, family), with the
/// engine's verdict.
fn tasks(
    state: &State,
    engine: &Engine,
    ports: &[PortProto],
    opts: &ProbeOptions,
) -> Result<Vec<Task>> {
    let cluster = engine.cluster();
    let pod_index = crate::state::pod_index(cluster);
    let mut tasks = Vec::new();
    for (si, s) in state.pods.iter().enumerate() {
        if !opts.only_src.is_empty() && !opts.only_src.contains(&s.key) {
            continue;
        }
        let Some(&sp) = pod_index.get(&s.key) else {
            return Err(Error::Msg(format!("pod {} is not in the cluster", s.key)));
        };
        for (di, d) in state.pods.iter().enumerate() {
            if si == di {
                continue;
            }
            let Some(&dp) = pod_index.get(&d.key) else {
                return Err(Error::Msg(format!("pod {} is not in the cluster", d.key)));
            };
            for &port in ports {
                for v4 in [true, false] {
                    let Some(f) = engine.flow_in_family(
                        Endpoint::Pod(sp),
                        Endpoint::Pod(dp),
                        port.protocol,
                        port.port,
                        v4,
                    ) else {
                        continue;
                    };
                    // Lab pods are live pods: both sides have addresses.
                    let (Some(src_ip), Some(dst_ip)) = (f.src_ip, f.dst_ip) else {
                        continue;
                    };
                    tasks.push(Task {
                        src: si,
                        dst: di,
                        src_ip,
                        dst_ip,
                        port,
                        expected: engine.allowed(&f),
                    });
                }
            }
        }
    }
    Ok(tasks)
}

/// Probes every ordered pair of lab pods (a pod to itself is left out: the
/// API leaves loopback undefined) for every port, over IPv4 and IPv6, and
/// returns what arrived next to what `engine` predicts.
pub fn probe(
    state: &State,
    engine: &Engine,
    ports: &[PortProto],
    opts: &ProbeOptions,
) -> Result<Vec<Observation>> {
    if !sys::is_root() {
        return Err(Error::Msg("probing the lab needs root".into()));
    }
    let tasks = tasks(state, engine, ports, opts)?;
    let (sctp, stream): (Vec<usize>, Vec<usize>) =
        (0..tasks.len()).partition(|&i| tasks[i].port.protocol == Protocol::Sctp);
    let observed = vec![false; tasks.len()];

    // TCP and UDP: a worker pool, each worker entering the source namespace.
    let run_stream = |list: &[usize], timeout: Duration, observed: &Mutex<Vec<bool>>| {
        let next = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..opts.threads.clamp(1, list.len().max(1)) {
                sc.spawn(|| {
                    let mut current: Option<usize> = None;
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = list.get(k) else { break };
                        let t = &tasks[i];
                        if current != Some(t.src) {
                            if sys::enter_netns(&state.pods[t.src].netns).is_err() {
                                continue;
                            }
                            current = Some(t.src);
                        }
                        let dst = SocketAddr::new(t.dst_ip, t.port.port);
                        let ok = match t.port.protocol {
                            Protocol::Tcp => probe_tcp(dst, timeout),
                            Protocol::Udp => probe_udp(dst, timeout),
                            Protocol::Sctp => false,
                        };
                        observed.lock().expect("no poisoning")[i] = ok;
                    }
                });
            }
        });
    };
    let obs = Mutex::new(observed);
    run_stream(&stream, opts.timeout, &obs);
    // An allowed probe that saw nothing is retried with a longer timeout
    // (a slow first packet is not a verdict); a denied one never is.
    let retry: Vec<usize> = stream
        .iter()
        .copied()
        .filter(|&i| tasks[i].expected && !obs.lock().expect("no poisoning")[i])
        .collect();
    if !retry.is_empty() {
        run_stream(&retry, opts.timeout * 4, &obs);
    }
    let mut observed = obs.into_inner().expect("no poisoning");

    if !sctp.is_empty() {
        let mut pending: Vec<usize> = sctp.clone();
        for attempt in 0..2 {
            let seen = sctp_round(state, &tasks, &pending, opts.timeout * (attempt + 1))?;
            for &i in &pending {
                observed[i] = seen.contains(&i);
            }
            pending.retain(|&i| tasks[i].expected && !observed[i]);
            if pending.is_empty() {
                break;
            }
        }
    }

    Ok(tasks
        .iter()
        .zip(observed)
        .map(|(t, o)| Observation {
            src: state.pods[t.src].key.clone(),
            dst: state.pods[t.dst].key.clone(),
            src_ip: t.src_ip,
            dst_ip: t.dst_ip,
            port: t.port.port,
            protocol: t.port.protocol.to_string(),
            expected: t.expected,
            observed: o,
        })
        .collect())
}

/// Sends one raw SCTP INIT per task and returns the tasks whose INIT arrived
/// in the destination namespace.
fn sctp_round(
    state: &State,
    tasks: &[Task],
    list: &[usize],
    wait: Duration,
) -> Result<HashSet<usize>> {
    // Receivers first, in every destination namespace and family.
    let mut receivers = BTreeMap::new();
    for &i in list {
        let t = &tasks[i];
        let key = (t.dst, t.dst_ip.is_ipv4());
        if let std::collections::btree_map::Entry::Vacant(e) = receivers.entry(key) {
            let v4 = key.1;
            e.insert(in_netns(&state.pods[t.dst].netns, move || {
                sys::raw_sctp(v4)
            })?);
        }
    }
    let mut by_tag: HashMap<u32, usize> = HashMap::new();
    let mut by_src: BTreeMap<usize, Vec<(usize, u32)>> = BTreeMap::new();
    for &i in list {
        let tag = TAG.fetch_add(1, Ordering::Relaxed) as u32 | 0x5000_0000;
        by_tag.insert(tag, i);
        by_src.entry(tasks[i].src).or_default().push((i, tag));
    }
    // (source netns, [(destination, port, initiate tag)])
    type Batch = (String, Vec<(IpAddr, u16, u32)>);
    let batches: Vec<Batch> = by_src
        .into_iter()
        .map(|(s, v)| {
            (
                state.pods[s].netns.clone(),
                v.into_iter()
                    .map(|(i, tag)| (tasks[i].dst_ip, tasks[i].port.port, tag))
                    .collect(),
            )
        })
        .collect();
    for (ns, sends) in batches {
        in_netns(&ns, move || {
            let s4 = sys::raw_sctp(true)?;
            let s6 = sys::raw_sctp(false)?;
            for (dst, port, tag) in sends {
                let pkt = sys::sctp_init(40000 + (tag % 20000) as u16, port, tag);
                let s = if dst.is_ipv4() { &s4 } else { &s6 };
                s.send(&pkt, dst)?;
            }
            Ok(())
        })?;
    }
    std::thread::sleep(wait);
    let mut seen = HashSet::new();
    let mut buf = [0u8; 2048];
    for ((dst, v4), fd) in &receivers {
        while let Ok((n, from)) = sys::recv_from(fd, &mut buf) {
            if let Some((port, tag)) = sys::parse_sctp_init(&buf[..n], *v4) {
                if let Some(&i) = by_tag.get(&tag) {
                    let t = &tasks[i];
                    if t.dst == *dst && t.port.port == port && t.src_ip == from {
                        seen.insert(i);
                    }
                }
            }
        }
    }
    Ok(seen)
}

trait SendRaw {
    fn send(&self, pkt: &[u8], dst: IpAddr) -> std::io::Result<()>;
}

impl SendRaw for std::os::fd::OwnedFd {
    fn send(&self, pkt: &[u8], dst: IpAddr) -> std::io::Result<()> {
        sys::send_to(self, pkt, dst)
    }
}

/// One connection attempt from lab pod `src` to `dst` (TCP: a handshake;
/// UDP: a datagram and its answer): whether it got through. Traffic for
/// the flow log and for walkthroughs; SCTP is probed with raw packets by
/// [`probe`] only.
pub fn connect(
    state: &State,
    src: &str,
    dst: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> Result<bool> {
    let pod = state
        .pod(src)
        .ok_or_else(|| Error::Msg(format!("no pod {src} in the lab")))?;
    let f = match protocol {
        Protocol::Tcp => probe_tcp,
        Protocol::Udp => probe_udp,
        Protocol::Sctp => {
            return Err(Error::Msg(
                "SCTP connections are made by `lab probe` only (raw INIT packets)".into(),
            ))
        }
    };
    in_netns(&pod.netns, move || Ok(f(dst, timeout)))
}

/// Opens a TCP connection from a lab pod (for tests of established flows).
pub fn connect_from(
    state: &State,
    src: &str,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    let pod = state
        .pod(src)
        .ok_or_else(|| Error::Msg(format!("no pod {src} in the lab")))?;
    in_netns(&pod.netns, move || {
        TcpStream::connect_timeout(&dst, timeout)
    })
}

/// Sends `msg` on `s` and reads the echo back.
pub fn echo_roundtrip(s: &mut TcpStream, msg: &[u8], timeout: Duration) -> bool {
    let _ = s.set_read_timeout(Some(timeout));
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg
}

/// What a probed pair shows on one port, over the families probed: `.`
/// allowed, `X` denied, `4` or `6` allowed over that family only, `-` not
/// probed (a pod to itself, or no common family).
fn mark(probes: &[(bool, bool)]) -> &'static str {
    let allowed = |v4: bool| probes.iter().any(|&(f, a)| f == v4 && a);
    let probed = |v4: bool| probes.iter().any(|&(f, _)| f == v4);
    match (probed(true), probed(false)) {
        (false, false) => "-",
        (true, true) => match (allowed(true), allowed(false)) {
            (true, true) => ".",
            (false, false) => "X",
            (true, false) => "4",
            (false, true) => "6",
        },
        (true, false) => {
            if allowed(true) {
                "."
            } else {
                "X"
            }
        }
        (false, true) => {
            if allowed(false) {
                "."
            } else {
                "X"
            }
        }
    }
}

/// The predicted and the observed matrix of a probe run side by side, one
/// block per port: rows are sources and columns destinations, both the
/// lab's pods in `pods` order, numbered (the columns are the numbers).
/// A row where the kernel and the engine disagree is marked.
pub fn render_matrices(obs: &[Observation], pods: &[String], ports: &[PortProto]) -> String {
    use std::fmt::Write as _;
    let at: HashMap<&str, usize> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let n = pods.len();
    // (port, src, dst) → [(is IPv4, predicted, observed)]
    type Probes = Vec<(bool, bool, bool)>;
    let mut cells: HashMap<(usize, usize, usize), Probes> = HashMap::new();
    for o in obs {
        let Some(pi) = ports
            .iter()
            .position(|p| p.port == o.port && p.protocol.as_str() == o.protocol)
        else {
            continue;
        };
        let (Some(&s), Some(&d)) = (at.get(o.src.as_str()), at.get(o.dst.as_str())) else {
            continue;
        };
        cells
            .entry((pi, s, d))
            .or_default()
            .push((o.dst_ip.is_ipv4(), o.expected, o.observed));
    }
    let digits = n.max(1).to_string().len();
    let labels: Vec<String> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:>digits$} {p}", i + 1))
        .collect();
    let lw = labels.iter().map(String::len).max().unwrap_or(0);
    let block = (n * (digits + 1)).saturating_sub(1).max("predicted".len());
    let mut out = String::new();
    for (pi, pp) in ports.iter().enumerate() {
        if pi > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{pp} (rows: from, columns: to; . allowed, X denied, 4/6 allowed over IPv4/IPv6 only, - not probed)"
        );
        let _ = writeln!(out, "{:lw$}   {:block$}   observed", "", "predicted");
        let numbers: Vec<String> = (1..=n).map(|i| format!("{i:>digits$}")).collect();
        let numbers = numbers.join(" ");
        let _ = writeln!(out, "{:lw$}   {numbers:block$}   {numbers}", "");
        for (s, label) in labels.iter().enumerate() {
            let (mut predicted, mut observed, mut differs) = (Vec::new(), Vec::new(), false);
            for d in 0..n {
                let probes = cells.get(&(pi, s, d)).map(Vec::as_slice).unwrap_or(&[]);
                let p: Vec<(bool, bool)> = probes.iter().map(|&(f, e, _)| (f, e)).collect();
                let o: Vec<(bool, bool)> = probes.iter().map(|&(f, _, o)| (f, o)).collect();
                differs |= probes.iter().any(|&(_, e, o)| e != o);
                predicted.push(format!("{:>digits$}", mark(&p)));
                observed.push(format!("{:>digits$}", mark(&o)));
            }
            let _ = writeln!(
                out,
                "{label:lw$}   {:block$}   {}{}",
                predicted.join(" "),
                observed.join(" "),
                if differs { "   <-- disagrees" } else { "" }
            );
        }
    }
    out
}

/// `180/180 probes agree`, or `178/180 probes agree; 2 disagree:` and one
/// indented line per disagreeing probe.
pub fn render_summary(obs: &[Observation]) -> String {
    let bad: Vec<&Observation> = obs.iter().filter(|o| !o.agrees()).collect();
    let agree = obs.len() - bad.len();
    if bad.is_empty() {
        return format!("{agree}/{} probes agree\n", obs.len());
    }
    let mut out = format!(
        "{agree}/{} probes agree; {} disagree:\n",
        obs.len(),
        bad.len()
    );
    for o in bad {
        out.push_str(&format!("  {o}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ob(
        src: &str,
        dst: &str,
        v4: bool,
        port: u16,
        expected: bool,
        observed: bool,
    ) -> Observation {
        let (s, d): (IpAddr, IpAddr) = if v4 {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        } else {
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
        };
        Observation {
            src: src.into(),
            dst: dst.into(),
            src_ip: s,
            dst_ip: d,
            port,
            protocol: "TCP".into(),
            expected,
            observed,
        }
    }

    #[test]
    fn matrices_side_by_side_and_summary_name_each_disagreement() {
        let pods = vec![
            "ns/a".to_string(),
            "ns/bb".to_string(),
            "other/c".to_string(),
        ];
        let ports: Vec<PortProto> = vec!["80/TCP".parse().unwrap()];
        let obs = vec![
            ob("ns/a", "ns/bb", true, 80, true, true),
            ob("ns/a", "ns/bb", false, 80, true, true),
            ob("ns/a", "other/c", true, 80, false, false),
            ob("ns/bb", "ns/a", true, 80, true, true),
            ob("ns/bb", "ns/a", false, 80, true, false),
            ob("ns/bb", "other/c", true, 80, true, true),
            ob("other/c", "ns/a", true, 80, false, false),
            // A port not asked for is not drawn.
            ob("other/c", "ns/a", true, 81, true, true),
        ];
        assert_eq!(
            render_matrices(&obs, &pods, &ports),
            "80/TCP (rows: from, columns: to; . allowed, X denied, 4/6 allowed over IPv4/IPv6 only, - not probed)
            predicted   observed
            1 2 3       1 2 3
1 ns/a      - . X       - . X
2 ns/bb     . - .       4 - .   <-- disagrees
3 other/c   X - -       X - -
"
        );
        assert_eq!(
            render_summary(&obs),
            "7/8 probes agree; 1 disagree:
  ns/bb -> ns/a (fd00::1 -> fd00::2) 80/TCP: engine allowed, kernel denied
"
        );
        assert_eq!(render_summary(&obs[..4]), "4/4 probes agree\n");
    }
}
