//! The workloads policies are generated for, and the selector of each: the
//! labels all its pods share, volatile controller labels left out, widened
//! to a union of workloads where those labels cannot tell them apart.

use std::collections::BTreeMap;

use palisade_model::{LabelSelector, Labels, Pod};

use crate::{Engine, PodId};

/// Labels that controllers put on pods per revision or per pod: a selector
/// using one would stop selecting the workload at its next rollout, or
/// select one pod of it.
pub const VOLATILE_LABELS: [&str; 6] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
];

/// One workload (or a union of workloads that stable labels cannot tell
/// apart) and the selector that selects exactly its pods in its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    /// Display names of the workloads it stands for (`ns/web[Deployment]`,
    /// or `ns/pod` for a pod without owner), sorted; more than one only
    /// for a union.
    pub names: Vec<String>,
    /// The first workload's own name, which the policy is named after.
    pub base_name: String,
    /// Indexes into `Cluster::pods`, sorted.
    pub pods: Vec<usize>,
    /// The pods of each of `names`, in the same order.
    pub parts: Vec<Vec<usize>>,
    pub selector: LabelSelector,
}

impl Workload {
    pub fn display(&self) -> String {
        self.names.join(" + ")
    }
}

/// The labels every pod shares, volatile ones left out.
fn stable_labels<'a>(pods: impl Iterator<Item = &'a Pod>) -> Labels {
    let mut common: Option<Labels> = None;
    for p in pods {
        common = Some(match common {
            None => p.labels.clone(),
            Some(mut c) => {
                c.retain(|k, v| p.labels.get(k) == Some(v));
                c
            }
        });
    }
    let mut c = common.unwrap_or_default();
    c.retain(|k, _| !VOLATILE_LABELS.contains(&k.as_str()));
    c
}

fn selector_of(engine: &Engine, pods: &[usize]) -> LabelSelector {
    let all = &engine.cluster().pods;
    let labels = stable_labels(pods.iter().map(|&i| &all[i]));
    LabelSelector::from_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Pods that policies can select: endpoints with an identity, not on the
/// host network (no selector selects those; their traffic is the node's).
pub(crate) fn selectable(engine: &Engine, i: usize) -> bool {
    let p = &engine.cluster().pods[i];
    !p.host_network && engine.index().identity_of(PodId::new(i)).is_some()
}

/// Every workload of the cluster, sorted by namespace and name; `warnings`
/// gets one sentence per union that stable labels forced.
pub fn workloads(engine: &Engine, warnings: &mut Vec<String>) -> Vec<Workload> {
    let pods = &engine.cluster().pods;
    let mut by_name: BTreeMap<(String, String), (String, Vec<usize>)> = BTreeMap::new();
    for (i, p) in pods.iter().enumerate() {
        if !selectable(engine, i) {
            continue;
        }
        let (display, base) = match p.workload() {
            Some((kind, name)) => (format!("{}/{name}[{kind}]", p.namespace), name.to_string()),
            None => (p.key(), p.name.clone()),
        };
        by_name
            .entry((p.namespace.clone(), display))
            .or_insert_with(|| (base, Vec::new()))
            .1
            .push(i);
    }
    let mut out: Vec<Workload> = by_name
        .into_iter()
        .map(|((namespace, display), (base_name, pods))| Workload {
            selector: selector_of(engine, &pods),
            namespace,
            names: vec![display],
            base_name,
            parts: vec![pods.clone()],
            pods,
        })
        .collect();
    // A selector that selects another workload's pod merges the two; the
    // union's selector is narrower in labels, so repeat until none does.
    while let Some((a, b)) = first_overlap(engine, &out) {
        let other = out.remove(b);
        let w = &mut out[a];
        warnings.push(format!(
            "{} and {} cannot be told apart by their stable labels ({}): one policy is generated for both",
            w.display(),
            other.display(),
            if w.selector.is_everything() {
                "none".to_string()
            } else {
                w.selector.to_string()
            }
        ));
        let mut parts: Vec<(String, Vec<usize>)> = std::mem::take(&mut w.names)
            .into_iter()
            .zip(std::mem::take(&mut w.parts))
            .chain(other.names.into_iter().zip(other.parts))
            .collect();
        parts.sort();
        (w.names, w.parts) = parts.into_iter().unzip();
        w.pods.extend(other.pods);
        w.pods.sort_unstable();
        w.selector = selector_of(engine, &w.pods);
    }
    out
}

/// The first pair `(a, b)`, `a < b`, of one namespace where either's
/// selector selects a pod of the other.
fn first_overlap(engine: &Engine, ws: &[Workload]) -> Option<(usize, usize)> {
    let pods = &engine.cluster().pods;
    let selects =
        |w: &Workload, o: &Workload| o.pods.iter().any(|&i| w.selector.matches(&pods[i].labels));
    for (a, wa) in ws.iter().enumerate() {
        for (b, wb) in ws.iter().enumerate().skip(a + 1) {
            if wa.namespace != wb.namespace {
                continue;
            }
            if selects(wa, wb) || selects(wb, wa) {
                return Some((a, b));
            }
        }
    }
    None
}
