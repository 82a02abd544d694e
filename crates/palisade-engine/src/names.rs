//! Endpoint names as users write them: `ns/name` for a pod or a workload's
//! pod template, `ns/name[Kind]` for the template alone. One map from
//! `ns/name` to the pods of that name, built the first time a name is
//! resolved: a flow file names two endpoints a line, and a scan of every
//! pod per name cost seconds on large clusters.

use std::collections::HashMap;

use palisade_model::{Pod, WorkloadKind};

use crate::{Engine, Error};

/// `ns/name` → indexes into `Cluster::pods` (a pod and templates of
/// several kinds may share a name).
#[derive(Clone, Debug, Default)]
pub(crate) struct Names(HashMap<String, Vec<usize>>);

impl Names {
    pub(crate) fn build(pods: &[Pod]) -> Names {
        let mut map: HashMap<String, Vec<usize>> = HashMap::with_capacity(pods.len());
        for (i, p) in pods.iter().enumerate() {
            map.entry(p.key()).or_default().push(i);
        }
        Names(map)
    }
}

/// `ns/name[Kind]` split into `ns/name` and the kind, when it has one.
fn split_kind(s: &str) -> Result<(&str, Option<WorkloadKind>), Error> {
    let Some(open) = s.strip_suffix(']').and_then(|t| t.rfind('[')) else {
        return Ok((s, None));
    };
    let kind = &s[open + 1..s.len() - 1];
    match WorkloadKind::from_name(kind) {
        Some(k) => Ok((&s[..open], Some(k))),
        None => Err(Error::UnknownWorkloadKind {
            text: s.to_string(),
            kind: kind.to_string(),
        }),
    }
}

impl Engine {
    fn names(&self) -> &Names {
        self.names.get_or_init(|| Names::build(&self.cluster.pods))
    }

    /// The pod (or template) a user's `ns/name` or `ns/name[Kind]` means.
    pub(crate) fn pod_named(&self, s: &str) -> Result<usize, Error> {
        let (key, kind) = split_kind(s)?;
        let found = self.names().0.get(key).map_or(&[][..], Vec::as_slice);
        let pods = &self.cluster.pods;
        let Some(kind) = kind else {
            return match found {
                [] => Err(Error::PodNotFound(s.to_string())),
                [one] => Ok(*one),
                many => Err(Error::AmbiguousName {
                    name: s.to_string(),
                    candidates: many.iter().map(|&i| pods[i].display_name()).collect(),
                }),
            };
        };
        if let Some(&i) = found
            .iter()
            .find(|&&i| pods[i].template_kind() == Some(kind))
        {
            return Ok(i);
        }
        // Not a template: its live pods may be in the input instead (the
        // error path only, so a scan is fine).
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let live: Vec<String> = pods
            .iter()
            .filter(|p| {
                p.namespace == ns
                    && p.template_kind().is_none()
                    && p.workload() == Some((kind, name))
            })
            .map(Pod::key)
            .collect();
        Err(Error::WorkloadNotFound {
            name: s.to_string(),
            live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_split_off_as_kubernetes_spells_them() {
        assert_eq!(
            split_kind("shop/web[Deployment]"),
            Ok(("shop/web", Some(WorkloadKind::Deployment)))
        );
        assert_eq!(split_kind("shop/web"), Ok(("shop/web", None)));
        assert_eq!(
            split_kind("shop/web[deployment]").unwrap_err().to_string(),
            "\"shop/web[deployment]\": unknown workload kind \"deployment\" (expected Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job or CronJob)"
        );
    }
}
