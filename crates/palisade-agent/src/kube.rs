//! The Kubernetes API as a datastore, through `kube` watchers.
//!
//! One watcher per kind: Pod, Namespace, Node, NetworkPolicy, and
//! AdminNetworkPolicy, BaselineAdminNetworkPolicy (`v1alpha1`) and
//! ClusterNetworkPolicy (`v1alpha2`). Every kind is watched as dynamic
//! objects, whose body stays the JSON the API server sent: `palisade-k8s`
//! decodes it once, with the same strict walk as a manifest (typed
//! objects would first drop what they do not know, then be written back
//! to JSON for that walk). Each kind is its
//! own scope, `kube:<Kind>/`: the watcher's `Init` … `InitDone` (its first
//! list, and every relist after a gap) becomes one [`Input::Resync`] of that
//! scope, like a reflector swapping its store, so objects deleted during an
//! outage disappear. The policy CRDs are optional: when the API server does
//! not serve one (404), the kind counts as empty.

use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::input::{Entry, Input};
use crate::Error;

/// The kinds whose first list must arrive before the agent applies anything.
pub const REQUIRED: [&str; 4] = ["Pod", "Namespace", "Node", "NetworkPolicy"];

/// The policy CRDs: (group, version, kind, plural).
pub const DYNAMIC: [(&str, &str, &str, &str); 3] = [
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "AdminNetworkPolicy",
        "adminnetworkpolicies",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "BaselineAdminNetworkPolicy",
        "baselineadminnetworkpolicies",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
        "clusternetworkpolicies",
    ),
];

pub fn scope(kind: &str) -> String {
    format!("kube:{kind}/")
}

/// Watcher events of one kind → inputs. Pure, so it can be tested with
/// made-up events.
#[derive(Debug)]
pub struct Mapper {
    kind: String,
    api_version: String,
    /// Objects of a list in progress (`Init` seen, `InitDone` not yet).
    pending: Option<Vec<Entry>>,
}

impl Mapper {
    pub fn new(kind: &str, api_version: &str) -> Mapper {
        Mapper {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            pending: None,
        }
    }

    fn origin(&self, meta: &ObjectMeta) -> String {
        format!(
            "{}{}/{}",
            scope(&self.kind),
            meta.namespace.as_deref().unwrap_or("_"),
            meta.name.as_deref().unwrap_or("")
        )
    }

    fn entry(&self, obj: DynamicObject) -> Entry {
        let origin = self.origin(&obj.metadata);
        let name = origin.clone();
        Entry::decode_json(origin, &name, self.json(obj))
    }

    /// The object as the API server sent it. List items and watch events
    /// may lack their type, so it is set from the watched kind; only the
    /// metadata, which the watcher itself reads, is written back.
    fn json(&self, obj: DynamicObject) -> Value {
        let mut body = match obj.data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let meta = serde_json::to_value(&obj.metadata).unwrap_or(Value::Null);
        body.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        body.insert("kind".into(), Value::String(self.kind.clone()));
        body.insert("metadata".into(), meta);
        Value::Object(body)
    }

    /// The inputs one watcher event means.
    pub fn map(&mut self, ev: Event<DynamicObject>) -> Vec<Input> {
        match ev {
            Event::Apply(k) => vec![Input::Upsert(self.entry(k))],
            Event::Delete(k) => vec![Input::Delete {
                origin: self.origin(&k.metadata),
            }],
            Event::Init => {
                self.pending = Some(Vec::new());
                Vec::new()
            }
            Event::InitApply(k) => {
                let e = self.entry(k);
                self.pending.get_or_insert_with(Vec::new).push(e);
                Vec::new()
            }
            Event::InitDone => vec![Input::Resync {
                scope: scope(&self.kind),
                entries: self.pending.take().unwrap_or_default(),
            }],
        }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    status.code == 404
}

/// Runs watchers made by `watch` until `tx` is closed. A watcher that
/// fails is reported (the last good state stays in force) and replaced by
/// a new one, which lists again: a watch that resumes by itself would send
/// nothing to say the source is back, and a list is what proves nothing
/// was missed.
async fn drive<S>(mut mapper: Mapper, optional: bool, watch: impl Fn() -> S, tx: Sender<Input>)
where
    S: Stream<Item = Result<Event<DynamicObject>, watcher::Error>>,
{
    let min = std::time::Duration::from_millis(500);
    let mut backoff = min;
    loop {
        let mut stream = std::pin::pin!(watch());
        let mut absent = false;
        let mut failed = false;
        while let Some(ev) = stream.next().await {
            let inputs = match ev {
                Ok(ev) => {
                    if matches!(ev, Event::InitDone) {
                        backoff = min;
                    }
                    mapper.map(ev)
                }
                Err(e) if optional && is_not_found(&e) => {
                    if absent {
                        continue;
                    }
                    absent = true;
                    vec![Input::Resync {
                        scope: scope(&mapper.kind),
                        entries: Vec::new(),
                    }]
                }
                Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                    // The watcher lists again by itself; nothing is unreachable.
                    info!(
                        "the watch of {} expired ({}); listing again",
                        mapper.kind, s.message
                    );
                    continue;
                }
                Err(e) => {
                    let reason = crate::message::sentence(&e);
                    warn!(
                        "watching {} in the Kubernetes API failed: {reason}; retrying",
                        mapper.kind
                    );
                    failed = true;
                    vec![Input::SourceDown {
                        scope: scope(&mapper.kind),
                        reason,
                    }]
                }
            };
            for i in inputs {
                if tx.send(i).is_err() {
                    return;
                }
            }
            if failed {
                break;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Watches the objects of `ar` until `tx` is closed; `optional`: the API
/// server may not serve them (a CRD not installed), and then there are
/// none.
async fn watch_kind(client: Client, ar: ApiResource, optional: bool, tx: Sender<Input>) {
    let mapper = Mapper::new(&ar.kind, &ar.api_version);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let watch = || watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
    drive(mapper, optional, watch, tx).await;
}

/// The policy CRD of one row of [`DYNAMIC`].
fn dynamic(gvk: (&str, &str, &str, &str)) -> ApiResource {
    let (group, version, kind, plural) = gvk;
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Every scope this source resyncs.
pub fn scopes() -> Vec<String> {
    REQUIRED.iter().map(|k| scope(k)).collect()
}

/// Every resource the source watches (list and watch, nothing else), and
/// whether it is optional (a policy CRD the server may not serve). The
/// agent's ClusterRole in `deploy/agent.yaml` grants exactly these.
pub fn resources() -> Vec<(ApiResource, bool)> {
    let required = [
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<Node>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
    ];
    required
        .into_iter()
        .map(|ar| (ar, false))
        .chain(DYNAMIC.into_iter().map(|g| (dynamic(g), true)))
        .collect()
}

/// The verbs the watchers use: a list, then a watch from its version.
pub const VERBS: [&str; 2] = ["list", "watch"];

/// Connects (kubeconfig, or the in-cluster service account) and runs every
/// watcher until `tx` is closed; [`Error::KubeConfig`] when there is no
/// client to connect with.
pub async fn run(tx: Sender<Input>) -> Result<(), Error> {
    let client = Client::try_default()
        .await
        .map_err(|e| Error::KubeConfig(crate::message::sentence(&e)))?;
    let tasks: Vec<_> = resources()
        .into_iter()
        .map(|(ar, optional)| tokio::spawn(watch_kind(client.clone(), ar, optional, tx.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Runs [`run`] on its own thread and runtime.
pub fn spawn(tx: Sender<Input>) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("kube-source".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            if let Err(e) = rt.block_on(run(tx.clone())) {
                warn!("{e}");
                for k in REQUIRED {
                    let _ = tx.send(Input::SourceDown {
                        scope: scope(k),
                        reason: e.to_string(),
                    });
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod as the API server sends it in a list (no type).
    fn pod(name: &str, app: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
            "spec": {"nodeName": "n1"}
        }))
        .unwrap()
    }

    #[test]
    fn watcher_events_map_to_inputs() {
        let mut m = Mapper::new("Pod", "v1");
        assert!(m.map(Event::<DynamicObject>::Init).is_empty());
        assert!(m.map(Event::InitApply(pod("a", "web"))).is_empty());
        assert!(m.map(Event::InitApply(pod("b", "db"))).is_empty());
        let out = m.map(Event::<DynamicObject>::InitDone);
        let [Input::Resync { scope, entries }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(scope, "kube:Pod/");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].origin, "kube:Pod/shop/a");
        assert!(entries
            .iter()
            .all(|e| e.errors.is_empty() && e.objects.len() == 1));

        let out = m.map(Event::Apply(pod("a", "api")));
        let [Input::Upsert(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let palisade_k8s::Object::Pod(p) = &e.objects[0].value else {
            panic!("not a pod")
        };
        assert_eq!(p.labels.get("app").map(String::as_str), Some("api"));
        assert_eq!(
            m.map(Event::Delete(pod("b", "db"))),
            vec![Input::Delete {
                origin: "kube:Pod/shop/b".into()
            }]
        );
    }

    #[test]
    fn dynamic_objects_get_their_type() {
        let mut m = Mapper::new("AdminNetworkPolicy", "policy.networking.k8s.io/v1alpha1");
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deny-all"},
            "spec": {"priority": 10, "subject": {"namespaces": {}},
                     "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}
        }))
        .unwrap();
        let out = m.map(Event::Apply(obj));
        let [Input::Upsert(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(e.origin, "kube:AdminNetworkPolicy/_/deny-all");
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert_eq!(e.objects.len(), 1);
    }

    /// The API server's JSON is walked as strictly as a manifest: a field
    /// Palisade does not know in a policy is refused, not dropped.
    #[test]
    fn policies_are_decoded_strictly() {
        let mut m = Mapper::new("NetworkPolicy", "networking.k8s.io/v1");
        let obj: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "np", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingres": []}
        }))
        .unwrap();
        let out = m.map(Event::Apply(obj));
        let [Input::Upsert(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(e.origin, "kube:NetworkPolicy/shop/np");
        assert!(e.objects.is_empty(), "{e:?}");
        assert!(
            e.errors.iter().any(|d| d.to_string().contains("ingres")),
            "{:?}",
            e.errors
        );
    }
}
