//! `palisade doctor`: what enforcement on this node relies on, checked
//! before it is relied on. Each finding is one line, `ok`, `warn` or
//! `FAIL`; any `FAIL` exits 1 with the sentence that says why enforcement
//! would not work.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Result;
use clap::Args;
use palisade_agent::facts::NodeFacts;
use palisade_agent::netlink;
use palisade_agent::wiring::{LocalPod, PodInterfaces, Reach, Resolver};
use serde_json::Value as Json;

use crate::input;

#[derive(Args)]
pub struct DoctorArgs {
    /// The node whose pods are checked (with -f: which of its pods have an
    /// interface).
    #[arg(long)]
    node: Option<String>,
    /// Manifests that list the node's pods (optional).
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    files: Vec<PathBuf>,
    /// Check this network namespace instead of this machine's.
    #[arg(long)]
    netns: Option<String>,
    /// How local pods' interfaces are found (see `agent --pod-interfaces`).
    #[arg(long, default_value = "auto")]
    pod_interfaces: PodInterfaces,
    /// The agent's `--kept-mark-bits`: other tables' mark bits outside it
    /// are reported.
    #[arg(long, default_value = "0x4000")]
    kept_mark_bits: palisade_nft::KeptMark,
}

#[derive(Default)]
struct Report {
    fails: Vec<String>,
}

impl Report {
    fn ok(&mut self, s: impl AsRef<str>) {
        println!("ok    {}", s.as_ref());
    }
    fn warn(&mut self, s: impl AsRef<str>) {
        println!("warn  {}", s.as_ref());
    }
    fn info(&mut self, s: impl AsRef<str>) {
        println!("      {}", s.as_ref());
    }
    fn fail(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("FAIL  {s}");
        self.fails.push(s);
    }
}

/// The kernel features the compiled tables use, each as a table the kernel
/// is asked to check (`nft -c`: validated, never committed).
const FEATURES: [(&str, &str); 7] = [
    (
        "inet tables with a forward hook",
        "table inet palisade_doctor {\n chain f {\n type filter hook forward priority filter; policy accept;\n }\n}\n",
    ),
    (
        "concatenated hash sets",
        "table inet palisade_doctor {\n set s {\n type ifname . ipv4_addr\n elements = { \"x\" . 10.0.0.1 }\n }\n}\n",
    ),
    (
        "concatenated interval sets",
        "table inet palisade_doctor {\n set s {\n type mark . ipv4_addr . inet_proto . inet_service\n flags interval\n elements = { 1 . 10.0.0.0/8 . tcp . 80-90 }\n }\n}\n",
    ),
    (
        "verdict maps on concatenations",
        "table inet palisade_doctor {\n map m {\n type mark . mark . inet_proto . inet_service : verdict\n flags interval\n elements = { 1 . 2 . tcp . 1-2 : drop }\n }\n chain c {\n meta mark . ct mark . meta l4proto . th dport vmap @m\n }\n}\n",
    ),
    (
        "conntrack state and marks",
        "table inet palisade_doctor {\n chain c {\n ct state established,related accept\n ct mark set 1\n meta mark set ct mark\n }\n}\n",
    ),
    (
        "fib lookups",
        "table inet palisade_doctor {\n chain c {\n type filter hook prerouting priority filter; policy accept;\n fib saddr . iif oif missing drop\n }\n}\n",
    ),
    (
        "bridge tables with MAC and address sets",
        "table bridge palisade_doctor {\n set s {\n type ifname . ether_addr . ipv4_addr\n }\n chain c {\n type filter hook forward priority 0; policy accept;\n ether type ip iifname . ether saddr . ip saddr != @s drop\n }\n}\n",
    ),
];

fn nft(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    }
}

/// Runs nft with `input` on standard input; the error text on failure.
fn nft_run(netns: Option<&str>, args: &[&str], input: &str) -> Result<String, String> {
    let mut child = nft(netns)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes());
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().next().unwrap_or("failed").to_string())
    }
}

fn check_nft(r: &mut Report, netns: Option<&str>) -> bool {
    let version = nft(netns).arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            r.ok(v.trim());
        }
        _ => {
            r.fail("nft is not installed or does not run: the agent applies its tables with nft (Debian: apt-get install nftables)");
            return false;
        }
    }
    let mut all = true;
    for (what, table) in FEATURES {
        match nft_run(netns, &["-c", "-f", "-"], table) {
            Ok(_) => r.ok(format!("kernel: {what}")),
            Err(e) => {
                all = false;
                r.fail(format!(
                    "the kernel refuses {what}, which the compiled tables use: {e}"
                ));
            }
        }
    }
    all
}

fn sysctl(netns: Option<&str>, path: &'static str) -> Option<String> {
    netlink::in_netns(netns, move || std::fs::read_to_string(path))
        .ok()
        .map(|s| s.trim().to_string())
}

fn check_wiring(r: &mut Report, a: &DoctorArgs, facts: &NodeFacts) -> Result<()> {
    let pods: Vec<LocalPod> = match (&a.node, a.files.is_empty()) {
        (Some(node), false) => {
            let engine = input::engine(&a.files)?;
            LocalPod::all(&engine, &palisade_nft::Local::Node(node.clone()))
        }
        _ => Vec::new(),
    };
    let mut resolver = Resolver::new(a.pod_interfaces.clone());
    let mut res = resolver.resolve(facts, &pods);
    let mut facts = facts.clone();
    if !res.to_poke.is_empty() {
        // As the agent does: ask bridged pods whose port the node has not
        // learned yet, then look again.
        let ns = a.netns.as_deref();
        if netlink::refresh_neighbours(ns, &res.stale, &res.to_poke).is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if let Ok(f) = netlink::read(ns) {
                facts = f;
                res = resolver.resolve(&facts, &pods);
            }
        }
    }
    let facts = &facts;
    let w = &res.wiring;
    // A bridge is a pod bridge when a local pod sits behind it, or, with
    // no pods given, when a port's peer lives in another namespace.
    let bridges: Vec<&str> = facts
        .links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .filter(|b| {
            w.pod_interfaces.contains(&b.name)
                || (pods.is_empty()
                    && facts
                        .links
                        .iter()
                        .any(|p| p.master == Some(b.index) && p.peer_netns))
        })
        .map(|l| l.name.as_str())
        .collect();
    let routed = w
        .pod_interfaces
        .iter()
        .filter(|i| !bridges.contains(&i.as_str()))
        .count();
    r.ok(format!(
        "pod interfaces ({}): {routed} routed (a host route each), {} bridge{} {}",
        a.pod_interfaces,
        bridges.len(),
        if bridges.len() == 1 { "" } else { "s" },
        bridges.join(", ")
    ));
    if !w.pod_interfaces.is_empty() {
        let names: Vec<&str> = w
            .pod_interfaces
            .iter()
            .map(String::as_str)
            .take(8)
            .collect();
        r.info(format!("e.g. {}", names.join(", ")));
    }
    let bridged = !bridges.is_empty()
        || res
            .reach
            .values()
            .flatten()
            .any(|(_, r)| matches!(r, Reach::Bridged { .. }));
    if bridged || matches!(a.pod_interfaces, PodInterfaces::Bridge(_)) {
        r.ok(format!(
            "bridged pods: their ports are checked in table bridge palisade ({} ports)",
            w.bridge.ports.len()
        ));
        for (key, path, what) in [
            (
                "net.bridge.bridge-nf-call-iptables",
                "/proc/sys/net/bridge/bridge-nf-call-iptables",
                "IPv4",
            ),
            (
                "net.bridge.bridge-nf-call-ip6tables",
                "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
                "IPv6",
            ),
        ] {
            match sysctl(a.netns.as_deref(), path).as_deref() {
                Some("1") => r.ok(format!("br_netfilter: {key} = 1 ({what} between pods of one bridge meets policy)")),
                Some(v) => r.fail(format!(
                    "{key} is {v}: {what} traffic between pods of one bridge never reaches the inet table and is not enforced; set it to 1"
                )),
                None => r.fail(format!(
                    "br_netfilter is not loaded: traffic between pods of one bridge never reaches the inet table and is not enforced; run `modprobe br_netfilter` and set {key} = 1"
                )),
            }
        }
    }
    if !pods.is_empty() {
        let unwired = res.unwired();
        if unwired.is_empty() {
            r.ok(format!(
                "every local pod ({}) has its interface",
                pods.len()
            ));
        } else {
            r.warn(format!(
                "{} of {} local pods have no interface on this node (their packets are dropped until they do): {}",
                unwired.len(),
                pods.len(),
                unwired.iter().take(8).copied().collect::<Vec<_>>().join(", ")
            ));
            if unwired.len() == pods.len() {
                r.fail("no local pod's interface was found: the node's CNI wiring is not one this agent recognizes with --pod-interfaces ".to_string() + &a.pod_interfaces.to_string());
            }
        }
    }
    Ok(())
}

/// The whole ruleset as `nft -j` prints it.
fn ruleset(r: &mut Report, netns: Option<&str>) -> Option<Json> {
    let text = match nft_run(netns, &["-j", "list", "ruleset"], "") {
        Ok(t) => t,
        Err(e) => {
            r.warn(format!("cannot list the ruleset: {e}"));
            return None;
        }
    };
    let json = serde_json::from_str::<Json>(&text).ok();
    if json.is_none() {
        r.warn("nft -j list ruleset printed something that is not JSON");
    }
    json
}

/// Base chains of other tables on the hooks pod traffic takes.
fn check_other_tables(r: &mut Report, json: &Json) {
    let chains = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("chain"))
        .filter(|c| c.get("hook").is_some());
    let mut seen = 0;
    for c in chains {
        let s = |k: &str| c[k].as_str().unwrap_or("?").to_string();
        if s("table") == palisade_nft::TABLE {
            continue;
        }
        let hook = s("hook");
        if !["forward", "input", "prerouting"].contains(&hook.as_str()) {
            continue;
        }
        seen += 1;
        let line = format!(
            "table {} {} chain {}: hook {hook} priority {} policy {}",
            s("family"),
            s("table"),
            s("name"),
            c["prio"],
            s("policy")
        );
        if s("policy") == "drop" && hook == "forward" {
            r.warn(format!(
                "{line}: it drops what it does not accept, including traffic Palisade allows"
            ));
        } else {
            r.info(line);
        }
    }
    if seen == 0 {
        r.ok("no other table hooks forward, input or prerouting");
    } else {
        r.ok(format!(
            "{seen} base chains of other tables share the hooks (listed above): a packet must pass all of them"
        ));
    }
}

/// The bits a rule's text ORs (or XORs) into the packet mark, as
/// kube-proxy's `meta mark set meta mark | 0x00004000` (nftables mode) and
/// iptables-nft's `MARK --or-mark` (iptables mode; `nft -j` shows that
/// target only as an opaque `xt`, its text listing translates it:
/// `meta mark set mark or 0x4000`).
fn mark_bits_set(line: &str) -> Option<u32> {
    let rest = &line[line.find("meta mark set ")? + "meta mark set ".len()..];
    let rest = rest.strip_prefix("meta ").unwrap_or(rest);
    let rest = rest.strip_prefix("mark ")?;
    let (op, rest) = rest.split_once(' ')?;
    if !["|", "or", "^", "xor"].contains(&op) {
        return None;
    }
    let token = rest.split_whitespace().next()?;
    match token.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => token.parse().ok(),
    }
}

/// Mark bits other tables set, against the bits the agent keeps: the
/// checks write the marks of a new connection's first packet, and only
/// the kept bits leave as they came.
fn check_marks(r: &mut Report, netns: Option<&str>, kept: palisade_nft::KeptMark) {
    let text = match nft_run(netns, &["list", "ruleset"], "") {
        Ok(t) => t,
        Err(e) => {
            r.warn(format!("cannot list the ruleset: {e}"));
            return;
        }
    };
    let (mut table, mut chain) = (String::new(), String::new());
    let mut all = 0u32;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", family, name, "{"] => table = format!("{family} {name}"),
            ["chain", name, "{"] => chain = name.to_string(),
            _ => {}
        }
        let Some(bits) = mark_bits_set(line) else {
            continue;
        };
        // Ours (inet and bridge) set the marks, never OR into them.
        if table.ends_with(&format!(" {}", palisade_nft::TABLE)) {
            continue;
        }
        all |= bits;
        let lost = bits & !kept.mask();
        if lost != 0 {
            r.warn(format!(
                "table {table} chain {chain} sets mark bits 0x{bits:x}: 0x{lost:x} is not kept by Palisade's checks of new connections (--kept-mark-bits {kept}); if that component reads them after the forward hook, run the agent with --kept-mark-bits 0x{:x}",
                kept.mask() | bits
            ));
        }
    }
    if all != 0 && all & !kept.mask() == 0 {
        r.ok(format!(
            "the mark bits other tables set (0x{all:x}) are kept (--kept-mark-bits {kept})"
        ));
    }
}

pub fn doctor(a: DoctorArgs) -> Result<ExitCode> {
    let mut r = Report::default();
    let ns = a.netns.as_deref();
    if !palisade_lab::sys::is_root() {
        r.warn("not root: the kernel checks and some reads need root");
    }
    check_nft(&mut r, ns);
    match netlink::read(ns) {
        Ok(facts) => check_wiring(&mut r, &a, &facts)?,
        Err(e) => r.fail(format!("cannot read the node's links and routes: {e}")),
    }
    if let Some(json) = ruleset(&mut r, ns) {
        check_other_tables(&mut r, &json);
    }
    check_marks(&mut r, ns, a.kept_mark_bits);
    if r.fails.is_empty() {
        println!("enforcement can work on this node");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: enforcement would not work on this node: {}",
            r.fails.join("; ")
        );
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::mark_bits_set;

    #[test]
    fn mark_bits_are_read_from_both_listings() {
        // kube-proxy, nftables mode.
        assert_eq!(
            mark_bits_set("\t\tmeta mark set meta mark | 0x00004000"),
            Some(0x4000)
        );
        // iptables-nft's MARK --or-mark and --set-xmark, as nft prints them.
        assert_eq!(
            mark_bits_set("\t\tcounter packets 0 bytes 0 meta mark set mark or 0x4000 "),
            Some(0x4000)
        );
        assert_eq!(mark_bits_set("meta mark set mark xor 0x100"), Some(0x100));
        assert_eq!(mark_bits_set("meta mark set meta mark ^ 16"), Some(16));
        // Setting the whole mark, or copying it, is not ORing bits in.
        assert_eq!(mark_bits_set("meta mark set 0x4000"), None);
        assert_eq!(mark_bits_set("meta mark set ct mark"), None);
        assert_eq!(mark_bits_set("meta mark set meta mark & 0xffffbfff"), None);
        assert_eq!(mark_bits_set("ct mark set meta mark"), None);
    }
}
