//! Incremental compilation: Pod, NetworkPolicy, Namespace and Node changes
//! turned straight into element changes, without rebuilding the engine or
//! compiling the whole node.
//!
//! The engine's live index ([`palisade_engine::live::Live`]) holds the
//! objects and identities and answers every selection question; this
//! module holds only what is the dataplane's: marks, policy groups and
//! their elements. It never evaluates a selector.
//!
//! The node's ruleset (with [`Numbering::Stable`](crate::Numbering)) is a
//! disjoint union of *contributions*, each a pure function of a few
//! objects:
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
//! it invalidates, computed from the state before it, then has the live
//! index apply it, and adds the contributions it creates, computed from
//! the state after it; what is left, after removals and additions of the
//! same element cancel, is exactly the difference between the full
//! compilation of the old and of the new cluster. The property test
//! `incremental_compile_equals_full_compile` checks that claim after every
//! step of random event sequences.
//!
//! Costs: a pod of an existing identity touches its own elements only; a
//! new or vanishing identity touches its peer part in every group of the
//! node; a policy change recompiles the groups of the local identities its
//! old or new version selects; a namespace relabel recomputes the peer
//! parts of that namespace's identities; a Node object changes only this
//! node's `own_node` elements.
//!
//! Admin tiers follow the same scheme: a tier group (the ordered admin
//! rules that select a local identity, and for ingress how their named
//! ports resolve on it) has a static part (its `networks`/`nodes` address
//! ranges resolved to first-match verdicts) and a peer part per identity
//! (the rules whose peers match it, resolved to first-match port ranges).
//!
//! What the live index refuses is refused here too ([`Refused`]): admin
//! policy changes, and with admin policies namespace and node changes;
//! changes to the set of `ipBlock`s, a pod turning host networking on or
//! off, an address shared by two pods, a pod naming one port twice. So is
//! the rare hash collision of a mark or group id (the full numbering
//! probes past it; an incremental one could not agree). The caller then
//! compiles in full and builds a new [`Incremental`] from that engine.

mod garbage;
mod groups;
mod tiers;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use palisade_engine::live::{IdentityKey, Live, LiveIdentity, SelectionDelta};
use palisade_engine::Engine;
use palisade_model::{AdminTier, Namespace, NetworkPolicy, Node, Pod};

pub use palisade_engine::live::{Change, Key, Op, Refused};

use crate::numbering::{self, hash32, MarkKey};
use crate::schema::{Family, SetId};
use crate::{ip_value, Dir, Element, Value};

pub use crate::delta::ElementDelta;

/// A shared identity key, as the live index hands them out.
type Ident = std::sync::Arc<IdentityKey>;

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
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

type IngressKey = (Vec<Key>, Vec<Vec<u16>>);

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
    live: Live,
    /// Each address matcher's content hash (by position), for mark keys.
    matcher_hashes: Vec<u64>,
    marks: HashMap<Ident, u32>,
    used_marks: HashSet<u32>,
    /// How many members of each identity run on this node.
    local: HashMap<Ident, usize>,
    /// Local identities' groups.
    groups_of: HashMap<Ident, Groups>,
    egress: BTreeMap<Vec<Key>, Group>,
    ingress: BTreeMap<IngressKey, Group>,
    used_egress: HashSet<u32>,
    used_ingress: HashSet<u32>,
    tiers: Vec<TierState>,
    /// Interval elements the table still holds although the desired state
    /// no longer does, because nothing can reach them: their group id or
    /// identity mark is assigned to no pod. See [`Incremental::collect`].
    garbage: BTreeMap<String, BTreeSet<Element>>,
}

impl Incremental {
    /// The state of `engine`'s cluster as compiled for `node` with stable
    /// numbering; `None` when the cluster holds what this module refuses
    /// (shared addresses, a port name listed twice, numbers that had to be
    /// probed).
    pub fn new(engine: &Engine, node: &str) -> Option<Incremental> {
        let live = Live::new(engine).ok()?;
        let mut st = Incremental {
            node: node.to_string(),
            matcher_hashes: numbering::matcher_hashes(engine)
                .into_iter()
                .map(|(_, h)| h)
                .collect(),
            marks: HashMap::new(),
            used_marks: HashSet::new(),
            local: HashMap::new(),
            groups_of: HashMap::new(),
            egress: BTreeMap::new(),
            ingress: BTreeMap::new(),
            used_egress: HashSet::new(),
            used_ingress: HashSet::new(),
            tiers: Vec::new(),
            garbage: BTreeMap::new(),
            live,
        };
        for dir in [Dir::Egress, Dir::Ingress] {
            for tier in [AdminTier::Admin, AdminTier::Baseline] {
                if st.live.admin().iter().any(|a| a.tier == tier) {
                    st.tiers.push(TierState {
                        dir,
                        tier,
                        groups: BTreeMap::new(),
                        used: HashSet::new(),
                    });
                }
            }
        }
        // Marks as the full numbering assigns them: a mark that is not its
        // key's hash was probed past a collision.
        let keys = numbering::identity_keys(engine);
        let marks = numbering::assign(numbering::Numbering::Stable, keys.len(), |i| {
            keys[i].clone()
        });
        let full: HashSet<u32> = marks.iter().copied().collect();
        for (key, &mark) in keys.iter().zip(&marks) {
            if mark != hash32(key) {
                return None;
            }
        }
        let idents: Vec<Ident> = st.live.identities().map(|i| i.key.clone()).collect();
        for ik in &idents {
            let mark = hash32(&st.mark_key(ik));
            if !full.contains(&mark) || !st.used_marks.insert(mark) {
                return None;
            }
            st.marks.insert(ik.clone(), mark);
            let ident = st.live.identity(ik).expect("listed");
            let local = ident
                .members
                .iter()
                .filter(|k| st.live.pod(k).is_some_and(|p| st.is_local(p)))
                .count();
            if local > 0 && !ik.host_network {
                st.local.insert(ik.clone(), local);
            }
        }
        let local: Vec<Ident> = st.local.keys().cloned().collect();
        for ik in local {
            let g = st.groups_for(&ik);
            if !st.acquire(&ik, g, None) {
                return None;
            }
        }
        Some(st)
    }

    /// The engine's live index this state follows.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// What an identity's mark is the hash of.
    fn mark_key(&self, ik: &IdentityKey) -> MarkKey {
        let mut sig: Vec<(u64, bool, bool)> = ik
            .matched
            .iter()
            .map(|&(m, a, b)| (self.matcher_hashes[m], a, b))
            .collect();
        sig.sort();
        (
            ik.namespace.clone(),
            ik.labels.clone(),
            ik.ports.clone(),
            ik.host_network,
            ik.has_v4,
            ik.has_v6,
            sig,
        )
    }

    fn ident(&self, ik: &IdentityKey) -> &LiveIdentity {
        self.live.identity(ik).expect("a known identity")
    }

    fn mark(&self, ik: &IdentityKey) -> u32 {
        self.marks[ik]
    }

    fn is_local(&self, p: &Pod) -> bool {
        p.node.as_deref() == Some(self.node.as_str())
    }

    /// Applies `changes` and returns the element changes that bring the
    /// table from the ruleset compiled before them to the one compiled
    /// after them, except that removals from interval sets of elements
    /// nothing can reach any more are deferred (see [`Incremental::collect`]).
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<ElementDelta, Refused> {
        let mut out = ElementDelta::default();
        for c in changes {
            // A staged policy is absent from the kernel, as from the index.
            let c = c.enforced();
            self.live.check(&c)?;
            match c {
                Change::Pod { key, new } => self.pod(key, new, &mut out)?,
                Change::Policy { key, new } => self.policy(key, new, &mut out)?,
                Change::Namespace { name, new } => self.namespace(name, new, &mut out)?,
                Change::Node { name, new } => self.node_change(name, new, &mut out)?,
            }
        }
        self.defer(&mut out);
        Ok(out)
    }

    /// Gives new identities their marks and frees the marks of vanished
    /// ones; refused on a collision (the full numbering would probe).
    fn renumber(&mut self, delta: &SelectionDelta) -> Result<(), Refused> {
        for (ik, op) in &delta.identities {
            if *op == Op::Remove {
                if let Some(m) = self.marks.remove(ik) {
                    self.used_marks.remove(&m);
                }
            }
        }
        for (ik, op) in &delta.identities {
            if *op == Op::Add {
                let mark = hash32(&self.mark_key(ik));
                if mark == 0 || !self.used_marks.insert(mark) {
                    return refuse("identity mark collision");
                }
                self.marks.insert(ik.clone(), mark);
            }
        }
        Ok(())
    }

    fn pod(&mut self, key: Key, new: Option<Pod>, out: &mut ElementDelta) -> Result<(), Refused> {
        let old = self.live.pod(&key).cloned();
        if old == new {
            return Ok(());
        }
        let change = Change::Pod {
            key: key.clone(),
            new: new.clone(),
        };
        if old.as_ref().is_some_and(|p| p.host_network)
            || new.as_ref().is_some_and(|p| p.host_network)
        {
            // Node traffic: in no identity map, group or selector; only its
            // addresses (when local) and its identity's mark count.
            let before = self.own_node();
            let delta = self.live.apply(change)?;
            self.renumber(&delta)?;
            self.own_node_delta(&before, out);
            return Ok(());
        }
        // Out with the old version, computed from the state before.
        if let (Some(old), Some(ik)) = (&old, self.live.identity_of(&key).cloned()) {
            self.pod_elements(old, &ik, out, Op::Remove);
            let last = self.ident(&ik).members.len() == 1;
            if self.is_local(old) {
                let n = self.local.get_mut(&ik).expect("a local member");
                *n -= 1;
                if *n == 0 {
                    self.local.remove(&ik);
                    self.release(&ik, out);
                }
            }
            if last {
                self.peer_parts_everywhere(&ik, out, Op::Remove);
            }
        }
        let delta = self.live.apply(change)?;
        self.renumber(&delta)?;
        // In with the new one, computed from the state after.
        let (Some(p), Some(ik)) = (new, self.live.identity_of(&key).cloned()) else {
            return Ok(());
        };
        if delta.identities.contains(&(ik.clone(), Op::Add)) {
            self.peer_parts_everywhere(&ik, out, Op::Add);
        }
        if self.is_local(&p) {
            let n = self.local.entry(ik.clone()).or_default();
            *n += 1;
            if *n == 1 {
                let groups = self.groups_for(&ik);
                if !self.acquire(&ik, groups, Some(out)) {
                    return refuse("group id collision");
                }
            }
        }
        self.pod_elements(&p, &ik, out, Op::Add);
        Ok(())
    }

    fn namespace(
        &mut self,
        name: String,
        new: Option<Namespace>,
        out: &mut ElementDelta,
    ) -> Result<(), Refused> {
        let labels = new
            .as_ref()
            .map_or_else(|| Namespace::implicit(&name).labels, |n| n.labels.clone());
        if self.live.namespace_labels(&name) == Some(&labels) {
            return Ok(());
        }
        // Namespace labels only decide which peers a namespaceSelector
        // reaches: the peer parts of this namespace's identities.
        let here: Vec<Ident> = self
            .live
            .identities_in(&name)
            .map(|i| i.key.clone())
            .collect();
        for ik in &here {
            self.peer_parts_everywhere(ik, out, Op::Remove);
        }
        let delta = self.live.apply(Change::Namespace { name, new })?;
        for ik in &delta.relabelled {
            self.peer_parts_everywhere(ik, out, Op::Add);
        }
        Ok(())
    }

    /// The `own_node` elements: this node's addresses and its
    /// host-network endpoint pods'.
    fn own_node(&self) -> BTreeSet<IpAddr> {
        let mut own: BTreeSet<IpAddr> = self
            .live
            .node_addresses(&self.node)
            .iter()
            .copied()
            .collect();
        for p in self.live.pods() {
            if p.host_network && p.is_endpoint() && self.is_local(p) {
                own.extend(p.ips.iter().copied());
            }
        }
        own
    }

    fn node_change(
        &mut self,
        name: String,
        new: Option<Node>,
        out: &mut ElementDelta,
    ) -> Result<(), Refused> {
        // Other nodes' objects matter only to admin `nodes` peers, which
        // the live index refuses to change.
        let own = name == self.node;
        let before = if own {
            self.own_node()
        } else {
            BTreeSet::new()
        };
        self.live.apply(Change::Node { name, new })?;
        if own {
            self.own_node_delta(&before, out);
        }
        Ok(())
    }

    /// The `own_node` changes from `before` to now.
    fn own_node_delta(&self, before: &BTreeSet<IpAddr>, out: &mut ElementDelta) {
        let after = self.own_node();
        for (set, op) in [
            (before.difference(&after), Op::Remove),
            (after.difference(before), Op::Add),
        ] {
            for ip in set {
                let (fam, v) = ip_value(*ip);
                out.put(
                    SetId::OwnNode(Family::of_index(fam)).name(),
                    Element {
                        key: vec![v],
                        data: None,
                    },
                    op,
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
        if self.live.policy(&key) == new.as_ref() {
            return Ok(());
        }
        // Only local identities that the old or the new version selects
        // change groups, and every group naming the policy is theirs (its
        // users are what it selects): no other group changes.
        let affected: Vec<Ident> = self
            .groups_of
            .keys()
            .filter(|ik| self.live.change_selects(&key, new.as_ref(), ik))
            .cloned()
            .collect();
        let members: Vec<(Ident, Vec<Pod>)> = affected
            .iter()
            .map(|ik| (ik.clone(), self.local_members(ik)))
            .collect();
        for (ik, pods) in &members {
            for p in pods {
                self.pod_elements(p, ik, out, Op::Remove);
            }
            self.release(ik, out);
        }
        self.live.apply(Change::Policy { key, new })?;
        for (ik, pods) in &members {
            let groups = self.groups_for(ik);
            if !self.acquire(ik, groups, Some(out)) {
                return refuse("group id collision");
            }
            for p in pods {
                self.pod_elements(p, ik, out, Op::Add);
            }
        }
        Ok(())
    }

    /// The local members of `ik`.
    fn local_members(&self, ik: &IdentityKey) -> Vec<Pod> {
        self.ident(ik)
            .members
            .iter()
            .filter_map(|k| self.live.pod(k))
            .filter(|p| self.is_local(p))
            .cloned()
            .collect()
    }

    /// The per-pod elements of an endpoint pod of identity `ik`.
    fn pod_elements(&self, p: &Pod, ik: &IdentityKey, out: &mut ElementDelta, op: Op) {
        let mark = self.mark(ik);
        for ip in &p.ips {
            let (fam, v) = ip_value(*ip);
            out.put(
                SetId::Identity(Family::of_index(fam)).name(),
                Element {
                    key: vec![v],
                    data: Some(Value::Mark(mark)),
                },
                op,
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
                op,
            );
            for (g, dir) in [(eg, Dir::Egress), (ing, Dir::Ingress)] {
                if let Some(g) = g {
                    out.put(
                        SetId::Group(dir, Family::of_index(fam)).name(),
                        Element {
                            key: vec![v.clone()],
                            data: Some(Value::Mark(g)),
                        },
                        op,
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
                    op,
                );
            }
        }
    }
}
