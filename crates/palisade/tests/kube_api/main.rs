//! The agent against a real Kubernetes API server, as root: a two-node
//! namespace lab whose pods the reference CNI `bridge` plugin wires, one
//! `palisade agent --kube` per node authenticated as the
//! ServiceAccount of `deploy/agent.yaml` and authorized by exactly its
//! ClusterRole, and real packets after every change made through the API.
//! Needs root and the server that `scripts/kube-tools` builds (CI runs
//! both); skipped with the reason printed otherwise, except under CI.

mod promote;
mod secrets;
mod server;
#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::{ApiServer, ADMIN_TOKEN};
use support::{converge, engine, free_port, get, lab_up, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// The nodes and the web pod; the namespace comes from [`namespace`].
const BASE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.78.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 192.168.78.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: none, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.78.1.10, podIPs: [{ip: 10.78.1.10}]}
"#;

/// A pod on node n2.
fn pod(name: &str, app: &str, ip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec: {{nodeName: n2, containers: [{{name: c, image: none, ports: [{{containerPort: 80}}]}}]}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"#
    )
}

fn namespace(labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{{labels}}}}}\n")
}

/// Ingress to web from the client pods only.
const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
"#;

/// The same policy, also admitting `app: other` pods of namespaces
/// labelled `team: a`.
const POLICY_V2: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchLabels: {app: other}}
    ports: [{port: 80}]
"#;

const ANP: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: no-client-to-web}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
  ingress:
  - name: deny-client
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}}]
"#;

/// Accepted by the API (the experimental CRD has `domainNames`), refused
/// by Palisade, which does not resolve names.
const REFUSED: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: by-name}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - name: deny-example
    action: Deny
    to: [{domainNames: ["example.com"]}]
"#;

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The ServiceAccount, ClusterRole and binding of `deploy/agent.yaml`, as
/// the file has them (the DaemonSet needs a kubelet).
fn agent_rbac() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agent.yaml"),
    )
    .unwrap();
    let keep = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    let docs: Vec<String> = server::docs(&text)
        .into_iter()
        .filter(|d| keep.contains(&d["kind"].as_str().unwrap_or("")))
        .map(|d| serde_json::to_string(&d).unwrap())
        .collect();
    assert_eq!(docs.len(), 4, "deploy/agent.yaml lost part of its RBAC");
    docs.join("\n---\n")
}

fn crds() -> String {
    let mut out = Vec::new();
    for e in std::fs::read_dir(server::crd_dir()).expect("CRDs from scripts/kube-tools") {
        out.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    assert_eq!(out.len(), 3, "ANP, BANP and CNP CRDs");
    out.join("\n---\n")
}

#[test]
fn agents_enforce_what_the_api_server_says() {
    if !palisade_lab::sys::is_root() {
        eprintln!("skipped: the namespace lab needs root");
        return;
    }
    if !server::available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut api = ApiServer::start(tmp.path());
    let admin = rt.block_on(api.client(ADMIN_TOKEN)).unwrap();
    rt.block_on(server::put(&admin, &agent_rbac()));
    let token = rt.block_on(server::service_account_token(
        &admin,
        "palisade-system",
        "palisade-agent",
    ));
    let agent_kubeconfig = api.kubeconfig("palisade-agent", &token);
    let client = pod("client", "client", "10.78.2.10");
    let other = pod("other", "other", "10.78.2.11");
    let ns0 = namespace("");
    rt.block_on(server::put(&admin, &ns0));
    rt.block_on(server::put(&admin, BASE));
    rt.block_on(server::put(&admin, &client));
    rt.block_on(server::put(&admin, &other));

    let name = "kubeapi";
    let (lab, nodes) = lab_up(
        name,
        &engine(&[&ns0, BASE, &client, &other]),
        palisade_lab::CniPlugin::Bridge,
    );
    let ports: Vec<u16> = nodes.iter().map(|_| free_port()).collect();
    let logs: Vec<_> = (0..2)
        .map(|i| tmp.path().join(format!("agent-{i}.log")))
        .collect();
    let agents: Vec<Proc> = (0..2)
        .map(|i| {
            Proc(
                Command::new(BIN)
                    .args([
                        "agent",
                        "--kube",
                        "--node",
                        &nodes[i].0,
                        "--netns",
                        &nodes[i].1,
                    ])
                    .args(["--listen", &format!("127.0.0.1:{}", ports[i])])
                    .env("KUBECONFIG", &agent_kubeconfig)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&logs[i]).unwrap())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let log = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    for (i, &p) in ports.iter().enumerate() {
        wait_for(&format!("agent {i} ready; log:\n{}", log(i)), || {
            get(p, "/readyz").0 == 200
        });
    }
    let healthy = |what: &str| {
        for (i, &p) in ports.iter().enumerate() {
            wait_for(
                &format!("{what}: agent {i} healthy; log:\n{}", log(i)),
                || get(p, "/healthz") == (200, "ok\n".to_string()),
            );
        }
    };
    // The ANP CRDs are not installed yet: the agents run without them.
    healthy("before the CRDs");

    let all = converge(
        &lab.state,
        &engine(&[&ns0, BASE, &client, &other]),
        "no policy",
    );
    let put = |yaml: &str| rt.block_on(server::put(&admin, yaml));
    let delete = |yaml: &str| rt.block_on(server::delete(&admin, yaml));

    put(POLICY);
    let allowed = converge(
        &lab.state,
        &engine(&[&ns0, BASE, &client, &other, POLICY]),
        "policy created",
    );
    assert!(allowed < all, "the policy denies something");
    // `lab probe --kube` compares the lab with what the API server says,
    // read as the agents read it (their credentials).
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "lab", "probe", "--name", name, "--kube", "--ports", "80/TCP",
        ])
        .env("KUBECONFIG", &agent_kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lab probe --kube: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Update: `other` is admitted once its namespace is labelled team=a.
    put(POLICY_V2);
    converge(
        &lab.state,
        &engine(&[&ns0, BASE, &client, &other, POLICY_V2]),
        "policy updated",
    );
    put(&namespace("team: a"));
    let ns_a = namespace("team: a");
    let in_reach = converge(
        &lab.state,
        &engine(&[BASE, &ns_a, &client, &other, POLICY_V2]),
        "namespace relabelled",
    );
    assert!(in_reach > allowed, "the namespace label admitted `other`");

    // Pod relabel out of reach, then delete.
    let moved = pod("other", "elsewhere", "10.78.2.11");
    put(&moved);
    converge(
        &lab.state,
        &engine(&[BASE, &ns_a, &client, &moved, POLICY_V2]),
        "pod relabelled",
    );
    delete(&moved);
    let tables_lack = |ip: &str| {
        nodes.iter().all(|(_, ns)| {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "nft", "list", "table", "inet", "palisade",
                ])
                .output()
                .unwrap();
            !String::from_utf8_lossy(&out.stdout).contains(ip)
        })
    };
    wait_for("the deleted pod's elements are gone", || {
        tables_lack("10.78.2.11")
    });
    // The lab still has the pod's namespace: bring it back for the rest.
    put(&moved);
    let now = [BASE, &ns_a, &client, &moved, POLICY_V2];

    // The CRDs appear after the agents started; then an ANP.
    put(&crds());
    wait_for("CRDs established", || {
        rt.block_on(async {
            let ar = kube::core::ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk(
                    "policy.networking.k8s.io",
                    "v1alpha1",
                    "AdminNetworkPolicy",
                ),
                "adminnetworkpolicies",
            );
            let a: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(admin.clone(), &ar);
            a.list(&Default::default()).await.is_ok()
        })
    });
    put(ANP);
    let with_anp = [now[0], now[1], now[2], now[3], now[4], ANP];
    converge(&lab.state, &engine(&with_anp), "ANP after its CRD");

    // An object the API accepts and Palisade refuses: reported, and the
    // last good state stays in force.
    put(REFUSED);
    for (i, &p) in ports.iter().enumerate() {
        wait_for(&format!("agent {i} reports the refused object"), || {
            let (code, body) = get(p, "/healthz");
            code == 503 && body.contains("by-name") && body.contains("domainNames")
        });
    }
    converge(&lab.state, &engine(&with_anp), "refused object ignored");
    delete(REFUSED);
    healthy("refused object deleted");

    // The API server restarts; a change after it is enforced.
    api.restart();
    delete(ANP);
    converge(&lab.state, &engine(&now), "after the API server restarted");

    // The agents miss events and come back with a resource version that
    // compaction expired: they list again, and what changed meanwhile is
    // enforced.
    let seen: Vec<usize> = (0..2).map(|i| log(i).len()).collect();
    for a in &agents {
        signal(a, "-STOP");
    }
    let relabelled = pod("client", "nobody", "10.78.2.10");
    // Restarted first, so the change is made while the stopped agents
    // have no connection in which its event could wait for them.
    api.restart();
    put(&relabelled);
    api.compact();
    for a in &agents {
        signal(a, "-CONT");
    }
    let later = [now[0], now[1], &relabelled, now[3], now[4]];
    // An agent whose rules the relabel does not change may converge
    // before its pod list is back, so wait for each agent's relist first.
    for (i, &from) in seen.iter().enumerate() {
        wait_for(
            &format!("agent {i} lists pods again after an expired watch"),
            || {
                let l = log(i);
                let l = &l[from..];
                l.contains("resync source=kube:Pod/") && l.contains("the watch of Pod expired")
            },
        );
    }
    converge(
        &lab.state,
        &engine(&later),
        "relisted after an expired watch",
    );
    healthy("after the relist");
    drop(agents);
    lab.down().unwrap();
}
