//! The index: identities (endpoints no policy can tell apart), one shared
//! identity set per distinct selector, and every policy resolved against
//! them. Built once per cluster snapshot; verdicts and the compiler only read
//! it, through typed ids.

mod address;
mod identity;
mod idset;
mod nodes;
mod plan;
mod resolve;
mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use palisade_model::Cluster;

use crate::classify::DirClassifier;
use crate::{Direction, IdentityId, MatcherId, PodId, SetId};

pub use address::{AddrClasses, AddressMatcher};
pub(crate) use identity::np_selects;
pub use identity::Identity;
pub use idset::IdSet;
pub use plan::{FlatPort, FlatPortKind, FlatRule, Plan};
pub(crate) use resolve::{admin_matcher, subject_selects};
pub use resolve::{
    PeerMatch, ResolvedAdmin, ResolvedAdminRule, ResolvedPolicy, ResolvedRule, SetKey,
};

pub(crate) use address::{first_of_family, interval_start};
pub(crate) use nodes::Nodes;
pub(crate) use sweep::{sweep, Step};

#[derive(Clone, Debug)]
pub struct Index {
    identities: Vec<Identity>,
    /// Identity of each pod; `None` for non-endpoints. Crate-visible for
    /// the synthetic flow generator, which samples pods by it.
    pod_identity: Vec<Option<IdentityId>>,
    /// Distinct selector pairs, one shared identity set each.
    sets: Vec<IdSet>,
    set_keys: Vec<SetKey>,
    matchers: Vec<AddressMatcher>,
    policies: Vec<ResolvedPolicy>,
    admin: Vec<ResolvedAdmin>,
    /// Addresses of endpoint pods that are not host-network.
    ip_to_pod: HashMap<IpAddr, PodId>,
    nodes: Nodes,
    /// Interned port names.
    port_names: HashMap<String, u32>,
    /// Address classes, for placing a pod that is not in the index.
    addr_classes: AddrClasses,
    /// Bit-vector classifiers: ingress, egress.
    classifiers: [DirClassifier; 2],
}

impl Index {
    /// The index of what `cluster` enforces: staged policies are absent, and
    /// policy positions ([`Index::policy`]) are those of
    /// [`Cluster::enforced`].
    pub fn build(cluster: &Cluster) -> Index {
        if cluster.has_staged() {
            Index::build_all(&cluster.enforced())
        } else {
            Index::build_all(cluster)
        }
    }

    /// The index of every policy of `cluster`, staged ones included.
    pub(crate) fn build_all(cluster: &Cluster) -> Index {
        // Resolve every rule first: that fixes the address matchers, which
        // identities depend on.
        let mut r = resolve::Resolver::new(cluster);
        let policies = r.policies();
        let admin = r.admin();
        let addr_classes = AddrClasses::build(&r.matchers);
        let identity::Grouped {
            mut identities,
            pod_identity,
            ip_to_pod,
        } = identity::group(cluster, &addr_classes);
        identity::select_subjects(cluster, &admin, &mut identities);
        let sets = identity::sets(cluster, &r.set_keys, &identities);
        let port_names = plan_all(cluster, &policies, &admin, &mut identities);
        let nodes = Nodes::build(cluster, &ip_to_pod);
        let first_ips: Vec<[Option<IpAddr>; 2]> = identities
            .iter()
            .map(|id| {
                let ips = &cluster.pods[id.members[0].index()].ips;
                [first_of_family(ips, true), first_of_family(ips, false)]
            })
            .collect();
        let classifiers = [Direction::Ingress, Direction::Egress]
            .map(|dir| DirClassifier::build(dir, &identities, &first_ips, &sets, &r.matchers));
        Index {
            addr_classes,
            classifiers,
            identities,
            pod_identity,
            sets,
            set_keys: r.set_keys,
            matchers: r.matchers,
            policies,
            admin,
            ip_to_pod,
            nodes,
            port_names,
        }
    }

    /// Every identity, in id order (position `i` is `IdentityId::new(i)`).
    #[inline]
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    #[inline]
    pub fn identity(&self, id: IdentityId) -> &Identity {
        &self.identities[id.index()]
    }

    /// The identity of a pod; `None` for a pod that is not an endpoint.
    #[inline(always)]
    pub fn identity_of(&self, pod: PodId) -> Option<IdentityId> {
        self.pod_identity[pod.index()]
    }

    /// The shared identity sets, one per distinct selector pair.
    pub fn sets(&self) -> &[IdSet] {
        &self.sets
    }

    #[inline]
    pub fn set(&self, id: SetId) -> &IdSet {
        &self.sets[id.index()]
    }

    /// What each shared set selects, in set order.
    pub fn set_keys(&self) -> &[SetKey] {
        &self.set_keys
    }

    /// The address matchers, in id order.
    pub fn matchers(&self) -> &[AddressMatcher] {
        &self.matchers
    }

    #[inline]
    pub fn matcher(&self, id: MatcherId) -> &AddressMatcher {
        &self.matchers[id.index()]
    }

    /// NetworkPolicy `i` of `Cluster::policies`, resolved (of the cluster
    /// the index was built over: [`Engine::cluster`](crate::Engine::cluster)).
    pub fn policy(&self, i: usize) -> &ResolvedPolicy {
        &self.policies[i]
    }

    /// The admin policies in evaluation order (tier, priority, name).
    pub fn admin(&self) -> &[ResolvedAdmin] {
        &self.admin
    }

    /// The endpoint pod (not host-network) that holds an address.
    #[inline]
    pub fn pod_at(&self, ip: &IpAddr) -> Option<PodId> {
        self.ip_to_pod.get(ip).copied()
    }

    /// Every address held by an endpoint pod that is not host-network, with
    /// its pod, in no particular order.
    pub fn pod_addresses(&self) -> impl Iterator<Item = (&IpAddr, PodId)> + '_ {
        self.ip_to_pod.iter().map(|(ip, &p)| (ip, p))
    }

    /// A node's addresses, by node name.
    pub fn node_addresses(&self, node: &str) -> Option<&Vec<IpAddr>> {
        self.nodes.addresses.get(node)
    }

    /// Every address a node's traffic comes from, in no particular order:
    /// the nodes' own and their host-network endpoint pods'.
    pub fn all_node_addresses(&self) -> impl Iterator<Item = &IpAddr> + '_ {
        self.nodes
            .addresses
            .values()
            .flatten()
            .chain(&self.nodes.host_pod_addresses)
    }

    pub(crate) fn addr_classes(&self) -> &AddrClasses {
        &self.addr_classes
    }

    pub(crate) fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// Interned port names: name → the id plans use for it.
    pub fn port_names(&self) -> &HashMap<String, u32> {
        &self.port_names
    }

    #[inline(always)]
    pub(crate) fn classifier(&self, dir: Direction) -> &DirClassifier {
        &self.classifiers[match dir {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }]
    }

    /// The identity a pod would have in this index, if one exists: the
    /// same namespace, labels, ports, host networking and address classes.
    /// Lets a caller tell whether a pod change leaves every rule as it is.
    pub fn identity_for(&self, pod: &palisade_model::Pod) -> Option<IdentityId> {
        if !pod.is_endpoint() {
            return None;
        }
        let ports = identity::canonical_ports(&pod.ports);
        let class = self.addr_classes.classes_of(&pod.ips);
        self.identities
            .iter()
            .position(|i| {
                i.namespace == pod.namespace
                    && i.labels == pod.labels
                    && i.host_network == pod.host_network
                    && i.ports == ports
                    && i.addr_class == class
            })
            .map(IdentityId::new)
    }

    /// Identities grouped for display: namespace, then labels.
    pub fn identities_by_namespace(&self) -> BTreeMap<&str, Vec<IdentityId>> {
        let mut m: BTreeMap<&str, Vec<IdentityId>> = BTreeMap::new();
        for (i, id) in self.identities.iter().enumerate() {
            m.entry(id.namespace.as_str())
                .or_default()
                .push(IdentityId::new(i));
        }
        m
    }
}

/// Interns port names and fills every identity's named ports and plans;
/// names are numbered in that order (named ports first), which the
/// compiler's output depends on.
fn plan_all(
    cluster: &Cluster,
    policies: &[ResolvedPolicy],
    admin: &[ResolvedAdmin],
    identities: &mut [Identity],
) -> HashMap<String, u32> {
    let mut names = identity::PortNames::default();
    names.name_ports(identities);
    let sources = plan::Sources {
        cluster,
        policies,
        admin,
    };
    let mut intern = |n: &str| names.intern(n);
    let plans: Vec<(Plan, Plan)> = identities
        .iter()
        .map(|id| {
            (
                sources.plan(id, Direction::Ingress, &mut intern),
                sources.plan(id, Direction::Egress, &mut intern),
            )
        })
        .collect();
    for (id, (ingress, egress)) in identities.iter_mut().zip(plans) {
        id.ingress_plan = ingress;
        id.egress_plan = egress;
    }
    names.0
}
