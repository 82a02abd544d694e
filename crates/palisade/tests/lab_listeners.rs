//! Listener processes of `palisade lab up` (root; skipped otherwise).
//!
//! Regression: the lab used to decide that a pod's listener was up when it
//! could no longer bind the listener's first port in the pod's namespace.
//! That probe held the port for a moment (so the listener's own bind could
//! fail, which is how `scripts/demo` failed its first run with "listener
//! in pl-demo-p1 did not start"), and any other socket on that port passed
//! for the listener. The listener now says on stdout when it is bound.

use std::path::Path;

use palisade_engine::Engine;
use palisade_lab::{Config, Serve};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

const CLUSTER: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.77.1.10}
";

fn engine() -> Engine {
    let loaded = palisade_k8s::load(&[("cluster.yaml".into(), CLUSTER.as_bytes().to_vec())]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    Engine::new(loaded.cluster)
}

fn up(name: &str, program: &Path) -> palisade_lab::Result<palisade_lab::Lab> {
    let _ = palisade_lab::down(name);
    palisade_lab::up(
        &engine(),
        &Config {
            name: name.into(),
            serve: Serve::Spawn(program.to_path_buf()),
            ports: vec!["8080/TCP".parse().unwrap()],
            sources: Vec::new(),
            cni: None,
        },
    )
}

#[test]
fn spawned_listeners_serve_their_ports() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the namespace lab needs root");
        return;
    }
    let lab = up("lsnok", Path::new(BIN)).expect("lab up with real listeners");
    let state = palisade_lab::load("lsnok").unwrap();
    assert_eq!(state.pids.len(), 1);
    lab.down().unwrap();
}

/// Another process holds the listener's port in the pod's namespace: the
/// listener cannot bind, and `up` says so instead of taking the other
/// socket for the listener.
#[test]
fn a_listener_that_cannot_bind_is_reported_with_its_reason() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the namespace lab needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("listener");
    // Runs in the pod's namespace: takes port 8080 first, then starts the
    // real listener, which finds the port in use.
    let held = tmp.path().join("held");
    let pid = tmp.path().join("pid");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             python3 -c 'import socket,sys,time\n\
             s=socket.socket(socket.AF_INET6)\n\
             s.bind((\"::\",8080))\n\
             s.listen()\n\
             open(sys.argv[1],\"w\").write(\"held\")\n\
             time.sleep(30)' {held} >/dev/null 2>&1 &\n\
             echo $! >{pid}\n\
             while [ ! -s {held} ]; do sleep 0.05; done\n\
             exec {BIN} \"$@\"\n",
            held = held.display(),
            pid = pid.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = match up("lsnbusy", &wrapper) {
        Ok(lab) => {
            drop(lab);
            panic!("lab up succeeded although its listener could not bind");
        }
        Err(e) => e.to_string(),
    };
    let _ = palisade_lab::down("lsnbusy");
    if let Ok(p) = std::fs::read_to_string(&pid) {
        let _ = std::process::Command::new("kill").arg(p.trim()).status();
    }
    assert!(
        err.contains("did not start") && err.contains("in use"),
        "the reason is named: {err}"
    );
}
