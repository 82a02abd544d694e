//! What policies select: subjects that match nothing, peers that match
//! nothing, named ports nobody defines, peers that mean "everyone", address
//! blocks that hold pods, and namespaces isolated only in part.

use std::collections::BTreeMap;

use palisade_model::{
    AdminPolicy, AdminPort, IpBlock, NamespaceScope, NetworkPolicy, Peer, PortSpec, Protocol,
};

use super::atoms::Atoms;
use super::{finding, path, some_names, Finding, ObjectRef};
use super::{
    ALLOW_ALL_IN_DISGUISE, COVERAGE_GAP, IPBLOCK_CONTAINS_PODS, NAMED_PORT_UNDEFINED,
    PEER_MATCHES_NOTHING, POLICY_SELECTS_NOTHING,
};
use crate::index::{np_selects, PeerMatch};
use crate::{Direction, Engine, IdentityId, MatcherId};

/// TCP ports whose exposure to everyone is a finding (`docs/lint.md`).
pub const SENSITIVE_PORTS: &[(u16, u16, &str)] = &[
    (22, 22, "SSH"),
    (1433, 1433, "SQL Server"),
    (2375, 2376, "Docker API"),
    (2379, 2380, "etcd"),
    (3306, 3306, "MySQL"),
    (5432, 5432, "PostgreSQL"),
    (6379, 6379, "Redis"),
    (6443, 6443, "Kubernetes API"),
    (9200, 9200, "Elasticsearch"),
    (10250, 10250, "kubelet"),
    (11211, 11211, "memcached"),
    (27017, 27017, "MongoDB"),
];

pub(crate) fn np_object(p: &NetworkPolicy) -> ObjectRef {
    ObjectRef {
        kind: "NetworkPolicy".into(),
        namespace: Some(p.namespace.clone()),
        name: p.name.clone(),
    }
}

pub(crate) fn admin_object(p: &AdminPolicy) -> ObjectRef {
    ObjectRef {
        kind: p.kind.clone(),
        namespace: None,
        name: p.name.clone(),
    }
}

pub(crate) fn np_rules(p: &NetworkPolicy, d: Direction) -> &[palisade_model::Rule] {
    match d {
        Direction::Ingress => p.ingress.as_deref(),
        Direction::Egress => p.egress.as_deref(),
    }
    .unwrap_or_default()
}

/// `ns/pod` of every member of these identities.
pub(crate) fn member_names(
    engine: &Engine,
    ids: impl IntoIterator<Item = IdentityId>,
) -> Vec<String> {
    let index = engine.index();
    ids.into_iter()
        .flat_map(|i| index.identity(i).members.iter())
        .map(|m| engine.cluster().pods[m.index()].key())
        .collect()
}

/// Per NetworkPolicy and direction, the endpoint identities it isolates.
pub(crate) fn np_subjects(engine: &Engine) -> Vec<[Vec<IdentityId>; 2]> {
    let mut out = vec![[Vec::new(), Vec::new()]; engine.cluster().policies.len()];
    for (i, id) in engine.index().identities().iter().enumerate() {
        if id.host_network {
            continue;
        }
        for &pi in &id.ingress_policies {
            out[pi][0].push(IdentityId::new(i));
        }
        for &pi in &id.egress_policies {
            out[pi][1].push(IdentityId::new(i));
        }
    }
    out
}

pub(super) fn run(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    let subjects = np_subjects(engine);
    let mut block_pods: BTreeMap<MatcherId, Vec<String>> = BTreeMap::new();
    for (pi, p) in engine.cluster().policies.iter().enumerate() {
        let selects = engine
            .index()
            .identities()
            .iter()
            .any(|id| np_selects(p, id));
        if !selects {
            out.push(finding(
                POLICY_SELECTS_NOTHING,
                np_object(p),
                "spec.podSelector".into(),
                format!("selects no endpoint in namespace {}", p.namespace),
                "change spec.podSelector to the labels of the pods it is meant for, or delete the policy",
            ));
        }
        for (di, d) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let resolved = match d {
                Direction::Ingress => engine.index().policy(pi).ingress.as_deref(),
                Direction::Egress => engine.index().policy(pi).egress.as_deref(),
            }
            .unwrap_or_default();
            for (ri, (rule, rr)) in np_rules(p, d).iter().zip(resolved).enumerate() {
                let peers = rule.peers.iter().flatten();
                let matches = rr.peers.iter().flatten();
                for (j, (peer, m)) in peers.zip(matches).enumerate() {
                    let field = path::peer(d, ri, j);
                    np_peer(engine, p, peer, m, &field, &mut block_pods, out);
                    if let Some(what) = everyone(peer) {
                        if let Some(port) = sensitive(&rule.ports) {
                            out.push(finding(
                                ALLOW_ALL_IN_DISGUISE,
                                np_object(p),
                                field,
                                format!("{what} allows {} on {port}", everyone_verb(d)),
                                "name the peers that need this port (podSelector with namespaceSelector, or a narrower ipBlock)",
                            ));
                        }
                    }
                }
                for (k, port) in rule.ports.iter().flatten().enumerate() {
                    let PortSpec::Named { protocol, name } = port else {
                        continue;
                    };
                    let candidates = match d {
                        Direction::Ingress => subjects[pi][di].clone(),
                        Direction::Egress => pod_candidates(atoms, &rr.peers),
                    };
                    if d == Direction::Ingress && candidates.is_empty() {
                        continue;
                    }
                    if !defines(engine, &candidates, name, Some(*protocol)) {
                        out.push(named_finding(
                            np_object(p),
                            format!("{}.ports[{k}].port", path::rule(d, ri)),
                            d,
                            name,
                            Some(*protocol),
                        ));
                    }
                }
            }
        }
    }
    admin_checks(engine, atoms, out);
    coverage(engine, &subjects, out);
}

fn everyone_verb(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress from everyone",
        Direction::Egress => "egress to everyone",
    }
}

/// What a peer that means "everyone" is, if it is one.
fn everyone(peer: &Peer) -> Option<String> {
    match peer {
        Peer::Pods {
            namespaces: NamespaceScope::Selector(ns),
            pods,
        } if ns.is_everything() && pods.is_everything() => {
            Some("namespaceSelector: {} (every pod of every namespace)".into())
        }
        Peer::IpBlock(IpBlock { cidr, except }) if cidr.prefix_len() == 0 && except.is_empty() => {
            Some(format!("ipBlock {cidr} (every address)"))
        }
        _ => None,
    }
}

/// The first sensitive port a rule's ports include, or "all ports".
fn sensitive(ports: &Option<Vec<PortSpec>>) -> Option<String> {
    let Some(ports) = ports else {
        return Some("all ports".into());
    };
    ports.iter().find_map(|p| match *p {
        PortSpec::AllPorts(Protocol::Tcp) => Some("all TCP ports".into()),
        PortSpec::Range {
            protocol: Protocol::Tcp,
            start,
            end,
        } => SENSITIVE_PORTS
            .iter()
            .find(|&&(a, b, _)| start <= b && a <= end)
            .map(|&(a, _, what)| format!("TCP {} ({what})", a.max(start))),
        _ => None,
    })
}

fn np_peer(
    engine: &Engine,
    p: &NetworkPolicy,
    peer: &Peer,
    m: &PeerMatch,
    field: &str,
    block_pods: &mut BTreeMap<MatcherId, Vec<String>>,
    out: &mut Vec<Finding>,
) {
    match (*m, peer) {
        (PeerMatch::Set(s), Peer::Pods { namespaces, .. }) if engine.index().set(s).is_empty() => {
            let message = match namespaces {
                NamespaceScope::Own(ns) => {
                    format!("podSelector matches no endpoint in namespace {ns}")
                }
                NamespaceScope::Selector(sel)
                    if !engine
                        .cluster()
                        .namespaces
                        .values()
                        .any(|n| sel.matches(&n.labels)) =>
                {
                    "namespaceSelector matches no namespace".into()
                }
                NamespaceScope::Selector(_) => {
                    "matches no endpoint in the namespaces its namespaceSelector selects".into()
                }
            };
            out.push(finding(
                PEER_MATCHES_NOTHING,
                np_object(p),
                field.into(),
                message,
                "change the selectors to the labels of existing pods and namespaces, or remove the peer",
            ));
        }
        (PeerMatch::Addr(a), Peer::IpBlock(b)) => {
            let pods = block_pods.entry(a).or_insert_with(|| pods_in(engine, a));
            if !pods.is_empty() {
                out.push(finding(
                    IPBLOCK_CONTAINS_PODS,
                    np_object(p),
                    format!("{field}.ipBlock"),
                    format!(
                        "ipBlock {b} contains the addresses of {} endpoint pod(s) ({}), which it matches like any address",
                        pods.len(),
                        some_names(pods.clone(), 3)
                    ),
                    "add the pod network to except and select pods with podSelector/namespaceSelector",
                ));
            }
        }
        _ => {}
    }
}

/// The endpoint pods whose address a matcher contains.
fn pods_in(engine: &Engine, m: MatcherId) -> Vec<String> {
    let matcher = engine.index().matcher(m);
    let mut v: Vec<String> = engine
        .index()
        .pod_addresses()
        .filter(|(ip, _)| matcher.contains(ip))
        .map(|(_, p)| engine.cluster().pods[p.index()].key())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The endpoint identities a rule's peers match.
fn pod_candidates(atoms: &Atoms, peers: &Option<Vec<PeerMatch>>) -> Vec<IdentityId> {
    let mut v: Vec<IdentityId> = atoms
        .of_peers(peers)
        .into_iter()
        .filter_map(|a| atoms.identity(a))
        .collect();
    v.dedup();
    v
}

/// Whether some identity declares a container port of that name (and
/// protocol, when given).
fn defines(engine: &Engine, ids: &[IdentityId], name: &str, protocol: Option<Protocol>) -> bool {
    ids.iter().any(|&i| {
        engine
            .index()
            .identity(i)
            .ports
            .iter()
            .any(|c| c.name.as_deref() == Some(name) && protocol.is_none_or(|p| p == c.protocol))
    })
}

fn named_finding(
    object: ObjectRef,
    field: String,
    d: Direction,
    name: &str,
    protocol: Option<Protocol>,
) -> Finding {
    let port = match protocol {
        Some(p) => format!("{name} ({p})"),
        None => name.to_string(),
    };
    let whose = match d {
        Direction::Ingress => "the pods the policy selects",
        Direction::Egress => "the pods the rule's peers match",
    };
    finding(
        NAMED_PORT_UNDEFINED,
        object,
        field,
        format!("named port {port} is defined by none of {whose}, so it matches nothing"),
        format!("name a container port {port} in those pods, or use the port number"),
    )
}

fn admin_checks(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    let index = engine.index();
    for (ai, a) in index.admin().iter().enumerate() {
        let p = &a.policy;
        let subjects: Vec<IdentityId> = index
            .identities()
            .iter()
            .enumerate()
            .filter(|(_, id)| id.admin.contains(&ai) || id.baseline.contains(&ai))
            .map(|(i, _)| IdentityId::new(i))
            .collect();
        if subjects.is_empty() {
            out.push(finding(
                POLICY_SELECTS_NOTHING,
                admin_object(p),
                "spec.subject".into(),
                "subject selects no endpoint".into(),
                "change spec.subject to the labels of the namespaces or pods it is meant for, or delete the policy",
            ));
        }
        let ports_key = if p.kind == "ClusterNetworkPolicy" {
            "protocols"
        } else {
            "ports"
        };
        for d in [Direction::Ingress, Direction::Egress] {
            let (written, resolved) = match d {
                Direction::Ingress => (&p.ingress, &a.ingress),
                Direction::Egress => (&p.egress, &a.egress),
            };
            for (ri, (rule, rr)) in written.iter().zip(resolved).enumerate() {
                for (j, m) in rr.peers.iter().enumerate() {
                    if let PeerMatch::Set(s) = *m {
                        if index.set(s).is_empty() {
                            out.push(finding(
                                PEER_MATCHES_NOTHING,
                                admin_object(p),
                                path::peer(d, ri, j),
                                "matches no endpoint".into(),
                                "change the selectors to the labels of existing pods and namespaces, or remove the peer",
                            ));
                        }
                    }
                }
                for (k, port) in rule.ports.iter().flatten().enumerate() {
                    let AdminPort::Named(name) = port else {
                        continue;
                    };
                    let candidates = match d {
                        Direction::Ingress => subjects.clone(),
                        Direction::Egress => pod_candidates(atoms, &Some(rr.peers.clone())),
                    };
                    if d == Direction::Ingress && candidates.is_empty() {
                        continue;
                    }
                    if !defines(engine, &candidates, name, None) {
                        let field = match ports_key {
                            "ports" => format!("{}.ports[{k}].namedPort", path::rule(d, ri)),
                            _ => format!("{}.{ports_key}[{k}]", path::rule(d, ri)),
                        };
                        out.push(named_finding(admin_object(p), field, d, name, None));
                    }
                }
            }
        }
    }
}

/// Namespaces where some endpoints are isolated in a direction and others
/// are not; reported on the first policy there that isolates some.
fn coverage(engine: &Engine, subjects: &[[Vec<IdentityId>; 2]], out: &mut Vec<Finding>) {
    let index = engine.index();
    for (ns, ids) in index.identities_by_namespace() {
        for (di, d) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let (isolated, open): (Vec<IdentityId>, Vec<IdentityId>) = ids
                .iter()
                .filter(|&&i| !index.identity(i).host_network)
                .partition(|&&i| index.identity(i).plan(d).isolated);
            if isolated.is_empty() || open.is_empty() {
                continue;
            }
            let first = engine
                .cluster()
                .policies
                .iter()
                .enumerate()
                .find(|(pi, p)| p.namespace == ns && !subjects[*pi][di].is_empty());
            let Some((_, p)) = first else { continue };
            let open = member_names(engine, open);
            let isolated = member_names(engine, isolated);
            out.push(finding(
                COVERAGE_GAP,
                np_object(p),
                "spec.podSelector".into(),
                format!(
                    "in namespace {ns}, {} endpoint pod(s) are isolated for {} but {} are not: {}",
                    isolated.len(),
                    d.as_str(),
                    open.len(),
                    some_names(open, 3)
                ),
                format!(
                    "add a default-deny {} policy (podSelector: {{}}) to namespace {ns}, or select the remaining pods explicitly",
                    d.as_str()
                ),
            ));
        }
    }
}
