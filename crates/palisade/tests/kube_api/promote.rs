//! `palisade promote --kube` against the real API server: names are all
//! checked before any patch, and each staged object loses its annotation
//! (only it) in one JSON patch.

use std::process::Command;

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

use crate::server::{self, ApiServer, ADMIN_TOKEN};
use crate::{crds, wait_for};

const STAGED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
  annotations: {owner: team-a, palisade.dev/staged: "true"}
spec: {podSelector: {matchLabels: {app: web}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: guard
  annotations: {palisade.dev/staged: "true"}
spec:
  priority: 10
  subject: {namespaces: {}}
  egress: [{name: no-metadata, action: Deny, to: [{networks: [169.254.169.254/32]}]}]
"#;

fn anp() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.networking.k8s.io", "v1alpha1", "AdminNetworkPolicy"),
        "adminnetworkpolicies",
    )
}

fn np() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "NetworkPolicy"),
        "networkpolicies",
    )
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn promote_patches_each_staged_object_and_nothing_else() {
    if !server::available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let api = ApiServer::start(tmp.path());
    let admin = rt.block_on(api.client(ADMIN_TOKEN)).unwrap();
    rt.block_on(server::put(&admin, &crds()));
    wait_for("CRDs established", || {
        rt.block_on(async {
            let a: Api<DynamicObject> = Api::all_with(admin.clone(), &anp());
            a.list(&Default::default()).await.is_ok()
        })
    });
    rt.block_on(server::put(&admin, STAGED));
    let kubeconfig = api.kubeconfig("admin", ADMIN_TOKEN);
    let kc = kubeconfig.to_str().unwrap();
    let annotations = |ar: ApiResource, ns: Option<&str>, name: &str| {
        rt.block_on(async {
            let a: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
                None => Api::all_with(admin.clone(), &ar),
            };
            a.get(name)
                .await
                .unwrap()
                .metadata
                .annotations
                .unwrap_or_default()
        })
    };
    let pairs = |v: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    let refused = run(&[
        "promote",
        "--kube",
        "--kubeconfig",
        kc,
        "shop/web",
        "shop/db",
        "shop/nope",
    ]);
    assert_eq!(
        refused,
        (
            Some(2),
            String::new(),
            "error: shop/db: not staged\nerror: shop/nope: not found in the Kubernetes API\nerror: nothing was promoted\n".to_string()
        )
    );
    assert_eq!(
        annotations(np(), Some("shop"), "web"),
        pairs(&[("owner", "team-a"), ("palisade.dev/staged", "true")])
    );

    let done = run(&[
        "promote",
        "--kube",
        "--kubeconfig",
        kc,
        "shop/web",
        "AdminNetworkPolicy/guard",
    ]);
    assert_eq!(
        done,
        (
            Some(0),
            "promoted AdminNetworkPolicy/guard (the Kubernetes API)\npromoted shop/web (the Kubernetes API)\n".to_string(),
            String::new()
        )
    );
    assert_eq!(
        annotations(np(), Some("shop"), "web"),
        pairs(&[("owner", "team-a")])
    );
    assert_eq!(annotations(anp(), None, "guard"), pairs(&[]));
    let again = run(&["promote", "--kube", "--kubeconfig", kc, "shop/web"]);
    assert_eq!(
        again,
        (
            Some(2),
            String::new(),
            "error: shop/web: not staged\nerror: nothing was promoted\n".to_string()
        )
    );
}
