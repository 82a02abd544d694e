//! A real `kube-apiserver` (built by `scripts/kube-tools`) with its own
//! etcd, on loopback ports, with certificates made for the run: static
//! token authentication for the test's admin, ServiceAccount tokens for
//! the agents, RBAC authorization.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};

use crate::support::{free_port, spawn_etcd, Proc};

pub const ADMIN_TOKEN: &str = "palisade-test-admin";

/// The server binary, or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kube/kube-apiserver");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "no kube-apiserver at {} (scripts/kube-tools builds it)",
            p.display()
        ))
    }
}

/// Whether a test can meet a real API server: without the binary it says
/// why and is skipped, except under CI, where that is a failure.
pub fn available() -> bool {
    match binary() {
        Ok(_) => true,
        Err(why) => {
            assert!(std::env::var_os("CI").is_none(), "under CI: {why}");
            eprintln!("skipped: {why}");
            false
        }
    }
}

pub fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kube/crds")
}

fn openssl(dir: &Path, args: &[&str]) {
    succeed("openssl", Command::new("openssl").current_dir(dir), args);
}

/// Runs `cmd` (the tool `name`) with `args` after its own, which must
/// succeed; its standard output.
fn succeed(name: &str, cmd: &mut Command, args: &[&str]) -> String {
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e:?}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct ApiServer {
    dir: PathBuf,
    _etcd: Proc,
    server: Option<Proc>,
    etcd_url: String,
    pub port: u16,
}

impl ApiServer {
    pub fn start(dir: &Path) -> ApiServer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=palisade-test-ca",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=kube-apiserver",
            ],
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
        openssl(dir, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .unwrap();
        let (etcd, etcd_url) = spawn_etcd(dir, "api");
        let mut s = ApiServer {
            dir: dir.to_path_buf(),
            _etcd: etcd,
            server: None,
            etcd_url,
            port: free_port(),
        };
        s.restart();
        s
    }

    /// Stops the server (if running) and starts it again on the same
    /// port and etcd; waits until it answers.
    pub fn restart(&mut self) {
        self.server = None;
        let log = std::fs::File::create(self.dir.join("kube-apiserver.log")).unwrap();
        let dir = self.dir.display().to_string();
        let child = Command::new(binary().expect("checked by the caller"))
            .arg(format!("--etcd-servers={}", self.etcd_url))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--cert-dir={dir}/certs"))
            .arg(format!("--tls-cert-file={dir}/server.crt"))
            .arg(format!("--tls-private-key-file={dir}/server.key"))
            .arg(format!("--token-auth-file={dir}/tokens.csv"))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={dir}/sa.pub"))
            .arg(format!("--service-account-signing-key-file={dir}/sa.key"))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            // No controller manager creates `default` service accounts.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--enable-priority-and-fairness=false")
            // Watches read etcd itself, so a compaction makes an old
            // resource version expire for certain.
            .arg("--watch-cache=false")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kube-apiserver starts");
        self.server = Some(Proc(child));
        let t = Instant::now();
        let rt = tokio::runtime::Runtime::new().unwrap();
        loop {
            let up = rt.block_on(async {
                let c = self.client(ADMIN_TOKEN).await.ok()?;
                c.apiserver_version().await.ok()
            });
            if up.is_some() {
                return;
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(|p| p.0.try_wait()) {
                panic!("kube-apiserver exited ({status}): {}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "kube-apiserver never answered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Compacts etcd up to its current revision: every older resource
    /// version expires.
    pub fn compact(&self) {
        let ctl = |args: &[&str]| {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.etcd_url]);
            succeed("etcdctl", &mut cmd, args)
        };
        let status: Value =
            serde_json::from_str(&ctl(&["endpoint", "status", "-w", "json"])).unwrap();
        let rev = status[0]["Status"]["header"]["revision"]
            .as_i64()
            .expect("a revision");
        ctl(&["compact", &rev.to_string()]);
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A kubeconfig that authenticates with `token`.
    pub fn kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {name}}}\ncurrent-context: test\n",
            self.port,
            self.dir.join("ca.crt").display()
        );
        let p = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&p, text).unwrap();
        p
    }

    pub async fn client(&self, token: &str) -> Result<Client, kube::Error> {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig("admin", token))
            .map_err(kube::Error::InferKubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(kube::Error::InferKubeconfig)?;
        Client::try_from(cfg)
    }
}

/// Where each kind this test writes lives in the API.
fn resource(api_version: &str, kind: &str) -> (ApiResource, bool) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "Node" => ("nodes", false),
        "Pod" => ("pods", true),
        "ServiceAccount" => ("serviceaccounts", true),
        "NetworkPolicy" => ("networkpolicies", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        "AdminNetworkPolicy" => ("adminnetworkpolicies", false),
        "BaselineAdminNetworkPolicy" => ("baselineadminnetworkpolicies", false),
        "ClusterNetworkPolicy" => ("clusternetworkpolicies", false),
        other => panic!("no resource for kind {other}"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    (ApiResource::from_gvk_with_plural(&gvk, plural), namespaced)
}

fn api(client: &Client, obj: &Value) -> (Api<DynamicObject>, String) {
    let av = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let (ar, namespaced) = resource(av, kind);
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let api = if namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    (api, name)
}

/// The documents of a YAML stream.
pub fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Creates or updates every object of `yaml` (server-side apply), then
/// sets the `status` it carries through the status subresource, as a
/// kubelet or node controller would.
pub async fn put(client: &Client, yaml: &str) {
    for mut obj in docs(yaml) {
        let status = obj.as_object_mut().unwrap().remove("status");
        let (api, name) = api(client, &obj);
        let pp = PatchParams::apply("palisade-test").force();
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {}/{name}: {e}", obj["kind"]));
        if let Some(status) = status {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("status of {name}: {e}"));
        }
    }
}

/// Deletes every object `yaml` names, with no grace period.
pub async fn delete(client: &Client, yaml: &str) {
    for obj in docs(yaml) {
        let (api, name) = api(client, &obj);
        // At once, as a kubelet confirms a pod's end: without a kubelet a
        // pod bound to a node would stay terminating.
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        api.delete(&name, &dp)
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }
}

/// A token for the agent's ServiceAccount (TokenRequest API).
pub async fn service_account_token(client: &Client, ns: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = sas
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .expect("token request");
    r.status.expect("token status").token
}
