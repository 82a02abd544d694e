//! Palisade's dataplane compiler: an [`Engine`] snapshot, seen from one
//! node, becomes one nftables table `inet palisade` that enforces exactly
//! what [`Engine::allowed`] decides. Pure: values in, values out.
//!
//! # Design
//!
//! Per-packet cost is a fixed number of hash and interval lookups,
//! independent of the number of pods and policies. Policies never become
//! rules; they become set elements.
//!
//! - **Hooks.** A `forward` base chain sees pod traffic. A packet whose
//!   `iifname . saddr` is a local pod's, as the node's [`Wiring`] says
//!   (`pod_src4/6`), goes to `from_pod` and meets the *egress* check of its
//!   source; a new connection to a local pod's address (`local4/6`) meets
//!   the *ingress* check of its destination, whatever interface it leaves
//!   on. A same-node pod-to-pod flow meets both; across nodes the source
//!   node checks egress and the destination node ingress.
//! - **Anti-spoofing, fail closed, then conntrack.** The `pod_src` lookup
//!   is also the anti-spoofing check; anything else from a pod interface
//!   (`pod_ifaces`), and a local pod's address from any other interface (a
//!   pod whose interface is not known yet), is dropped before conntrack:
//!   conntrack finds a packet's entry by addresses, protocol and ports,
//!   not by interface, so a pod sending exactly the tuple of another pod's
//!   connection would otherwise ride that entry. IPv6 link-local and
//!   unspecified sources are exempt (the kernel never forwards them), and
//!   neighbour discovery with hop limit 255 (bridged, never routed) is
//!   accepted first. Then `ct state established,related accept` and `ct
//!   state invalid drop`: only the first packet of a connection meets
//!   policy; an ICMP error belongs to a connection (`related`) or is
//!   invalid. A new TCP connection must start with a SYN (`tcp flags &
//!   (fin|syn|rst|ack) != syn` with `ct state new` is dropped): conntrack
//!   would otherwise take an ACK it has no entry for as an unknown
//!   connection's middle and track it as new (`nf_conntrack_tcp_loose`),
//!   so that segments of no connection reached pods. Denied first packets
//!   are dropped before their entry is confirmed: they never fill the
//!   conntrack table. The same checks guard the `input` hook. Fragments
//!   meet all of this reassembled: conntrack's defragmentation runs before
//!   the table's hooks. Bridged pods' ports are checked in a second table
//!   ([`compile_bridge`]), which also keeps pods from announcing addresses
//!   that are not theirs (ARP, neighbour advertisements) and from sending
//!   router messages.
//! - **First packets** walk at most three chains per direction, with one
//!   lookup each on the usual path: the local pod's group (written into `ct
//!   mark` and jumped on in one rule: a miss means not isolated and ends the
//!   rule), the peer's identity (into `meta mark`; a pod peer goes to
//!   `{dir}_np_pod`, anything else to `{dir}_np_addr`), then the allow sets.
//! - **Three stages per direction**, as the engine evaluates them: the
//!   admin tier (AdminNetworkPolicy, and ClusterNetworkPolicy's `Admin`
//!   tier), NetworkPolicy, the baseline tier (BaselineAdminNetworkPolicy,
//!   `Baseline`). The direction's chain (`egress`, `ingress`) runs the admin
//!   stage, then `goto {dir}_np` when NetworkPolicy isolates the pod (its
//!   verdict is final: `return` allows the direction, `drop` denies), else
//!   the baseline stage; falling off the end allows. `{dir}_np` splits into
//!   `{dir}_np_pod` (identity-keyed sets, then the address checks) and
//!   `{dir}_np_addr` (own node, ipBlocks, rules without peers, drop). A tier's stage is in
//!   the chains only when the cluster has a policy of that tier.
//! - **Peer identities.** Every endpoint pod of the cluster (not host-network)
//!   maps by address to its identity mark in `meta mark` (`identity4`,
//!   `identity6`); 0 means "not a pod". Marks are dense or content-derived
//!   ([`Numbering`]).
//! - **Policy groups.** Each stage looks the local pod's group up by address
//!   into `ct mark`. NetworkPolicy groups (`egress_group4`,
//!   `ingress_group6`...) are keyed by the exact list of NetworkPolicies that
//!   isolate the pod (for ingress, also by how the named ports those
//!   policies use resolve on it: named ports of ingress rules resolve on the
//!   selected pod); a pod in no group is not isolated. Tier groups
//!   (`egress_admin_group4`, `ingress_baseline_group6`...) are keyed by the
//!   ordered list of tier rules that select the pod (and, for ingress, the
//!   named ports they use, resolved on it).
//! - **NetworkPolicy allow sets** (allows are a union: order never matters):
//!   - `*_peer_all` (hash): `group . peer mark` where every TCP, UDP and
//!     SCTP port is allowed (a rule without ports): one element, not three;
//!   - `*_peer_port` (hash): `group . peer mark . l4proto . port`, for peers
//!     given by selectors (and named ports, resolved per identity: only a
//!     pod destination can match one); `*_peer_proto` (hash): `group . peer
//!     mark . l4proto` where every port of the protocol is allowed;
//!     `*_peer_range` (interval): true port ranges; `*_peer4/6` (interval):
//!     what holds in one family only (a named port of a pod inside an
//!     `ipBlock`). Hash sets load several times faster than interval sets
//!     and their lookups cost the same at any size;
//!   - `*_cidr4/6`: `group . address range . l4proto . port range`, for
//!     `ipBlock` peers: `cidr` minus `except` as disjoint ranges; ipBlocks
//!     match pod addresses too, as the API requires;
//!   - `*_any`: `group . l4proto . port range`, for rules without peers.
//!
//!   A rule without ports allows every TCP, UDP and SCTP port. Interval
//!   elements are merged into disjoint boxes, as interval sets require.
//! - **Tier verdict maps** (first match: order matters). For each tier
//!   group, the ordered rules are resolved at compile time into *disjoint*
//!   keys, each mapped to the action of the earliest rule covering it:
//!   Allow → `return` (this direction is allowed), Deny → `drop`; Pass
//!   shadows later rules and then maps to nothing, so the flow goes on to
//!   the next stage, exactly as when no rule matches. One lookup decides,
//!   whatever the number of rules:
//!   - `*_{tier}_peer4/6`: `group . peer mark . l4proto . port range :
//!     verdict` for pod peers. Which rules match a pod is a property of its
//!     identity: its selectors and which address matchers (`networks`,
//!     `nodes`) contain its address of that family;
//!   - `*_{tier}_cidr4/6`: `group . address range . l4proto . port range :
//!     verdict` for every other address (`meta mark 0`), from the address
//!     matchers: the address axis is cut at every matcher edge and each
//!     slice resolved over ports.
//!
//!   An admin `namedPort` matches the destination's container port of that
//!   name whatever its protocol: resolved on the peer for egress, on the
//!   local pod (hence the group key) for ingress, never on a non-pod.
//! - **Own node.** An ingress-isolated pod accepts traffic from its node's
//!   addresses (`own_node4/6`), in the NetworkPolicy stage only (the admin
//!   tiers have no such exception); node-originated traffic never reaches
//!   the forward hook anyway.
//! - **Host-network pods** are node traffic: they are neither subjects nor
//!   members of any selector (their addresses are absent from `identity4/6`),
//!   though `ipBlock`s, `networks` and `nodes` still match their addresses.
//! - **Atomic replacement.** [`Ruleset::to_nft_replace_text`] creates,
//!   deletes and re-adds the table in one transaction: `flush table` would keep
//!   old set elements.
//!
//! The marks are scratch registers for the first packet of a connection.
//! An allowed new connection leaves with the bits of its packet mark in
//! [`Options::kept_mark`] (by default kube-proxy's masquerade bit) as it
//! came, every other bit and its `ct mark` at 0; established packets are
//! not touched (marks.rs).
//!
//! Not supported: ICMP and other protocols are not matched by any allow
//! (denied to isolated pods) nor by any tier rule (the API leaves them
//! undefined). In the tier maps (and for NetworkPolicy named ports behind an
//! `ipBlock`), which address matchers contain a pod peer is decided on its
//! first address of each family, as the engine's identities are: a pod with
//! several addresses of one family that different matchers contain is
//! enforced as its first address.

#![forbid(unsafe_code)]

mod chains;
mod compile;
pub mod delta;
mod elements;
pub mod encode;
pub mod incr;
mod ir;
mod marks;
mod numbering;
mod peers;
pub mod schema;
mod structure;
pub mod syntax;
mod tier;
mod wiring;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chains::*;
use compile::*;
pub use compile::{compile_numbered, compile_with, generation_elements};
use elements::*;
pub use marks::KeptMark;
use marks::*;
use peers::*;

pub use delta::{ElementDelta, ElementOp, SetDelta};
pub use ir::{
    Chain, Element, Expr, Hook, MetaKey, Op, Rule, Ruleset, Set, Stmt, Type, Value, Verdict,
    BRIDGE_FAMILY, FAMILY, TABLE,
};
pub use schema::{Family, SetId, WIRING_SETS};
pub use structure::{same_structure, structure_hash};
pub use syntax::{element_lines, mac_text, parse_mac, ELEMENT_CHUNK};

pub use numbering::{Fnv, Numbering};
pub use wiring::{bridge_text, compile_bridge, BridgeWiring, Mac, Wiring};

use palisade_engine::index::{AddressMatcher, PeerMatch, ResolvedRule};
use palisade_engine::{Direction, Engine, IdentityId, PodId};
use palisade_model::{AdminTier, IpBlock, Pod, PortSpec, Protocol};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The named node is not in the cluster and no pod runs on it.
    #[error("node {0:?} is neither a Node object nor any pod's node")]
    UnknownNode(String),
    #[error("kept mark bits: {0}")]
    KeptMark(String),
}

/// Which pods are local to the node the ruleset is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// Every pod (a single-node view).
    All,
    /// Pods whose `spec.nodeName` is this node; its addresses are "own node".
    Node(String),
    /// Exactly these pods (indexes into `Cluster::pods`), with no own-node
    /// addresses.
    Pods(Vec<usize>),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub local: Local,
    /// How the node reaches its local pods (learned from the node).
    pub wiring: Wiring,
    /// Report decisions to the agent's flow log; `None`: the kernel
    /// reports nothing.
    pub flow_log: Option<FlowLog>,
    /// The packet mark's bits that an allowed new connection leaves with
    /// as it came (marks.rs).
    pub kept_mark: KeptMark,
}

/// What the dataplane reports to the agent's flow log, over NFLOG.
///
/// Every denied new connection attempt is reported, and a sample of the
/// allowed ones, each once per direction where it is decided (the first
/// packet only: established traffic never meets a log rule). A report
/// carries, in its packet mark, the policy generation it was decided by:
/// the generation map changes in the same transaction as the policy, so a
/// report is never attributed to another version than the one that
/// decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLog {
    /// The NFLOG group the agent listens on.
    pub group: u16,
    /// Allowed new connections reported, in millionths
    /// ([`FlowLog::SAMPLE_ALL`]: every one; 0: denials only).
    pub sample_ppm: u32,
    /// The agent's policy generation (its low 32 bits).
    pub generation: u32,
}

impl FlowLog {
    pub const SAMPLE_ALL: u32 = 1_000_000;
}

/// The log prefix of a report: what was decided, in which direction.
pub fn log_prefix(allowed: bool, dir: Dir) -> &'static str {
    match (allowed, dir) {
        (true, Dir::Egress) => "palisade allow egress",
        (true, Dir::Ingress) => "palisade allow ingress",
        (false, Dir::Egress) => "palisade deny egress",
        (false, Dir::Ingress) => "palisade deny ingress",
    }
}

/// [`log_prefix`] read back: (allowed, direction).
pub fn parse_log_prefix(prefix: &str) -> Option<(bool, Dir)> {
    [true, false]
        .into_iter()
        .flat_map(|a| [(a, Dir::Egress), (a, Dir::Ingress)])
        .find(|&(a, d)| log_prefix(a, d) == prefix)
}

/// The lab's node-side interface name of a pod: `pl` and 12 hex digits of
/// a hash of `namespace/name` (Linux allows 15 characters). Only the lab
/// names interfaces so; the compiler takes what the node says
/// ([`Wiring`]).
pub fn interface_name(pod: &Pod) -> String {
    // FNV-1a, 64 bits: stable across releases and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod.namespace.bytes().chain([b'/']).chain(pod.name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("pl{:012x}", h & 0xffff_ffff_ffff)
}

/// The local endpoint pods that policy applies to (indexes into
/// `Cluster::pods`): not host-network, on the node.
pub fn local_pods(engine: &Engine, local: &Local) -> Vec<usize> {
    let cluster = engine.cluster();
    let idx = engine.index();
    let is_local = |i: usize| -> bool {
        match local {
            Local::All => true,
            Local::Node(n) => cluster.pods[i].node.as_deref() == Some(n.as_str()),
            Local::Pods(list) => list.contains(&i),
        }
    };
    (0..cluster.pods.len())
        .filter(|&i| {
            idx.identity_of(PodId::new(i))
                .is_some_and(|id| idx.identity(id).has_address())
                && !cluster.pods[i].host_network
                && is_local(i)
        })
        .collect()
}

/// Routed pods, one interface each, named by `name`: the lab's own wiring
/// (and the golden files').
pub fn named_wiring(engine: &Engine, local: &Local, name: impl Fn(&Pod) -> String) -> Wiring {
    let pods = &engine.cluster().pods;
    Wiring::routed(
        local_pods(engine, local)
            .into_iter()
            .map(|i| (name(&pods[i]), pods[i].ips.as_slice())),
    )
}

/// Compiles the ruleset of one node: pods whose `spec.nodeName` is `node`,
/// or every pod when `node` is `None`, wired as `wiring` says.
pub fn compile(
    engine: &Engine,
    node: Option<&str>,
    wiring: &Wiring,
) -> Result<Ruleset, CompileError> {
    let local = match node {
        None => Local::All,
        Some(n) => {
            let c = engine.cluster();
            if !c.nodes.iter().any(|x| x.name == n)
                && !c.pods.iter().any(|p| p.node.as_deref() == Some(n))
            {
                return Err(CompileError::UnknownNode(n.to_string()));
            }
            Local::Node(n.to_string())
        }
    };
    compile_with(
        engine,
        &Options {
            local,
            wiring: wiring.clone(),
            flow_log: None,
            kept_mark: KeptMark::default(),
        },
    )
}

/// A direction of policy, as set and chain names spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    Egress,
    Ingress,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Egress => "egress",
            Dir::Ingress => "ingress",
        }
    }

    pub fn of(d: Direction) -> Dir {
        match d {
            Direction::Egress => Dir::Egress,
            Direction::Ingress => Dir::Ingress,
        }
    }

    fn engine(self) -> Direction {
        match self {
            Dir::Egress => Direction::Egress,
            Dir::Ingress => Direction::Ingress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_minus_except() {
        let b = IpBlock {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec![
                "10.1.0.0/16".parse().unwrap(),
                "10.0.0.0/24".parse().unwrap(),
            ],
        };
        let (v4, r) = block_ranges(&b);
        assert!(v4);
        let ip = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(
            r,
            vec![
                (ip("10.0.1.0"), ip("10.0.255.255")),
                (ip("10.2.0.0"), ip("10.255.255.255"))
            ]
        );
        let all: IpBlock = IpBlock {
            cidr: "::/0".parse().unwrap(),
            except: vec!["::/0".parse().unwrap()],
        };
        assert_eq!(block_ranges(&all).1, vec![]);
    }

    #[test]
    fn boxes_become_disjoint() {
        let b = disjoint_boxes(&[(0, 99, 80, 80), (50, 149, 80, 90)]);
        assert_eq!(
            b,
            vec![
                (0, 49, vec![(80, 80)]),
                (50, 99, vec![(80, 90)]),
                (100, 149, vec![(80, 90)])
            ]
            .into_iter()
            .fold(Vec::new(), |mut acc: Vec<Slice>, x| {
                match acc.last_mut() {
                    Some(l) if l.1 + 1 == x.0 && l.2 == x.2 => l.1 = x.1,
                    _ => acc.push(x),
                }
                acc
            })
        );
    }
}
