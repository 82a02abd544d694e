//! Live pods grouped into the workloads that own them, and workload
//! templates kept as endpoints only where no live pod stands for them.
//!
//! A pod names its direct controller (`metadata.ownerReferences`); people
//! think of the top-level workload: a ReplicaSet's Deployment, a Job's
//! CronJob. The link is taken from the owning object's own reference when
//! the input has that object, and otherwise, for a ReplicaSet, from the
//! naming rule of the Deployment controller: it names a ReplicaSet
//! `<deployment>-<pod-template-hash>` and labels its pods with that hash.
//!
//! When the input holds both a workload and live pods it owns (a
//! `kubectl get deploy,pods -o yaml`), the live pods are the endpoints and
//! the template is not: they are the same pods, counted twice otherwise,
//! and the live pods carry the addresses. Likewise a workload controlled by
//! another workload of the input (a Deployment's ReplicaSet) is not an
//! endpoint of its own: its controller's template stands for the same pods.

use std::collections::{BTreeMap, BTreeSet};

use palisade_model::{Pod, PodSource, Workload, WorkloadKind};

use crate::Template;

/// The label the Deployment controller puts on its ReplicaSets' pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

type Key = (String, WorkloadKind, String);

fn key(ns: &str, w: &Workload) -> Key {
    (ns.to_string(), w.kind, w.name.clone())
}

/// Resolves every live pod's owner to its top-level workload, then adds the
/// templates that no live pod or controlling workload stands for.
pub(crate) fn resolve(pods: &mut Vec<Pod>, templates: Vec<Template>) {
    let owners: BTreeMap<Key, Option<Workload>> = templates
        .iter()
        .filter_map(|t| {
            let kind = t.endpoint.template_kind()?;
            let w = Workload {
                kind,
                name: t.endpoint.name.clone(),
            };
            Some((key(&t.endpoint.namespace, &w), t.owner.clone()))
        })
        .collect();
    let mut covered: BTreeSet<Key> = BTreeSet::new();
    for p in pods.iter_mut() {
        let PodSource::Live { owner, .. } = &mut p.source else {
            continue;
        };
        let Some(direct) = owner.take() else { continue };
        covered.insert(key(&p.namespace, &direct));
        let top = top_level(&p.namespace, &p.labels, direct, &owners);
        covered.insert(key(&p.namespace, &top));
        *owner = Some(top);
    }
    for t in templates {
        let Some(kind) = t.endpoint.template_kind() else {
            continue;
        };
        let me = key(
            &t.endpoint.namespace,
            &Workload {
                kind,
                name: t.endpoint.name.clone(),
            },
        );
        let controlled = t
            .owner
            .as_ref()
            .is_some_and(|o| owners.contains_key(&key(&t.endpoint.namespace, o)));
        if !covered.contains(&me) && !controlled {
            pods.push(t.endpoint);
        }
    }
}

/// A pod's top-level workload, from its direct controller.
fn top_level(
    ns: &str,
    labels: &palisade_model::Labels,
    direct: Workload,
    owners: &BTreeMap<Key, Option<Workload>>,
) -> Workload {
    let parent = match direct.kind {
        WorkloadKind::ReplicaSet | WorkloadKind::Job => owners.get(&key(ns, &direct)),
        _ => return direct,
    };
    match (direct.kind, parent) {
        (WorkloadKind::ReplicaSet, Some(Some(o))) if o.kind == WorkloadKind::Deployment => {
            o.clone()
        }
        (WorkloadKind::Job, Some(Some(o))) if o.kind == WorkloadKind::CronJob => o.clone(),
        (WorkloadKind::ReplicaSet, None) => {
            let hash = labels.get(POD_TEMPLATE_HASH).filter(|h| !h.is_empty());
            let deployment = hash.and_then(|h| {
                direct
                    .name
                    .strip_suffix(h.as_str())?
                    .strip_suffix('-')
                    .filter(|d| !d.is_empty())
            });
            match deployment {
                Some(d) => Workload {
                    kind: WorkloadKind::Deployment,
                    name: d.to_string(),
                },
                None => direct,
            }
        }
        _ => direct,
    }
}
