//! No credential is ever shown: an agent at `RUST_LOG=trace` holding a
//! ServiceAccount token, a client key and certificate, enforcing (dry run)
//! and keeping a flow log, and the CLI commands that use a kubeconfig,
//! write none of it to standard output or error, `/metrics`, `/healthz`,
//! `/readyz`, `/flows` or the flow log file.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::server::{self, ApiServer, ADMIN_TOKEN};
use crate::support::{free_port, get, Proc};
use crate::{agent_rbac, wait_for, BIN, POLICY};

const NODE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.79.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: none, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.79.1.10, podIPs: [{ip: 10.79.1.10}]}
"#;

fn base64(bytes: &[u8]) -> String {
    let out = Command::new("openssl")
        .args(["base64", "-A"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// A kubeconfig with `token` and a client key and certificate (which the
/// server, with no client CA, never asks for): the key's text.
fn kubeconfig(api: &ApiServer, dir: &Path, token: &str) -> (std::path::PathBuf, String) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-keyout", "client.key", "-out", "client.crt"])
        .args(["-subj", "/CN=palisade-agent"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let key = std::fs::read_to_string(dir.join("client.key")).unwrap();
    let cert = std::fs::read(dir.join("client.crt")).unwrap();
    let plain = api.kubeconfig("palisade-agent", token);
    let text = std::fs::read_to_string(&plain).unwrap().replace(
        &format!("    token: {token}\n"),
        &format!(
            "    token: {token}\n    client-certificate-data: {}\n    client-key-data: {}\n",
            base64(&cert),
            base64(key.as_bytes())
        ),
    );
    let p = dir.join("secret.kubeconfig");
    std::fs::write(&p, text).unwrap();
    (p, key)
}

/// The pieces of each secret that must appear nowhere, with their names.
fn secrets(token: &str, key: &str) -> Vec<(String, String)> {
    let mut s = vec![("the token".to_string(), token.to_string())];
    // Its signature alone: a log that cut or re-encoded the token around
    // its dots would still carry it.
    let signature = token.rsplit('.').next().unwrap();
    s.push(("the token's signature".into(), signature.into()));
    for (i, line) in key.lines().filter(|l| !l.starts_with("-----")).enumerate() {
        s.push((format!("line {i} of the client key"), line.into()));
    }
    s.push((
        "the client key as base64".into(),
        base64(key.as_bytes())[..64].into(),
    ));
    s
}

fn assert_clean(what: &str, text: &str, secrets: &[(String, String)]) {
    for (name, secret) in secrets {
        assert!(!text.contains(secret.as_str()), "{what} shows {name}");
    }
}

#[test]
fn no_credential_reaches_any_output() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the agent's namespace needs root");
        return;
    }
    if !server::available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let api = ApiServer::start(tmp.path());
    let admin = rt.block_on(api.client(ADMIN_TOKEN)).unwrap();
    rt.block_on(server::put(&admin, &agent_rbac()));
    rt.block_on(server::put(&admin, NODE));
    let token = rt.block_on(server::service_account_token(
        &admin,
        "palisade-system",
        "palisade-agent",
    ));
    let (kc, key) = kubeconfig(&api, tmp.path(), &token);
    let secrets = secrets(&token, &key);
    // The check would see each one: the agent was given all of them.
    let given = format!("{}{key}", std::fs::read_to_string(&kc).unwrap());
    for (name, secret) in &secrets {
        assert!(
            given.contains(secret.as_str()),
            "{name} is in the kubeconfig"
        );
    }

    let ns = "palsurf-secret";
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
    assert!(Command::new("ip")
        .args(["netns", "add", ns])
        .status()
        .unwrap()
        .success());
    let port = free_port();
    let (out, err, flows) = (
        tmp.path().join("agent.out"),
        tmp.path().join("agent.err"),
        tmp.path().join("flows.jsonl"),
    );
    let agent = Proc(
        Command::new(BIN)
            .args([
                "agent",
                "--kube",
                "--node",
                "n1",
                "--netns",
                ns,
                "--dry-run",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--flow-log")
            .arg(&flows)
            .env("KUBECONFIG", &kc)
            .env("RUST_LOG", "trace")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for("the agent is ready", || get(port, "/readyz").0 == 200);
    // A change through the API reaches the (printed) transaction.
    rt.block_on(server::put(&admin, POLICY));
    wait_for("the policy is compiled", || {
        read(&out).contains("10.79.1.10")
    });
    wait_for("the agent is healthy", || get(port, "/healthz").0 == 200);

    // The CLI with the same credentials: refused (the agent's role may not
    // patch), and saying so without them.
    let promote = Command::new(BIN)
        .args(["promote", "shop/web", "--kube", "--kubeconfig"])
        .arg(&kc)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(promote.status.code(), Some(2), "{promote:?}");
    let cli = format!(
        "{}{}",
        String::from_utf8_lossy(&promote.stdout),
        String::from_utf8_lossy(&promote.stderr)
    );
    assert!(cli.to_lowercase().contains("forbidden"), "{cli}");
    assert_clean("palisade promote --kube", &cli, &secrets);

    for path in ["/metrics", "/healthz", "/readyz", "/flows"] {
        let (code, body) = get(port, path);
        assert_eq!(code, 200, "{path}: {body}");
        assert_clean(path, &body, &secrets);
    }
    drop(agent);
    let log = read(&err);
    // Trace level was on, and the client's requests were logged at it.
    assert!(log.contains("TRACE"), "{log}");
    assert!(log.contains("/api/v1/pods"), "{log}");
    assert_clean("the agent's standard error", &log, &secrets);
    assert_clean("the agent's standard output", &read(&out), &secrets);
    assert_clean("the flow log", &read(&flows), &secrets);
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}
