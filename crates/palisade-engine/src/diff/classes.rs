//! The endpoints of two versions, matched by namespace and name, and
//! grouped into classes whose members get the same verdicts in both.
//!
//! Pods of one identity are told apart by no selector, address matcher or
//! named port (`identity_members_are_indistinguishable`), so pods with the
//! same (BASE identity, HEAD identity) get the same verdicts in both
//! versions, and one representative per class stands for all of them. Two
//! things an identity does not hold can still tell pods apart, and both
//! concern an isolated pod's ingress from its own node: the node a pod runs
//! on (for ingress from a node address: `Classes::node_groups` splits a
//! class by node pair) and, when some node address is also an endpoint
//! pod's address, the source pod's address (each pod is then a class of
//! its own).

use std::collections::HashMap;

use palisade_model::Cluster;

use super::{affected, DiffEndpoint};
use crate::{Engine, IdentityId, PodId};

/// Pods that get the same verdicts in every version they are present in.
#[derive(Clone, Debug)]
pub(super) struct Class {
    /// A representative member's pod index in BASE / HEAD.
    pub(super) base: Option<usize>,
    pub(super) head: Option<usize>,
    /// Endpoint ids, ascending.
    pub(super) members: Vec<u32>,
    /// Some member may have a different verdict in HEAD than in BASE.
    pub(super) affected: bool,
}

/// A representative and the members it stands for.
pub(super) struct Group<'a> {
    pub(super) base: Option<usize>,
    pub(super) head: Option<usize>,
    pub(super) members: std::borrow::Cow<'a, [u32]>,
}

pub(super) struct Classes {
    /// Endpoints present in both versions, by (BASE, HEAD) identity.
    pub(super) both: Vec<Class>,
    /// Endpoints present in BASE only / HEAD only, by identity.
    pub(super) only_base: Vec<Class>,
    pub(super) only_head: Vec<Class>,
    /// The endpoints present in both versions, by identity in BASE / HEAD
    /// alone: the partners of endpoints present in one version only.
    pub(super) all_base: Vec<Class>,
    pub(super) all_head: Vec<Class>,
}

/// Endpoint pods: endpoints on the pod network (host-network pods are node
/// traffic, which no policy selects).
pub(super) fn endpoint_pods(e: &Engine) -> Vec<usize> {
    let idx = e.index();
    (0..e.cluster().pods.len())
        .filter(|&p| {
            idx.identity_of(PodId::new(p))
                .is_some_and(|i| !idx.identity(i).host_network)
        })
        .collect()
}

/// Whether some node address is an endpoint pod's address: traffic from
/// that pod then counts as from the node, which its identity does not say.
fn node_address_is_pod_address(e: &Engine) -> bool {
    let idx = e.index();
    idx.all_node_addresses().any(|a| idx.pod_at(a).is_some())
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    base: Option<IdentityId>,
    head: Option<IdentityId>,
    /// Set when pods cannot share a class: the endpoint id.
    solo: Option<u32>,
}

#[derive(Default)]
struct Grouper {
    classes: Vec<Class>,
    ids: HashMap<Key, usize>,
}

impl Grouper {
    fn add(&mut self, key: Key, base: Option<usize>, head: Option<usize>, ep: u32, hit: bool) {
        let next = self.classes.len();
        let i = *self.ids.entry(key).or_insert(next);
        if i == next {
            self.classes.push(Class {
                base,
                head,
                members: Vec::new(),
                affected: false,
            });
        }
        let c = &mut self.classes[i];
        c.members.push(ep);
        c.affected |= hit;
    }
}

/// Groups the pod endpoints of `table` (ids are positions, ascending).
pub(super) fn classes(
    base: &Engine,
    head: &Engine,
    table: &[DiffEndpoint],
    hit: &affected::Affected,
) -> Classes {
    let solo = node_address_is_pod_address(base) || node_address_is_pod_address(head);
    let id = |e: &Engine, p: Option<usize>| p.and_then(|p| e.index().identity_of(PodId::new(p)));
    let mut both = Grouper::default();
    let mut only_base = Grouper::default();
    let mut only_head = Grouper::default();
    let mut all_base = Grouper::default();
    let mut all_head = Grouper::default();
    for (ep, d) in table.iter().enumerate() {
        let DiffEndpoint::Pod { base: b, head: h } = *d else {
            continue;
        };
        let ep = ep as u32;
        let solo = solo.then_some(ep);
        let (bi, hi) = (id(base, b), id(head, h));
        let key = |base, head| Key { base, head, solo };
        match (b, h) {
            (Some(_), Some(_)) => both.add(key(bi, hi), b, h, ep, hit.pod(b, h)),
            (Some(_), None) => only_base.add(key(bi, None), b, None, ep, true),
            (None, Some(_)) => only_head.add(key(None, hi), None, h, ep, true),
            (None, None) => continue,
        }
        if b.is_some() && h.is_some() {
            all_base.add(key(bi, None), b, None, ep, false);
            all_head.add(key(None, hi), None, h, ep, false);
        }
    }
    Classes {
        both: both.classes,
        only_base: only_base.classes,
        only_head: only_head.classes,
        all_base: all_base.classes,
        all_head: all_head.classes,
    }
}

impl Class {
    pub(super) fn group(&self) -> Group<'_> {
        Group {
            base: self.base,
            head: self.head,
            members: std::borrow::Cow::Borrowed(&self.members),
        }
    }

    /// The class split by the nodes its members run on in BASE and HEAD,
    /// for ingress from a node's address (an isolated pod accepts traffic
    /// from its own node).
    pub(super) fn node_groups(
        &self,
        table: &[DiffEndpoint],
        base: &Cluster,
        head: &Cluster,
    ) -> Vec<Group<'_>> {
        let node = |c: &Cluster, p: Option<usize>| p.and_then(|p| c.pods[p].node.clone());
        let mut seen: HashMap<(Option<String>, Option<String>), usize> = HashMap::new();
        let mut out: Vec<Group> = Vec::new();
        for &m in &self.members {
            let DiffEndpoint::Pod { base: b, head: h } = table[m as usize] else {
                continue;
            };
            let k = (node(base, b), node(head, h));
            let next = out.len();
            let i = *seen.entry(k).or_insert(next);
            if i == next {
                out.push(Group {
                    base: b,
                    head: h,
                    members: std::borrow::Cow::Owned(Vec::new()),
                });
            }
            out[i].members.to_mut().push(m);
        }
        out
    }
}
