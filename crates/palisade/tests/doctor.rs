//! `palisade doctor` on lab nodes wired by the reference CNI plugins: it
//! finds routed and bridged pods, and fails with a sentence when bridged
//! traffic would bypass the inet table. Root only (CI runs as root).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// A running pod of namespace t on node n1 with the addresses `ips`.
fn pod(name: &str, ips: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: t}}
spec: {{nodeName: n1, containers: [{{name: c}}]}}
status: {{phase: Running, podIPs: [{ips}]}}
"#
    )
}

fn cluster() -> String {
    [
        pod("a", r#"{ip: 10.77.1.10}, {ip: "fd77::1:10"}"#),
        pod("b", "{ip: 10.77.1.11}"),
        pod("late", "{ip: 10.77.1.99}"),
    ]
    .join("---")
}

fn root() -> bool {
    if palisade_lab::sys::is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "under CI: needs root");
    eprintln!("skipped: needs root");
    false
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn doctor_reads_routed_and_bridged_nodes() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cluster.yaml");
    let cluster = cluster();
    std::fs::write(&file, &cluster).unwrap();
    let file = file.to_str().unwrap();
    // The lab wires a and b; `late` is in the datastore only.
    let wired = cluster.split("---").take(2).collect::<Vec<_>>().join("---");
    let lab_file = tmp.path().join("lab.yaml");
    std::fs::write(&lab_file, wired).unwrap();
    for (plugin, name) in [("ptp", "docptp"), ("bridge", "docbridge")] {
        let _ = palisade_lab::down(name);
        let (code, _, err) = run(&[
            "lab",
            "up",
            "-f",
            lab_file.to_str().unwrap(),
            "--name",
            name,
            "--cni",
            plugin,
        ]);
        assert_eq!(code, 0, "lab up --cni {plugin}: {err}");
        let netns = format!("pl-{name}-n0");
        let (code, out, err) = run(&["doctor", "--netns", &netns, "--node", "n1", "-f", file]);
        let routed_line = out
            .lines()
            .find(|l| l.contains("pod interfaces"))
            .unwrap_or_default()
            .to_string();
        match plugin {
            "ptp" => assert!(
                routed_line.contains("2 routed") && routed_line.contains("0 bridges"),
                "{out}"
            ),
            _ => {
                assert!(
                    routed_line.contains("0 routed") && routed_line.contains("1 bridge cni0"),
                    "{out}"
                );
                assert!(out.contains("bridge-nf-call-iptables = 1"), "{out}");
            }
        }
        assert!(
            out.contains("ok    kernel: concatenated interval sets"),
            "{out}"
        );
        assert!(
            out.contains("1 of 3 local pods have no interface") && out.contains("t/late"),
            "{out}"
        );
        assert_eq!(code, 0, "{plugin}: {out}{err}");
        if plugin == "bridge" {
            // Bridged traffic that would bypass the inet table is a failure.
            let set = |v: &str| {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &netns, "sysctl", "-qw"])
                    .arg(format!("net.bridge.bridge-nf-call-iptables={v}"))
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            };
            set("0");
            let (code, out, err) = run(&["doctor", "--netns", &netns]);
            set("1");
            assert_eq!(code, 1, "{out}");
            assert!(
                err.contains("net.bridge.bridge-nf-call-iptables is 0")
                    && err.contains("not enforced"),
                "{err}"
            );
        }
        let (code, _, err) = run(&["lab", "down", "--name", name]);
        assert_eq!(code, 0, "{err}");
    }
}

/// Deletes the test's network namespace, also when the test panics.
struct Netns(&'static str);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).status();
    }
}

/// Mark bits that another table sets and the agent's checks do not keep
/// are named, with the flag that keeps them.
#[test]
fn doctor_names_mark_bits_the_checks_do_not_keep() {
    if !root() {
        return;
    }
    let ns = Netns("palisade-doctor-marks");
    let _ = Command::new("ip").args(["netns", "del", ns.0]).status();
    assert!(Command::new("ip")
        .args(["netns", "add", ns.0])
        .status()
        .unwrap()
        .success());
    // kube-proxy's nftables mode asks for masquerading with 0x4000 (kept
    // by default); another component sets 0x8000 before forward.
    let table = "table ip kube-proxy {\n\
                 \x20chain mark-for-masquerade {\n  meta mark set meta mark | 0x4000\n }\n\
                 \x20chain other {\n  type filter hook prerouting priority -150; policy accept;\n\
                 \x20 meta mark set meta mark | 0x8000\n }\n}\n";
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns.0, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success());

    let (_, out, _) = run(&["doctor", "--netns", ns.0]);
    assert!(
        out.contains(
            "warn  table ip kube-proxy chain other sets mark bits 0x8000: 0x8000 is not kept"
        ) && out.contains("run the agent with --kept-mark-bits 0xc000"),
        "{out}"
    );
    assert!(!out.contains("chain mark-for-masquerade sets"), "{out}");
    let (_, out, _) = run(&["doctor", "--netns", ns.0, "--kept-mark-bits", "0xc000"]);
    assert!(
        out.contains(
            "ok    the mark bits other tables set (0xc000) are kept (--kept-mark-bits 0xc000)"
        ) && !out.contains("is not kept"),
        "{out}"
    );
}
