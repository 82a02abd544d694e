//! The agent's attack surface, as root, through the real binary in network
//! namespaces the tests create: the HTTP endpoint listens on loopback by
//! default, answers GET only, and bounds large and slow requests; after
//! start the agent holds only the capabilities it needs, and enforces with
//! no more than its deployment grants. Skipped, with the reason printed,
//! without root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
/// The default of `--listen`.
const DEFAULT_PORT: u16 = 9464;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with loopback up and a veth pair, one end holding
/// `10.251.N.1/24`; deleted when dropped.
struct Netns {
    name: String,
    addr: String,
}

impl Netns {
    fn new(name: &str, n: u8) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&[
            "-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ]);
        let addr = format!("10.251.{n}.1");
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "d0",
        ]);
        ip(&["-n", name, "link", "set", "d0", "up"]);
        ip(&["-n", name, "link", "set", "d1", "up"]);
        Netns {
            name: name.into(),
            addr,
        }
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        palisade_agent::netlink::in_netns(Some(&self.name), f)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// `nft list table inet palisade` in the namespace ("" when absent).
    fn table(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "table", "inet"])
            .arg("palisade")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn skip_unless_root() -> bool {
    if palisade_lab::sys::is_root() {
        return false;
    }
    eprintln!("skipped: network namespaces need root");
    true
}

/// The node `n1` (so that the agent writes its table) at the namespace's
/// address.
fn manifests(dir: &Path, ns: &Netns) {
    std::fs::write(
        dir.join("node.yaml"),
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\n\
             status: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
            ns.addr
        ),
    )
    .unwrap();
}

/// A pod of another node: its address joins the identity sets of n1's table.
fn remote_pod(dir: &Path, name: &str, addr: &str) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}\n\
             spec: {{nodeName: n2, containers: [{{name: c}}]}}\n\
             status: {{phase: Running, podIPs: [{{ip: {addr}}}]}}\n"
        ),
    )
    .unwrap();
}

/// `palisade agent --node n1 --dir DIR ARGS` started in `ns` through
/// `wrap` (a command that runs the rest, such as `setpriv`), logging to
/// `log`.
fn agent(ns: &Netns, wrap: &[&str], dir: &Path, args: &[&str], log: &Path) -> Proc {
    Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(wrap)
            .arg(BIN)
            .args(["agent", "--node", "n1", "--dir"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Sends `request` to the agent's default address inside `ns`; what came
/// back before the agent closed the connection.
fn exchange(ns: &Netns, request: Vec<u8>) -> std::io::Result<Vec<u8>> {
    ns.run(move || {
        let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_PORT).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(&request)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    })
}

fn status(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn get(ns: &Netns, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.0\r\n\r\n").into_bytes();
    match exchange(ns, req) {
        Ok(a) => {
            let text = String::from_utf8_lossy(&a).into_owned();
            let body = text
                .split_once("\r\n\r\n")
                .map_or("", |(_, b)| b)
                .to_string();
            (status(&a), body)
        }
        Err(_) => (0, String::new()),
    }
}

fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never: {what}; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The listening TCP sockets on `port` in the namespace of process `pid`,
/// as (local address in /proc/net/tcp's hex, file).
fn listeners(pid: u32, port: u16) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some((addr, p)) = f[1].split_once(':') else {
                continue;
            };
            if f[3] == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                found.push((addr.to_string(), file));
            }
        }
    }
    found
}

#[test]
fn http_listens_on_loopback_only_and_answers_get_only() {
    if skip_unless_root() {
        return;
    }
    let ns = Netns::new("palsurf-http", 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    manifests(&dir, &ns);
    let log = tmp.path().join("agent.log");
    let a = agent(&ns, &[], &dir, &[], &log);
    wait_for("ready", &log, || get(&ns, "/readyz").0 == 200);

    // Bound to 127.0.0.1 alone: the only listener on the port, and the
    // namespace's other address refuses the connection.
    assert_eq!(
        listeners(a.0.id(), DEFAULT_PORT),
        [("0100007F".to_string(), "tcp")]
    );
    let other: SocketAddr = format!("{}:{DEFAULT_PORT}", ns.addr).parse().unwrap();
    let refused = ns
        .run(move || {
            Ok(TcpStream::connect_timeout(&other, Duration::from_secs(2)).map_err(|e| e.kind()))
        })
        .unwrap();
    assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused));

    // Every other method is refused, whatever it carries, and changes
    // nothing.
    let table = ns.table();
    assert!(table.contains("table inet palisade"), "{table}");
    let health = get(&ns, "/healthz");
    let body = "apiVersion: v1\nkind: Pod\nmetadata: {name: evil, namespace: default}\n";
    let methods = [
        "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
    ];
    let paths = ["/metrics", "/healthz", "/readyz", "/flows", "/", "/nothing"];
    for m in methods {
        for p in paths {
            let req = format!(
                "{m} {p} HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let answer = exchange(&ns, req.into_bytes()).unwrap();
            let text = String::from_utf8_lossy(&answer);
            assert_eq!(status(&answer), 405, "{m} {p}: {text}");
            assert!(text.contains("\r\nAllow: GET\r\n"), "{m} {p}: {text}");
        }
    }
    assert_eq!(ns.table(), table, "a refused request changed the table");
    assert_eq!(get(&ns, "/healthz"), health);

    // Paths that are not the four endpoints, spelt in every way a router
    // might be fooled, are not found.
    for p in [
        "/",
        "/admin",
        "/metrics/",
        "/healthz/../metrics",
        "/%6detrics",
        "//metrics",
        "/METRICS",
        "http://127.0.0.1:9464/metrics",
        "*",
    ] {
        assert_eq!(get(&ns, p).0, 404, "GET {p}");
    }
    for p in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(&ns, p).0, 200, "GET {p}");
    }
    // The flow log is off: /flows says so.
    assert_eq!(get(&ns, "/flows").0, 404);
}

#[test]
fn http_bounds_large_heads_and_slow_clients() {
    use palisade_agent::http::{MAX_CONNECTIONS, MAX_HEAD, MAX_HEADERS};
    if skip_unless_root() {
        return;
    }
    let ns = Netns::new("palsurf-slow", 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    manifests(&dir, &ns);
    let log = tmp.path().join("agent.log");
    let _a = agent(&ns, &[], &dir, &[], &log);
    wait_for("ready", &log, || get(&ns, "/readyz").0 == 200);

    // A head of exactly the limit is read; one byte more, a longer request
    // line or too many headers is refused, and the server goes on.
    let head = |line_fill: usize, header_fill: usize, headers: usize| {
        let mut h = format!("GET /healthz{} HTTP/1.0\r\n", "?".repeat(line_fill));
        h.push_str(&format!("X-Fill: {}\r\n", "a".repeat(header_fill)));
        for i in 1..headers {
            h.push_str(&format!("X-{i}: v\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    };
    let fill = MAX_HEAD - head(0, 0, 1).len();
    let ask = |req: Vec<u8>| status(&exchange(&ns, req).unwrap());
    assert_eq!(ask(head(0, fill, 1)), 200);
    assert_eq!(ask(head(0, fill + 1, 1)), 431);
    assert_eq!(ask(head(fill + 1, 0, 1)), 431);
    assert_eq!(ask(head(0, 0, MAX_HEADERS)), 200);
    assert_eq!(ask(head(0, 0, MAX_HEADERS + 1)), 431);
    assert_eq!(
        ask(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec()),
        400
    );
    // A megabyte of header: refused after the limit (or the connection
    // reset while the rest was still being sent), never buffered whole.
    let huge = head(0, 1 << 20, 1);
    if let Ok(answer) = exchange(&ns, huge) {
        assert!(matches!(status(&answer), 431 | 0), "{answer:?}");
    }
    assert_eq!(get(&ns, "/healthz").0, 200);

    // A client that sends its head one byte at a time is cut by the head
    // deadline (408), not by the size limit: it was far from it.
    let trickled = ns
        .run(move || {
            let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_PORT).into();
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            let mut sent = 0;
            let mut answer = Vec::new();
            let line = b"GET /metrics HTTP/1.0\r\nX-Slow: ";
            loop {
                let byte = line.get(sent).copied().unwrap_or(b'a');
                if s.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                if sent >= MAX_HEAD {
                    break;
                }
            }
            Ok((sent, answer))
        })
        .unwrap();
    assert!(
        trickled.0 < MAX_HEAD,
        "the server waited for the whole head"
    );
    assert_eq!(status(&trickled.1), 408, "{:?}", trickled.1);

    // Idle connections beyond the limit are closed at once; those within
    // it are answered 408 when their time is up; then the server serves
    // again.
    let extra = 8;
    let idle = ns
        .run(move || {
            let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_PORT).into();
            let conns: Vec<TcpStream> = (0..MAX_CONNECTIONS + extra)
                .map(|_| {
                    let mut s = TcpStream::connect(addr)?;
                    s.write_all(b"GET /metr")?;
                    Ok(s)
                })
                .collect::<std::io::Result<_>>()?;
            let mut answers = Vec::new();
            for mut s in conns {
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                let mut out = Vec::new();
                // A reset is a close too; only a read that timed out is
                // a connection the server still holds.
                match s.read_to_end(&mut out) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => answers.push(None),
                    _ => answers.push(Some(status(&out))),
                }
            }
            Ok(answers)
        })
        .unwrap();
    let count = |a: Option<u16>| idle.iter().filter(|&&c| c == a).count();
    let (timed_out, closed) = (count(Some(408)), count(Some(0)));
    // Earlier connections' threads may still be ending: a few more may be
    // closed at once, never more answered than the limit.
    assert_eq!(timed_out + closed, idle.len(), "{idle:?}");
    assert!(timed_out <= MAX_CONNECTIONS && closed >= extra, "{idle:?}");
    assert_eq!(get(&ns, "/healthz").0, 200);
}

/// One capability set of `/proc/PID/status`, as the kernel prints it.
fn proc_status(pid: u32) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.starts_with("Cap") || *k == "NoNewPrivs" || *k == "Name")
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// What `/proc/PID/status` must say of a process holding exactly `caps`
/// (a bit mask) and no_new_privs.
fn restricted(name: &str, caps: u64) -> std::collections::BTreeMap<String, String> {
    let hex = format!("{caps:016x}");
    [
        ("Name", name),
        ("CapInh", "0000000000000000"),
        ("CapPrm", &hex),
        ("CapEff", &hex),
        ("CapBnd", &hex),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The process ids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let p = t.unwrap().path().join("children");
        let text = std::fs::read_to_string(p).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}

const NET_ADMIN: u64 = 1 << 12;
const SYS_ADMIN: u64 = 1 << 21;

/// Runs the agent in a fresh namespace (`wrap` in front of it; with
/// `node_netns`, enforcing in a second one through `--netns`), checks its
/// capabilities while it enforces, and that a change reaches the kernel
/// with them; then the same for its `nft` child.
fn enforces_holding(case: &str, n: u8, wrap: &[&str], node_netns: bool, caps: u64) {
    let ns = Netns::new(&format!("palsurf-{case}"), n);
    let node = node_netns.then(|| Netns::new(&format!("palsurf-{case}-n"), n + 100));
    let node_ns = node.as_ref().unwrap_or(&ns);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    manifests(&dir, node_ns);
    let log = tmp.path().join("agent.log");
    let args: Vec<&str> = match &node {
        Some(node) => vec!["--netns", &node.name],
        None => vec![],
    };
    let a = agent(&ns, wrap, &dir, &args, &log);
    wait_for("ready", &log, || get(&ns, "/readyz").0 == 200);
    let table = node_ns.table();
    assert!(table.contains("table inet palisade"), "{case}: {table}");
    assert_eq!(
        proc_status(a.0.id()),
        restricted("palisade", caps),
        "{case}"
    );

    // A change after the drop is enforced: the new pod's address is in
    // the kernel, through the long-lived nft, which holds no more.
    let addr = format!("10.251.{n}.77");
    remote_pod(&dir, "late", &addr);
    wait_for(&format!("{case}: {addr} in the table"), &log, || {
        node_ns.table().contains(&addr)
    });
    let kids = children(a.0.id());
    assert!(!kids.is_empty(), "{case}: the nft session runs");
    for kid in kids {
        let s = proc_status(kid);
        let name = s.get("Name").cloned().unwrap_or_default();
        assert_eq!(s, restricted(&name, caps), "{case}: child {kid}");
    }
    assert_eq!(get(&ns, "/healthz"), (200, "ok\n".into()), "{case}");
    let text = std::fs::read_to_string(&log).unwrap();
    let kept = if caps & SYS_ADMIN != 0 {
        "capabilities kept: CAP_NET_ADMIN,CAP_SYS_ADMIN; no_new_privs set"
    } else {
        "capabilities kept: CAP_NET_ADMIN; no_new_privs set"
    };
    assert!(text.contains(kept), "{case}: {text}");
}

#[test]
fn the_agent_keeps_only_the_capabilities_it_needs() {
    if skip_unless_root() {
        return;
    }
    // Started as root with every capability, as a shell would.
    enforces_holding("root", 3, &[], false, NET_ADMIN);
}

#[test]
fn the_agent_enforces_with_only_what_the_deployment_grants() {
    if skip_unless_root() {
        return;
    }
    // deploy/agent.yaml: drop ALL, add NET_ADMIN, no privilege escalation.
    let setpriv = [
        "setpriv",
        "--bounding-set",
        "-all,+net_admin",
        "--inh-caps",
        "-all",
        "--no-new-privs",
    ];
    enforces_holding("deployed", 4, &setpriv, false, NET_ADMIN);
}

#[test]
fn another_namespace_keeps_sys_admin_to_enter_it() {
    if skip_unless_root() {
        return;
    }
    // --netns (the lab's mode) enters the node's namespace for every read
    // of its links and for `ip netns exec nft`: CAP_SYS_ADMIN stays.
    enforces_holding("netns", 5, &[], true, NET_ADMIN | SYS_ADMIN);
}

#[test]
fn flows_are_served_and_followers_are_bounded() {
    if skip_unless_root() {
        return;
    }
    let ns = Netns::new("palsurf-flows", 7);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    manifests(&dir, &ns);
    let log = tmp.path().join("agent.log");
    let _a = agent(&ns, &[], &dir, &["--flows"], &log);
    wait_for("ready", &log, || get(&ns, "/readyz").0 == 200);
    assert_eq!(get(&ns, "/flows"), (200, String::new()));
    assert_eq!(
        get(&ns, "/flows?verdict=maybe"),
        (400, "verdict=maybe: allowed or denied\n".into())
    );
    // Followers get the answer's head and then a heartbeat line while
    // nothing happens; one more than the limit is refused.
    let answers = ns
        .run(|| {
            let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_PORT).into();
            let mut held = Vec::new();
            let mut answers = Vec::new();
            for _ in 0..17 {
                let mut s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                s.write_all(b"GET /flows?follow=1 HTTP/1.0\r\n\r\n")?;
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                let head_read = |got: &[u8]| got.windows(4).any(|w| w == b"\r\n\r\n");
                while !head_read(&got) {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                // The first follower waits for its heartbeat.
                if held.is_empty() && got.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf)?;
                    got.extend_from_slice(&buf[..n]);
                }
                answers.push(String::from_utf8_lossy(&got).into_owned());
                held.push(s);
            }
            Ok(answers)
        })
        .unwrap();
    assert!(
        answers[0].ends_with("\r\n\r\n\n"),
        "a heartbeat: {:?}",
        answers[0]
    );
    for a in &answers[..16] {
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    }
    assert!(answers[16].starts_with("HTTP/1.1 503"), "{}", answers[16]);
    assert!(
        answers[16].ends_with("at most 16 followers\n"),
        "{}",
        answers[16]
    );
}
