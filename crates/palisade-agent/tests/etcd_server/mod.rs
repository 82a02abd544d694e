//! A throwaway etcd on loopback ports, pods as kubectl stores them, and a
//! proxy that can hold etcd's replies: shared by `tests/etcd.rs` and the
//! `etcd_snapshot` example.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};

pub struct Etcd {
    child: Child,
    dir: PathBuf,
    args: Vec<String>,
    pub client: String,
    peer: String,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd in `dir`, or says why not and returns `None`.
    pub fn start(dir: &Path) -> Option<Etcd> {
        Etcd::start_with(dir, &[])
    }

    /// As [`Etcd::start`], with extra flags.
    pub fn start_with(dir: &Path, args: &[&str]) -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!("skipped: no etcd binary");
            return None;
        }
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut e = Etcd {
            child: Command::new("true").spawn().unwrap(),
            dir: dir.to_path_buf(),
            args: args.iter().map(ToString::to_string).collect(),
            client,
            peer,
        };
        e.restart();
        Some(e)
    }

    pub fn restart(&mut self) {
        self.child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client])
            .args(["--advertise-client-urls", &self.client])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("t={}", self.peer)])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let t = Instant::now();
        while etcdctl(&self.client, &["endpoint", "health"]).is_none() {
            assert!(t.elapsed() < Duration::from_secs(20), "etcd never came up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn etcdctl(endpoint: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=2s"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on one runtime shared by every call: a client's connection
/// lives on the runtime it was made on.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
    .block_on(f)
}

/// The address of the `i`-th generated pod.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 16, 0, 1)) + i as u32)
}

/// The key and JSON of a pod in namespace `shop` on node `n1`, as etcd
/// holds it after `kubectl apply`: the applied manifest is repeated as a
/// string in the last-applied annotation, which makes a pod with a usual
/// spec about 5 KB. `pad` more bytes go into an extra annotation.
pub fn kubectl_pod(name: &str, ip: Ipv4Addr, pad: usize) -> (String, String) {
    use serde_json::json;
    let env: Vec<_> = (0..12)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-of-setting-{i}")}))
        .collect();
    let container = |n: &str| {
        json!({
            "name": n,
            "image": format!("registry.example.com/shop/{n}:1.24.3"),
            "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
            "env": env,
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                          "requests": {"cpu": "100m", "memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 80},
                               "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/live", "port": 80},
                              "initialDelaySeconds": 10},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/shop"},
                             {"name": "tmp", "mountPath": "/tmp"}],
        })
    };
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"app": "web", "tier": "frontend", "release": "stable"},
        },
        "spec": {
            "nodeName": "n1",
            "containers": [container("web"), container("sidecar")],
            "volumes": [{"name": "config", "configMap": {"name": "shop-config"}},
                        {"name": "tmp", "emptyDir": {}}],
        },
    });
    let applied = pod.to_string();
    let meta = pod["metadata"].as_object_mut().unwrap();
    meta.insert(
        "annotations".into(),
        json!({
            "kubectl.kubernetes.io/last-applied-configuration": applied,
            "example.com/pad": "x".repeat(pad),
        }),
    );
    pod["status"] = json!({"phase": "Running", "podIP": ip.to_string(),
                           "podIPs": [{"ip": ip.to_string()}]});
    (format!("/palisade/v1/Pod/shop/{name}"), pod.to_string())
}

/// Writes `count` pods named `{stem}-{i}` for `i` from `first`, in
/// transactions of up to 128 puts; returns the bytes written.
pub async fn put_pods(client: &mut Client, stem: &str, first: usize, count: usize) -> usize {
    let mut bytes = 0;
    let mut i = first;
    while i < first + count {
        let n = (first + count - i).min(128);
        let ops: Vec<TxnOp> = (i..i + n)
            .map(|j| {
                let (k, v) = kubectl_pod(&format!("{stem}-{j}"), pod_ip(j), 0);
                bytes += k.len() + v.len();
                TxnOp::put(k, v, None)
            })
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
        i += n;
    }
    bytes
}

/// A TCP proxy to `target` whose etcd-to-client direction can be held, to
/// make the source a slow reader without closing its connection.
pub struct Proxy {
    pub url: String,
    held: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let held = Arc::new(AtomicBool::new(false));
        let h = held.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut d1, mut u1) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut d1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                let (mut d2, mut u2, h) = (down, up, h.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0; 16 << 10];
                    loop {
                        while h.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        match u2.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if d2.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = d2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy { url, held }
    }

    /// Stops (or resumes) passing etcd's bytes on.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}
