//! The live index: the engine's incremental core. It holds a cluster's
//! objects and its identities, applies one object change at a time and
//! reports what the change did to the identities and to what each
//! NetworkPolicy selects ([`SelectionDelta`]), the way Cilium's selector
//! cache notifies its users. It also answers every selection question a
//! consumer has about an identity (which policies isolate it, whether a
//! peer selects it, which admin rules apply), so that the incremental
//! dataplane compiler turns selections into elements without evaluating a
//! selector itself.
//!
//! Identities are grouped as [`crate::Index`] groups them: namespace,
//! labels, container ports, host networking, and which address matchers
//! contain the first address of each family. The address matchers (the
//! `ipBlock`s and admin `networks` / `nodes` peers) are fixed for the life
//! of a `Live`: a change that would alter them is [`Refused`], and the
//! caller rebuilds from a full [`crate::Engine`].

mod select;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use palisade_model::{
    AdminPeer, AdminPolicy, ContainerPort, IpBlock, Labels, Namespace, NetworkPolicy, Node, Peer,
    Pod,
};

use crate::index::{admin_matcher, AddressMatcher};
use crate::Engine;

/// `(namespace, name)`, ordered as the cluster orders pods and policies.
pub type Key = (String, String);

/// One object change.
#[derive(Clone, Debug)]
pub enum Change {
    Pod {
        key: Key,
        new: Option<Pod>,
    },
    Policy {
        key: Key,
        new: Option<NetworkPolicy>,
    },
    /// A Namespace object; `None`: deleted (its pods, if any, keep an
    /// implicit namespace with only the name label).
    Namespace {
        name: String,
        new: Option<Namespace>,
    },
    /// A Node object; `None`: deleted.
    Node {
        name: String,
        new: Option<Node>,
    },
}

impl Change {
    /// The change to what is enforced: a staged NetworkPolicy is absent, so
    /// staging one is its removal and unstaging it (the annotation removed
    /// or set to "false") its addition.
    pub fn enforced(self) -> Change {
        match self {
            Change::Policy { key, new } => Change::Policy {
                key,
                new: new.filter(|p| !p.staged),
            },
            other => other,
        }
    }
}

/// Why a change cannot be applied incrementally. The state may be
/// half-updated: drop it and build from a full engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// Added or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Add,
    Remove,
}

/// What an identity is: the properties no rule can tell its members apart
/// by. `matched`: the address matchers (by position in the index that
/// started this `Live`) containing the members' first IPv4 / IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub namespace: String,
    pub labels: Labels,
    /// Sorted, deduplicated.
    pub ports: Vec<ContainerPort>,
    pub host_network: bool,
    pub has_v4: bool,
    pub has_v6: bool,
    pub matched: Vec<(usize, bool, bool)>,
}

/// An identity's members.
#[derive(Clone, Debug)]
pub struct LiveIdentity {
    pub key: Arc<IdentityKey>,
    pub members: BTreeSet<Key>,
    /// The first member: named ports and address families resolve on it,
    /// as the full index resolves them on its first member.
    pub rep: Pod,
}

/// What one change did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectionDelta {
    /// Identities that came into being or ceased to (host-network ones
    /// included: they have members but no selector selects them).
    pub identities: Vec<(Arc<IdentityKey>, Op)>,
    /// Endpoint pods that joined or left an identity.
    pub members: Vec<(Key, Arc<IdentityKey>, Op)>,
    /// NetworkPolicies whose pod selector gained or lost an identity.
    pub subjects: Vec<(Key, Arc<IdentityKey>, Op)>,
    /// Identities whose namespace labels changed: every namespace selector
    /// may have gained or lost them as a peer.
    pub relabelled: Vec<Arc<IdentityKey>>,
}

/// The live state of one cluster.
#[derive(Clone, Debug)]
pub struct Live {
    matchers: Vec<AddressMatcher>,
    /// How many NetworkPolicy rules name each `ipBlock` (the matchers).
    blocks: HashMap<IpBlock, usize>,
    ns_labels: HashMap<String, Labels>,
    policies: BTreeMap<Key, NetworkPolicy>,
    /// Admin policies in evaluation order (tier, priority, name); fixed.
    admin: Vec<AdminPolicy>,
    admin_matchers: HashMap<AdminPeer, AddressMatcher>,
    node_addresses: HashMap<String, Vec<IpAddr>>,
    pods: HashMap<Key, Pod>,
    /// Identity keys are shared (`Arc`) by the identity and its members.
    pod_ident: HashMap<Key, Arc<IdentityKey>>,
    idents: HashMap<Arc<IdentityKey>, LiveIdentity>,
    /// Non-host identities by namespace.
    by_ns: HashMap<String, HashSet<Arc<IdentityKey>>>,
    ip_owner: HashMap<IpAddr, Key>,
}

fn pod_key(p: &Pod) -> Key {
    (p.namespace.clone(), p.name.clone())
}

fn policy_key(p: &NetworkPolicy) -> Key {
    (p.namespace.clone(), p.name.clone())
}

fn sorted_ports(p: &Pod) -> Vec<ContainerPort> {
    let mut ports = p.ports.clone();
    ports.sort();
    ports.dedup();
    ports
}

/// Two container ports with one name and protocol: which one a named port
/// means would depend on the order they are listed in.
fn ambiguous_names(p: &Pod) -> bool {
    let mut seen = HashSet::new();
    p.ports
        .iter()
        .filter_map(|c| c.name.as_deref().map(|n| (n, c.protocol)))
        .any(|k| !seen.insert(k))
}

fn rule_blocks(p: &NetworkPolicy) -> impl Iterator<Item = &IpBlock> {
    p.ingress
        .iter()
        .chain(p.egress.iter())
        .flatten()
        .flat_map(|r| r.peers.iter().flatten())
        .filter_map(|peer| match peer {
            Peer::IpBlock(b) => Some(b),
            Peer::Pods { .. } => None,
        })
}

impl Live {
    /// The live state of `engine`'s cluster; refused when the cluster holds
    /// what incremental changes cannot follow: an address held by two
    /// endpoint pods, or a pod naming one port twice.
    pub fn new(engine: &Engine) -> Result<Live, Refused> {
        Live::start(engine, false).map(|(live, _)| live)
    }

    /// [`Live::new`], with the delta from an empty cluster: every identity
    /// and every selection as an addition.
    pub fn build(engine: &Engine) -> Result<(Live, SelectionDelta), Refused> {
        Live::start(engine, true)
    }

    /// `members`: whether the delta records every pod joining its identity
    /// (one entry per pod: not kept when nobody reads it).
    fn start(engine: &Engine, members: bool) -> Result<(Live, SelectionDelta), Refused> {
        if engine.enforces_staged() {
            // The live index follows the kernel, which never enforces a
            // staged policy.
            return refuse("an engine that enforces staged policies");
        }
        let idx = engine.index();
        let cluster = engine.cluster();
        let mut live = Live {
            matchers: idx.matchers().to_vec(),
            blocks: HashMap::new(),
            ns_labels: cluster
                .namespaces
                .iter()
                .map(|(k, n)| (k.clone(), n.labels.clone()))
                .collect(),
            policies: BTreeMap::new(),
            admin: idx.admin().iter().map(|a| a.policy.clone()).collect(),
            admin_matchers: idx
                .admin()
                .iter()
                .flat_map(|a| a.policy.ingress.iter().chain(&a.policy.egress))
                .flat_map(|r| &r.peers)
                .filter_map(|p| Some((p.clone(), admin_matcher(p, &cluster.nodes)?)))
                .collect(),
            node_addresses: cluster
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.addresses.clone()))
                .collect(),
            pods: HashMap::new(),
            pod_ident: HashMap::new(),
            idents: HashMap::new(),
            by_ns: HashMap::new(),
            ip_owner: HashMap::new(),
        };
        for p in &cluster.policies {
            for b in rule_blocks(p) {
                *live.blocks.entry(b.clone()).or_default() += 1;
            }
            live.policies.insert(policy_key(p), p.clone());
        }
        let mut delta = SelectionDelta::default();
        for p in &cluster.pods {
            let key = pod_key(p);
            if live.pods.contains_key(&key) {
                return refuse("two pods with one name");
            }
            live.add_pod(key, p.clone(), &mut delta)?;
            if !members {
                delta.members.clear();
            }
        }
        if live.idents.len() != idx.identities().len() {
            return refuse("identities differ from the index's");
        }
        Ok((live, delta))
    }

    /// Applies one change and says what it did to the identities and the
    /// selections. On `Err` the state may be half-updated.
    pub fn apply(&mut self, change: Change) -> Result<SelectionDelta, Refused> {
        let change = change.enforced();
        self.check(&change)?;
        let mut delta = SelectionDelta::default();
        match change {
            Change::Pod { key, new } => self.apply_pod(key, new, &mut delta)?,
            Change::Policy { key, new } => self.apply_policy(key, new, &mut delta)?,
            Change::Namespace { name, new } => self.namespace(name, new, &mut delta),
            Change::Node { name, new } => match new {
                Some(n) => {
                    self.node_addresses.insert(name, n.addresses);
                }
                None => {
                    self.node_addresses.remove(&name);
                }
            },
        }
        Ok(delta)
    }

    /// The `ipBlock` counts after NetworkPolicy `key` becomes `new`;
    /// refused when the set of blocks would change (they split identities).
    fn blocks_after(
        &self,
        key: &Key,
        new: Option<&NetworkPolicy>,
    ) -> Result<HashMap<IpBlock, usize>, Refused> {
        let mut blocks = self.blocks.clone();
        if let Some(old) = self.policies.get(key) {
            for b in rule_blocks(old) {
                let n = blocks.get_mut(b).expect("counted");
                *n -= 1;
                if *n == 0 {
                    blocks.remove(b);
                }
            }
        }
        for b in new.into_iter().flat_map(rule_blocks) {
            *blocks.entry(b.clone()).or_default() += 1;
        }
        let before: HashSet<&IpBlock> = self.blocks.keys().collect();
        let after: HashSet<&IpBlock> = blocks.keys().collect();
        if before != after {
            return refuse("the set of ipBlocks changed");
        }
        Ok(blocks)
    }

    /// Whether `change` can be applied; [`Live::apply`] checks the same
    /// before touching anything, so a consumer that must withdraw what the
    /// change invalidates first can ask beforehand.
    pub fn check(&self, change: &Change) -> Result<(), Refused> {
        match change {
            Change::Pod { key, new: Some(p) } => {
                if pod_key(p) != *key {
                    return refuse("pod key mismatch");
                }
                self.check_pod(p)
            }
            Change::Pod { new: None, .. } => Ok(()),
            Change::Policy { key, new } => {
                if new.as_ref().is_some_and(|p| policy_key(p) != *key) {
                    return refuse("policy key mismatch");
                }
                let enforced = new.as_ref().filter(|p| !p.staged);
                self.blocks_after(key, enforced).map(|_| ())
            }
            Change::Namespace { .. } | Change::Node { .. } if !self.admin.is_empty() => {
                // Admin subjects and peers select by namespace labels and
                // by nodes; their matchers are fixed here.
                refuse("namespace or node change with admin policies")
            }
            Change::Namespace { .. } | Change::Node { .. } => Ok(()),
        }
    }

    /// Whether `p` could be added to this state as it stands (the checks
    /// [`Live::apply`] makes of a new pod before touching anything).
    pub fn check_pod(&self, p: &Pod) -> Result<(), Refused> {
        if p.is_endpoint() && ambiguous_names(p) {
            return refuse("pod names one port twice");
        }
        let key = pod_key(p);
        if let Some(old) = self.pods.get(&key) {
            if old.host_network != p.host_network {
                return refuse("a pod changing host networking");
            }
        }
        if p.is_endpoint() && !p.host_network {
            let shared = p
                .ips
                .iter()
                .any(|ip| self.ip_owner.get(ip).is_some_and(|k| *k != key));
            if shared {
                return refuse("address shared by two pods");
            }
        }
        Ok(())
    }

    fn apply_pod(
        &mut self,
        key: Key,
        new: Option<Pod>,
        delta: &mut SelectionDelta,
    ) -> Result<(), Refused> {
        if let Some(p) = &new {
            if !self.ns_labels.contains_key(&p.namespace) {
                // As decoding does: a namespace without an object has
                // only its name label.
                self.ns_labels.insert(
                    p.namespace.clone(),
                    Namespace::implicit(&p.namespace).labels,
                );
            }
        }
        if self.pods.get(&key) == new.as_ref() {
            return Ok(());
        }
        self.remove_pod(&key, delta);
        if let Some(p) = new {
            self.add_pod(key, p, delta)?;
        }
        Ok(())
    }

    fn remove_pod(&mut self, key: &Key, delta: &mut SelectionDelta) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        let Some(ik) = self.pod_ident.remove(key) else {
            return;
        };
        for ip in &old.ips {
            if self.ip_owner.get(ip) == Some(key) {
                self.ip_owner.remove(ip);
            }
        }
        delta.members.push((key.clone(), ik.clone(), Op::Remove));
        let ident = self.idents.get_mut(&ik).expect("a member's identity");
        ident.members.remove(key);
        if let Some(first) = ident.members.first() {
            if pod_key(&ident.rep) == *key {
                ident.rep = self.pods[first].clone();
            }
            return;
        }
        self.idents.remove(&ik);
        if let Some(set) = self.by_ns.get_mut(&ik.namespace) {
            set.remove(&ik);
        }
        if !ik.host_network {
            for pk in self.policies_selecting(&ik) {
                delta.subjects.push((pk, ik.clone(), Op::Remove));
            }
        }
        delta.identities.push((ik, Op::Remove));
    }

    fn add_pod(&mut self, key: Key, p: Pod, delta: &mut SelectionDelta) -> Result<(), Refused> {
        if p.is_endpoint() {
            if !p.host_network {
                if ambiguous_names(&p) {
                    return refuse("pod names one port twice");
                }
                for ip in &p.ips {
                    if self.ip_owner.insert(*ip, key.clone()).is_some() {
                        return refuse("address shared by two pods");
                    }
                }
            }
            let ik = self.key_of(&p);
            let ik = match self.idents.get_key_value(&ik) {
                Some((shared, _)) => shared.clone(),
                None => Arc::new(ik),
            };
            delta.members.push((key.clone(), ik.clone(), Op::Add));
            match self.idents.get_mut(&ik) {
                Some(ident) => {
                    ident.members.insert(key.clone());
                    if ident.members.first() == Some(&key) {
                        ident.rep = p.clone();
                    }
                }
                None => {
                    if !ik.host_network {
                        self.by_ns
                            .entry(ik.namespace.clone())
                            .or_default()
                            .insert(ik.clone());
                        for pk in self.policies_selecting(&ik) {
                            delta.subjects.push((pk, ik.clone(), Op::Add));
                        }
                    }
                    delta.identities.push((ik.clone(), Op::Add));
                    self.idents.insert(
                        ik.clone(),
                        LiveIdentity {
                            key: ik.clone(),
                            members: BTreeSet::from([key.clone()]),
                            rep: p.clone(),
                        },
                    );
                }
            }
            self.pod_ident.insert(key.clone(), ik);
        }
        self.pods.insert(key, p);
        Ok(())
    }

    fn namespace(&mut self, name: String, new: Option<Namespace>, delta: &mut SelectionDelta) {
        let labels = new.map_or_else(|| Namespace::implicit(&name).labels, |n| n.labels);
        if self.ns_labels.get(&name) == Some(&labels) {
            return;
        }
        self.ns_labels.insert(name.clone(), labels);
        let mut here: Vec<Arc<IdentityKey>> = self
            .by_ns
            .get(&name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        here.sort();
        delta.relabelled = here;
    }

    fn apply_policy(
        &mut self,
        key: Key,
        new: Option<NetworkPolicy>,
        delta: &mut SelectionDelta,
    ) -> Result<(), Refused> {
        if self.policies.get(&key) == new.as_ref() {
            return Ok(());
        }
        self.blocks = self.blocks_after(&key, new.as_ref())?;
        let old: BTreeSet<Arc<IdentityKey>> = self.selected_by(&key).collect();
        match new {
            Some(p) => self.policies.insert(key.clone(), p),
            None => self.policies.remove(&key),
        };
        let new: BTreeSet<Arc<IdentityKey>> = self.selected_by(&key).collect();
        for ik in old.difference(&new) {
            delta.subjects.push((key.clone(), ik.clone(), Op::Remove));
        }
        for ik in new.difference(&old) {
            delta.subjects.push((key.clone(), ik.clone(), Op::Add));
        }
        Ok(())
    }

    /// The identity key of a pod as this state would place it.
    pub fn key_of(&self, p: &Pod) -> IdentityKey {
        let first = |v4: bool| p.ips.iter().copied().find(|ip| ip.is_ipv4() == v4);
        let (v4, v6) = (first(true), first(false));
        let matched = self
            .matchers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let a = v4.is_some_and(|a| m.contains(&a));
                let b = v6.is_some_and(|a| m.contains(&a));
                (a || b).then_some((i, a, b))
            })
            .collect();
        IdentityKey {
            namespace: p.namespace.clone(),
            labels: p.labels.clone(),
            ports: sorted_ports(p),
            host_network: p.host_network,
            has_v4: v4.is_some(),
            has_v6: v6.is_some(),
            matched,
        }
    }

    /// The address matchers, in the order [`IdentityKey::matched`] names
    /// them.
    pub fn matchers(&self) -> &[AddressMatcher] {
        &self.matchers
    }

    pub fn pod(&self, key: &Key) -> Option<&Pod> {
        self.pods.get(key)
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The identity of an endpoint pod.
    pub fn identity_of(&self, pod: &Key) -> Option<&Arc<IdentityKey>> {
        self.pod_ident.get(pod)
    }

    pub fn identity(&self, key: &IdentityKey) -> Option<&LiveIdentity> {
        self.idents.get(key)
    }

    /// Every identity, host-network ones included.
    pub fn identities(&self) -> impl Iterator<Item = &LiveIdentity> {
        self.idents.values()
    }

    /// The identities that can be a peer or a subject: not host-network.
    pub fn endpoint_identities(&self) -> impl Iterator<Item = &LiveIdentity> {
        self.idents.values().filter(|i| !i.key.host_network)
    }

    /// The non-host identities of one namespace.
    pub fn identities_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a LiveIdentity> + 'a {
        self.by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .map(|k| &self.idents[k])
    }

    pub fn namespace_labels(&self, name: &str) -> Option<&Labels> {
        self.ns_labels.get(name)
    }

    pub fn policy(&self, key: &Key) -> Option<&NetworkPolicy> {
        self.policies.get(key)
    }

    /// Admin policies in evaluation order.
    pub fn admin(&self) -> &[AdminPolicy] {
        &self.admin
    }

    /// A node's addresses (its Node object's).
    pub fn node_addresses(&self, node: &str) -> &[IpAddr] {
        self.node_addresses.get(node).map_or(&[], Vec::as_slice)
    }

    fn ns_labels_of(&self, ns: &str) -> &Labels {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        self.ns_labels
            .get(ns)
            .unwrap_or_else(|| EMPTY.get_or_init(Labels::new))
    }
}
