//! Workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job, CronJob): read leniently like Pods, since
//! repositories and `kubectl get -o yaml` carry many fields Palisade does
//! not need, but every field it uses is checked. Each becomes one endpoint
//! from its pod template; `ownerReferences` link pods and workloads to
//! their controller.

use palisade_model::{Pod, Workload, WorkloadKind};
use serde_json::{Map, Value};

use crate::core::container_ports_of;
use crate::walk::{as_map, field, get_bool, get_list, get_map, get_str, index, join, Cx};
use crate::Meta;

/// A workload object: its pod template as an endpoint, and the workload
/// that controls it (a Deployment's ReplicaSet, a CronJob's Job).
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// A [`Pod::template`]: named after the workload, no address.
    pub endpoint: Pod,
    pub owner: Option<Workload>,
}

/// The API group and version of a workload kind.
pub(crate) fn api_version(kind: WorkloadKind) -> &'static str {
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::batch::v1 as batch;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::Resource;
    match kind {
        WorkloadKind::Deployment => apps::Deployment::API_VERSION,
        WorkloadKind::StatefulSet => apps::StatefulSet::API_VERSION,
        WorkloadKind::DaemonSet => apps::DaemonSet::API_VERSION,
        WorkloadKind::ReplicaSet => apps::ReplicaSet::API_VERSION,
        WorkloadKind::ReplicationController => core::ReplicationController::API_VERSION,
        WorkloadKind::Job => batch::Job::API_VERSION,
        WorkloadKind::CronJob => batch::CronJob::API_VERSION,
    }
}

/// Where the pod template lives: `spec.template`, or for a CronJob
/// `spec.jobTemplate.spec.template`.
fn template_path(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::CronJob => &["spec", "jobTemplate", "spec", "template"],
        _ => &["spec", "template"],
    }
}

pub(crate) fn decode(
    cx: &mut Cx,
    obj: &Map<String, Value>,
    meta: Meta,
    kind: WorkloadKind,
) -> Template {
    let mut at = obj;
    let mut path = String::new();
    let mut template = None;
    let steps = template_path(kind);
    for (i, key) in steps.iter().enumerate() {
        let here = join(&path, key);
        let next = match field(at, key) {
            Some(v) => as_map(cx, v, &here, None),
            None => {
                cx.error(&here, format!("missing {here} (the pod template)"));
                None
            }
        };
        let Some(next) = next else { break };
        if i + 1 == steps.len() {
            template = Some(next);
        }
        at = next;
        path = here;
    }
    let template_found = template.is_some();
    let template = template.cloned().unwrap_or_default();
    let tpath = steps.join(".");

    let labels = match get_map(cx, &template, &tpath, "metadata", None) {
        Some(m) => match field(m, "labels") {
            Some(v) => crate::walk::labels(cx, v, &join(&tpath, "metadata.labels")),
            None => Default::default(),
        },
        None => Default::default(),
    };
    let spath = join(&tpath, "spec");
    let spec = match field(&template, "spec") {
        Some(v) => {
            let spec = as_map(cx, v, &spath, None).cloned();
            let containers = spec.as_ref().and_then(|s| field(s, "containers"));
            if spec.is_some() && containers.is_none_or(|c| c.as_array().is_some_and(Vec::is_empty))
            {
                cx.error(
                    &join(&spath, "containers"),
                    "missing containers: a pod template needs at least one",
                );
            }
            spec.unwrap_or_default()
        }
        None if template_found => {
            cx.error(&spath, format!("missing {spath} (the pods' containers)"));
            Map::new()
        }
        None => Map::new(),
    };
    let host_network = get_bool(cx, &spec, &spath, "hostNetwork").unwrap_or(false);
    let ports = container_ports_of(cx, &spec, &spath);
    Template {
        endpoint: Pod::template(kind, meta.namespace, meta.name, labels, host_network, ports),
        owner: meta.owner,
    }
}

/// The controller in `metadata.ownerReferences` (the entry with
/// `controller: true`), when it is a workload kind; other owners (a Node
/// for a static pod's mirror, a custom resource) leave the object
/// unowned for Palisade.
pub(crate) fn controller(cx: &mut Cx, meta: &Map<String, Value>) -> Option<Workload> {
    let list = get_list(cx, meta, "metadata", "ownerReferences")?;
    let mut found = None;
    for (i, r) in list.iter().enumerate() {
        let p = index("metadata.ownerReferences", i);
        let Some(m) = as_map(cx, r, &p, None) else {
            continue;
        };
        let kind = get_str(cx, m, &p, "kind");
        let name = get_str(cx, m, &p, "name");
        for (key, v) in [("kind", kind), ("name", name)] {
            if v.is_none_or(str::is_empty) && field(m, key).is_none_or(Value::is_string) {
                cx.error(&join(&p, key), format!("missing {key}"));
            }
        }
        if get_bool(cx, m, &p, "controller") != Some(true) {
            continue;
        }
        if found.is_some() {
            cx.error(
                &join(&p, "controller"),
                "a second controller: at most one owner reference may have controller: true",
            );
            continue;
        }
        if let (Some(k), Some(n)) = (kind.and_then(WorkloadKind::from_name), name) {
            found = Some(Workload {
                kind: k,
                name: n.to_string(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use crate::decode;

    fn errors(text: &str) -> Vec<String> {
        let (objects, diags) = decode("w.yaml", text.as_bytes());
        assert!(objects.is_empty(), "{objects:?}");
        diags.iter().map(ToString::to_string).collect()
    }

    const HEAD: &str =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n";

    #[test]
    fn a_workload_without_a_template_names_the_missing_field() {
        assert_eq!(
            errors(HEAD),
            ["w.yaml:1: Deployment shop/web: spec: missing spec (the pod template)"]
        );
        assert_eq!(
            errors(&format!("{HEAD}spec: {{replicas: 2}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template: missing spec.template (the pod template)"]
        );
        assert_eq!(
            errors("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec: {jobTemplate: {spec: {}}}\n"),
            ["w.yaml:1: CronJob default/nightly: spec.jobTemplate.spec.template: missing spec.jobTemplate.spec.template (the pod template)"]
        );
    }

    #[test]
    fn a_template_of_the_wrong_type_or_without_containers_is_an_error() {
        assert_eq!(
            errors(&format!("{HEAD}spec: {{template: [a]}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template: expected a mapping, found a list"]
        );
        assert_eq!(
            errors(&format!("{HEAD}spec: {{template: {{metadata: {{labels: {{app: web}}}}}}}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template.spec: missing spec.template.spec (the pods' containers)"]
        );
        assert_eq!(
            errors(&format!("{HEAD}spec: {{template: {{spec: {{containers: []}}}}}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template.spec.containers: missing containers: a pod template needs at least one"]
        );
    }

    #[test]
    fn template_labels_and_ports_are_checked() {
        assert_eq!(
            errors(&format!("{HEAD}spec: {{template: {{metadata: {{labels: {{app: 7}}}}, spec: {{containers: [{{name: c}}]}}}}}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template.metadata.labels.app: label values must be strings: quote 7"]
        );
        assert_eq!(
            errors(&format!("{HEAD}spec: {{template: {{spec: {{containers: [{{name: c, ports: [{{containerPort: 80, name: HTTP}}]}}]}}}}}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template.spec.containers[0].ports[0].name: \"HTTP\" is not a valid port name: must contain only lower case alphanumeric characters and '-'"]
        );
        assert_eq!(
            errors(&format!("{HEAD}spec: {{template: {{spec: {{hostNetwork: yes please, containers: [{{name: c}}]}}}}}}\n")),
            ["w.yaml:1: Deployment shop/web: spec.template.spec.hostNetwork: expected true or false, found string \"yes please\""]
        );
    }

    #[test]
    fn owner_references_are_checked() {
        let pod = |refs: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, ownerReferences: {refs}}}\nstatus: {{podIP: 10.0.0.1}}\n")
        };
        assert_eq!(
            errors(&pod("{kind: ReplicaSet}")),
            ["w.yaml:1: Pod default/p: metadata.ownerReferences: expected a list, found a mapping"]
        );
        assert_eq!(
            errors(&pod("[{kind: ReplicaSet, controller: true}]")),
            ["w.yaml:1: Pod default/p: metadata.ownerReferences[0].name: missing name"]
        );
        assert_eq!(
            errors(&pod("[{kind: ReplicaSet, name: a, controller: true}, {kind: Job, name: b, controller: true}]")),
            ["w.yaml:1: Pod default/p: metadata.ownerReferences[1].controller: a second controller: at most one owner reference may have controller: true"]
        );
        assert_eq!(
            errors(&pod("[{kind: Job, name: b, controller: \"true\"}]")),
            ["w.yaml:1: Pod default/p: metadata.ownerReferences[0].controller: expected true or false, found string \"true\""]
        );
    }
}
