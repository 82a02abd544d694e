//! Identities: endpoint pods grouped by everything a rule can look at
//! (namespace, labels, ports, host networking, address classes), and what
//! selects each of them.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_model::{AdminTier, Cluster, ContainerPort, Labels, NetworkPolicy, Protocol};

use super::{subject_selects, AddrClasses, IdSet, Plan, ResolvedAdmin, SetKey};
use crate::{IdentityId, PodId};

/// A group of pods that every selector, address matcher and named port
/// treats the same way.
#[derive(Clone, Debug)]
pub struct Identity {
    pub namespace: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
    pub host_network: bool,
    /// Its pods, sorted.
    pub members: Vec<PodId>,
    /// NetworkPolicies (indexes into `Cluster::policies`) that select the
    /// identity and isolate it for ingress / egress.
    pub ingress_policies: Vec<usize>,
    pub egress_policies: Vec<usize>,
    /// Admin policies (indexes into [`crate::Index::admin`]) whose subject
    /// selects the identity, in evaluation order, per tier.
    pub admin: Vec<usize>,
    pub baseline: Vec<usize>,
    /// Everything above flattened for the verdict hot path.
    pub ingress_plan: Plan,
    pub egress_plan: Plan,
    /// Named container ports, by interned name.
    pub named_ports: Vec<(u32, Protocol, u16)>,
    /// Which address class the members' first IPv4 / IPv6 address falls in
    /// (`u32::MAX`: none of that family).
    pub addr_class: (u32, u32),
}

impl Identity {
    /// Whether its members have an address: false for workloads' pod
    /// templates (the only endpoints without one), which no address rule
    /// matches and the dataplane never sees.
    pub fn has_address(&self) -> bool {
        self.addr_class != (u32::MAX, u32::MAX)
    }
}

#[derive(PartialEq, Eq, Hash)]
struct IdentityKey<'a> {
    namespace: &'a str,
    labels: &'a Labels,
    ports: Vec<ContainerPort>,
    host_network: bool,
    /// The class (set of address matchers containing it) of the first v4
    /// and v6 address; `u32::MAX` when the pod has none of that family.
    addr_class: (u32, u32),
}

/// A pod's ports as its identity compares them.
pub(super) fn canonical_ports(ports: &[ContainerPort]) -> Vec<ContainerPort> {
    let mut ports = ports.to_vec();
    ports.sort();
    ports.dedup();
    ports
}

/// Endpoint pods grouped into identities.
pub(super) struct Grouped {
    pub(super) identities: Vec<Identity>,
    pub(super) pod_identity: Vec<Option<IdentityId>>,
    /// Addresses of endpoint pods that are not host-network.
    pub(super) ip_to_pod: HashMap<IpAddr, PodId>,
}

pub(super) fn group(cluster: &Cluster, classes: &AddrClasses) -> Grouped {
    let mut identities: Vec<Identity> = Vec::new();
    let mut ids: HashMap<IdentityKey, IdentityId> = HashMap::new();
    let mut pod_identity = vec![None; cluster.pods.len()];
    let mut ip_to_pod = HashMap::new();
    for (i, pod) in cluster.pods.iter().enumerate() {
        if !pod.is_endpoint() {
            continue;
        }
        let key = IdentityKey {
            namespace: &pod.namespace,
            labels: &pod.labels,
            ports: canonical_ports(&pod.ports),
            host_network: pod.host_network,
            addr_class: classes.classes_of(&pod.ips),
        };
        let next = IdentityId::new(identities.len());
        let id = *ids.entry(key).or_insert_with_key(|k| {
            identities.push(Identity {
                namespace: pod.namespace.clone(),
                labels: pod.labels.clone(),
                ports: k.ports.clone(),
                host_network: pod.host_network,
                members: Vec::new(),
                ingress_policies: Vec::new(),
                egress_policies: Vec::new(),
                admin: Vec::new(),
                baseline: Vec::new(),
                ingress_plan: Plan::default(),
                egress_plan: Plan::default(),
                named_ports: Vec::new(),
                addr_class: k.addr_class,
            });
            next
        });
        let pod_id = PodId::new(i);
        identities[id.index()].members.push(pod_id);
        pod_identity[i] = Some(id);
        if !pod.host_network {
            for ip in &pod.ips {
                ip_to_pod.insert(*ip, pod_id);
            }
        }
    }
    Grouped {
        identities,
        pod_identity,
        ip_to_pod,
    }
}

/// A namespace's labels (none for a namespace the cluster does not list).
pub(super) fn ns_labels<'c>(cluster: &'c Cluster, ns: &str) -> &'c Labels {
    static EMPTY: Labels = Labels::new();
    cluster.namespaces.get(ns).map_or(&EMPTY, |n| &n.labels)
}

pub(crate) fn np_selects(p: &NetworkPolicy, id: &Identity) -> bool {
    !id.host_network && p.namespace == id.namespace && p.pod_selector.matches(&id.labels)
}

/// Records on each identity the policies whose subject selects it.
pub(super) fn select_subjects(
    cluster: &Cluster,
    admin: &[ResolvedAdmin],
    identities: &mut [Identity],
) {
    let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
    for (pi, p) in cluster.policies.iter().enumerate() {
        by_namespace
            .entry(p.namespace.as_str())
            .or_default()
            .push(pi);
    }
    for id in identities.iter_mut() {
        let candidates = by_namespace.get(id.namespace.as_str());
        for &pi in candidates.into_iter().flatten() {
            let p = &cluster.policies[pi];
            if np_selects(p, id) {
                if p.ingress.is_some() {
                    id.ingress_policies.push(pi);
                }
                if p.egress.is_some() {
                    id.egress_policies.push(pi);
                }
            }
        }
        if id.host_network {
            continue;
        }
        let nsl = ns_labels(cluster, &id.namespace);
        for (ai, a) in admin.iter().enumerate() {
            if subject_selects(&a.policy.subject, nsl, &id.labels) {
                match a.policy.tier {
                    AdminTier::Admin => id.admin.push(ai),
                    AdminTier::Baseline => id.baseline.push(ai),
                }
            }
        }
    }
}

/// One identity set per distinct selector pair.
pub(super) fn sets(cluster: &Cluster, keys: &[SetKey], identities: &[Identity]) -> Vec<IdSet> {
    keys.iter()
        .map(|SetKey::Pods(scope, pods)| {
            let mut s = IdSet::with_capacity(identities.len());
            for (i, id) in identities.iter().enumerate() {
                if id.host_network || !pods.matches(&id.labels) {
                    continue;
                }
                if scope.contains(&id.namespace, || ns_labels(cluster, &id.namespace)) {
                    s.insert(IdentityId::new(i));
                }
            }
            s
        })
        .collect()
}

/// Port names interned in order of first use.
#[derive(Default)]
pub(super) struct PortNames(pub(super) HashMap<String, u32>);

impl PortNames {
    pub(super) fn intern(&mut self, n: &str) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(n.to_string()).or_insert(next)
    }

    /// Fills each identity's named ports.
    pub(super) fn name_ports(&mut self, identities: &mut [Identity]) {
        for id in identities.iter_mut() {
            id.named_ports = id
                .ports
                .iter()
                .filter_map(|c| Some((self.intern(c.name.as_deref()?), c.protocol, c.port)))
                .collect();
        }
    }
}
