//! Promoting through the Kubernetes API: every object is read and checked,
//! then each gets one JSON patch that removes the annotation, guarded by a
//! `test` of the resource version that was checked, so that an object
//! changed in between is refused by the server rather than promoted
//! unseen.

use std::path::Path;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Map, Value};

use super::{promoted_value, PolicyName, Promoted};
use crate::datastore::DatastoreError;
use crate::kube::DYNAMIC;
use crate::message::sentence;

fn resource(kind: &str) -> Option<ApiResource> {
    if kind == "NetworkPolicy" {
        return Some(ApiResource::erase::<NetworkPolicy>(&()));
    }
    let (group, version, kind, plural) = DYNAMIC.into_iter().find(|g| g.2 == kind)?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

async fn client(kubeconfig: Option<&Path>) -> Result<Client, DatastoreError> {
    let cfg = match kubeconfig {
        None => return Client::try_default().await.map_err(|e| kube_err(&e)),
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| DatastoreError::Kube(format!("{}: {}", p.display(), sentence(&e))))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| DatastoreError::Kube(format!("{}: {}", p.display(), sentence(&e))))?
        }
    };
    Client::try_from(cfg).map_err(|e| kube_err(&e))
}

fn kube_err(e: &kube::Error) -> DatastoreError {
    DatastoreError::Kube(sentence(e))
}

/// The object as the agent decodes it: the API's JSON with its type set.
fn as_manifest(ar: &ApiResource, obj: &DynamicObject) -> Value {
    let mut body = match &obj.data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let meta = serde_json::to_value(&obj.metadata).unwrap_or(Value::Null);
    body.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
    body.insert("kind".into(), Value::String(ar.kind.clone()));
    body.insert("metadata".into(), meta);
    Value::Object(body)
}

fn api(client: &Client, ar: &ApiResource, n: &PolicyName) -> Api<DynamicObject> {
    match &n.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Promotes the named policies through the API server of `kubeconfig` (or
/// the default configuration: `KUBECONFIG`, `~/.kube/config`, in-cluster).
pub fn kube(
    kubeconfig: Option<&Path>,
    names: &[PolicyName],
) -> Result<Vec<Promoted>, DatastoreError> {
    let names = &super::distinct(names);
    crate::datastore::block_on(async {
        let client = client(kubeconfig).await?;
        let mut problems = Vec::new();
        let mut checked = Vec::new();
        for n in names {
            let Some(ar) = resource(&n.kind) else {
                problems.push(format!("{n}: no API resource for kind {}", n.kind));
                continue;
            };
            let obj = match api(&client, &ar, n).get_opt(&n.name).await {
                Ok(Some(o)) => o,
                Ok(None) => {
                    problems.push(format!("{n}: not found in the Kubernetes API"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{n}: {}", sentence(&e)));
                    continue;
                }
            };
            let origin = format!("kube:{}/{n}", n.kind);
            if let Err(p) = promoted_value(&origin, n, &as_manifest(&ar, &obj)) {
                problems.push(p);
                continue;
            }
            let version = obj.metadata.resource_version.clone().unwrap_or_default();
            checked.push((n, ar, version));
        }
        if !problems.is_empty() {
            return Err(DatastoreError::Refused(problems));
        }
        let key = palisade_k8s::STAGED_ANNOTATION
            .replace('~', "~0")
            .replace('/', "~1");
        let mut done = Vec::new();
        for (n, ar, version) in checked {
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                {"op": "remove", "path": format!("/metadata/annotations/{key}")},
            ]))
            .map_err(|e| DatastoreError::Kube(format!("{n}: {e}")))?;
            let r = api(&client, &ar, n)
                .patch(&n.name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await;
            if let Err(e) = r {
                let promoted: Vec<String> =
                    done.iter().map(|p: &Promoted| p.name.clone()).collect();
                return Err(DatastoreError::Kube(format!(
                    "{n}: {} (already promoted: {})",
                    sentence(&e),
                    if promoted.is_empty() {
                        "none".to_string()
                    } else {
                        promoted.join(", ")
                    }
                )));
            }
            done.push(Promoted {
                name: n.to_string(),
                place: "the Kubernetes API".into(),
            });
        }
        Ok(done)
    })
}
