//! The catalogue of every set and map the compiler emits, in one place:
//! its rendered name, key and data types, whether it is an interval set,
//! and whether removals from it may wait for idle time. The compiler
//! builds its sets from here ([`SetId::set`]), the incremental compiler
//! names the sets it changes by it, and the agent finds the wiring's sets
//! by it ([`WIRING_SETS`]).

use palisade_model::AdminTier;

use crate::ir::{Element, Set, Type};
use crate::Dir;

/// An address family, as set names spell it (`identity4`, `local6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The compiler's per-family arrays are indexed 0 (IPv4) and 1 (IPv6).
    pub fn of_index(i: usize) -> Family {
        if i == 0 {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn of_v4(v4: bool) -> Family {
        if v4 {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn addr(self) -> Type {
        match self {
            Family::V4 => Type::Ipv4,
            Family::V6 => Type::Ipv6,
        }
    }
}

/// One set or map of the compiler's tables. Names are in
/// [`SetId::name`]; the `inet palisade` table holds all but the `Bridge*`
/// ones, which are `bridge palisade`'s ([`crate::compile_bridge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetId {
    /// Interfaces of local pods (the wiring's).
    PodIfaces,
    /// `iifname . saddr` of local pods (the wiring's).
    PodSrc(Family),
    /// Local pods' addresses.
    Local(Family),
    /// Every endpoint pod's address → identity mark.
    Identity(Family),
    /// The node's own addresses.
    OwnNode(Family),
    /// A local pod's address → its NetworkPolicy group.
    Group(Dir, Family),
    /// `group . peer mark`: every port allowed.
    PeerAll(Dir),
    /// `group . peer mark . l4proto . port`.
    PeerPort(Dir),
    /// `group . peer mark . l4proto`: every port of the protocol.
    PeerProto(Dir),
    /// `group . peer mark . l4proto . port range`.
    PeerRange(Dir),
    /// As [`SetId::PeerRange`], for what holds in one family only.
    PeerFamily(Dir, Family),
    /// `group . address range . l4proto . port range` (ipBlocks).
    Cidr(Dir, Family),
    /// `group . l4proto . port range` (rules without peers).
    Any(Dir),
    /// A local pod's address → its admin-tier group.
    TierGroup(Dir, AdminTier, Family),
    /// `group . peer mark . l4proto . port range : verdict`.
    TierPeer(Dir, AdminTier, Family),
    /// `group . address range . l4proto . port range : verdict`.
    TierCidr(Dir, AdminTier, Family),
    /// `l4proto : mark`, every protocol to the policy generation, which
    /// the flow log's reports carry ([`crate::FlowLog`]).
    Generation,
    /// The agent's empty marker set, whose comment records the structure
    /// hash ([`crate::syntax::replace_text`]); never referenced by a rule.
    Structure,
    /// Ports of pod bridges.
    BridgePorts,
    /// `port . MAC . address` bound to a pod.
    BridgePortSrc(Family),
    /// Addresses bound to a pod.
    BridgeBound(Family),
    /// MACs bound to a pod.
    BridgeBoundMacs,
    /// `port . MAC` bound to a pod.
    BridgePortMacs,
    /// `port . MAC . address` of bound IPv6 addresses, as a neighbour
    /// advertisement's target.
    BridgeNdSrc,
    /// Bound IPv6 addresses as a neighbour advertisement's target.
    BridgeNdBound,
}

/// The `inet palisade` sets the wiring fills, and nothing else does.
pub const WIRING_SETS: [&str; 3] = [
    SetId::PodIfaces.name(),
    SetId::PodSrc(Family::V4).name(),
    SetId::PodSrc(Family::V6).name(),
];

/// `group . mark . l4proto . port`.
const PEER_KEY: [Type; 4] = [Type::Mark, Type::Mark, Type::Proto, Type::Port];

impl SetId {
    /// The name nft knows it by. Every name is written out here, so that a
    /// set can be found by grepping for its name.
    pub const fn name(self) -> &'static str {
        use AdminTier::{Admin as A, Baseline as B};
        use Dir::{Egress as E, Ingress as I};
        use Family::{V4, V6};
        use SetId::*;
        match self {
            PodIfaces => "pod_ifaces",
            PodSrc(V4) => "pod_src4",
            PodSrc(V6) => "pod_src6",
            Local(V4) => "local4",
            Local(V6) => "local6",
            Identity(V4) => "identity4",
            Identity(V6) => "identity6",
            OwnNode(V4) => "own_node4",
            OwnNode(V6) => "own_node6",
            Group(E, V4) => "egress_group4",
            Group(E, V6) => "egress_group6",
            Group(I, V4) => "ingress_group4",
            Group(I, V6) => "ingress_group6",
            PeerAll(E) => "egress_peer_all",
            PeerAll(I) => "ingress_peer_all",
            PeerPort(E) => "egress_peer_port",
            PeerPort(I) => "ingress_peer_port",
            PeerProto(E) => "egress_peer_proto",
            PeerProto(I) => "ingress_peer_proto",
            PeerRange(E) => "egress_peer_range",
            PeerRange(I) => "ingress_peer_range",
            PeerFamily(E, V4) => "egress_peer4",
            PeerFamily(E, V6) => "egress_peer6",
            PeerFamily(I, V4) => "ingress_peer4",
            PeerFamily(I, V6) => "ingress_peer6",
            Cidr(E, V4) => "egress_cidr4",
            Cidr(E, V6) => "egress_cidr6",
            Cidr(I, V4) => "ingress_cidr4",
            Cidr(I, V6) => "ingress_cidr6",
            Any(E) => "egress_any",
            Any(I) => "ingress_any",
            TierGroup(E, A, V4) => "egress_admin_group4",
            TierGroup(E, A, V6) => "egress_admin_group6",
            TierGroup(E, B, V4) => "egress_baseline_group4",
            TierGroup(E, B, V6) => "egress_baseline_group6",
            TierGroup(I, A, V4) => "ingress_admin_group4",
            TierGroup(I, A, V6) => "ingress_admin_group6",
            TierGroup(I, B, V4) => "ingress_baseline_group4",
            TierGroup(I, B, V6) => "ingress_baseline_group6",
            TierPeer(E, A, V4) => "egress_admin_peer4",
            TierPeer(E, A, V6) => "egress_admin_peer6",
            TierPeer(E, B, V4) => "egress_baseline_peer4",
            TierPeer(E, B, V6) => "egress_baseline_peer6",
            TierPeer(I, A, V4) => "ingress_admin_peer4",
            TierPeer(I, A, V6) => "ingress_admin_peer6",
            TierPeer(I, B, V4) => "ingress_baseline_peer4",
            TierPeer(I, B, V6) => "ingress_baseline_peer6",
            TierCidr(E, A, V4) => "egress_admin_cidr4",
            TierCidr(E, A, V6) => "egress_admin_cidr6",
            TierCidr(E, B, V4) => "egress_baseline_cidr4",
            TierCidr(E, B, V6) => "egress_baseline_cidr6",
            TierCidr(I, A, V4) => "ingress_admin_cidr4",
            TierCidr(I, A, V6) => "ingress_admin_cidr6",
            TierCidr(I, B, V4) => "ingress_baseline_cidr4",
            TierCidr(I, B, V6) => "ingress_baseline_cidr6",
            Generation => "generation",
            Structure => "agent_structure",
            BridgePorts => "ports",
            BridgePortSrc(V4) => "port_src4",
            BridgePortSrc(V6) => "port_src6",
            BridgeBound(V4) => "bound4",
            BridgeBound(V6) => "bound6",
            BridgeBoundMacs => "bound_macs",
            BridgePortMacs => "port_macs",
            BridgeNdSrc => "nd_src6",
            BridgeNdBound => "nd_bound6",
        }
    }

    /// The types of the key's fields.
    pub fn key(self) -> Vec<Type> {
        use SetId::*;
        match self {
            PodIfaces | BridgePorts => vec![Type::Ifname],
            PodSrc(f) => vec![Type::Ifname, f.addr()],
            Local(f) | Identity(f) | OwnNode(f) | Group(_, f) | TierGroup(_, _, f) => {
                vec![f.addr()]
            }
            PeerAll(_) => vec![Type::Mark, Type::Mark],
            PeerProto(_) => vec![Type::Mark, Type::Mark, Type::Proto],
            PeerPort(_) | PeerRange(_) | PeerFamily(..) | TierPeer(..) => PEER_KEY.to_vec(),
            Cidr(_, f) | TierCidr(_, _, f) => vec![Type::Mark, f.addr(), Type::Proto, Type::Port],
            Any(_) => vec![Type::Mark, Type::Proto, Type::Port],
            Structure => vec![Type::Mark],
            Generation => vec![Type::Proto],
            BridgePortSrc(f) => vec![Type::Ifname, Type::Ether, f.addr()],
            BridgeBound(f) => vec![f.addr()],
            BridgeBoundMacs => vec![Type::Ether],
            BridgePortMacs => vec![Type::Ifname, Type::Ether],
            BridgeNdSrc => vec![Type::Ifname, Type::Ether, Type::NdTarget],
            BridgeNdBound => vec![Type::NdTarget],
        }
    }

    /// `Some` for a map: the type it maps to.
    pub fn data(self) -> Option<Type> {
        use SetId::*;
        match self {
            Identity(_) | Group(..) | TierGroup(..) | Generation => Some(Type::Mark),
            TierPeer(..) | TierCidr(..) => Some(Type::Verdict),
            _ => None,
        }
    }

    /// An interval set: some field holds ranges.
    pub fn interval(self) -> bool {
        use SetId::*;
        matches!(
            self,
            PeerRange(_) | PeerFamily(..) | Cidr(..) | Any(_) | TierPeer(..) | TierCidr(..)
        )
    }

    /// Whether removals may wait for idle time: an interval set whose
    /// elements start with a policy-group id (the kernel takes tens of
    /// milliseconds per removal from a large concatenated interval set, and
    /// an element whose group no pod is in can match no packet).
    pub fn deferrable(self) -> bool {
        self.interval()
    }

    /// Whether the second field of every element is a peer's identity mark
    /// (so an element whose identity is gone can match no packet either).
    pub fn peer_keyed(self) -> bool {
        use SetId::*;
        matches!(
            self,
            PeerAll(_) | PeerPort(_) | PeerProto(_) | PeerRange(_) | PeerFamily(..) | TierPeer(..)
        )
    }

    /// The set's comment in the table.
    pub fn comment(self) -> &'static str {
        match self {
            SetId::BridgePorts => "ports of pod bridges",
            _ => "",
        }
    }

    /// The set holding `elements`, sorted and deduplicated as rendering
    /// expects.
    pub fn set(self, mut elements: Vec<Element>) -> Set {
        elements.sort();
        elements.dedup();
        Set {
            name: self.name().to_string(),
            key: self.key(),
            data: self.data(),
            interval: self.interval(),
            comment: self.comment().to_string(),
            elements,
        }
    }

    /// The sets of the `inet palisade` table, in the order the compiler
    /// emits them; the admin tiers' only when the cluster has a policy of
    /// that tier.
    pub fn inet(admin: bool, baseline: bool) -> Vec<SetId> {
        use SetId::*;
        let mut out = vec![PodIfaces];
        for each in [PodSrc, Local, Identity] {
            out.extend(Family::BOTH.map(each));
        }
        for d in [Dir::Egress, Dir::Ingress] {
            out.extend(Family::BOTH.map(|f| Group(d, f)));
        }
        out.extend(Family::BOTH.map(OwnNode));
        for d in [Dir::Egress, Dir::Ingress] {
            out.extend(allow_sets(d));
        }
        for d in [Dir::Egress, Dir::Ingress] {
            for (on, t) in [(admin, AdminTier::Admin), (baseline, AdminTier::Baseline)] {
                if on {
                    out.extend(tier_sets(d, t));
                }
            }
        }
        out
    }

    /// Every set of both tables.
    pub fn all() -> Vec<SetId> {
        let mut out = SetId::inet(true, true);
        out.push(SetId::Generation);
        out.push(SetId::Structure);
        out.push(SetId::BridgePorts);
        out.extend(Family::BOTH.map(SetId::BridgePortSrc));
        out.extend(Family::BOTH.map(SetId::BridgeBound));
        out.extend([SetId::BridgeBoundMacs, SetId::BridgePortMacs]);
        out.extend([SetId::BridgeNdSrc, SetId::BridgeNdBound]);
        out
    }

    /// The set of this name, if the compiler emits one.
    pub fn from_name(name: &str) -> Option<SetId> {
        SetId::all().into_iter().find(|s| s.name() == name)
    }
}

/// The NetworkPolicy allow sets of one direction, in emission order.
pub fn allow_sets(d: Dir) -> [SetId; 9] {
    use Family::{V4, V6};
    use SetId::*;
    [
        PeerAll(d),
        PeerPort(d),
        PeerProto(d),
        PeerRange(d),
        PeerFamily(d, V4),
        PeerFamily(d, V6),
        Cidr(d, V4),
        Cidr(d, V6),
        Any(d),
    ]
}

/// The sets of one admin tier in one direction, in emission order.
pub fn tier_sets(d: Dir, t: AdminTier) -> [SetId; 6] {
    use Family::{V4, V6};
    use SetId::{TierCidr, TierGroup, TierPeer};
    [
        TierGroup(d, t, V4),
        TierGroup(d, t, V6),
        TierPeer(d, t, V4),
        TierPeer(d, t, V6),
        TierCidr(d, t, V4),
        TierCidr(d, t, V6),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_found_again() {
        let all = SetId::all();
        let names: HashSet<&str> = all.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), all.len());
        for s in all {
            assert_eq!(SetId::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn deferrable_sets_are_the_group_keyed_interval_sets() {
        let names: Vec<&str> = SetId::inet(false, false)
            .into_iter()
            .filter(|s| s.deferrable())
            .map(SetId::name)
            .collect();
        assert_eq!(
            names,
            [
                "egress_peer_range",
                "egress_peer4",
                "egress_peer6",
                "egress_cidr4",
                "egress_cidr6",
                "egress_any",
                "ingress_peer_range",
                "ingress_peer4",
                "ingress_peer6",
                "ingress_cidr4",
                "ingress_cidr6",
                "ingress_any",
            ]
        );
    }
}
