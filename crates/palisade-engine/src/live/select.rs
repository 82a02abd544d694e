//! Selection questions about live identities: the only place outside the
//! index build where a selector or an address matcher is evaluated for the
//! incremental path.

use palisade_model::{AdminPeer, IpBlock, NamespaceScope, NetworkPolicy, Peer};

use std::sync::Arc;

use super::{IdentityKey, Key, Live, LiveIdentity};
use crate::index::{subject_selects, AddressMatcher};
use crate::Direction;

impl Live {
    /// The NetworkPolicies whose pod selector selects identity `ik`, in key
    /// order (whether or not they isolate).
    pub(super) fn policies_selecting(&self, ik: &IdentityKey) -> Vec<Key> {
        if ik.host_network {
            return Vec::new();
        }
        self.policies
            .range((ik.namespace.clone(), String::new())..)
            .take_while(|((ns, _), _)| *ns == ik.namespace)
            .filter(|(_, p)| p.pod_selector.matches(&ik.labels))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The identities NetworkPolicy `key`'s pod selector selects now.
    pub(super) fn selected_by<'a>(
        &'a self,
        key: &Key,
    ) -> impl Iterator<Item = Arc<IdentityKey>> + 'a {
        let policy = self.policies.get(key);
        policy
            .into_iter()
            .flat_map(move |p| {
                self.identities_in(&p.namespace)
                    .filter(move |i| p.pod_selector.matches(&i.key.labels))
            })
            .map(|i| i.key.clone())
    }

    /// The NetworkPolicies that select `ik` and isolate it for `dir`, in
    /// key order (the order their rules are evaluated and grouped in).
    pub fn isolating(&self, ik: &IdentityKey, dir: Direction) -> Vec<Key> {
        self.policies_selecting(ik)
            .into_iter()
            .filter(|k| {
                let p = &self.policies[k];
                match dir {
                    Direction::Ingress => p.ingress.is_some(),
                    Direction::Egress => p.egress.is_some(),
                }
            })
            .collect()
    }

    /// Whether NetworkPolicy `key` as it stands, or `new` (the version a
    /// change brings), selects `ik`: the identities whose groups that
    /// change can alter.
    pub fn change_selects(&self, key: &Key, new: Option<&NetworkPolicy>, ik: &IdentityKey) -> bool {
        let selects = |p: &NetworkPolicy| {
            !ik.host_network && p.namespace == ik.namespace && p.pod_selector.matches(&ik.labels)
        };
        self.policies.get(key).is_some_and(selects) || new.is_some_and(selects)
    }

    /// Whether a NetworkPolicy pod peer selects the identity's members.
    /// (`ipBlock` peers match addresses: [`Live::block_holds_first`].)
    pub fn peer_selects(&self, peer: &Peer, ident: &LiveIdentity) -> bool {
        match peer {
            Peer::Pods { namespaces, pods } => {
                pods.matches(&ident.key.labels)
                    && namespaces.contains(&ident.key.namespace, || {
                        self.ns_labels_of(&ident.key.namespace)
                    })
            }
            Peer::IpBlock(_) => false,
        }
    }

    /// Whether an `ipBlock` holds the identity's first IPv4 / IPv6 address
    /// (a pod is matched by its first address of the family, as the index
    /// classes it).
    pub fn block_holds_first(&self, block: &IpBlock, ident: &LiveIdentity) -> [bool; 2] {
        [true, false].map(|v4| {
            ident
                .rep
                .ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == v4)
                .is_some_and(|ip| block.contains(&ip))
        })
    }

    /// The namespaces (holding identities) a peer's namespace scope
    /// reaches.
    pub fn scope_namespaces<'a>(&'a self, scope: &'a NamespaceScope) -> Vec<&'a str> {
        match scope {
            NamespaceScope::Own(ns) => vec![ns.as_str()],
            NamespaceScope::Selector(sel) => self
                .by_ns
                .keys()
                .filter(|ns| sel.matches(self.ns_labels_of(ns)))
                .map(String::as_str)
                .collect(),
        }
    }

    /// Whether admin policy `ai` (position in [`Live::admin`]) applies to
    /// the identity's members.
    pub fn admin_subject_selects(&self, ai: usize, ik: &IdentityKey) -> bool {
        !ik.host_network
            && subject_selects(
                &self.admin[ai].subject,
                self.ns_labels_of(&ik.namespace),
                &ik.labels,
            )
    }

    /// Whether an admin peer matches the identity's members at their first
    /// address of the family (`v4`).
    pub fn admin_peer_selects(&self, peer: &AdminPeer, ident: &LiveIdentity, v4: bool) -> bool {
        let nsl = || self.ns_labels_of(&ident.key.namespace);
        match peer {
            AdminPeer::Namespaces(sel) => sel.matches(nsl()),
            AdminPeer::Pods { namespaces, pods } => {
                namespaces.matches(nsl()) && pods.matches(&ident.key.labels)
            }
            AdminPeer::Nodes(_) | AdminPeer::Networks(_) => {
                let first = ident.rep.ips.iter().copied().find(|ip| ip.is_ipv4() == v4);
                first.is_some_and(|ip| self.admin_matcher(peer).is_some_and(|m| m.contains(&ip)))
            }
        }
    }

    /// The address matcher of an admin `nodes` or `networks` peer.
    pub fn admin_matcher(&self, peer: &AdminPeer) -> Option<&AddressMatcher> {
        self.admin_matchers.get(peer)
    }
}
