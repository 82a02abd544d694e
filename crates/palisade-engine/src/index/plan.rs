//! Plans: per identity and direction, the rules that apply to it in
//! evaluation order, flattened for the classifier and the compiler.

use palisade_model::{AdminAction, AdminPort, Cluster, PortSpec, Protocol};

use super::{Identity, PeerMatch, ResolvedAdmin, ResolvedPolicy};
use crate::Direction;

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
    /// [`crate::Index::admin`]), and the rule's position.
    pub owner: usize,
    pub rule: usize,
    pub action: AdminAction,
    pub peers: Option<Vec<PeerMatch>>,
    pub ports: Option<Vec<FlatPort>>,
}

impl FlatRule {
    /// Whether the rule names a port by name, so that what it allows
    /// depends on the destination's container ports.
    pub fn names_ports(&self) -> bool {
        self.ports.iter().flatten().any(|p| {
            matches!(
                p.kind,
                FlatPortKind::Named(..) | FlatPortKind::NamedAnyProtocol(_)
            )
        })
    }
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

impl Identity {
    /// The identity's plan for one direction.
    #[inline]
    pub fn plan(&self, dir: Direction) -> &Plan {
        match dir {
            Direction::Ingress => &self.ingress_plan,
            Direction::Egress => &self.egress_plan,
        }
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

/// What a plan is made from.
pub(super) struct Sources<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) policies: &'a [ResolvedPolicy],
    pub(super) admin: &'a [ResolvedAdmin],
}

impl Sources<'_> {
    /// The admin rules of the listed policies, in order.
    fn admin_rules(
        &self,
        dir: Direction,
        list: &[usize],
        intern: &mut impl FnMut(&str) -> u32,
        out: &mut Vec<FlatRule>,
    ) {
        for &ai in list {
            let a = &self.admin[ai];
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
    }

    pub(super) fn plan(
        &self,
        id: &Identity,
        dir: Direction,
        intern: &mut impl FnMut(&str) -> u32,
    ) -> Plan {
        let mut p = Plan::default();
        if id.host_network {
            return p;
        }
        self.admin_rules(dir, &id.admin, intern, &mut p.admin);
        self.admin_rules(dir, &id.baseline, intern, &mut p.baseline);
        let isolating = match dir {
            Direction::Ingress => &id.ingress_policies,
            Direction::Egress => &id.egress_policies,
        };
        p.isolated = !isolating.is_empty();
        p.isolated_by = isolating
            .iter()
            .map(|&pi| self.cluster.policies[pi].key())
            .collect::<Vec<_>>()
            .join(", ");
        for &pi in isolating {
            let rules = match dir {
                Direction::Ingress => self.policies[pi].ingress.as_deref(),
                Direction::Egress => self.policies[pi].egress.as_deref(),
            };
            let written = match dir {
                Direction::Ingress => self.cluster.policies[pi].ingress.as_deref(),
                Direction::Egress => self.cluster.policies[pi].egress.as_deref(),
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
}
