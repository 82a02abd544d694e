//! The staging annotation on every policy kind: `"true"` stages, `"false"`
//! enforces, anything else rejects the object with its place and field.

use palisade_k8s::{decode, Object, STAGED_ANNOTATION};

const DOCS: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: staged
  namespace: shop
  annotations:
    palisade.dev/staged: "true"
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: enforced
  namespace: shop
  annotations: {palisade.dev/staged: "false", other: "x"}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: plain, namespace: shop}
spec: {podSelector: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: anp
  annotations: {palisade.dev/staged: "true"}
spec:
  priority: 5
  subject: {namespaces: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
  annotations: {palisade.dev/staged: "true"}
spec:
  subject: {namespaces: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: cnp
  annotations: {palisade.dev/staged: "false"}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
"#;

#[test]
fn every_policy_kind_reads_the_annotation() {
    let (objects, diags) = decode("p.yaml", DOCS.as_bytes());
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let got: Vec<(String, bool)> = objects
        .into_iter()
        .map(|o| match o.value {
            Object::NetworkPolicy(p) => (p.key(), p.staged),
            Object::AdminPolicy(p) => (p.key(), p.staged),
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<(String, bool)> = [
        ("shop/staged", true),
        ("shop/enforced", false),
        ("shop/plain", false),
        ("AdminNetworkPolicy/anp", true),
        ("BaselineAdminNetworkPolicy/default", true),
        ("ClusterNetworkPolicy/cnp", false),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_string(), s))
    .collect();
    assert_eq!(got, want);
    assert_eq!(STAGED_ANNOTATION, "palisade.dev/staged");
}

#[test]
fn any_other_value_rejects_the_object() {
    let text = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ok, namespace: shop}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: typo
  namespace: shop
  annotations: {palisade.dev/staged: "ture"}
spec: {podSelector: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: capital
  annotations: {palisade.dev/staged: "True"}
spec:
  priority: 5
  subject: {namespaces: {}}
"#;
    let (objects, diags) = decode("p.yaml", text.as_bytes());
    let names: Vec<String> = objects.iter().map(|o| o.value.key().to_string()).collect();
    assert_eq!(names, ["NetworkPolicy shop/ok"]);
    let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            r#"p.yaml:6: NetworkPolicy shop/typo: metadata.annotations["palisade.dev/staged"]: expected "true" (staged) or "false" (enforced), found "ture""#,
            r#"p.yaml:14: AdminNetworkPolicy capital: metadata.annotations["palisade.dev/staged"]: expected "true" (staged) or "false" (enforced), found "True""#,
        ]
    );
}

#[test]
fn a_json_value_that_is_no_string_is_named() {
    let text = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "p", "namespace": "shop", "annotations": {"palisade.dev/staged": true}},
 "spec": {"podSelector": {}}}"#;
    let (objects, diags) = decode("p.json", text.as_bytes());
    assert!(objects.is_empty());
    let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        [
            r#"p.json:1: NetworkPolicy shop/p: metadata.annotations["palisade.dev/staged"]: expected "true" (staged) or "false" (enforced), found boolean true"#
        ]
    );
}

#[test]
fn other_kinds_ignore_it() {
    let text = r#"apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: shop
  annotations: {palisade.dev/staged: "maybe"}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.1}
"#;
    let (objects, diags) = decode("p.yaml", text.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(objects.len(), 1);
}
