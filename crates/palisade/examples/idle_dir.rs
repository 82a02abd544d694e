//! What an agent on an idle directory costs: CPU time and log lines of a
//! real `palisade agent --dir` over a minute in which nothing changes.
//!
//! Writes the synthetic cluster (10,000 pods by default: namespaces and
//! nodes in one file, pods in files of 100, one pair of policies per
//! namespace) to a temporary directory, and one pod to another as the
//! baseline; starts one dry-run agent on each, waits until both are ready,
//! then reads their CPU time (utime + stime from `/proc/PID/stat`) and
//! counts their log lines over the same idle window.
//!
//! ```text
//! cargo build -p palisade --bin palisade --example idle_dir
//! target/debug/examples/idle_dir [--pods 10000] [--seconds 60] [--bin target/debug/palisade]
//! ```

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_bench::synth::{self, Params};
use palisade_model::{Cluster, Pod};

fn yaml_labels(l: &palisade_model::Labels) -> String {
    let items: Vec<String> = l.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!("{{{}}}", items.join(", "))
}

fn pod_yaml(p: &Pod) -> String {
    let ports: Vec<String> = p
        .ports
        .iter()
        .map(|c| {
            format!(
                "{{name: {}, containerPort: {}, protocol: {}}}",
                c.name.as_deref().unwrap_or("p"),
                c.port,
                c.protocol.as_str()
            )
        })
        .collect();
    let ips: Vec<String> = p.ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {}}}\nspec:\n  nodeName: {}\n  containers: [{{name: c, image: x, ports: [{}]}}]\nstatus: {{phase: Running, podIP: \"{}\", podIPs: [{}]}}\n",
        p.name,
        p.namespace,
        yaml_labels(&p.labels),
        p.node.as_deref().unwrap_or(""),
        ports.join(", "),
        p.ips[0],
        ips.join(", "),
    )
}

/// The namespaces and nodes in `cluster.yaml`, pods 100 a file, and per
/// namespace a default deny and an allow from the same namespace on 80.
fn write_tree(dir: &Path, c: &Cluster) {
    let mut base = String::new();
    for ns in c.namespaces.values() {
        let _ = write!(
            base,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}, labels: {}}}\n---\n",
            ns.name,
            yaml_labels(&ns.labels)
        );
    }
    for n in &c.nodes {
        let _ = write!(
            base,
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: \"{}\"}}]}}\n---\n",
            n.name, n.addresses[0]
        );
    }
    std::fs::write(dir.join("cluster.yaml"), base).unwrap();
    std::fs::create_dir_all(dir.join("pods")).unwrap();
    for (i, chunk) in c.pods.chunks(100).enumerate() {
        let text: Vec<String> = chunk.iter().map(pod_yaml).collect();
        let f = dir.join(format!("pods/pods-{i:03}.yaml"));
        std::fs::write(f, text.join("---\n")).unwrap();
    }
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    for ns in c.namespaces.keys() {
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: {ns}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-same-namespace, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{tier: web}}}}\n  ingress: [{{from: [{{podSelector: {{}}}}], ports: [{{port: 80, protocol: TCP}}]}}]\n"
        );
        std::fs::write(dir.join(format!("policies/{ns}.yaml")), text).unwrap();
    }
}

struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start(bin: &Path, dir: &Path, node: &str, log: PathBuf) -> Agent {
    let port = free_port();
    let child = Command::new(bin)
        .args(["agent", "--node", node, "--dry-run"])
        .arg("--dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the agent");
    Agent { child, port, log }
}

fn wait_ready(a: &Agent) -> Duration {
    let addr: SocketAddr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    let t = Instant::now();
    while !palisade_agent::http::get(addr, "/readyz").is_ok_and(|r| r.0 == 200) {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "never ready; log in {}",
            a.log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields count from its closing ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks()
}

fn log_lines(a: &Agent) -> usize {
    std::fs::read_to_string(&a.log).unwrap().lines().count()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut pods = 10_000;
    let mut seconds = 60;
    let exe = std::env::current_exe().unwrap();
    let mut bin = exe.parent().unwrap().parent().unwrap().join("palisade");
    while let Some(a) = args.next() {
        let v = args.next().expect("a value");
        match a.as_str() {
            "--pods" => pods = v.parse().unwrap(),
            "--seconds" => seconds = v.parse().unwrap(),
            "--bin" => bin = PathBuf::from(v),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut p = Params::large();
    p.pods = pods;
    let c = synth::cluster(&p);
    let node = c.nodes[0].name.clone();
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("large");
    let small = work.path().join("small");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::create_dir_all(&small).unwrap();
    write_tree(&big, &c);
    let one = format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n---\n{}",
        pod_yaml(&c.pods[0])
    );
    std::fs::write(small.join("one.yaml"), one).unwrap();
    println!(
        "{} pods in {} files, {} policies; agent {}",
        c.pods.len(),
        c.pods.len().div_ceil(100) + c.namespaces.len() + 1,
        2 * c.namespaces.len(),
        bin.display()
    );
    let agents = [
        (
            "1-pod directory (baseline)",
            start(&bin, &small, &node, work.path().join("small.log")),
        ),
        (
            "10,000-pod directory",
            start(&bin, &big, &node, work.path().join("large.log")),
        ),
    ];
    for (name, a) in &agents {
        println!("{name}: ready after {:.1} s", wait_ready(a).as_secs_f64());
    }
    // Whatever the first sync leaves to do while idle (collecting
    // unreachable elements) is part of the start, not of idling.
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<(f64, usize)> = agents
        .iter()
        .map(|(_, a)| (cpu_seconds(a.child.id()), log_lines(a)))
        .collect();
    for ((name, _), (cpu, lines)) in agents.iter().zip(&before) {
        println!("{name}: {cpu:.2} s CPU and {lines} log lines to start and sync");
    }
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = t.elapsed().as_secs_f64();
    let mut used = Vec::new();
    for ((name, a), (cpu0, lines0)) in agents.iter().zip(before) {
        let cpu = cpu_seconds(a.child.id()) - cpu0;
        let lines = log_lines(a) - lines0;
        used.push(cpu);
        println!(
            "{name}: {cpu:.2} s CPU in {wall:.0} s idle = {:.2} % of a core; {lines} log lines",
            100.0 * cpu / wall
        );
    }
    println!(
        "difference to the baseline: {:.2} % of a core (CPU time counts in ticks of {:.0} ms)",
        100.0 * (used[1] - used[0]) / wall,
        1e3 / clock_ticks()
    );
}
