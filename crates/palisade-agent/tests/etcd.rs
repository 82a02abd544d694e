//! The etcd source against a real etcd started by the test (skipped, with
//! the reason printed, when no `etcd` binary is installed): outages,
//! compaction, and datastores many times one gRPC message, up to the
//! 50,000 pods of kubectl-applied JSON the agent must start and resync on.

mod etcd_server;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client;
use etcd_server::{block_on, etcdctl, free_port, kubectl_pod, pod_ip, put_pods, Etcd, Proxy};
use palisade_agent::{datastore, etcd, Agent, AgentConfig, Entry, Health, Input, Recording};

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.50.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIPs: [{ip: 10.9.0.1}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
"#;

fn pod(name: &str, ip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}
spec: {{nodeName: n1, containers: [{{name: c}}]}}
status: {{phase: Running, podIPs: [{{ip: {ip}}}]}}
"#
    )
}

/// Waits until the recorded table's `identity4` holds exactly `ips`.
fn converge(rec: &Recording, ips: &[&str], what: &str) {
    let t = Instant::now();
    loop {
        let got: Vec<String> = rec
            .state()
            .table
            .as_ref()
            .and_then(|t| t.set("identity4").cloned())
            .map(|s| {
                s.elements
                    .iter()
                    .map(|e| format!("{:?}", e.key[0]))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<String> = ips
            .iter()
            .map(|ip| format!("{:?}", palisade_nft::Value::Ipv4(ip.parse().unwrap())))
            .collect();
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{what}: identity4 has {} addresses, want {}",
            got.len(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An agent on a fresh recording, fed by the etcd source at `endpoints`
/// on threads of its own.
fn run_agent(cfg: AgentConfig, endpoints: Vec<String>) -> (Recording, Arc<Mutex<Health>>) {
    let rec = Recording::new();
    let agent = Agent::new(cfg, rec.clone());
    let health = agent.health();
    let (tx, rx) = channel();
    etcd::spawn(endpoints, tx).unwrap();
    std::thread::spawn(move || agent.run(rx));
    (rec, health)
}

fn wait_ready(h: &Arc<Mutex<Health>>) {
    let t = Instant::now();
    while !h.lock().unwrap().ready {
        assert!(t.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_health(h: &Arc<Mutex<Health>>, degraded: bool, what: &str) -> String {
    let t = Instant::now();
    loop {
        let s = h.lock().unwrap().status();
        if s.starts_with("degraded") == degraded {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{what}: health {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_agent_follows_etcd_through_outages_and_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut etcd) = Etcd::start(tmp.path()) else {
        return;
    };
    let ep = vec![etcd.client.clone()];

    // Invalid manifests are refused and nothing is written.
    let bad = write(
        tmp.path(),
        "bad.yaml",
        &format!("{BASE}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: \"Bad_Name\", namespace: shop}}\n"),
    );
    match datastore::apply(&ep, &[bad]) {
        Err(datastore::DatastoreError::Invalid(d)) => assert!(!d.is_empty()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        etcdctl(
            &etcd.client,
            &["get", "--prefix", "/palisade/", "--keys-only"]
        )
        .as_deref(),
        Some("")
    );

    let base = write(tmp.path(), "base.yaml", BASE);
    let keys = datastore::apply(&ep, std::slice::from_ref(&base)).unwrap();
    assert!(
        keys.contains(&"/palisade/v1/Pod/shop/web".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"/palisade/v1/Namespace/_/shop".to_string()),
        "{keys:?}"
    );

    let mut cfg = AgentConfig::new("n1", vec![etcd::SCOPE.to_string()]);
    cfg.max_backoff = Duration::from_millis(500);
    let (rec, health) = run_agent(cfg, ep.clone());
    converge(&rec, &["10.9.0.1"], "initial snapshot");
    wait_health(&health, false, "initial");

    // A watched update.
    let p2 = write(tmp.path(), "p2.yaml", &pod("api", "10.9.0.2"));
    datastore::apply(&ep, std::slice::from_ref(&p2)).unwrap();
    converge(&rec, &["10.9.0.1", "10.9.0.2"], "watched put");

    // etcd goes away: the last state stays, health says why.
    etcd.kill();
    let s = wait_health(&health, true, "outage");
    assert!(s.contains(&format!("etcd at {}: ", etcd.client)), "{s}");
    assert!(!s.contains("Error("), "not a sentence: {s}");
    std::thread::sleep(Duration::from_millis(300));
    converge(&rec, &["10.9.0.1", "10.9.0.2"], "during the outage");

    // Back, with a deletion and a compaction racing the reconnect: the
    // agent converges either through the watch or through its snapshot.
    etcd.restart();
    datastore::delete(&ep, std::slice::from_ref(&p2)).unwrap();
    let rev = etcdctl(
        &etcd.client,
        &["get", "/palisade/v1/Namespace/_/shop", "-w", "json"],
    )
    .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
    .and_then(|v| v["header"]["revision"].as_i64())
    .unwrap();
    etcdctl(&etcd.client, &["compact", &rev.to_string()]).expect("compaction");
    converge(&rec, &["10.9.0.1"], "after restart and compaction");
    wait_health(&health, false, "after restart");

    // Still watching after the compaction.
    let p3 = write(tmp.path(), "p3.yaml", &pod("db", "10.9.0.3"));
    datastore::apply(&ep, &[p3]).unwrap();
    converge(&rec, &["10.9.0.1", "10.9.0.3"], "watch after compaction");

    // An invalid value written behind the tool's back is ignored.
    etcdctl(
        &etcd.client,
        &["put", "/palisade/v1/Pod/shop/web", "{\"kind\": \"Pod\"}"],
    )
    .unwrap();
    let s = wait_health(&health, true, "invalid value");
    assert!(s.contains("/palisade/v1/Pod/shop/web"), "{s}");
    converge(&rec, &["10.9.0.1", "10.9.0.3"], "invalid value ignored");
}

const TO_STAGE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: lockdown, namespace: shop, annotations: {owner: team-a}}
spec: {podSelector: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 10
  subject: {namespaces: {}}
  egress: [{name: no-metadata, action: Deny, to: [{networks: [169.254.169.254/32]}]}]
"#;

/// The stored JSON of `key`.
fn stored(ep: &[String], key: &str) -> serde_json::Value {
    let mut c = connect(ep);
    let r = block_on(c.get(key, None)).unwrap();
    serde_json::from_slice(r.kvs()[0].value()).unwrap()
}

fn revision(ep: &[String]) -> i64 {
    let mut c = connect(ep);
    block_on(c.get("/", None))
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// `datastore apply --staged` stages the policy objects only; `promote`
/// refuses unknown and enforced names without writing, and turns every
/// named policy into an enforced one in a single transaction (one
/// revision), keeping the other annotations.
#[test]
fn staged_policies_are_written_and_promoted_in_one_transaction() {
    use palisade_agent::promote::{self, PolicyName};
    let tmp = tempfile::tempdir().unwrap();
    let Some(etcd) = Etcd::start(tmp.path()) else {
        return;
    };
    let ep = vec![etcd.client.clone()];
    let np = "/palisade/v1/NetworkPolicy/shop/lockdown";
    let anp = "/palisade/v1/AdminNetworkPolicy/_/guard";
    let f = write(tmp.path(), "p.yaml", TO_STAGE);
    let a = datastore::apply_staged(&ep, &[f]).unwrap();
    assert_eq!(a.keys, ["/palisade/v1/Namespace/_/shop", np, anp]);
    assert_eq!(a.staged, [np, anp]);
    assert_eq!(
        stored(&ep, np)["metadata"]["annotations"],
        serde_json::json!({"owner": "team-a", "palisade.dev/staged": "true"})
    );
    assert_eq!(
        stored(&ep, anp)["metadata"]["annotations"],
        serde_json::json!({"palisade.dev/staged": "true"})
    );
    assert_eq!(
        stored(&ep, "/palisade/v1/Namespace/_/shop")["metadata"].get("annotations"),
        None
    );
    // Nothing to stage: the caller says so.
    let ns = write(
        tmp.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
    );
    assert_eq!(
        datastore::apply_staged(&ep, &[ns]).unwrap().staged,
        Vec::<String>::new()
    );

    let names = |v: &[&str]| -> Vec<PolicyName> {
        v.iter().map(|s| PolicyName::parse(s).unwrap()).collect()
    };
    let before = revision(&ep);
    match promote::etcd(&ep, &names(&["shop/lockdown", "shop/nope"])) {
        Err(datastore::DatastoreError::Refused(p)) => assert_eq!(
            p,
            ["shop/nope: not found in etcd (/palisade/v1/NetworkPolicy/shop/nope)"]
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(revision(&ep), before, "a refusal writes nothing");

    let done = promote::etcd(&ep, &names(&["shop/lockdown", "AdminNetworkPolicy/guard"])).unwrap();
    let done: Vec<(String, String)> = done.into_iter().map(|p| (p.name, p.place)).collect();
    assert_eq!(
        done,
        [
            ("AdminNetworkPolicy/guard".to_string(), anp.to_string()),
            ("shop/lockdown".to_string(), np.to_string())
        ]
    );
    assert_eq!(revision(&ep), before + 1, "one transaction");
    assert_eq!(
        stored(&ep, np)["metadata"]["annotations"],
        serde_json::json!({"owner": "team-a"})
    );
    assert_eq!(
        stored(&ep, anp)["metadata"]["annotations"],
        serde_json::json!({})
    );
    match promote::etcd(&ep, &names(&["shop/lockdown"])) {
        Err(datastore::DatastoreError::Refused(p)) => assert_eq!(p, ["shop/lockdown: not staged"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Pods in the large tests: with kubectl's last-applied annotation, about
/// 10 MB, more than twice gRPC's default 4 MiB message limit.
const MANY: usize = 2_000;

fn connect(ep: &[String]) -> Client {
    block_on(Client::connect(ep, None)).unwrap()
}

/// The next resync on `rx`, skipping the watch's events; panics on losing
/// the connection, which the test did not cause.
fn next_resync(rx: &Receiver<Input>, what: &str) -> (Vec<Entry>, Vec<String>) {
    let mut deleted = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Input::Resync { entries, .. }) => return (entries, deleted),
            Ok(Input::Delete { origin }) => deleted.push(origin),
            Ok(Input::Upsert(_) | Input::NodeFacts(_)) => {}
            Ok(Input::SourceDown { reason, .. }) => {
                panic!("{what}: the source went down: {reason}")
            }
            Err(e) => panic!("{what}: no resync: {e}"),
        }
    }
}

#[test]
fn the_agent_starts_on_a_datastore_many_times_one_grpc_message() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_etcd, ep)) = started_with_base(tmp.path()) else {
        return;
    };
    let bytes = block_on(put_pods(&mut connect(&ep), "big", 0, MANY));
    assert!(bytes > 8 << 20, "only {bytes} bytes of pods");

    let list = datastore::get(&ep, Some("Pod")).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), MANY + 1);

    let (rec, health) = run_agent(AgentConfig::new("n1", vec![etcd::SCOPE.to_string()]), ep);
    let ips = all_ips((0..MANY).map(pod_ip).chain(["10.9.0.1".parse().unwrap()]));
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    converge(&rec, &ips, "snapshot of many pods");
    wait_ready(&health);
    let s = wait_health(&health, false, "snapshot of many pods");
    assert_eq!(s, "ok\n");
}

/// Holds etcd's replies to the source while `late` pods are written, so
/// that the watch's flow-control window (megabytes of large values) and
/// etcd's queue of replies (one per revision) fill and etcd stops sending
/// to it: the watch falls behind. The pods' addresses follow `pod_ip(first)`;
/// `meanwhile` runs before the replies flow again.
fn fall_behind(
    c: &mut Client,
    proxy: &Proxy,
    first: usize,
    late: usize,
    meanwhile: impl AsyncFnOnce(&mut Client),
) {
    proxy.hold(true);
    block_on(async {
        for i in 0..3 {
            let (k, v) = kubectl_pod(&format!("large-{i}"), pod_ip(first + i), 1 << 20);
            c.put(k, v, None).await.unwrap();
        }
        let kv = c.kv_client();
        let puts = (0..late).map(|i| {
            let mut kv = kv.clone();
            let (k, v) = kubectl_pod(&format!("late-{i}"), pod_ip(first + 3 + i), 0);
            async move { kv.put(k, v, None).await.unwrap() }
        });
        futures::future::join_all(puts).await;
        meanwhile(c).await;
    });
    proxy.hold(false);
}

/// A fresh etcd in a directory of its own (`None` where none is
/// installed) and the etcd source alone, through a proxy, after its first
/// snapshot of `MANY` pods.
fn watching() -> Option<(tempfile::TempDir, Etcd, Client, Proxy, Receiver<Input>)> {
    let tmp = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(tmp.path())?;
    let mut c = connect(std::slice::from_ref(&etcd.client));
    block_on(put_pods(&mut c, "big", 0, MANY));
    let proxy = Proxy::start(&etcd.client);
    let (tx, rx) = channel();
    etcd::spawn(vec![proxy.url.clone()], tx).unwrap();
    assert_eq!(next_resync(&rx, "first snapshot").0.len(), MANY);
    Some((tmp, etcd, c, proxy, rx))
}

#[test]
fn a_watch_cancelled_by_compaction_resyncs_and_sees_what_changed_meanwhile() {
    let Some((_tmp, _etcd, mut c, proxy, rx)) = watching() else {
        return;
    };
    // A deletion while the watch is behind, and a compaction past it, leave
    // the watch nothing to catch up from.
    let late = 300;
    fall_behind(&mut c, &proxy, MANY, late, async |c: &mut Client| {
        let r = c.delete("/palisade/v1/Pod/shop/big-0", None).await.unwrap();
        let rev = r.header().unwrap().revision();
        c.compact(rev, None).await.unwrap();
    });

    let (entries, deleted) = next_resync(&rx, "after the compaction");
    let gone = "etcd:/palisade/v1/Pod/shop/big-0".to_string();
    assert!(
        !deleted.contains(&gone),
        "the deletion came through the watch, which was meant to be behind"
    );
    let origins: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e.origin.as_str()).collect();
    assert!(
        !origins.contains(gone.as_str()),
        "the deleted pod is still there"
    );
    assert!(origins.contains("etcd:/palisade/v1/Pod/shop/late-299"));
    assert!(origins.contains("etcd:/palisade/v1/Pod/shop/large-2"));
    assert_eq!(entries.len(), MANY - 1 + 3 + late);
    assert!(entries
        .iter()
        .all(|e| e.errors.is_empty() && e.objects.len() == 1));
}

#[test]
fn a_watch_catching_up_takes_replies_larger_than_one_grpc_message() {
    let Some((_tmp, _etcd, mut c, proxy, rx)) = watching() else {
        return;
    };
    // Catching up, etcd sends the events of up to 1,000 revisions in one
    // reply: here about 5 MB.
    let late = 1_000;
    fall_behind(&mut c, &proxy, MANY, late, async |_: &mut Client| {});
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < late {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Input::Upsert(e)) if e.origin.contains("/late-") => {
                assert!(e.errors.is_empty(), "{:?}", e.errors);
                seen.insert(e.origin);
            }
            Ok(Input::Upsert(_) | Input::NodeFacts(_)) => {}
            Ok(Input::SourceDown { reason, .. }) => {
                panic!("the watch should have caught up; the source went down: {reason}")
            }
            Ok(other) => panic!("the watch should have caught up, got a {}", other.kind()),
            Err(e) => panic!("{} of {late} late pods seen: {e}", seen.len()),
        }
    }
}

#[test]
fn a_value_too_large_to_read_is_named_and_the_rest_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    // etcd refuses such a value by default; a raised limit lets it in.
    let Some(etcd) = Etcd::start_with(tmp.path(), &["--max-request-bytes", "100000000"]) else {
        return;
    };
    let ep = vec![etcd.client.clone()];
    let mut c = connect(&ep);
    block_on(put_pods(&mut c, "small", 0, 20));
    let (k, v) = kubectl_pod("huge", pod_ip(100), etcd::MESSAGE_LIMIT);
    block_on(c.put(k.as_str(), v, None)).unwrap();

    let (_, entries) = block_on(etcd::snapshot(&c, &ep)).unwrap();
    assert_eq!(entries.len(), 21);
    let huge: Vec<&Entry> = entries.iter().filter(|e| !e.errors.is_empty()).collect();
    assert_eq!(huge.len(), 1, "{huge:?}");
    assert_eq!(huge[0].origin, format!("etcd:{k}"));
    assert!(
        huge[0].errors[0].message.contains("larger than"),
        "{huge:?}"
    );
    assert_eq!(entries.iter().filter(|e| e.objects.len() == 1).count(), 20);

    match datastore::get(&ep, None) {
        Err(datastore::DatastoreError::Etcd(m)) => {
            assert!(m.contains(&k) && m.contains("larger than"), "{m}")
        }
        other => panic!("expected an error naming {k}, got {other:?}"),
    }
}

#[test]
fn errors_are_one_sentence() {
    let ep = vec![format!("http://127.0.0.1:{}", free_port())];
    let want = format!("cannot connect to etcd at {}: connection refused", ep[0]);
    match datastore::get(&ep, None) {
        Err(e) => assert_eq!(e.to_string(), want),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (tx, rx) = channel();
    etcd::spawn(ep, tx).unwrap();
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Input::SourceDown { reason, .. }) => assert_eq!(reason, want),
        other => panic!("expected the source to be down, got {other:?}"),
    }
}

/// The issue's bar: 50,000 pods with kubectl's annotation, about 275 MB in
/// etcd. Start and resync take under a minute in a debug build; the
/// release-build figures are in BENCHMARKS.md ("etcd snapshot at size").
const SCALE: usize = 50_000;

/// A fresh etcd (`None` where none is installed) holding `BASE`, and its
/// endpoints.
fn started_with_base(dir: &Path) -> Option<(Etcd, Vec<String>)> {
    let etcd = Etcd::start(dir)?;
    let ep = vec![etcd.client.clone()];
    datastore::apply(&ep, &[write(dir, "base.yaml", BASE)]).unwrap();
    Some((etcd, ep))
}

fn all_ips(ips: impl IntoIterator<Item = std::net::Ipv4Addr>) -> Vec<String> {
    let mut ips: Vec<std::net::Ipv4Addr> = ips.into_iter().collect();
    ips.sort();
    ips.iter().map(ToString::to_string).collect()
}

#[test]
fn the_agent_starts_and_resyncs_at_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((etcd, ep)) = started_with_base(tmp.path()) else {
        return;
    };
    let mut c = connect(&ep);
    block_on(put_pods(&mut c, "big", 0, SCALE));

    let proxy = Proxy::start(&etcd.client);
    let (rec, health) = run_agent(
        AgentConfig::new("n1", vec![etcd::SCOPE.to_string()]),
        vec![proxy.url.clone()],
    );
    let web = "10.9.0.1".parse().unwrap();
    let ips = all_ips((0..SCALE).map(pod_ip).chain([web]));
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    converge(&rec, &ips, "start at scale");
    wait_ready(&health);

    let late = 300;
    fall_behind(&mut c, &proxy, SCALE, late, async |c: &mut Client| {
        let r = c.delete("/palisade/v1/Pod/shop/big-0", None).await.unwrap();
        c.compact(r.header().unwrap().revision(), None)
            .await
            .unwrap();
    });
    let ips = all_ips((1..SCALE + 3 + late).map(pod_ip).chain([web]));
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    converge(&rec, &ips, "resync at scale");
    assert_eq!(wait_health(&health, false, "resync at scale"), "ok\n");
}
