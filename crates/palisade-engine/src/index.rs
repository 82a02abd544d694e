//! The index: identities (endpoints no policy can tell apart), one shared
//! identity set per distinct selector, and every policy resolved against
//! them. Built once per cluster snapshot; verdicts and the compiler only read it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::Direction;
use palisade_model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminSubject, AdminTier, Cluster,
    ContainerPort, IpBlock, LabelSelector, Labels, NamespaceScope, NetworkPolicy, Peer, PortSpec,
    Protocol,
};

/// A dense set of identity ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    pub fn with_capacity(n: usize) -> Self {
        IdSet {
            words: vec![0; n.div_ceil(64)],
        }
    }

    pub fn insert(&mut self, id: usize) {
        let w = id / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (id % 64);
    }

    #[inline]
    pub fn contains(&self, id: usize) -> bool {
        self.words
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

/// Matches on an address rather than on labels; which of these contain a
/// pod's address is part of its identity, because `ipBlock` applies to pod
/// addresses too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressMatcher {
    Block(IpBlock),
    Networks(Vec<IpNet>),
    /// The addresses of the nodes an admin `nodes` peer selects.
    Nodes(Vec<IpAddr>),
}

impl AddressMatcher {
    #[inline]
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self {
            AddressMatcher::Block(b) => b.contains(ip),
            AddressMatcher::Networks(n) => n.iter().any(|n| n.contains(ip)),
            AddressMatcher::Nodes(a) => a.contains(ip),
        }
    }
}

/// A group of pods that every selector, address matcher and named port
/// treats the same way.
#[derive(Clone, Debug)]
pub struct Identity {
    pub namespace: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
    pub host_network: bool,
    /// Indexes into `Cluster::pods`, sorted.
    pub members: Vec<usize>,
    /// NetworkPolicies (indexes into `Cluster::policies`) that select the
    /// identity and isolate it for ingress / egress.
    pub ingress_policies: Vec<usize>,
    pub egress_policies: Vec<usize>,
    /// Admin policies (indexes into `Index::admin`) whose subject selects the
    /// identity, in evaluation order, per tier.
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

/// A port condition with names interned; `index` is the position in the
/// rule as written, for explanations.
#[derive(Clone, Debug)]
pub struct FlatPort {
    pub index: usize,
    pub kind: FlatPortKind,
}

#[derive(Clone, Copy, Debug)]
pub enum FlatPortKind {
    /// `start..=end` of one protocol (a single port has start == end).
    Range(Protocol, u16, u16),
    /// A NetworkPolicy named port: the destination pod's port of that name
    /// and protocol.
    Named(Protocol, u32),
    /// An admin `namedPort`: the destination's port of that name, any
    /// protocol.
    NamedAnyProtocol(u32),
}

#[derive(Clone, Debug)]
pub struct FlatRule {
    /// NetworkPolicy index (into `Cluster::policies`) or admin index (into
    /// `Index::admin`), and the rule's position.
    pub owner: usize,
    pub rule: usize,
    pub action: AdminAction,
    pub peers: Option<Vec<PeerMatch>>,
    pub ports: Option<Vec<FlatPort>>,
}

/// The rules that apply to one identity in one direction, in evaluation
/// order: admin tier, NetworkPolicy (isolating iff `isolated`), baseline.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub admin: Vec<FlatRule>,
    pub isolated: bool,
    /// `ns/name, ...` of the isolating policies, for explanations.
    pub isolated_by: String,
    pub np: Vec<FlatRule>,
    pub baseline: Vec<FlatRule>,
}

/// A resolved NetworkPolicy peer.
#[derive(Clone, Debug)]
pub enum PeerMatch {
    /// Pods whose identity is in `Index::sets[id]`.
    Set(usize),
    /// An address matcher, `Index::matchers[id]`.
    Addr(usize),
}

#[derive(Clone, Debug)]
pub struct ResolvedRule {
    pub peers: Option<Vec<PeerMatch>>,
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug)]
pub struct ResolvedPolicy {
    pub ingress: Option<Vec<ResolvedRule>>,
    pub egress: Option<Vec<ResolvedRule>>,
}

#[derive(Clone, Debug)]
pub struct ResolvedAdminRule {
    pub peers: Vec<PeerMatch>,
    pub ports: Option<Vec<AdminPort>>,
}

/// An admin policy with its rules resolved; `Index::admin` is sorted in
/// evaluation order: tier, priority, then name (the documented tie-break).
#[derive(Clone, Debug)]
pub struct ResolvedAdmin {
    pub policy: AdminPolicy,
    pub ingress: Vec<ResolvedAdminRule>,
    pub egress: Vec<ResolvedAdminRule>,
}

#[derive(Clone, Debug)]
pub struct Index {
    pub identities: Vec<Identity>,
    /// Identity of each pod (`Cluster::pods` order); `None` for non-endpoints.
    pub pod_identity: Vec<Option<u32>>,
    /// Distinct selector pairs, one shared identity set each.
    pub sets: Vec<IdSet>,
    pub set_keys: Vec<SetKey>,
    pub matchers: Vec<AddressMatcher>,
    pub policies: Vec<ResolvedPolicy>,
    pub admin: Vec<ResolvedAdmin>,
    /// Addresses of endpoint pods that are not host-network.
    pub ip_to_pod: HashMap<IpAddr, usize>,
    /// Node name → its addresses.
    pub node_addresses: HashMap<String, Vec<IpAddr>>,
    /// Each pod's node (`Cluster::pods` order), as an index into
    /// `node_address_lists`.
    pub pod_node: Vec<Option<u32>>,
    /// Each pod's `spec.hostNetwork`, apart from `Pod` for the hot path.
    pub pod_host_network: Vec<bool>,
    pub node_address_lists: Vec<Vec<IpAddr>>,
    /// Whether some node address is also an endpoint pod's address; when not,
    /// a pod peer can never be "the pod's own node".
    pub node_address_is_pod_address: bool,
    /// Interned port names.
    pub port_names: HashMap<String, u32>,
    /// Address classes, for placing a pod that is not in the index.
    pub addr_classes: AddrClasses,
    /// Bit-vector classifiers: ingress, egress.
    pub classifiers: [crate::classify::DirClassifier; 2],
}

/// What a shared identity set selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetKey {
    /// Pods in namespaces matching the first selector (or the named
    /// namespace) and matching the second.
    Pods(NamespaceScope, LabelSelector),
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

/// Addresses grouped by which address matchers contain them: the address
/// space cut at every matcher edge, each interval labelled with the class of
/// its matcher set. Two addresses of one class are told apart by no rule.
#[derive(Clone, Debug)]
pub struct AddrClasses {
    parts: [crate::classify::Partition; 2],
    class: [Vec<u32>; 2],
}

impl AddrClasses {
    fn build(matchers: &[AddressMatcher]) -> AddrClasses {
        use crate::classify::{net_bounds, Partition};
        let mut bounds: [Vec<u128>; 2] = Default::default();
        for m in matchers {
            match m {
                AddressMatcher::Block(b) => {
                    net_bounds(&b.cidr, &mut bounds);
                    for e in &b.except {
                        net_bounds(e, &mut bounds);
                    }
                }
                AddressMatcher::Networks(ns) => ns.iter().for_each(|n| net_bounds(n, &mut bounds)),
                AddressMatcher::Nodes(a) => a
                    .iter()
                    .for_each(|a| net_bounds(&IpNet::from(*a), &mut bounds)),
            }
        }
        let [b4, b6] = bounds;
        let parts = [Partition::new(b4), Partition::new(b6)];
        let mut ids: HashMap<Vec<bool>, u32> = HashMap::new();
        let class = [0, 1].map(|fam| {
            parts[fam]
                .bounds
                .iter()
                .map(|&start| {
                    let ip = if fam == 0 {
                        IpAddr::V4((start as u32).into())
                    } else {
                        IpAddr::V6(start.into())
                    };
                    let set: Vec<bool> = matchers.iter().map(|m| m.contains(&ip)).collect();
                    let next = ids.len() as u32;
                    *ids.entry(set).or_insert(next)
                })
                .collect()
        });
        AddrClasses { parts, class }
    }

    fn class(&self, ip: Option<IpAddr>) -> u32 {
        ip.map_or(u32::MAX, |ip| {
            let (fam, k) = crate::classify::key(&ip);
            self.class[fam][self.parts[fam].find(k)]
        })
    }
}

fn first_of_family(ips: &[IpAddr], v4: bool) -> Option<IpAddr> {
    ips.iter().copied().find(|ip| ip.is_ipv4() == v4)
}

struct Builder<'c> {
    cluster: &'c Cluster,
    matchers: Vec<AddressMatcher>,
    matcher_ids: HashMap<AddressMatcher, usize>,
    set_keys: Vec<SetKey>,
    set_ids: HashMap<SetKey, usize>,
}

impl Builder<'_> {
    fn matcher(&mut self, m: AddressMatcher) -> usize {
        if let Some(&id) = self.matcher_ids.get(&m) {
            return id;
        }
        let id = self.matchers.len();
        self.matchers.push(m.clone());
        self.matcher_ids.insert(m, id);
        id
    }

    fn set(&mut self, key: SetKey) -> usize {
        if let Some(&id) = self.set_ids.get(&key) {
            return id;
        }
        let id = self.set_keys.len();
        self.set_keys.push(key.clone());
        self.set_ids.insert(key, id);
        id
    }

    fn np_peer(&mut self, p: &Peer) -> PeerMatch {
        match p {
            Peer::Pods { namespaces, pods } => {
                PeerMatch::Set(self.set(SetKey::Pods(namespaces.clone(), pods.clone())))
            }
            Peer::IpBlock(b) => PeerMatch::Addr(self.matcher(AddressMatcher::Block(b.clone()))),
        }
    }

    fn admin_peer(&mut self, p: &AdminPeer) -> PeerMatch {
        match p {
            AdminPeer::Namespaces(ns) => PeerMatch::Set(self.set(SetKey::Pods(
                NamespaceScope::Selector(ns.clone()),
                LabelSelector::everything(),
            ))),
            AdminPeer::Pods { namespaces, pods } => PeerMatch::Set(self.set(SetKey::Pods(
                NamespaceScope::Selector(namespaces.clone()),
                pods.clone(),
            ))),
            AdminPeer::Nodes(_) | AdminPeer::Networks(_) => {
                let m = admin_matcher(p, &self.cluster.nodes).expect("an address peer");
                PeerMatch::Addr(self.matcher(m))
            }
        }
    }
}

/// The address matcher of an admin `nodes` or `networks` peer (`None` for
/// the selector peers): the matching nodes' addresses, or the networks,
/// sorted and deduplicated so that equal peers share one matcher.
pub fn admin_matcher(peer: &AdminPeer, nodes: &[palisade_model::Node]) -> Option<AddressMatcher> {
    match peer {
        AdminPeer::Nodes(sel) => {
            let mut a: Vec<IpAddr> = nodes
                .iter()
                .filter(|n| sel.matches(&n.labels))
                .flat_map(|n| n.addresses.iter().copied())
                .collect();
            a.sort();
            a.dedup();
            Some(AddressMatcher::Nodes(a))
        }
        AdminPeer::Networks(n) => {
            let mut n = n.clone();
            n.sort();
            n.dedup();
            Some(AddressMatcher::Networks(n))
        }
        AdminPeer::Namespaces(_) | AdminPeer::Pods { .. } => None,
    }
}

fn resolve_rules(
    b: &mut Builder,
    rules: &Option<Vec<palisade_model::Rule>>,
) -> Option<Vec<ResolvedRule>> {
    rules.as_ref().map(|rules| {
        rules
            .iter()
            .map(|r| ResolvedRule {
                peers: r
                    .peers
                    .as_ref()
                    .map(|ps| ps.iter().map(|p| b.np_peer(p)).collect()),
                ports: r.ports.clone(),
            })
            .collect()
    })
}

/// Whether an admin policy's subject selects pods with these labels in a
/// namespace with these labels.
pub fn subject_selects(subject: &AdminSubject, ns_labels: &Labels, pod_labels: &Labels) -> bool {
    match subject {
        AdminSubject::Namespaces(ns) => ns.matches(ns_labels),
        AdminSubject::Pods { namespaces, pods } => {
            namespaces.matches(ns_labels) && pods.matches(pod_labels)
        }
    }
}

fn np_selects(p: &NetworkPolicy, id: &Identity) -> bool {
    !id.host_network && p.namespace == id.namespace && p.pod_selector.matches(&id.labels)
}

impl Index {
    pub fn build(cluster: &Cluster) -> Index {
        let mut b = Builder {
            cluster,
            matchers: Vec::new(),
            matcher_ids: HashMap::new(),
            set_keys: Vec::new(),
            set_ids: HashMap::new(),
        };

        // Resolve every rule first: that fixes the address matchers, which
        // identities depend on.
        let policies: Vec<ResolvedPolicy> = cluster
            .policies
            .iter()
            .map(|p| ResolvedPolicy {
                ingress: resolve_rules(&mut b, &p.ingress),
                egress: resolve_rules(&mut b, &p.egress),
            })
            .collect();
        let mut admin_sorted: Vec<&AdminPolicy> = cluster.admin_policies.iter().collect();
        admin_sorted
            .sort_by(|a, c| (a.tier, a.priority, &a.name).cmp(&(c.tier, c.priority, &c.name)));
        let admin: Vec<ResolvedAdmin> = admin_sorted
            .into_iter()
            .map(|p| {
                let mut res = |rules: &[palisade_model::AdminRule]| -> Vec<ResolvedAdminRule> {
                    rules
                        .iter()
                        .map(|r| ResolvedAdminRule {
                            peers: r.peers.iter().map(|p| b.admin_peer(p)).collect(),
                            ports: r.ports.clone(),
                        })
                        .collect()
                };
                let ingress = res(&p.ingress);
                let egress = res(&p.egress);
                ResolvedAdmin {
                    policy: p.clone(),
                    ingress,
                    egress,
                }
            })
            .collect();

        // Group endpoints into identities.
        let classes = AddrClasses::build(&b.matchers);
        let mut identities: Vec<Identity> = Vec::new();
        let mut ids: HashMap<IdentityKey, u32> = HashMap::new();
        let mut pod_identity = vec![None; cluster.pods.len()];
        let mut ip_to_pod = HashMap::new();
        for (i, pod) in cluster.pods.iter().enumerate() {
            if !pod.is_endpoint() {
                continue;
            }
            let v4 = first_of_family(&pod.ips, true);
            let v6 = first_of_family(&pod.ips, false);
            let mut ports = pod.ports.clone();
            ports.sort();
            ports.dedup();
            let key = IdentityKey {
                namespace: &pod.namespace,
                labels: &pod.labels,
                ports,
                host_network: pod.host_network,
                addr_class: (classes.class(v4), classes.class(v6)),
            };
            let next = identities.len() as u32;
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
            identities[id as usize].members.push(i);
            pod_identity[i] = Some(id);
            if !pod.host_network {
                for ip in &pod.ips {
                    ip_to_pod.insert(*ip, i);
                }
            }
        }

        let empty = Labels::new();
        let ns_labels = |ns: &str| cluster.namespaces.get(ns).map_or(&empty, |n| &n.labels);

        // Which policies select which identity.
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
            let nsl = ns_labels(&id.namespace);
            for (ai, a) in admin.iter().enumerate() {
                if subject_selects(&a.policy.subject, nsl, &id.labels) {
                    match a.policy.tier {
                        AdminTier::Admin => id.admin.push(ai),
                        AdminTier::Baseline => id.baseline.push(ai),
                    }
                }
            }
        }

        // One identity set per distinct selector pair.
        let sets: Vec<IdSet> = b
            .set_keys
            .iter()
            .map(|SetKey::Pods(scope, pods)| {
                let mut s = IdSet::with_capacity(identities.len());
                for (i, id) in identities.iter().enumerate() {
                    if id.host_network || !pods.matches(&id.labels) {
                        continue;
                    }
                    if scope.contains(&id.namespace, || ns_labels(&id.namespace)) {
                        s.insert(i);
                    }
                }
                s
            })
            .collect();

        let mut port_names: HashMap<String, u32> = HashMap::new();
        let mut intern = |n: &str| -> u32 {
            let next = port_names.len() as u32;
            *port_names.entry(n.to_string()).or_insert(next)
        };
        for id in identities.iter_mut() {
            id.named_ports = id
                .ports
                .iter()
                .filter_map(|c| Some((intern(c.name.as_deref()?), c.protocol, c.port)))
                .collect();
        }
        let plans: Vec<(Plan, Plan)> = identities
            .iter()
            .map(|id| {
                (
                    plan(
                        id,
                        Direction::Ingress,
                        cluster,
                        &policies,
                        &admin,
                        &mut intern,
                    ),
                    plan(
                        id,
                        Direction::Egress,
                        cluster,
                        &policies,
                        &admin,
                        &mut intern,
                    ),
                )
            })
            .collect();
        for (id, (ingress, egress)) in identities.iter_mut().zip(plans) {
            id.ingress_plan = ingress;
            id.egress_plan = egress;
        }

        let mut node_addresses: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for n in &cluster.nodes {
            node_addresses.insert(n.name.clone(), n.addresses.clone());
        }
        let mut node_ids: HashMap<&str, u32> = HashMap::new();
        let mut node_address_lists: Vec<Vec<IpAddr>> = Vec::new();
        let pod_node = cluster
            .pods
            .iter()
            .map(|p| {
                let n = p.node.as_deref()?;
                Some(*node_ids.entry(n).or_insert_with(|| {
                    node_address_lists.push(node_addresses.get(n).cloned().unwrap_or_default());
                    node_address_lists.len() as u32 - 1
                }))
            })
            .collect();
        let node_address_is_pod_address = cluster
            .nodes
            .iter()
            .flat_map(|n| &n.addresses)
            .any(|a| ip_to_pod.contains_key(a));

        let first_ips: Vec<[Option<IpAddr>; 2]> = identities
            .iter()
            .map(|id| {
                let ips = &cluster.pods[id.members[0]].ips;
                [first_of_family(ips, true), first_of_family(ips, false)]
            })
            .collect();
        let classifiers = [Direction::Ingress, Direction::Egress].map(|dir| {
            crate::classify::DirClassifier::build(
                dir,
                &identities,
                &first_ips,
                &sets,
                &b.matchers,
                port_names.len(),
            )
        });

        Index {
            addr_classes: classes,
            classifiers,
            identities,
            pod_identity,
            sets,
            set_keys: b.set_keys,
            matchers: b.matchers,
            policies,
            admin,
            ip_to_pod,
            node_addresses,
            pod_node,
            pod_host_network: cluster.pods.iter().map(|p| p.host_network).collect(),
            node_address_lists,
            node_address_is_pod_address,
            port_names,
        }
    }

    /// The identity a pod would have in this index, if one exists: the
    /// same namespace, labels, ports, host networking and address classes.
    /// Lets a caller tell whether a pod change leaves every rule as it is.
    pub fn identity_for(&self, pod: &palisade_model::Pod) -> Option<u32> {
        if !pod.is_endpoint() {
            return None;
        }
        let mut ports = pod.ports.clone();
        ports.sort();
        ports.dedup();
        let class = (
            self.addr_classes.class(first_of_family(&pod.ips, true)),
            self.addr_classes.class(first_of_family(&pod.ips, false)),
        );
        self.identities
            .iter()
            .position(|i| {
                i.namespace == pod.namespace
                    && i.labels == pod.labels
                    && i.host_network == pod.host_network
                    && i.ports == ports
                    && i.addr_class == class
            })
            .map(|i| i as u32)
    }

    /// Identities grouped for display: namespace, then labels.
    pub fn identities_by_namespace(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut m: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, id) in self.identities.iter().enumerate() {
            m.entry(id.namespace.as_str()).or_default().push(i);
        }
        m
    }
}

/// Ports with names interned, keeping each one's position for
/// explanations.
fn flat_ports<T>(
    ports: &Option<Vec<T>>,
    mut kind: impl FnMut(&T) -> FlatPortKind,
) -> Option<Vec<FlatPort>> {
    ports.as_ref().map(|ps| {
        ps.iter()
            .enumerate()
            .map(|(index, p)| FlatPort {
                index,
                kind: kind(p),
            })
            .collect()
    })
}

fn np_port_kind(p: &PortSpec, intern: &mut impl FnMut(&str) -> u32) -> FlatPortKind {
    match p {
        PortSpec::AllPorts(proto) => FlatPortKind::Range(*proto, 0, u16::MAX),
        PortSpec::Range {
            protocol,
            start,
            end,
        } => FlatPortKind::Range(*protocol, *start, *end),
        PortSpec::Named { protocol, name } => FlatPortKind::Named(*protocol, intern(name)),
    }
}

fn admin_port_kind(p: &AdminPort, intern: &mut impl FnMut(&str) -> u32) -> FlatPortKind {
    match p {
        AdminPort::Number { protocol, port } => FlatPortKind::Range(*protocol, *port, *port),
        AdminPort::Range {
            protocol,
            start,
            end,
        } => FlatPortKind::Range(*protocol, *start, *end),
        AdminPort::Named(n) => FlatPortKind::NamedAnyProtocol(intern(n)),
    }
}

fn plan(
    id: &Identity,
    dir: Direction,
    cluster: &Cluster,
    policies: &[ResolvedPolicy],
    admin: &[ResolvedAdmin],
    intern: &mut impl FnMut(&str) -> u32,
) -> Plan {
    let mut p = Plan::default();
    if id.host_network {
        return p;
    }
    let mut admin_rules = |list: &[usize], out: &mut Vec<FlatRule>| {
        for &ai in list {
            let a = &admin[ai];
            let (rules, written) = match dir {
                Direction::Ingress => (&a.ingress, &a.policy.ingress),
                Direction::Egress => (&a.egress, &a.policy.egress),
            };
            for (ri, r) in rules.iter().enumerate() {
                out.push(FlatRule {
                    owner: ai,
                    rule: ri,
                    action: written[ri].action,
                    peers: Some(r.peers.clone()),
                    ports: flat_ports(&r.ports, |p| admin_port_kind(p, intern)),
                });
            }
        }
    };
    admin_rules(&id.admin, &mut p.admin);
    admin_rules(&id.baseline, &mut p.baseline);
    let isolating = match dir {
        Direction::Ingress => &id.ingress_policies,
        Direction::Egress => &id.egress_policies,
    };
    p.isolated = !isolating.is_empty();
    p.isolated_by = isolating
        .iter()
        .map(|&pi| cluster.policies[pi].key())
        .collect::<Vec<_>>()
        .join(", ");
    for &pi in isolating {
        let rules = match dir {
            Direction::Ingress => policies[pi].ingress.as_deref(),
            Direction::Egress => policies[pi].egress.as_deref(),
        };
        let written = match dir {
            Direction::Ingress => cluster.policies[pi].ingress.as_deref(),
            Direction::Egress => cluster.policies[pi].egress.as_deref(),
        }
        .unwrap_or_default();
        for (ri, r) in rules.unwrap_or_default().iter().enumerate() {
            p.np.push(FlatRule {
                owner: pi,
                rule: ri,
                action: AdminAction::Allow,
                peers: r.peers.clone(),
                ports: flat_ports(&written[ri].ports, |p| np_port_kind(p, intern)),
            });
        }
    }
    p
}
