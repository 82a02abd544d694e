//! Which endpoints present in both versions can see a verdict change.
//!
//! A flow's verdict is its source's egress AND its destination's ingress.
//! One direction is decided by the subject pod's own facts (namespace and
//! its labels, labels, node), the policies whose subject selects it
//! (NetworkPolicies that isolate it in that direction, admin policies in
//! their tier order), the rules of those policies, and the peer's facts
//! (its labels, namespace labels, address, container ports for named
//! ports) or, for an outside peer, its address. Nodes enter only through
//! an isolated pod's own-node ingress and admin `nodes` peers. So when
//!
//! - neither endpoint's pod, namespace labels or presence changed, and
//! - no NetworkPolicy or admin policy that selects either endpoint (as its
//!   subject, in either version) differs between the versions, and
//! - the nodes are the same,
//!
//! every input of both directions is the same in BASE and HEAD and so is
//! the verdict, whatever else changed: a pair is unchanged by construction
//! unless one of its endpoints is *affected* here. A policy that selects
//! neither endpoint cannot decide either direction, and admin precedence
//! (priority, then name) only orders the policies that select the subject.
//! When the nodes differ, every endpoint is affected. The property test
//! `diff_reports_exactly_the_flows_whose_verdict_changed` checks this
//! against every pair.

use std::collections::HashMap;

use palisade_model::{AdminPolicy, Cluster, NetworkPolicy};

use crate::{Engine, PodId};

pub(super) struct Affected<'a> {
    base: &'a Engine,
    head: &'a Engine,
    everything: bool,
    /// Per identity of BASE / HEAD: selected by a policy that differs.
    base_ids: Vec<bool>,
    head_ids: Vec<bool>,
}

fn changed_policies(a: &Cluster, b: &Cluster) -> Vec<bool> {
    let other: HashMap<(&str, &str), &NetworkPolicy> = b
        .policies
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    a.policies
        .iter()
        .map(|p| other.get(&(p.namespace.as_str(), p.name.as_str())) != Some(&p))
        .collect()
}

/// Per entry of `e`'s `Index::admin`: differs in (or is absent from) `other`.
fn changed_admin(e: &Engine, other: &Cluster) -> Vec<bool> {
    let theirs: HashMap<(&str, &str), &AdminPolicy> = other
        .admin_policies
        .iter()
        .map(|p| ((p.kind.as_str(), p.name.as_str()), p))
        .collect();
    e.index()
        .admin()
        .iter()
        .map(|a| theirs.get(&(a.policy.kind.as_str(), a.policy.name.as_str())) != Some(&&a.policy))
        .collect()
}

/// Per identity of `e`: selected (as a subject) by a changed policy.
fn selected_by_changed(e: &Engine, other: &Cluster) -> Vec<bool> {
    let np = changed_policies(e.cluster(), other);
    let admin = changed_admin(e, other);
    e.index()
        .identities()
        .iter()
        .map(|id| {
            id.ingress_policies
                .iter()
                .chain(&id.egress_policies)
                .any(|&p| np[p])
                || id.admin.iter().chain(&id.baseline).any(|&a| admin[a])
        })
        .collect()
}

fn sorted_nodes(c: &Cluster) -> Vec<&palisade_model::Node> {
    let mut n: Vec<_> = c.nodes.iter().collect();
    n.sort_by(|a, b| a.name.cmp(&b.name));
    n
}

impl<'a> Affected<'a> {
    pub(super) fn new(base: &'a Engine, head: &'a Engine) -> Affected<'a> {
        Affected {
            base,
            head,
            everything: sorted_nodes(base.cluster()) != sorted_nodes(head.cluster()),
            base_ids: selected_by_changed(base, head.cluster()),
            head_ids: selected_by_changed(head, base.cluster()),
        }
    }

    /// Whether the endpoint at BASE pod `b` and HEAD pod `h` is affected;
    /// an endpoint present in one version only always is.
    pub(super) fn pod(&self, b: Option<usize>, h: Option<usize>) -> bool {
        let (Some(b), Some(h)) = (b, h) else {
            return true;
        };
        if self.everything {
            return true;
        }
        let (bc, hc) = (self.base.cluster(), self.head.cluster());
        let (bp, hp) = (&bc.pods[b], &hc.pods[h]);
        let ns = |c: &'a Cluster| c.namespaces.get(&bp.namespace).map(|n| &n.labels);
        let selected = |e: &Engine, ids: &[bool], p: usize| {
            e.index()
                .identity_of(PodId::new(p))
                .is_some_and(|i| ids[i.index()])
        };
        bp != hp
            || ns(bc) != ns(hc)
            || selected(self.base, &self.base_ids, b)
            || selected(self.head, &self.head_ids, h)
    }
}
