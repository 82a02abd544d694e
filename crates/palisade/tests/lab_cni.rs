//! `palisade lab up --cni`: a lab whose pods a CNI plugin wired, brought up,
//! probed and removed by separate runs of the binary (so `down` works from
//! the state file alone). Needs root and the CNI plugins; without them it
//! says why and returns (under CI it fails instead).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// A running pod of namespace t serving 8080 on `node`, with the
/// addresses 10.79.1.`host` and fd79::1:`host`.
fn pod(name: &str, node: &str, host: u8) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: t}}
spec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}
status: {{phase: Running, podIP: 10.79.1.{host}, podIPs: [{{ip: 10.79.1.{host}}}, {{ip: "fd79::1:{host}"}}]}}
"#
    )
}

fn cluster() -> String {
    [pod("a", "n1", 10), pod("b", "n1", 11), pod("c", "n2", 20)].join("---")
}

fn can_run() -> bool {
    let why = if !palisade_lab::sys::is_root() {
        "needs root"
    } else if !Path::new(palisade_lab::cni::DEFAULT_BIN_DIR)
        .join("bridge")
        .exists()
    {
        "needs the CNI plugins (Debian package containernetworking-plugins)"
    } else {
        return true;
    };
    assert!(std::env::var_os("CI").is_none(), "under CI: {why}");
    eprintln!("skipped: {why}");
    false
}

fn palisade(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn cli_lab_up_with_cni_probe_and_down() {
    if !can_run() {
        return;
    }
    let name = "cnicli";
    let _ = palisade_lab::down(name);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cluster.yaml");
    std::fs::write(&file, cluster()).unwrap();
    let file = file.to_str().unwrap();

    let out = palisade(&["lab", "up", "-f", file, "--name", name, "--cni", "bridge"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab up: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("wired by CNI bridge"), "{stdout}");
    let state = palisade_lab::load(name).unwrap();
    assert_eq!(state.cni, Some(palisade_lab::CniPlugin::Bridge));
    assert_eq!(state.pids.len(), 3, "spawned listeners");
    // No ruleset: the node namespaces have no palisade table.
    for node in &state.nodes {
        let t = Command::new("ip")
            .args(["netns", "exec", &node.netns, "nft", "list", "tables"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&t.stdout).contains("palisade"),
            "{}: a table was loaded",
            node.netns
        );
    }

    let out = palisade(&["lab", "probe", "--name", name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lab probe: {stdout}");
    assert_eq!(
        stdout,
        "8080/TCP (rows: from, columns: to; . allowed, X denied, 4/6 allowed over IPv4/IPv6 only, - not probed)
        predicted   observed
        1 2 3       1 2 3
1 t/a   - . .       - . .
2 t/b   . - .       . - .
3 t/c   . . -       . . -

12/12 probes agree
"
    );

    let out = palisade(&["lab", "down", "--name", name]);
    assert!(
        out.status.success(),
        "lab down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "DEL complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(palisade_lab::existing_netns(name), Vec::<String>::new());
    assert!(!palisade_lab::cni::ipam_dir(name).exists());
    assert!(palisade_lab::load(name).is_err());
}
