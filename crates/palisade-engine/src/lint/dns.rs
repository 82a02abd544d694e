//! Egress isolation that blocks DNS, decided by the verdict function on
//! real flows: each endpoint isolated for egress must reach UDP 53 and TCP
//! 53 of one DNS destination. DNS is kube-system's pods labelled
//! `k8s-app=kube-dns`; without those, any kube-system endpoint; with no
//! kube-system endpoint at all, any address (one per address class, where
//! only the subject's egress decides, so the answer is kept per egress
//! plan).

use std::collections::{BTreeMap, HashMap};

use palisade_model::Protocol;

use super::atoms::{Atom, Atoms};
use super::selection::{member_names, np_object};
use super::{finding, some_names, Finding, DNS_BLOCKED};
use crate::{Direction, Endpoint, Engine, IdentityId};

/// What decides egress to an address: the egress and admin policies, and
/// which address families the subject has.
type PlanKey<'a> = (&'a [usize], &'a [usize], (bool, bool));

const DNS_NAMESPACE: &str = "kube-system";
const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// Where DNS is, and how messages name it.
fn targets(engine: &Engine, atoms: &Atoms) -> (Vec<Endpoint>, bool, &'static str) {
    let index = engine.index();
    let system: Vec<&crate::Identity> = index
        .identities()
        .iter()
        .filter(|i| !i.host_network && i.namespace == DNS_NAMESPACE)
        .collect();
    let dns: Vec<&crate::Identity> = system
        .iter()
        .copied()
        .filter(|i| i.labels.get(DNS_LABEL.0).map(String::as_str) == Some(DNS_LABEL.1))
        .collect();
    let pods = |ids: &[&crate::Identity]| -> Vec<Endpoint> {
        ids.iter()
            .map(|i| Endpoint::Pod(i.members[0].index()))
            .collect()
    };
    if !dns.is_empty() {
        return (
            pods(&dns),
            false,
            "the kube-system pods labelled k8s-app=kube-dns",
        );
    }
    if !system.is_empty() {
        return (
            pods(&system),
            false,
            "any kube-system pod (none is labelled k8s-app=kube-dns)",
        );
    }
    let addrs = atoms
        .list
        .iter()
        .filter_map(|a| match *a {
            Atom::Addr(ip) => Some(Endpoint::Ip(ip)),
            Atom::Pod { .. } => None,
        })
        .collect();
    (addrs, true, "any address (kube-system has no endpoint)")
}

fn reaches(engine: &Engine, src: Endpoint, dst: Endpoint) -> bool {
    [Protocol::Udp, Protocol::Tcp].into_iter().all(|proto| {
        engine
            .flow(src, dst, proto, 53)
            .is_ok_and(|f| engine.allowed(&f))
    })
}

pub(super) fn run(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    let index = engine.index();
    let (targets, by_plan, what) = targets(engine, atoms);
    // Only the subject's egress rules decide a flow to an address that is
    // not a pod's, so subjects with the same egress policies share it.
    let mut known: HashMap<PlanKey, bool> = HashMap::new();
    let mut blocked: BTreeMap<usize, Vec<IdentityId>> = BTreeMap::new();
    for (i, id) in index.identities().iter().enumerate() {
        if id.host_network || !id.plan(Direction::Egress).isolated {
            continue;
        }
        let src = Endpoint::Pod(id.members[0].index());
        let ok = if by_plan {
            let families = (id.addr_class.0 != u32::MAX, id.addr_class.1 != u32::MAX);
            *known
                .entry((&id.egress_policies, &id.admin, families))
                .or_insert_with(|| targets.iter().any(|&t| reaches(engine, src, t)))
        } else {
            targets.iter().any(|&t| reaches(engine, src, t))
        };
        if !ok {
            blocked
                .entry(id.egress_policies[0])
                .or_default()
                .push(IdentityId::new(i));
        }
    }
    for (pi, ids) in blocked {
        let names = member_names(engine, ids);
        out.push(finding(
            DNS_BLOCKED,
            np_object(&engine.cluster().policies[pi]),
            "spec.egress".into(),
            format!(
                "isolates {} endpoint pod(s) for egress ({}) that cannot reach DNS: UDP and TCP port 53 of {what}",
                names.len(),
                some_names(names, 3)
            ),
            "allow egress to namespace kube-system pods labelled k8s-app: kube-dns on UDP and TCP port 53",
        ));
    }
}
