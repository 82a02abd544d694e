//! Incremental compilation: Pod, NetworkPolicy, Namespace and Node changes
//! turned straight into element changes, without rebuilding the engine or
//! compiling the whole node.
//!
//! The node's ruleset (with [`Numbering::Stable`]) is a disjoint union of
//! *contributions*, each a pure function of a few objects:
//!
//! - per pod: its `identity4/6` elements (address → identity mark) and, for
//!   a local pod, its `local4/6` and policy-group elements (the wiring's
//!   `pod_ifaces` and `pod_src4/6` are the caller's: [`crate::Wiring`]);
//! - per policy group (the exact list of NetworkPolicies that isolate a
//!   local identity, plus for ingress how their named ports resolve on it):
//!   a *static* part (`ipBlock` and peer-less rules: `*_cidr4/6`, `*_any`)
//!   and one *peer part per pod identity* (`*_peer_*` elements whose second
//!   field is that identity's mark).
//!
//! Marks and group ids are hashes of what they stand for, so a change never
//! renumbers anything it does not touch, and no two contributions share an
//! element (every group element starts with its group id, every peer part
//! names its identity's mark). A change therefore removes the contributions
//! it invalidates, computed from the state before it, and adds the ones it
//! creates, computed from the state after it; what is left, after removals
//! and additions of the same element cancel, is exactly the difference
//! between the full compilation of the old and of the new cluster. The
//! property test `incremental_compile_equals_full_compile` checks that
//! claim after every step of random event sequences.
//!
//! Costs: a pod of an existing identity touches its own elements only; a
//! new or vanishing identity touches its peer part in every group of the
//! node; a policy change recompiles the groups of the local identities its
//! old or new version selects; a namespace relabel recomputes the peer
//! parts of that namespace's identities; a Node object changes only this
//! node's `own_node` elements. Nothing is proportional to the cluster size
//! except a new group, which evaluates its rules against the identities of
//! the namespaces its rules can reach.
//!
//! Admin tiers follow the same scheme: a tier group (the ordered admin
//! rules that select a local identity, and for ingress how their named
//! ports resolve on it) has a static part (its `networks`/`nodes` address
//! ranges resolved to first-match verdicts) and a peer part per identity
//! (the rules whose peers match it, resolved to first-match port ranges).
//!
//! What this module does not handle is refused ([`Refused`]); the caller then
//! compiles in full and builds a new [`Incremental`] from that engine:
//! admin policy changes, and with admin policies present namespace and node
//! changes (admin subjects and peers select by them); changes to the set of
//! `ipBlock`s (they split identities), a pod turning host networking on or
//! off, an address shared by two pods, a pod naming one port twice, and the
//! rare hash collision of a mark or group id (the full numbering probes
//! past it; an incremental one could not agree).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use palisade_engine::index::{subject_selects, AddressMatcher};
use palisade_engine::Engine;
use palisade_model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminTier, ContainerPort, IpBlock, Labels,
    Namespace, NamespaceScope, NetworkPolicy, Node, Peer, Pod, PortSpec,
};

pub use crate::delta::ElementDelta;
use crate::delta::ElementOp;
use crate::numbering::{self, hash32, MarkKey};
use crate::schema::{self, Family, SetId};
use crate::tier::{first_match, first_match_2d, verdict, AddrBox};
use crate::{
    addr_value, allow_sets, block_ranges, block_ranges_of, has_named, ip_value, named_items,
    port_items, proto_value, Allows, Dir, Element, PortItem, Value,
};

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

/// Why a change cannot be applied incrementally. The state it was applied
/// to may be half-updated: drop it and compile in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// The operation `put` takes for a helper's `add` flag.
fn op(add: bool) -> ElementOp {
    if add {
        ElementOp::Add
    } else {
        ElementOp::Remove
    }
}

/// One identity: pods that no policy can tell apart.
#[derive(Clone, Debug)]
struct Ident {
    mark: u32,
    namespace: String,
    labels: Labels,
    /// Its members; the first one is the representative named ports and
    /// address families are resolved on, as in the full compilation.
    members: BTreeSet<Key>,
    /// The first member: named ports and address families resolve on it.
    rep: Option<Pod>,
    local: usize,
}

/// A local identity's policy groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Groups {
    egress: Option<Vec<Key>>,
    ingress: Option<IngressKey>,
    /// Per [`TierState`]: the admin-tier group.
    tiers: Vec<Option<TierKey>>,
}

/// An admin-tier group: the ordered (policy, rule) pairs that select a
/// local identity and, for ingress, how the named ports they use resolve
/// on it (name, protocol, port).
type TierKey = (Vec<(usize, usize)>, Vec<(String, u8, u16)>);

/// One admin tier of one direction (present when the cluster has a policy
/// of that tier): its groups, numbered as the full compilation numbers them.
#[derive(Clone, Debug)]
struct TierState {
    dir: Dir,
    tier: AdminTier,
    groups: BTreeMap<TierKey, Group>,
    used: HashSet<u32>,
}

/// Whose group ids an element of a deferrable set starts with.
#[derive(Clone, Copy, Debug)]
enum Domain {
    Np(Dir),
    Tier(usize),
}

type IngressKey = (Vec<Key>, Vec<Option<u16>>);

#[derive(Clone, Debug)]
struct Group {
    id: u32,
    /// Local identities in the group.
    users: usize,
    /// A member pod: ingress named ports resolve on it.
    holder: Pod,
}

/// The incremental state of one node's ruleset.
#[derive(Clone, Debug)]
pub struct Incremental {
    node: String,
    matchers: Vec<(AddressMatcher, u64)>,
    /// How many rules name each `ipBlock`: the matchers must not change.
    blocks: HashMap<IpBlock, usize>,
    ns_labels: HashMap<String, Labels>,
    policies: BTreeMap<Key, NetworkPolicy>,
    pods: HashMap<Key, Pod>,
    /// Endpoint pods (not host-network) to their identity key.
    pod_ident: HashMap<Key, MarkKey>,
    idents: HashMap<MarkKey, Ident>,
    /// Identity keys by namespace: a group's peers are looked for only in
    /// the namespaces its rules can reach.
    by_ns: HashMap<String, HashSet<MarkKey>>,
    used_marks: HashSet<u32>,
    /// Local identities' groups.
    groups_of: HashMap<MarkKey, Groups>,
    egress: BTreeMap<Vec<Key>, Group>,
    ingress: BTreeMap<IngressKey, Group>,
    used_egress: HashSet<u32>,
    used_ingress: HashSet<u32>,
    /// Which pod holds each endpoint address.
    ip_owner: HashMap<IpAddr, Key>,
    /// This node's addresses (its Node object's), which with its
    /// host-network pods' make the `own_node` sets.
    node_addresses: Vec<IpAddr>,
    /// Host-network identities: nobody's peer nor subject, but their marks
    /// take part in the numbering. Key → (mark, endpoint members).
    host_idents: HashMap<MarkKey, (u32, usize)>,
    /// Admin policies in evaluation order (tier, priority, name); changes
    /// to them are refused, so they, the nodes and the namespace labels
    /// they select by stay as the last full build saw them.
    admin: Vec<AdminPolicy>,
    /// The address matcher of every admin `nodes` / `networks` peer,
    /// resolved once (they and the nodes do not change here).
    admin_matchers: HashMap<AdminPeer, AddressMatcher>,
    tiers: Vec<TierState>,
    /// Interval elements the table still holds although the desired state
    /// no longer does, because nothing can reach them: their group id or
    /// identity mark is assigned to no pod. See [`Incremental::collect`].
    garbage: BTreeMap<String, BTreeSet<Element>>,
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

impl Incremental {
    /// The state of `engine`'s cluster as compiled for `node` with stable
    /// numbering; `None` when the cluster holds what this module refuses
    /// (shared addresses, a port name listed twice, numbers that had to be
    /// probed).
    pub fn new(engine: &Engine, node: &str) -> Option<Incremental> {
        let idx = engine.index();
        let cluster = engine.cluster();
        let mut st = Incremental {
            node: node.to_string(),
            matchers: numbering::matcher_hashes(engine),
            blocks: HashMap::new(),
            ns_labels: cluster
                .namespaces
                .iter()
                .map(|(k, n)| (k.clone(), n.labels.clone()))
                .collect(),
            policies: BTreeMap::new(),
            pods: HashMap::new(),
            pod_ident: HashMap::new(),
            idents: HashMap::new(),
            by_ns: HashMap::new(),
            used_marks: HashSet::new(),
            groups_of: HashMap::new(),
            egress: BTreeMap::new(),
            ingress: BTreeMap::new(),
            used_egress: HashSet::new(),
            used_ingress: HashSet::new(),
            ip_owner: HashMap::new(),
            node_addresses: idx.node_addresses.get(node).cloned().unwrap_or_default(),
            host_idents: HashMap::new(),
            admin: idx.admin.iter().map(|a| a.policy.clone()).collect(),
            admin_matchers: idx
                .admin
                .iter()
                .flat_map(|a| a.policy.ingress.iter().chain(&a.policy.egress))
                .flat_map(|r| &r.peers)
                .filter_map(|p| {
                    let m = palisade_engine::index::admin_matcher(p, &cluster.nodes)?;
                    Some((p.clone(), m))
                })
                .collect(),
            tiers: Vec::new(),
            garbage: BTreeMap::new(),
        };
        for dir in [Dir::Egress, Dir::Ingress] {
            for tier in [AdminTier::Admin, AdminTier::Baseline] {
                if st.admin.iter().any(|a| a.tier == tier) {
                    st.tiers.push(TierState {
                        dir,
                        tier,
                        groups: BTreeMap::new(),
                        used: HashSet::new(),
                    });
                }
            }
        }
        for p in &cluster.policies {
            for b in rule_blocks(p) {
                *st.blocks.entry(b.clone()).or_default() += 1;
            }
            st.policies.insert(policy_key(p), p.clone());
        }
        // Identities as the full numbering sees them: a mark that is not
        // its key's hash was probed past a collision. Host-network
        // identities only hold their mark: they are nobody's peer.
        let keys = numbering::identity_keys(engine);
        let marks = numbering::assign(numbering::Numbering::Stable, keys.len(), |i| {
            keys[i].clone()
        });
        for ((ident, &mark), key) in idx.identities.iter().zip(&marks).zip(&keys) {
            let key = key.clone();
            if mark != hash32(&key) || !st.used_marks.insert(mark) {
                return None;
            }
            if ident.host_network {
                st.host_idents.insert(key, (mark, ident.members.len()));
                continue;
            }
            st.by_ns
                .entry(ident.namespace.clone())
                .or_default()
                .insert(key.clone());
            st.idents.insert(
                key,
                Ident {
                    mark,
                    namespace: ident.namespace.clone(),
                    labels: ident.labels.clone(),
                    members: BTreeSet::new(),
                    rep: None,
                    local: 0,
                },
            );
        }
        for (i, p) in cluster.pods.iter().enumerate() {
            let key = pod_key(p);
            if p.is_endpoint() && !p.host_network {
                if ambiguous_names(p) {
                    return None;
                }
                for ip in &p.ips {
                    if st.ip_owner.insert(*ip, key.clone()).is_some() {
                        return None;
                    }
                }
                let ik = keys.get(idx.pod_identity[i]? as usize)?.clone();
                let ident = st.idents.get_mut(&ik)?;
                ident.members.insert(key.clone());
                if ident.members.first() == Some(&key) {
                    ident.rep = Some(p.clone());
                }
                if p.node.as_deref() == Some(node) {
                    ident.local += 1;
                }
                st.pod_ident.insert(key.clone(), ik);
            }
            if st.pods.insert(key, p.clone()).is_some() {
                return None;
            }
        }
        let local: Vec<MarkKey> = st
            .idents
            .iter()
            .filter(|(_, i)| i.local > 0)
            .map(|(k, _)| k.clone())
            .collect();
        for ik in local {
            let g = st.groups_for(&ik);
            if !st.acquire(&ik, g, None) {
                return None;
            }
        }
        Some(st)
    }

    fn key_of(&self, p: &Pod) -> MarkKey {
        numbering::mark_key(
            &p.namespace,
            &p.labels,
            &sorted_ports(p),
            p.host_network,
            &p.ips,
            &self.matchers,
        )
    }

    fn rep(&self, ik: &MarkKey) -> &Pod {
        self.idents[ik]
            .rep
            .as_ref()
            .expect("identities have members")
    }

    fn is_local(&self, p: &Pod) -> bool {
        p.node.as_deref() == Some(self.node.as_str())
    }

    /// The groups a local identity belongs to, from the current policies.
    fn groups_for(&self, ik: &MarkKey) -> Groups {
        let ident = &self.idents[ik];
        let selecting = || {
            self.policies
                .range((ident.namespace.clone(), String::new())..)
                .take_while(|((ns, _), _)| *ns == ident.namespace)
                .filter(|(_, p)| p.pod_selector.matches(&ident.labels))
        };
        let egress: Vec<Key> = selecting()
            .filter(|(_, p)| p.egress.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let ingress: Vec<Key> = selecting()
            .filter(|(_, p)| p.ingress.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let rep = self.rep(ik);
        let named = ingress
            .iter()
            .flat_map(|k| self.policies[k].ingress.iter().flatten())
            .flat_map(|rule| rule.ports.iter().flatten())
            .filter_map(|s| match s {
                PortSpec::Named { protocol, name } => Some(rep.named_port(name, *protocol)),
                _ => None,
            })
            .collect();
        Groups {
            egress: (!egress.is_empty()).then_some(egress),
            ingress: (!ingress.is_empty()).then_some((ingress, named)),
            tiers: (0..self.tiers.len())
                .map(|i| self.tier_key(i, ik))
                .collect(),
        }
    }

    fn ns_labels_of(&self, ns: &str) -> &Labels {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        self.ns_labels
            .get(ns)
            .unwrap_or_else(|| EMPTY.get_or_init(Labels::new))
    }

    fn admin_rules(&self, ai: usize, dir: Dir) -> &[palisade_model::AdminRule] {
        match dir {
            Dir::Egress => &self.admin[ai].egress,
            Dir::Ingress => &self.admin[ai].ingress,
        }
    }

    /// The admin-tier group of a local identity in tier `t`, if any rule
    /// of that tier selects it.
    fn tier_key(&self, t: usize, ik: &MarkKey) -> Option<TierKey> {
        let ts = &self.tiers[t];
        let ident = &self.idents[ik];
        let nsl = self.ns_labels_of(&ident.namespace);
        let mut rules = Vec::new();
        for (ai, a) in self.admin.iter().enumerate() {
            if a.tier == ts.tier && subject_selects(&a.subject, nsl, &ident.labels) {
                rules.extend((0..self.admin_rules(ai, ts.dir).len()).map(|ri| (ai, ri)));
            }
        }
        if rules.is_empty() {
            return None;
        }
        let named = match ts.dir {
            Dir::Ingress => {
                let names: BTreeSet<&str> = rules
                    .iter()
                    .flat_map(|&(ai, ri)| self.admin_rules(ai, ts.dir)[ri].ports.iter().flatten())
                    .filter_map(|p| match p {
                        AdminPort::Named(n) => Some(n.as_str()),
                        _ => None,
                    })
                    .collect();
                named_ports(self.rep(ik))
                    .into_iter()
                    .filter(|(n, _, _)| names.contains(n.as_str()))
                    .collect()
            }
            Dir::Egress => Vec::new(),
        };
        Some((rules, named))
    }

    /// A tier group's id: a hash of its rules (policy kind, name, rule
    /// position) and named ports, as the full numbering hashes them.
    fn tier_id(&self, k: &TierKey) -> u32 {
        let rules: Vec<(&str, &str, usize)> =
            k.0.iter()
                .map(|&(ai, ri)| {
                    (
                        self.admin[ai].kind.as_str(),
                        self.admin[ai].name.as_str(),
                        ri,
                    )
                })
                .collect();
        let named: Vec<(&str, u8, u16)> =
            k.1.iter().map(|(n, q, v)| (n.as_str(), *q, *v)).collect();
        hash32(&(rules, named))
    }

    /// The address matcher of an admin `nodes` or `networks` peer.
    fn admin_matcher(&self, peer: &AdminPeer) -> Option<&AddressMatcher> {
        self.admin_matchers.get(peer)
    }

    /// Tier group `k`'s elements for peer identity `ident` (its first
    /// address of each family decides the address matchers).
    fn tier_peer_part(
        &self,
        t: usize,
        k: &TierKey,
        g: &Group,
        ident: &Ident,
        out: &mut ElementDelta,
        add: bool,
    ) {
        let ts = &self.tiers[t];
        let rep = ident.rep.as_ref().expect("identities have members");
        let nsl = self.ns_labels_of(&ident.namespace);
        let peer_named;
        let named: &[(String, u8, u16)] = match ts.dir {
            Dir::Egress => {
                peer_named = named_ports(rep);
                &peer_named
            }
            Dir::Ingress => &k.1,
        };
        for v4 in [true, false] {
            let Some(addr) = rep.ips.iter().copied().find(|ip| ip.is_ipv4() == v4) else {
                continue;
            };
            let list: Vec<(AdminAction, Vec<PortItem>)> =
                k.0.iter()
                    .map(|&(ai, ri)| &self.admin_rules(ai, ts.dir)[ri])
                    .filter(|r| {
                        r.peers.iter().any(|p| match p {
                            AdminPeer::Namespaces(sel) => sel.matches(nsl),
                            AdminPeer::Pods { namespaces, pods } => {
                                namespaces.matches(nsl) && pods.matches(&ident.labels)
                            }
                            _ => self.admin_matcher(p).is_some_and(|m| m.contains(&addr)),
                        })
                    })
                    .map(|r| (r.action, admin_ports(&r.ports, named)))
                    .collect();
            if list.is_empty() {
                continue;
            }
            for (p, lo, hi, action) in first_match(&list) {
                let Some(v) = verdict(action) else { continue };
                out.put(
                    SetId::TierPeer(ts.dir, ts.tier, Family::of_v4(v4)).name(),
                    Element {
                        key: vec![
                            Value::Mark(g.id),
                            Value::Mark(ident.mark),
                            proto_value(p),
                            Value::PortRange(lo, hi),
                        ],
                        data: Some(v),
                    },
                    op(add),
                );
            }
        }
    }

    /// Tier group `k`'s elements for addresses that are not pods.
    fn tier_static(&self, t: usize, k: &TierKey, g: &Group, out: &mut ElementDelta, add: bool) {
        let ts = &self.tiers[t];
        let dest_named: &[(String, u8, u16)] = match ts.dir {
            Dir::Ingress => &k.1,
            Dir::Egress => &[],
        };
        let rules: Vec<&palisade_model::AdminRule> =
            k.0.iter()
                .map(|&(ai, ri)| &self.admin_rules(ai, ts.dir)[ri])
                .collect();
        let resolved: Vec<(AdminAction, Vec<PortItem>)> = rules
            .iter()
            .map(|r| (r.action, admin_ports(&r.ports, dest_named)))
            .collect();
        for (fam, v4) in [(0usize, true), (1, false)] {
            let mut boxes = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                for p in &r.peers {
                    if let Some(m) = self.admin_matcher(p) {
                        boxes.extend(block_ranges_of(m, v4).into_iter().map(|(lo, hi)| AddrBox {
                            lo,
                            hi,
                            rule: i,
                        }));
                    }
                }
            }
            if boxes.is_empty() {
                continue;
            }
            for (lo, hi, ports) in first_match_2d(&boxes, &resolved) {
                for (p, plo, phi, action) in ports {
                    let Some(v) = verdict(action) else { continue };
                    out.put(
                        SetId::TierCidr(ts.dir, ts.tier, Family::of_index(fam)).name(),
                        Element {
                            key: vec![
                                Value::Mark(g.id),
                                addr_value(v4, lo, hi),
                                proto_value(p),
                                Value::PortRange(plo, phi),
                            ],
                            data: Some(v),
                        },
                        op(add),
                    );
                }
            }
        }
    }

    /// Every element of one tier group.
    fn tier_group_elements(
        &self,
        t: usize,
        k: &TierKey,
        g: &Group,
        out: &mut ElementDelta,
        add: bool,
    ) {
        self.tier_static(t, k, g, out, add);
        for ident in self.idents.values() {
            self.tier_peer_part(t, k, g, ident, out, add);
        }
    }

    /// Makes `ik` a user of `groups`, creating (and, with `out`, emitting)
    /// groups that did not exist. `false` on a group id collision.
    fn acquire(
        &mut self,
        ik: &MarkKey,
        groups: Groups,
        mut out: Option<&mut ElementDelta>,
    ) -> bool {
        let holder = self.rep(ik).clone();
        if let Some(k) = &groups.egress {
            if let Some(g) = self.egress.get_mut(k) {
                g.users += 1;
            } else {
                let id = hash32(k);
                if id == 0 || !self.used_egress.insert(id) {
                    return false;
                }
                let g = Group {
                    id,
                    users: 1,
                    holder: holder.clone(),
                };
                if let Some(out) = out.as_deref_mut() {
                    self.group_elements(Dir::Egress, k, &g, out, true);
                }
                self.egress.insert(k.clone(), g);
            }
        }
        if let Some(k) = &groups.ingress {
            if let Some(g) = self.ingress.get_mut(k) {
                g.users += 1;
            } else {
                let id = hash32(k);
                if id == 0 || !self.used_ingress.insert(id) {
                    return false;
                }
                let g = Group {
                    id,
                    users: 1,
                    holder,
                };
                if let Some(out) = out.as_deref_mut() {
                    self.group_elements(Dir::Ingress, &k.0, &g, out, true);
                }
                self.ingress.insert(k.clone(), g);
            }
        }
        for (t, k) in groups.tiers.iter().enumerate() {
            let Some(k) = k else { continue };
            if let Some(g) = self.tiers[t].groups.get_mut(k) {
                g.users += 1;
                continue;
            }
            let id = self.tier_id(k);
            if id == 0 || !self.tiers[t].used.insert(id) {
                return false;
            }
            let g = Group {
                id,
                users: 1,
                holder: self.rep(ik).clone(),
            };
            if let Some(out) = out.as_deref_mut() {
                self.tier_group_elements(t, k, &g, out, true);
            }
            self.tiers[t].groups.insert(k.clone(), g);
        }
        self.groups_of.insert(ik.clone(), groups);
        true
    }

    /// Ends `ik`'s use of its groups, removing groups nobody uses.
    fn release(&mut self, ik: &MarkKey, out: &mut ElementDelta) {
        let Some(groups) = self.groups_of.remove(ik) else {
            return;
        };
        if let Some(k) = &groups.egress {
            let g = self.egress.get_mut(k).expect("acquired");
            g.users -= 1;
            if g.users == 0 {
                let g = self.egress.remove(k).expect("acquired");
                self.group_elements(Dir::Egress, k, &g, out, false);
                self.used_egress.remove(&g.id);
            }
        }
        if let Some(k) = &groups.ingress {
            let g = self.ingress.get_mut(k).expect("acquired");
            g.users -= 1;
            if g.users == 0 {
                let g = self.ingress.remove(k).expect("acquired");
                self.group_elements(Dir::Ingress, &k.0, &g, out, false);
                self.used_ingress.remove(&g.id);
            }
        }
        for (t, k) in groups.tiers.iter().enumerate() {
            let Some(k) = k else { continue };
            let g = self.tiers[t].groups.get_mut(k).expect("acquired");
            g.users -= 1;
            if g.users == 0 {
                let g = self.tiers[t].groups.remove(k).expect("acquired");
                self.tier_group_elements(t, k, &g, out, false);
                self.tiers[t].used.remove(&g.id);
            }
        }
    }

    /// Every element of one group: its static part and the peer part of
    /// every identity.
    fn group_elements(
        &self,
        dir: Dir,
        policies: &[Key],
        g: &Group,
        out: &mut ElementDelta,
        add: bool,
    ) {
        let mut a = Allows::default();
        for rule in self.rules(dir, policies) {
            let items = match dir {
                Dir::Egress => port_items(&rule.ports, None),
                Dir::Ingress => port_items(&rule.ports, Some(&g.holder)),
            };
            match &rule.peers {
                None => {
                    for &(p, lo, hi) in &items {
                        a.any
                            .entry((g.id, p))
                            .or_default()
                            .push((lo.into(), hi.into()));
                    }
                }
                Some(peers) => {
                    for peer in peers {
                        if let Peer::IpBlock(b) = peer {
                            let (v4, ranges) = block_ranges(b);
                            let fam = usize::from(!v4);
                            for &(lo, hi) in &ranges {
                                for &(p, pa, pb) in &items {
                                    a.cidr[fam].entry((g.id, p)).or_default().push((
                                        lo,
                                        hi,
                                        pa.into(),
                                        pb.into(),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        let rules: Vec<&palisade_model::Rule> = self.rules(dir, policies).collect();
        let namespaces = self.peer_namespaces(dir, policies);
        for ident in self.idents.values() {
            if namespaces
                .as_ref()
                .is_some_and(|n| !n.contains(ident.namespace.as_str()))
            {
                continue;
            }
            let rep = ident.rep.as_ref().expect("identities have members");
            self.peer_part(&mut a, dir, &rules, g, ident, rep);
        }
        emit(dir, a, out, add);
    }

    /// The namespaces whose identities the rules of `policies` can give a
    /// peer part; `None`: any namespace (a named port without a selector).
    fn peer_namespaces<'a>(&'a self, dir: Dir, policies: &'a [Key]) -> Option<BTreeSet<&'a str>> {
        let mut out = BTreeSet::new();
        for rule in self.rules(dir, policies) {
            let named = dir == Dir::Egress && has_named(&rule.ports);
            let Some(peers) = &rule.peers else {
                if named {
                    return None;
                }
                continue;
            };
            for peer in peers {
                match peer {
                    Peer::Pods {
                        namespaces: NamespaceScope::Own(ns),
                        ..
                    } => {
                        out.insert(ns.as_str());
                    }
                    Peer::Pods {
                        namespaces: NamespaceScope::Selector(sel),
                        ..
                    } => {
                        for ns in self.by_ns.keys() {
                            let labels = self.ns_labels.get(ns);
                            if sel.matches(labels.unwrap_or(&Labels::new())) {
                                out.insert(ns.as_str());
                            }
                        }
                    }
                    Peer::IpBlock(_) if named => return None,
                    Peer::IpBlock(_) => {}
                }
            }
        }
        Some(out)
    }

    fn rules<'a>(
        &'a self,
        dir: Dir,
        policies: &'a [Key],
    ) -> impl Iterator<Item = &'a palisade_model::Rule> + 'a {
        policies.iter().flat_map(move |k| {
            let p = &self.policies[k];
            match dir {
                Dir::Egress => p.egress.iter().flatten(),
                Dir::Ingress => p.ingress.iter().flatten(),
            }
        })
    }

    /// The allows of group `g` whose peer is identity `ik` (mark `mark`),
    /// exactly as the full compilation derives them.
    #[allow(clippy::too_many_arguments)]
    fn peer_part(
        &self,
        a: &mut Allows,
        dir: Dir,
        rules: &[&palisade_model::Rule],
        g: &Group,
        ident: &Ident,
        rep: &Pod,
    ) {
        let mark = ident.mark;
        for rule in rules {
            let named = dir == Dir::Egress && has_named(&rule.ports);
            match &rule.peers {
                None => {
                    if named {
                        for item in named_items(&rule.ports, rep) {
                            both(a, g.id, mark, item);
                        }
                    }
                }
                Some(peers) => {
                    for peer in peers {
                        match peer {
                            Peer::Pods { namespaces, pods } => {
                                if !pods.matches(&ident.labels) || !self.in_scope(namespaces, ident)
                                {
                                    continue;
                                }
                                let holder = match dir {
                                    Dir::Egress => rep,
                                    Dir::Ingress => &g.holder,
                                };
                                for item in port_items(&rule.ports, Some(holder)) {
                                    both(a, g.id, mark, item);
                                }
                            }
                            Peer::IpBlock(b) => {
                                if !named {
                                    continue;
                                }
                                let first = |v4: bool| {
                                    rep.ips.iter().copied().find(|ip| ip.is_ipv4() == v4)
                                };
                                let fams = [
                                    first(true).is_some_and(|ip| b.contains(&ip)),
                                    first(false).is_some_and(|ip| b.contains(&ip)),
                                ];
                                for item in named_items(&rule.ports, rep) {
                                    for (fam, inside) in fams.iter().enumerate() {
                                        if *inside {
                                            a.peer(fam, g.id, mark, item);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn in_scope(&self, scope: &NamespaceScope, ident: &Ident) -> bool {
        scope.contains(&ident.namespace, || self.ns_labels_of(&ident.namespace))
    }

    /// Adds or removes identity `ik`'s peer part in every group.
    fn peer_parts_everywhere(&self, ik: &MarkKey, out: &mut ElementDelta, add: bool) {
        let (ident, rep) = (&self.idents[ik], self.rep(ik));
        let mut a = Allows::default();
        for (k, g) in &self.egress {
            let rules: Vec<_> = self.rules(Dir::Egress, k).collect();
            self.peer_part(&mut a, Dir::Egress, &rules, g, ident, rep);
        }
        emit(Dir::Egress, a, out, add);
        let mut a = Allows::default();
        for ((k, _), g) in &self.ingress {
            let rules: Vec<_> = self.rules(Dir::Ingress, k).collect();
            self.peer_part(&mut a, Dir::Ingress, &rules, g, ident, rep);
        }
        emit(Dir::Ingress, a, out, add);
        for t in 0..self.tiers.len() {
            for (k, g) in &self.tiers[t].groups {
                self.tier_peer_part(t, k, g, ident, out, add);
            }
        }
    }

    /// The per-pod elements of an endpoint pod of identity `ik`.
    fn pod_elements(&self, p: &Pod, ik: &MarkKey, out: &mut ElementDelta, add: bool) {
        let mark = self.idents[ik].mark;
        for ip in &p.ips {
            let (fam, v) = ip_value(*ip);
            out.put(
                SetId::Identity(Family::of_index(fam)).name(),
                Element {
                    key: vec![v],
                    data: Some(Value::Mark(mark)),
                },
                op(add),
            );
        }
        if !self.is_local(p) {
            return;
        }
        let groups = self.groups_of.get(ik);
        let eg = groups
            .and_then(|g| g.egress.as_ref())
            .map(|k| self.egress[k].id);
        let ing = groups
            .and_then(|g| g.ingress.as_ref())
            .map(|k| self.ingress[k].id);
        for ip in &p.ips {
            let (fam, v) = ip_value(*ip);
            out.put(
                SetId::Local(Family::of_index(fam)).name(),
                Element {
                    key: vec![v.clone()],
                    data: None,
                },
                op(add),
            );
            for (g, dir) in [(eg, Dir::Egress), (ing, Dir::Ingress)] {
                if let Some(g) = g {
                    out.put(
                        SetId::Group(dir, Family::of_index(fam)).name(),
                        Element {
                            key: vec![v.clone()],
                            data: Some(Value::Mark(g)),
                        },
                        op(add),
                    );
                }
            }
            for (t, ts) in self.tiers.iter().enumerate() {
                let Some(k) = groups.and_then(|g| g.tiers.get(t)).and_then(Option::as_ref) else {
                    continue;
                };
                out.put(
                    SetId::TierGroup(ts.dir, ts.tier, Family::of_index(fam)).name(),
                    Element {
                        key: vec![v.clone()],
                        data: Some(Value::Mark(ts.groups[k].id)),
                    },
                    op(add),
                );
            }
        }
    }

    /// The local members of `ik`.
    fn local_members(&self, ik: &MarkKey) -> Vec<Pod> {
        self.idents[ik]
            .members
            .iter()
            .map(|k| &self.pods[k])
            .filter(|p| self.is_local(p))
            .cloned()
            .collect()
    }

    /// Applies `changes` and returns the element changes that bring the
    /// table from the ruleset compiled before them to the one compiled
    /// after them, except that removals from interval sets of elements
    /// nothing can reach any more are deferred (see [`Incremental::collect`]).
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<ElementDelta, Refused> {
        let mut out = ElementDelta::default();
        for c in changes {
            match c {
                Change::Pod { key, new } => self.pod(key, new, &mut out)?,
                Change::Policy { key, new } => self.policy(key, new, &mut out)?,
                // Admin subjects and peers select by namespace labels and
                // by nodes: with admin policies, those changes take the
                // full path.
                Change::Namespace { .. } | Change::Node { .. } if !self.admin.is_empty() => {
                    return refuse("namespace or node change with admin policies");
                }
                Change::Namespace { name, new } => self.namespace(name, new, &mut out),
                Change::Node { name, new } => self.node_change(&name, new, &mut out),
            }
        }
        self.defer(&mut out);
        Ok(out)
    }

    /// The interval sets whose removals may wait ([`SetId::deferrable`]),
    /// whose group ids they start with, and whether their second field is
    /// a peer's mark.
    fn deferrable(&self) -> Vec<(String, Domain, bool)> {
        let mut out = Vec::new();
        for d in [Dir::Egress, Dir::Ingress] {
            for s in schema::allow_sets(d).into_iter().filter(|s| s.deferrable()) {
                out.push((s.name().to_string(), Domain::Np(d), s.peer_keyed()));
            }
        }
        for (t, ts) in self.tiers.iter().enumerate() {
            for s in schema::tier_sets(ts.dir, ts.tier) {
                if s.deferrable() {
                    out.push((s.name().to_string(), Domain::Tier(t), s.peer_keyed()));
                }
            }
        }
        out
    }

    /// Whether a packet can reach an element of a deferrable set: its
    /// group is some local pod's and, in a peer set, its mark some pod's.
    fn reachable(&self, domain: Domain, peer: bool, e: &Element) -> bool {
        let mark = |i: usize| match e.key.get(i) {
            Some(Value::Mark(m)) => Some(*m),
            _ => None,
        };
        let Some(g) = mark(0) else {
            return true;
        };
        let group = match domain {
            Domain::Np(Dir::Egress) => self.used_egress.contains(&g),
            Domain::Np(Dir::Ingress) => self.used_ingress.contains(&g),
            Domain::Tier(t) => self.tiers[t].used.contains(&g),
        };
        group && (!peer || mark(1).is_none_or(|m| self.used_marks.contains(&m)))
    }

    /// Removing an element from a large concatenated interval set costs the
    /// kernel 20-50 ms, adding one a few microseconds. An element nothing
    /// can reach allows nothing, so its removal waits (it becomes garbage);
    /// garbage that a change makes reachable again is either wanted again
    /// (kept) or removed in the same transaction, before anything can match
    /// it.
    fn defer(&mut self, out: &mut ElementDelta) {
        let sets = self.deferrable();
        for (set, domain, peer) in &sets {
            let Some((remove, add)) = out.sets.get_mut(set) else {
                continue;
            };
            let garbage = self.garbage.entry(set.clone()).or_default();
            add.retain(|e| !garbage.remove(e));
            let removed = std::mem::take(remove);
            for e in removed {
                if self.reachable(*domain, *peer, &e) {
                    remove.insert(e);
                } else {
                    self.garbage
                        .get_mut(set)
                        .expect("entry made above")
                        .insert(e);
                }
            }
        }
        for (set, domain, peer) in &sets {
            let Some(garbage) = self.garbage.get(set) else {
                continue;
            };
            let live: Vec<Element> = garbage
                .iter()
                .filter(|e| self.reachable(*domain, *peer, e))
                .cloned()
                .collect();
            for e in live {
                self.garbage.get_mut(set).expect("present").remove(&e);
                out.remove(set, e);
            }
        }
        self.garbage.retain(|_, g| !g.is_empty());
    }

    /// How many unreachable interval elements the table still holds.
    pub fn garbage_len(&self) -> usize {
        self.garbage.values().map(BTreeSet::len).sum()
    }

    /// Unreachable interval elements the table still holds, by set.
    pub fn garbage(&self) -> &BTreeMap<String, BTreeSet<Element>> {
        &self.garbage
    }

    /// Forgets every unreachable element (the caller replaces the table
    /// with one without them) and returns them.
    pub fn take_garbage(&mut self) -> BTreeMap<String, BTreeSet<Element>> {
        std::mem::take(&mut self.garbage)
    }

    /// Up to `max` unreachable elements to remove now (the caller removes
    /// them when idle, a few per transaction, so that no event waits long
    /// behind a removal).
    pub fn collect(&mut self, max: usize) -> ElementDelta {
        let mut out = ElementDelta::default();
        let mut n = 0;
        for (set, garbage) in &mut self.garbage {
            while n < max {
                let Some(e) = garbage.pop_first() else {
                    break;
                };
                out.remove(set, e);
                n += 1;
            }
        }
        self.garbage.retain(|_, g| !g.is_empty());
        out
    }

    fn pod(&mut self, key: Key, new: Option<Pod>, out: &mut ElementDelta) -> Result<(), Refused> {
        if let Some(p) = &new {
            if pod_key(p) != key {
                return refuse("pod key mismatch");
            }
            if !self.ns_labels.contains_key(&p.namespace) {
                // As decoding does: a namespace without an object has
                // only its name label.
                self.ns_labels.insert(
                    p.namespace.clone(),
                    Namespace::implicit(&p.namespace).labels,
                );
            }
            if p.is_endpoint() && ambiguous_names(p) {
                return refuse("pod names one port twice");
            }
        }
        if self.pods.get(&key) == new.as_ref() {
            return Ok(());
        }
        let old = self.pods.get(&key);
        if old.is_some_and(|p| p.host_network) || new.as_ref().is_some_and(|p| p.host_network) {
            return self.host_pod(key, new, out);
        }
        // Out with the old version.
        if let Some(old) = self.pods.get(&key).cloned() {
            if let Some(ik) = self.pod_ident.get(&key).cloned() {
                self.pod_elements(&old, &ik, out, false);
                let local = self.is_local(&old);
                let ident = &self.idents[&ik];
                let last = ident.members.len() == 1;
                if local && ident.local == 1 {
                    self.release(&ik, out);
                }
                if last {
                    self.peer_parts_everywhere(&ik, out, false);
                }
                let ident = self.idents.get_mut(&ik).expect("member");
                ident.members.remove(&key);
                if local {
                    ident.local -= 1;
                }
                if let Some(first) = ident.members.first() {
                    if ident.rep.as_ref().is_some_and(|r| pod_key(r) == key) {
                        ident.rep = Some(self.pods[first].clone());
                    }
                }
                if last {
                    let ident = self.idents.remove(&ik).expect("member");
                    if let Some(set) = self.by_ns.get_mut(&ident.namespace) {
                        set.remove(&ik);
                    }
                    self.used_marks.remove(&ident.mark);
                }
                for ip in &old.ips {
                    self.ip_owner.remove(ip);
                }
                self.pod_ident.remove(&key);
            }
            self.pods.remove(&key);
        }
        // In with the new one.
        let Some(p) = new else {
            return Ok(());
        };
        if p.is_endpoint() {
            for ip in &p.ips {
                if self.ip_owner.contains_key(ip) {
                    return refuse("address shared by two pods");
                }
            }
            for ip in &p.ips {
                self.ip_owner.insert(*ip, key.clone());
            }
            let ik = self.key_of(&p);
            let local = self.is_local(&p);
            let fresh = !self.idents.contains_key(&ik);
            if fresh {
                let mark = hash32(&ik);
                if mark == 0 || !self.used_marks.insert(mark) {
                    return refuse("identity mark collision");
                }
                self.by_ns
                    .entry(p.namespace.clone())
                    .or_default()
                    .insert(ik.clone());
                self.idents.insert(
                    ik.clone(),
                    Ident {
                        mark,
                        namespace: p.namespace.clone(),
                        labels: p.labels.clone(),
                        members: BTreeSet::new(),
                        rep: None,
                        local: 0,
                    },
                );
            }
            self.pods.insert(key.clone(), p.clone());
            let ident = self.idents.get_mut(&ik).expect("inserted");
            ident.members.insert(key.clone());
            if ident.members.first() == Some(&key) {
                ident.rep = Some(p.clone());
            }
            if local {
                ident.local += 1;
            }
            let first_local = local && ident.local == 1;
            if fresh {
                self.peer_parts_everywhere(&ik, out, true);
            }
            if first_local {
                let groups = self.groups_for(&ik);
                if !self.acquire(&ik, groups, Some(out)) {
                    return refuse("group id collision");
                }
            }
            self.pod_elements(&p, &ik, out, true);
            self.pod_ident.insert(key, ik);
        } else {
            self.pods.insert(key, p);
        }
        Ok(())
    }

    /// A host-network pod (before or after the change) is node traffic: it
    /// is in no identity map, no group and no selector. It only adds its
    /// addresses to `own_node` when local, and its identity's mark to the
    /// numbering.
    fn host_pod(
        &mut self,
        key: Key,
        new: Option<Pod>,
        out: &mut ElementDelta,
    ) -> Result<(), Refused> {
        if self.pods.get(&key).is_some_and(|p| !p.host_network)
            || new.as_ref().is_some_and(|p| !p.host_network)
        {
            return refuse("a pod changing host networking");
        }
        let before = self.own_node();
        if let Some(old) = self.pods.remove(&key) {
            if old.is_endpoint() {
                let ik = self.key_of(&old);
                let Some(entry) = self.host_idents.get_mut(&ik) else {
                    return refuse("host-network identity unknown");
                };
                entry.1 -= 1;
                if entry.1 == 0 {
                    let (mark, _) = self.host_idents.remove(&ik).expect("present");
                    self.used_marks.remove(&mark);
                }
            }
        }
        if let Some(p) = new {
            if p.is_endpoint() {
                let ik = self.key_of(&p);
                if let Some(entry) = self.host_idents.get_mut(&ik) {
                    entry.1 += 1;
                } else {
                    let mark = hash32(&ik);
                    if mark == 0 || !self.used_marks.insert(mark) {
                        return refuse("identity mark collision");
                    }
                    self.host_idents.insert(ik, (mark, 1));
                }
            }
            self.pods.insert(key, p);
        }
        self.own_node_delta(&before, out);
        Ok(())
    }

    fn namespace(&mut self, name: String, new: Option<Namespace>, out: &mut ElementDelta) {
        let labels = new.map_or_else(|| Namespace::implicit(&name).labels, |n| n.labels);
        if self.ns_labels.get(&name) == Some(&labels) {
            return;
        }
        // Namespace labels only decide which peers a namespaceSelector
        // reaches: the peer parts of this namespace's identities.
        let here: Vec<MarkKey> = self
            .by_ns
            .get(&name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for ik in &here {
            self.peer_parts_everywhere(ik, out, false);
        }
        self.ns_labels.insert(name, labels);
        for ik in &here {
            self.peer_parts_everywhere(ik, out, true);
        }
    }

    /// The `own_node` elements: this node's addresses and its
    /// host-network endpoint pods' (which this module never changes).
    fn own_node(&self) -> BTreeSet<IpAddr> {
        let mut own: BTreeSet<IpAddr> = self.node_addresses.iter().copied().collect();
        for p in self.pods.values() {
            if p.host_network && p.is_endpoint() && self.is_local(p) {
                own.extend(p.ips.iter().copied());
            }
        }
        own
    }

    fn node_change(&mut self, name: &str, new: Option<Node>, out: &mut ElementDelta) {
        // Other nodes' objects matter only to admin `nodes` peers, which
        // this module refuses.
        if name != self.node {
            return;
        }
        let before = self.own_node();
        self.node_addresses = new.map(|n| n.addresses).unwrap_or_default();
        self.own_node_delta(&before, out);
    }

    /// The `own_node` changes from `before` to now.
    fn own_node_delta(&self, before: &BTreeSet<IpAddr>, out: &mut ElementDelta) {
        let after = self.own_node();
        for (set, add) in [
            (before.difference(&after), false),
            (after.difference(before), true),
        ] {
            for ip in set {
                let (fam, v) = ip_value(*ip);
                out.put(
                    SetId::OwnNode(Family::of_index(fam)).name(),
                    Element {
                        key: vec![v],
                        data: None,
                    },
                    op(add),
                );
            }
        }
    }

    fn policy(
        &mut self,
        key: Key,
        new: Option<NetworkPolicy>,
        out: &mut ElementDelta,
    ) -> Result<(), Refused> {
        if let Some(p) = &new {
            if policy_key(p) != key {
                return refuse("policy key mismatch");
            }
        }
        if self.policies.get(&key) == new.as_ref() {
            return Ok(());
        }
        // The ipBlocks must stay the same set: they split identities.
        let mut blocks = self.blocks.clone();
        if let Some(old) = self.policies.get(&key) {
            for b in rule_blocks(old) {
                let n = blocks.get_mut(b).expect("counted");
                *n -= 1;
                if *n == 0 {
                    blocks.remove(b);
                }
            }
        }
        for b in new.iter().flat_map(rule_blocks) {
            *blocks.entry(b.clone()).or_default() += 1;
        }
        let before: HashSet<&IpBlock> = self.blocks.keys().collect();
        let after: HashSet<&IpBlock> = blocks.keys().collect();
        if before != after {
            return refuse("the set of ipBlocks changed");
        }
        self.blocks = blocks;
        // Only local identities that the old or the new version selects
        // change groups, and every group naming the policy is theirs (its
        // users are what it selects): no other group changes.
        let old = self.policies.get(&key);
        let selects = |p: Option<&NetworkPolicy>, ident: &Ident| {
            p.is_some_and(|p| {
                p.namespace == ident.namespace && p.pod_selector.matches(&ident.labels)
            })
        };
        let affected: Vec<MarkKey> = self
            .groups_of
            .keys()
            .filter(|ik| {
                let ident = &self.idents[*ik];
                selects(old, ident) || selects(new.as_ref(), ident)
            })
            .cloned()
            .collect();
        let members: Vec<(MarkKey, Vec<Pod>)> = affected
            .iter()
            .map(|ik| (ik.clone(), self.local_members(ik)))
            .collect();
        for (ik, pods) in &members {
            for p in pods {
                self.pod_elements(p, ik, out, false);
            }
            self.release(ik, out);
        }
        match new {
            Some(p) => self.policies.insert(key, p),
            None => self.policies.remove(&key),
        };
        for (ik, pods) in &members {
            let groups = self.groups_for(ik);
            if !self.acquire(ik, groups, Some(out)) {
                return refuse("group id collision");
            }
            for p in pods {
                self.pod_elements(p, ik, out, true);
            }
        }
        Ok(())
    }
}

/// A pod's named container ports as an identity holds them (sorted,
/// deduplicated): name, protocol, port.
fn named_ports(p: &Pod) -> Vec<(String, u8, u16)> {
    sorted_ports(p)
        .into_iter()
        .filter_map(|c| Some((c.name?, c.protocol.number(), c.port)))
        .collect()
}

/// An admin rule's ports, named ones resolved on the destination's named
/// ports (an admin named port matches whatever the protocol).
fn admin_ports(ports: &Option<Vec<AdminPort>>, named: &[(String, u8, u16)]) -> Vec<PortItem> {
    match ports {
        None => crate::every_port(),
        Some(list) => list
            .iter()
            .flat_map(|p| match p {
                AdminPort::Number { protocol, port } => vec![(protocol.number(), *port, *port)],
                AdminPort::Range {
                    protocol,
                    start,
                    end,
                } => vec![(protocol.number(), *start, *end)],
                AdminPort::Named(n) => named
                    .iter()
                    .filter(|(m, _, _)| m == n)
                    .map(|&(_, q, v)| (q, v, v))
                    .collect(),
            })
            .collect(),
    }
}

fn both(a: &mut Allows, g: u32, mark: u32, item: PortItem) {
    a.peer(0, g, mark, item);
    a.peer(1, g, mark, item);
}

/// Renders allows as the full compilation does and records the elements.
fn emit(dir: Dir, a: Allows, out: &mut ElementDelta, add: bool) {
    for set in allow_sets(dir, a) {
        for e in set.elements {
            out.put(&set.name, e, op(add));
        }
    }
}
