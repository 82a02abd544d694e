//! Policies resolved against shared tables: every selector pair becomes one
//! shared identity set ([`SetKey`]) and every address peer one matcher, so
//! that equal peers of different rules are one thing to evaluate.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_model::{
    AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject, Cluster, LabelSelector, Labels,
    NamespaceScope, Peer, PortSpec, Rule,
};

use super::AddressMatcher;
use crate::{MatcherId, SetId};

/// What a shared identity set selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetKey {
    /// Pods in namespaces matching the first selector (or the named
    /// namespace) and matching the second.
    Pods(NamespaceScope, LabelSelector),
}

/// A resolved NetworkPolicy peer.
#[derive(Clone, Copy, Debug)]
pub enum PeerMatch {
    /// Pods whose identity is in [`crate::Index::set`].
    Set(SetId),
    /// An address matcher, [`crate::Index::matcher`].
    Addr(MatcherId),
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

/// An admin policy with its rules resolved; the index keeps them sorted in
/// evaluation order: tier, priority, then name (the documented tie-break).
#[derive(Clone, Debug)]
pub struct ResolvedAdmin {
    pub policy: AdminPolicy,
    pub ingress: Vec<ResolvedAdminRule>,
    pub egress: Vec<ResolvedAdminRule>,
}

/// Interns matchers and selector pairs while rules are resolved.
pub(super) struct Resolver<'c> {
    cluster: &'c Cluster,
    pub(super) matchers: Vec<AddressMatcher>,
    matcher_ids: HashMap<AddressMatcher, MatcherId>,
    pub(super) set_keys: Vec<SetKey>,
    set_ids: HashMap<SetKey, SetId>,
}

impl<'c> Resolver<'c> {
    pub(super) fn new(cluster: &'c Cluster) -> Self {
        Resolver {
            cluster,
            matchers: Vec::new(),
            matcher_ids: HashMap::new(),
            set_keys: Vec::new(),
            set_ids: HashMap::new(),
        }
    }

    fn matcher(&mut self, m: AddressMatcher) -> MatcherId {
        if let Some(&id) = self.matcher_ids.get(&m) {
            return id;
        }
        let id = MatcherId::new(self.matchers.len());
        self.matchers.push(m.clone());
        self.matcher_ids.insert(m, id);
        id
    }

    fn set(&mut self, key: SetKey) -> SetId {
        if let Some(&id) = self.set_ids.get(&key) {
            return id;
        }
        let id = SetId::new(self.set_keys.len());
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

    fn rules(&mut self, rules: &Option<Vec<Rule>>) -> Option<Vec<ResolvedRule>> {
        rules.as_ref().map(|rules| {
            rules
                .iter()
                .map(|r| ResolvedRule {
                    peers: r
                        .peers
                        .as_ref()
                        .map(|ps| ps.iter().map(|p| self.np_peer(p)).collect()),
                    ports: r.ports.clone(),
                })
                .collect()
        })
    }

    /// Every NetworkPolicy, in `Cluster::policies` order.
    pub(super) fn policies(&mut self) -> Vec<ResolvedPolicy> {
        let cluster = self.cluster;
        cluster
            .policies
            .iter()
            .map(|p| ResolvedPolicy {
                ingress: self.rules(&p.ingress),
                egress: self.rules(&p.egress),
            })
            .collect()
    }

    fn admin_rules(&mut self, rules: &[AdminRule]) -> Vec<ResolvedAdminRule> {
        rules
            .iter()
            .map(|r| ResolvedAdminRule {
                peers: r.peers.iter().map(|p| self.admin_peer(p)).collect(),
                ports: r.ports.clone(),
            })
            .collect()
    }

    /// Every admin policy, in evaluation order.
    pub(super) fn admin(&mut self) -> Vec<ResolvedAdmin> {
        let cluster = self.cluster;
        let mut sorted: Vec<&AdminPolicy> = cluster.admin_policies.iter().collect();
        sorted.sort_by(|a, c| (a.tier, a.priority, &a.name).cmp(&(c.tier, c.priority, &c.name)));
        sorted
            .into_iter()
            .map(|p| {
                let ingress = self.admin_rules(&p.ingress);
                let egress = self.admin_rules(&p.egress);
                ResolvedAdmin {
                    policy: p.clone(),
                    ingress,
                    egress,
                }
            })
            .collect()
    }
}

/// The address matcher of an admin `nodes` or `networks` peer (`None` for
/// the selector peers): the matching nodes' addresses, or the networks,
/// sorted and deduplicated so that equal peers share one matcher.
// `pub` only while the incremental compiler of palisade-nft imports it;
// selector matching belongs to the engine.
pub(crate) fn admin_matcher(
    peer: &AdminPeer,
    nodes: &[palisade_model::Node],
) -> Option<AddressMatcher> {
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

/// Whether an admin policy's subject selects pods with these labels in a
/// namespace with these labels.
// `pub` only while the incremental compiler of palisade-nft imports it;
// selector matching belongs to the engine.
pub(crate) fn subject_selects(
    subject: &AdminSubject,
    ns_labels: &Labels,
    pod_labels: &Labels,
) -> bool {
    match subject {
        AdminSubject::Namespaces(ns) => ns.matches(ns_labels),
        AdminSubject::Pods { namespaces, pods } => {
            namespaces.matches(ns_labels) && pods.matches(pod_labels)
        }
    }
}
