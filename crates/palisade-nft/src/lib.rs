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
//!   policy. The same checks guard the `input` hook. Bridged pods' ports
//!   are checked in a second table ([`compile_bridge`]).
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
//! The marks are scratch registers for the first packet of a connection:
//! `ct mark` and `meta mark` of pod traffic are owned by this table.
//!
//! Not supported: ICMP and other protocols are not matched by any allow
//! (denied to isolated pods) nor by any tier rule (the API leaves them
//! undefined). In the tier maps (and for NetworkPolicy named ports behind an
//! `ipBlock`), which address matchers contain a pod peer is decided on its
//! first address of each family, as the engine's identities are: a pod with
//! several addresses of one family that different matchers contain is
//! enforced as its first address.

#![forbid(unsafe_code)]

pub mod incr;
mod ir;
mod numbering;
mod tier;
mod wiring;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use ir::{
    element_lines, mac_text, parse_mac, Chain, Element, Expr, Hook, MetaKey, Op, Rule, Ruleset,
    Set, Stmt, Type, Value, Verdict, BRIDGE_FAMILY, ELEMENT_CHUNK, FAMILY, TABLE,
};

pub use numbering::{Fnv, Numbering};
pub use wiring::{bridge_text, compile_bridge, BridgeWiring, Mac, Wiring, WIRING_SETS};

use palisade_engine::index::{AddressMatcher, PeerMatch, ResolvedRule};
use palisade_engine::{Direction, Engine};
use palisade_model::{AdminTier, IpBlock, Pod, PortSpec, Protocol};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// The named node is not in the cluster and no pod runs on it.
    UnknownNode(String),
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::UnknownNode(n) => {
                write!(f, "node {n:?} is neither a Node object nor any pod's node")
            }
        }
    }
}

impl std::error::Error for CompileError {}

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
        .filter(|&i| idx.pod_identity[i].is_some() && !cluster.pods[i].host_network && is_local(i))
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
        },
    )
}

const ALL_PROTOCOLS: [Protocol; 3] = Protocol::ALL;

/// A port item after resolution: protocol and inclusive range.
type PortItem = (u8, u16, u16);

/// Every port of every protocol: what a rule without ports allows.
fn every_port() -> Vec<PortItem> {
    ALL_PROTOCOLS
        .iter()
        .map(|p| (p.number(), 0, u16::MAX))
        .collect()
}

fn port_items(ports: &Option<Vec<PortSpec>>, holder: Option<&Pod>) -> Vec<PortItem> {
    match ports {
        None => every_port(),
        Some(list) => list
            .iter()
            .filter_map(|s| match s {
                PortSpec::AllPorts(p) => Some((p.number(), 0, u16::MAX)),
                PortSpec::Range {
                    protocol,
                    start,
                    end,
                } => Some((protocol.number(), *start, *end)),
                PortSpec::Named { protocol, name } => holder
                    .and_then(|h| h.named_port(name, *protocol))
                    .map(|p| (protocol.number(), p, p)),
            })
            .collect(),
    }
}

fn has_named(ports: &Option<Vec<PortSpec>>) -> bool {
    ports
        .iter()
        .flatten()
        .any(|s| matches!(s, PortSpec::Named { .. }))
}

/// Merges inclusive ranges into sorted disjoint ones.
/// An inclusive range of addresses or ports, widened to u128.
type Span = (u128, u128);
/// An address range × a port range.
type Box4 = (u128, u128, u128, u128);
/// An address range and the port ranges allowed over all of it.
type Slice = (u128, u128, Vec<Span>);
/// (isolating policies, resolved named ports) → (group id, members).
type IngressGroups = BTreeMap<(Vec<usize>, Vec<Option<u16>>), (u32, usize)>;

fn merge_ranges(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (a, b) in v {
        if let Some(last) = out.last_mut() {
            if a <= last.1.saturating_add(1) {
                last.1 = last.1.max(b);
                continue;
            }
        }
        out.push((a, b));
    }
    out
}

fn net_range(n: &palisade_model::IpNet) -> (bool, u128, u128) {
    match n {
        palisade_model::IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        palisade_model::IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// `cidr` minus every `except`, as disjoint ranges (and the family).
fn block_ranges(b: &IpBlock) -> (bool, Vec<(u128, u128)>) {
    let (v4, lo, hi) = net_range(&b.cidr);
    let excepts = merge_ranges(
        b.except
            .iter()
            .map(net_range)
            .filter(|(f, _, _)| *f == v4)
            .map(|(_, a, b)| (a, b))
            .collect(),
    );
    let mut out = Vec::new();
    let mut cur = lo;
    let mut done = false;
    for (a, b) in excepts {
        let (a, b) = (a.max(lo), b.min(hi));
        if a > b {
            continue;
        }
        if a > cur {
            out.push((cur, a - 1));
        }
        if b == u128::MAX || b >= hi {
            done = true;
            break;
        }
        cur = cur.max(b + 1);
    }
    if !done && cur <= hi {
        out.push((cur, hi));
    }
    (v4, out)
}

fn addr_value(v4: bool, a: u128, b: u128) -> Value {
    if v4 {
        Value::Ipv4Range(Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32))
    } else {
        Value::Ipv6Range(Ipv6Addr::from(a), Ipv6Addr::from(b))
    }
}

/// (group, peer mark, proto) → allowed port ranges.
type PeerAllows = BTreeMap<(u32, u32, u8), Vec<Span>>;

/// Allowed elements of one direction, before rendering.
#[derive(Default)]
struct Allows {
    /// (group, peer mark, proto) → port ranges; per family (0: v4, 1: v6).
    peer: [PeerAllows; 2],
    /// (group, proto) → boxes (address range, port range); per family.
    cidr: [BTreeMap<(u32, u8), Vec<Box4>>; 2],
    /// (group, proto) → port ranges.
    any: BTreeMap<(u32, u8), Vec<(u128, u128)>>,
}

impl Allows {
    fn peer(&mut self, fam: usize, g: u32, mark: u32, (p, a, b): PortItem) {
        self.peer[fam]
            .entry((g, mark, p))
            .or_default()
            .push((a.into(), b.into()));
    }
}

/// Which families an address matcher contains a pod's addresses in.
fn matcher_families(m: &AddressMatcher, pod: &Pod) -> [bool; 2] {
    let first = |v4: bool| pod.ips.iter().copied().find(|ip| ip.is_ipv4() == v4);
    [
        first(true).is_some_and(|a| m.contains(&a)),
        first(false).is_some_and(|a| m.contains(&a)),
    ]
}

/// Disjoint boxes from possibly overlapping (address range × port range)
/// boxes: cut the address axis at every box edge, union the port ranges over
/// each slice, then join adjacent slices with the same ports.
fn disjoint_boxes(boxes: &[Box4]) -> Vec<Slice> {
    let mut points: BTreeSet<u128> = BTreeSet::new();
    for &(a, b, _, _) in boxes {
        points.insert(a);
        if b < u128::MAX {
            points.insert(b + 1);
        }
    }
    let points: Vec<u128> = points.into_iter().collect();
    let mut slices: Vec<Slice> = Vec::new();
    for (i, &start) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(u128::MAX, |n| n - 1);
        let ports = merge_ranges(
            boxes
                .iter()
                .filter(|&&(a, b, _, _)| a <= start && end <= b)
                .map(|&(_, _, p, q)| (p, q))
                .collect(),
        );
        if ports.is_empty() {
            continue;
        }
        match slices.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(start) && last.2 == ports => {
                last.1 = end;
            }
            _ => slices.push((start, end, ports)),
        }
    }
    slices
}

fn port_value(a: u128, b: u128) -> Value {
    Value::PortRange(a as u16, b as u16)
}

fn proto_value(p: u8) -> Value {
    Value::Proto(p)
}

fn sorted(mut v: Vec<Element>) -> Vec<Element> {
    v.sort();
    v.dedup();
    v
}

fn set(
    name: &str,
    key: &[Type],
    data: Option<Type>,
    interval: bool,
    elements: Vec<Element>,
) -> Set {
    Set {
        name: name.to_string(),
        key: key.to_vec(),
        data,
        interval,
        comment: String::new(),
        elements: sorted(elements),
    }
}

/// The peer allows, split by what the kernel looks them up with: most
/// elements hold for both families and one port (`{dir}_peer_port`, a hash
/// set) or every port of a protocol (`{dir}_peer_proto`, hash); true port
/// ranges go to the interval set `{dir}_peer_range`; what holds for one
/// family only (a named port of a pod inside an `ipBlock`) to
/// `{dir}_peer4` / `{dir}_peer6`. Hash sets load faster than interval sets
/// and their lookup cost does not grow with their size.
fn peer_sets(dir: &str, peer: &[PeerAllows; 2]) -> Vec<Set> {
    let key = |g: u32, mark: u32, p: u8| vec![Value::Mark(g), Value::Mark(mark), proto_value(p)];
    let (mut by_port, mut by_proto, mut by_range) = (Vec::new(), Vec::new(), Vec::new());
    let mut fam_only = [Vec::new(), Vec::new()];
    let mut by_peer = Vec::new();
    let keys: BTreeSet<(u32, u32, u8)> = peer[0].keys().chain(peer[1].keys()).copied().collect();
    let merged: BTreeMap<(u32, u32, u8), [Vec<Span>; 2]> = keys
        .iter()
        .map(|k| {
            let r = [0, 1].map(|f| merge_ranges(peer[f].get(k).cloned().unwrap_or_default()));
            (*k, r)
        })
        .collect();
    // Peers allowed every port of every protocol (a rule without ports):
    // one element instead of one per protocol.
    let every = vec![(0, u128::from(u16::MAX))];
    let all_protocols = |g: u32, mark: u32| {
        ALL_PROTOCOLS.iter().all(|p| {
            merged
                .get(&(g, mark, p.number()))
                .is_some_and(|[r4, r6]| *r4 == every && *r6 == every)
        })
    };
    for (&(g, mark, p), [r4, r6]) in &merged {
        if all_protocols(g, mark) {
            if p == ALL_PROTOCOLS[0].number() {
                by_peer.push(Element {
                    key: vec![Value::Mark(g), Value::Mark(mark)],
                    data: None,
                });
            }
            continue;
        }
        if r4 == r6 {
            for &(lo, hi) in r4 {
                let mut e = key(g, mark, p);
                if lo == 0 && hi == u128::from(u16::MAX) {
                    by_proto.push(Element { key: e, data: None });
                } else if lo == hi {
                    e.push(Value::Port(lo as u16));
                    by_port.push(Element { key: e, data: None });
                } else {
                    e.push(port_value(lo, hi));
                    by_range.push(Element { key: e, data: None });
                }
            }
        } else {
            for (fam, ranges) in [r4, r6].into_iter().enumerate() {
                for &(lo, hi) in ranges {
                    let mut e = key(g, mark, p);
                    e.push(port_value(lo, hi));
                    fam_only[fam].push(Element { key: e, data: None });
                }
            }
        }
    }
    let [only4, only6] = fam_only;
    let full = [Type::Mark, Type::Mark, Type::Proto, Type::Port];
    vec![
        set(
            &format!("{dir}_peer_all"),
            &[Type::Mark, Type::Mark],
            None,
            false,
            by_peer,
        ),
        set(&format!("{dir}_peer_port"), &full, None, false, by_port),
        set(
            &format!("{dir}_peer_proto"),
            &[Type::Mark, Type::Mark, Type::Proto],
            None,
            false,
            by_proto,
        ),
        set(&format!("{dir}_peer_range"), &full, None, true, by_range),
        set(&format!("{dir}_peer4"), &full, None, true, only4),
        set(&format!("{dir}_peer6"), &full, None, true, only6),
    ]
}

fn allow_sets(dir: &str, a: Allows) -> Vec<Set> {
    let mut sets = peer_sets(dir, &a.peer);
    for (fam, addr_t) in [(0usize, Type::Ipv4), (1, Type::Ipv6)] {
        let suffix = if fam == 0 { "4" } else { "6" };
        let mut elems = Vec::new();
        for (&(g, p), boxes) in &a.cidr[fam] {
            for (lo, hi, ports) in disjoint_boxes(boxes) {
                for (plo, phi) in ports {
                    elems.push(Element {
                        key: vec![
                            Value::Mark(g),
                            addr_value(fam == 0, lo, hi),
                            proto_value(p),
                            port_value(plo, phi),
                        ],
                        data: None,
                    });
                }
            }
        }
        sets.push(set(
            &format!("{dir}_cidr{suffix}"),
            &[Type::Mark, addr_t, Type::Proto, Type::Port],
            None,
            true,
            elems,
        ));
    }
    let mut elems = Vec::new();
    for (&(g, p), ranges) in &a.any {
        for (lo, hi) in merge_ranges(ranges.clone()) {
            elems.push(Element {
                key: vec![Value::Mark(g), proto_value(p), port_value(lo, hi)],
                data: None,
            });
        }
    }
    sets.push(set(
        &format!("{dir}_any"),
        &[Type::Mark, Type::Proto, Type::Port],
        None,
        true,
        elems,
    ));
    sets
}

/// The verdict maps of one admin tier in one direction, named
/// `{dir}_{tier}_group4/6`, `{dir}_{tier}_peer4/6`, `{dir}_{tier}_cidr4/6`.
fn tier_sets(
    dir: &str,
    tier: tier::Tier,
    c: tier::Compiled,
    groups: [Vec<Element>; 2],
) -> Vec<Set> {
    let t = tier.name();
    let [g4, g6] = groups;
    let [p4, p6] = c.peer;
    let [c4, c6] = c.cidr;
    let peer_key = [Type::Mark, Type::Mark, Type::Proto, Type::Port];
    let v = Some(Type::Verdict);
    vec![
        set(
            &format!("{dir}_{t}_group4"),
            &[Type::Ipv4],
            Some(Type::Mark),
            false,
            g4,
        ),
        set(
            &format!("{dir}_{t}_group6"),
            &[Type::Ipv6],
            Some(Type::Mark),
            false,
            g6,
        ),
        set(&format!("{dir}_{t}_peer4"), &peer_key, v, true, p4),
        set(&format!("{dir}_{t}_peer6"), &peer_key, v, true, p6),
        set(
            &format!("{dir}_{t}_cidr4"),
            &[Type::Mark, Type::Ipv4, Type::Proto, Type::Port],
            v,
            true,
            c4,
        ),
        set(
            &format!("{dir}_{t}_cidr6"),
            &[Type::Mark, Type::Ipv6, Type::Proto, Type::Port],
            v,
            true,
            c6,
        ),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
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

    fn engine(self) -> Direction {
        match self {
            Dir::Egress => Direction::Egress,
            Dir::Ingress => Direction::Ingress,
        }
    }
}

/// Which admin tiers the cluster has: their stages are in the chains only
/// then (adding the first admin policy changes chains; pods never do).
#[derive(Clone, Copy, Default)]
struct Stages {
    admin: bool,
    baseline: bool,
}

pub fn compile_with(engine: &Engine, opts: &Options) -> Result<Ruleset, CompileError> {
    compile_numbered(engine, opts, Numbering::Dense)
}

/// [`compile_with`], with identity marks and group ids numbered as asked
/// (see [`Numbering`]).
pub fn compile_numbered(
    engine: &Engine,
    opts: &Options,
    numbering: Numbering,
) -> Result<Ruleset, CompileError> {
    let cluster = engine.cluster();
    let idx = engine.index();

    let local = local_pods(engine, &opts.local);
    let mut local_ids: BTreeSet<usize> = BTreeSet::new();
    for &i in &local {
        local_ids.insert(idx.pod_identity[i].expect("filtered") as usize);
    }
    // A representative pod per identity (named ports resolve on it).
    let rep = |id: usize| -> &Pod { &cluster.pods[idx.identities[id].members[0]] };
    let pod_ids: Vec<usize> = (0..idx.identities.len())
        .filter(|&i| !idx.identities[i].host_network)
        .collect();

    // Policy groups.
    let mut egress_groups: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    let mut ingress_groups: IngressGroups = BTreeMap::new();
    let mut egress_of: BTreeMap<usize, u32> = BTreeMap::new();
    let mut ingress_of: BTreeMap<usize, u32> = BTreeMap::new();
    let ingress_rules = |pi: usize| idx.policies[pi].ingress.as_deref().unwrap_or_default();
    let egress_rules = |pi: usize| idx.policies[pi].egress.as_deref().unwrap_or_default();
    // A local identity's ingress group: its isolating policies and how the
    // named ports they use resolve on it (ingress resolves on the pod).
    let ingress_key = |id: usize| -> Option<(Vec<usize>, Vec<Option<u16>>)> {
        let ident = &idx.identities[id];
        if ident.ingress_policies.is_empty() {
            return None;
        }
        let r = rep(id);
        let named = ident
            .ingress_policies
            .iter()
            .flat_map(|&pi| ingress_rules(pi).iter())
            .flat_map(|rule| rule.ports.iter().flatten())
            .filter_map(|s| match s {
                PortSpec::Named { protocol, name } => Some(r.named_port(name, *protocol)),
                _ => None,
            })
            .collect();
        Some((ident.ingress_policies.clone(), named))
    };
    {
        let mut e_keys = BTreeSet::new();
        let mut i_keys = BTreeMap::new();
        for &id in &local_ids {
            let ident = &idx.identities[id];
            if !ident.egress_policies.is_empty() {
                e_keys.insert(ident.egress_policies.clone());
            }
            if let Some(key) = ingress_key(id) {
                i_keys.entry(key).or_insert(id);
            }
        }
        let e_keys: Vec<Vec<usize>> = e_keys.into_iter().collect();
        let e_ids = numbering::assign(numbering, e_keys.len(), |i| {
            numbering::policy_names(engine, &e_keys[i])
        });
        for (k, g) in e_keys.into_iter().zip(e_ids) {
            egress_groups.insert(k, g);
        }
        let i_keys: Vec<_> = i_keys.into_iter().collect();
        let i_ids = numbering::assign(numbering, i_keys.len(), |i| {
            let ((policies, named), _) = &i_keys[i];
            (numbering::policy_names(engine, policies), named.clone())
        });
        for ((k, id), g) in i_keys.into_iter().zip(i_ids) {
            ingress_groups.insert(k, (g, id));
        }
        for &id in &local_ids {
            let ident = &idx.identities[id];
            if let Some(&g) = egress_groups.get(&ident.egress_policies) {
                egress_of.insert(id, g);
            }
            if let Some(key) = ingress_key(id) {
                let (g, _) = ingress_groups[&key];
                ingress_of.insert(id, g);
            }
        }
    }

    let marks = numbering::identity_marks(engine, numbering);
    let mark_of = |id: usize| marks[id];

    // Egress allows: named ports resolve on the destination (the peer).
    let mut egress = Allows::default();
    for (policies, &g) in &egress_groups {
        for &pi in policies {
            for rule in egress_rules(pi) {
                egress_rule(&mut egress, engine, g, rule, &pod_ids, &rep, &mark_of);
            }
        }
    }
    // Ingress allows: named ports resolve on the selected (local) pod.
    let mut ingress = Allows::default();
    for ((policies, _), &(g, id)) in &ingress_groups {
        let holder = rep(id);
        for &pi in policies {
            for rule in ingress_rules(pi) {
                let items = port_items(&rule.ports, Some(holder));
                match &rule.peers {
                    None => {
                        for &(p, a, b) in &items {
                            ingress
                                .any
                                .entry((g, p))
                                .or_default()
                                .push((a.into(), b.into()));
                        }
                    }
                    Some(peers) => {
                        for m in peers {
                            peer_allows(&mut ingress, engine, g, m, &items, &mark_of);
                        }
                    }
                }
            }
        }
    }

    // Maps and sets of addresses.
    let mut local_addr = [Vec::new(), Vec::new()];
    let mut eg_map = [Vec::new(), Vec::new()];
    let mut in_map = [Vec::new(), Vec::new()];
    for &i in &local {
        let id = idx.pod_identity[i].expect("filtered") as usize;
        for ip in &cluster.pods[i].ips {
            let (fam, v) = ip_value(*ip);
            local_addr[fam].push(Element {
                key: vec![v.clone()],
                data: None,
            });
            if let Some(&g) = egress_of.get(&id) {
                eg_map[fam].push(Element {
                    key: vec![v.clone()],
                    data: Some(Value::Mark(g)),
                });
            }
            if let Some(&g) = ingress_of.get(&id) {
                in_map[fam].push(Element {
                    key: vec![v.clone()],
                    data: Some(Value::Mark(g)),
                });
            }
        }
    }
    let mut id_map = [Vec::new(), Vec::new()];
    for (ip, &pi) in &idx.ip_to_pod {
        if let Some(id) = idx.pod_identity[pi] {
            let (fam, v) = ip_value(*ip);
            id_map[fam].push(Element {
                key: vec![v],
                data: Some(Value::Mark(mark_of(id as usize))),
            });
        }
    }
    let mut own = [Vec::new(), Vec::new()];
    if let Local::Node(n) = &opts.local {
        let mut addrs: Vec<IpAddr> = idx.node_addresses.get(n).cloned().unwrap_or_default();
        for p in &cluster.pods {
            if p.host_network && p.is_endpoint() && p.node.as_deref() == Some(n.as_str()) {
                addrs.extend(p.ips.iter().copied());
            }
        }
        for a in addrs {
            let (fam, v) = ip_value(a);
            own[fam].push(Element {
                key: vec![v],
                data: None,
            });
        }
    }

    let [local4, local6] = local_addr;
    let [(_, ifaces), (_, src4), (_, src6)] = opts.wiring.inet_elements();
    let [eg4, eg6] = eg_map;
    let [in4, in6] = in_map;
    let [id4, id6] = id_map;
    let [own4, own6] = own;
    let mut sets = vec![
        set("pod_ifaces", &[Type::Ifname], None, false, ifaces),
        set("pod_src4", &[Type::Ifname, Type::Ipv4], None, false, src4),
        set("pod_src6", &[Type::Ifname, Type::Ipv6], None, false, src6),
        set("local4", &[Type::Ipv4], None, false, local4),
        set("local6", &[Type::Ipv6], None, false, local6),
        set("identity4", &[Type::Ipv4], Some(Type::Mark), false, id4),
        set("identity6", &[Type::Ipv6], Some(Type::Mark), false, id6),
        set("egress_group4", &[Type::Ipv4], Some(Type::Mark), false, eg4),
        set("egress_group6", &[Type::Ipv6], Some(Type::Mark), false, eg6),
        set(
            "ingress_group4",
            &[Type::Ipv4],
            Some(Type::Mark),
            false,
            in4,
        ),
        set(
            "ingress_group6",
            &[Type::Ipv6],
            Some(Type::Mark),
            false,
            in6,
        ),
        set("own_node4", &[Type::Ipv4], None, false, own4),
        set("own_node6", &[Type::Ipv6], None, false, own6),
    ];
    sets.extend(allow_sets("egress", egress));
    sets.extend(allow_sets("ingress", ingress));

    // The admin tiers.
    let has = |t: AdminTier| idx.admin.iter().any(|a| a.policy.tier == t);
    let stages = Stages {
        admin: has(AdminTier::Admin),
        baseline: has(AdminTier::Baseline),
    };
    for dir in [Dir::Egress, Dir::Ingress] {
        for (on, t) in [
            (stages.admin, tier::Tier::Admin),
            (stages.baseline, tier::Tier::Baseline),
        ] {
            if !on {
                continue;
            }
            let c = tier::compile(
                engine,
                dir.engine(),
                t,
                &local_ids,
                &pod_ids,
                &mark_of,
                numbering,
            );
            let mut groups = [Vec::new(), Vec::new()];
            for &i in &local {
                let id = idx.pod_identity[i].expect("filtered") as usize;
                if let Some(&g) = c.of.get(&id) {
                    for ip in &cluster.pods[i].ips {
                        let (fam, v) = ip_value(*ip);
                        groups[fam].push(Element {
                            key: vec![v],
                            data: Some(Value::Mark(g)),
                        });
                    }
                }
            }
            sets.extend(tier_sets(dir.name(), t, c, groups));
        }
    }

    Ok(Ruleset {
        sets,
        chains: chains(stages),
    })
}

pub(crate) fn ip_value(ip: IpAddr) -> (usize, Value) {
    match ip {
        IpAddr::V4(a) => (0, Value::Ipv4(a)),
        IpAddr::V6(a) => (1, Value::Ipv6(a)),
    }
}

/// An address matcher as address blocks.
fn matcher_blocks(m: &AddressMatcher) -> Vec<IpBlock> {
    match m {
        AddressMatcher::Block(b) => vec![b.clone()],
        AddressMatcher::Networks(ns) => ns
            .iter()
            .map(|n| IpBlock {
                cidr: *n,
                except: Vec::new(),
            })
            .collect(),
        AddressMatcher::Nodes(addrs) => addrs
            .iter()
            .map(|ip| IpBlock {
                cidr: palisade_model::IpNet::from(*ip),
                except: Vec::new(),
            })
            .collect(),
    }
}

/// The addresses of one family an address matcher contains, as ranges
/// (possibly overlapping).
fn block_ranges_of(m: &AddressMatcher, v4: bool) -> Vec<Span> {
    matcher_blocks(m)
        .iter()
        .map(block_ranges)
        .filter(|(f, _)| *f == v4)
        .flat_map(|(_, r)| r)
        .collect()
}

/// Adds the allows of one peer whose ports do not depend on it (ingress, or
/// egress numeric ports).
fn peer_allows(
    a: &mut Allows,
    engine: &Engine,
    g: u32,
    m: &PeerMatch,
    items: &[PortItem],
    mark_of: &dyn Fn(usize) -> u32,
) {
    let idx = engine.index();
    match *m {
        PeerMatch::Set(s) => {
            for id in idx.sets[s].iter() {
                for &item in items {
                    a.peer(0, g, mark_of(id), item);
                    a.peer(1, g, mark_of(id), item);
                }
            }
        }
        PeerMatch::Addr(x) => {
            let blocks = matcher_blocks(&idx.matchers[x]);
            for b in &blocks {
                let (v4, ranges) = block_ranges(b);
                let fam = if v4 { 0 } else { 1 };
                for &(lo, hi) in &ranges {
                    for &(p, pa, pb) in items {
                        a.cidr[fam]
                            .entry((g, p))
                            .or_default()
                            .push((lo, hi, pa.into(), pb.into()));
                    }
                }
            }
        }
    }
}

fn egress_rule<'c>(
    a: &mut Allows,
    engine: &Engine,
    g: u32,
    rule: &ResolvedRule,
    pod_ids: &[usize],
    rep: &dyn Fn(usize) -> &'c Pod,
    mark_of: &dyn Fn(usize) -> u32,
) {
    let idx = engine.index();
    // Ports that do not depend on the destination.
    let numeric = port_items(&rule.ports, None);
    let named = has_named(&rule.ports);
    match &rule.peers {
        None => {
            for &(p, lo, hi) in &numeric {
                a.any
                    .entry((g, p))
                    .or_default()
                    .push((lo.into(), hi.into()));
            }
            if named {
                for &id in pod_ids {
                    for item in named_items(&rule.ports, rep(id)) {
                        a.peer(0, g, mark_of(id), item);
                        a.peer(1, g, mark_of(id), item);
                    }
                }
            }
        }
        Some(peers) => {
            for m in peers {
                match *m {
                    PeerMatch::Set(s) => {
                        for id in idx.sets[s].iter() {
                            for item in port_items(&rule.ports, Some(rep(id))) {
                                a.peer(0, g, mark_of(id), item);
                                a.peer(1, g, mark_of(id), item);
                            }
                        }
                    }
                    PeerMatch::Addr(x) => {
                        peer_allows(a, engine, g, m, &numeric, mark_of);
                        if named {
                            // A named port only matches a pod destination:
                            // the pods inside the block, by family.
                            for &id in pod_ids {
                                let fams = matcher_families(&idx.matchers[x], rep(id));
                                for item in named_items(&rule.ports, rep(id)) {
                                    for (fam, inside) in fams.iter().enumerate() {
                                        if *inside {
                                            a.peer(fam, g, mark_of(id), item);
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
}

/// The named ports of a rule, resolved on one destination pod.
fn named_items(ports: &Option<Vec<PortSpec>>, holder: &Pod) -> Vec<PortItem> {
    ports
        .iter()
        .flatten()
        .filter_map(|s| match s {
            PortSpec::Named { protocol, name } => holder
                .named_port(name, *protocol)
                .map(|p| (protocol.number(), p, p)),
            _ => None,
        })
        .collect()
}

fn rule(stmts: Vec<Stmt>) -> Rule {
    Rule {
        stmts,
        comment: None,
    }
}

fn commented(stmts: Vec<Stmt>, c: &str) -> Rule {
    Rule {
        stmts,
        comment: Some(c.to_string()),
    }
}

fn nfproto(v4: bool) -> Stmt {
    Stmt::is(
        Expr::Meta(MetaKey::Nfproto),
        Expr::Symbol(if v4 { "ipv4" } else { "ipv6" }),
    )
}

fn addr(v4: bool, field: &'static str) -> Expr {
    Expr::payload(if v4 { "ip" } else { "ip6" }, field)
}

fn l4() -> Expr {
    Expr::Meta(MetaKey::L4proto)
}

fn dport() -> Expr {
    Expr::payload("th", "dport")
}

/// `meta mark set 0`, then the peer's identity mark by address.
fn peer_identity(rules: &mut Vec<Rule>, peer_field: &'static str) {
    rules.push(rule(vec![Stmt::Assign {
        key: Expr::Meta(MetaKey::Mark),
        value: Expr::Int(0),
    }]));
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        rules.push(rule(vec![
            nfproto(v4),
            Stmt::Assign {
                key: Expr::Meta(MetaKey::Mark),
                value: Expr::Map {
                    key: Box::new(addr(v4, peer_field)),
                    map: format!("identity{f}"),
                },
            },
        ]));
    }
}

/// `ct mark set 0`, then the local pod's group by address in `map4/6`.
fn local_group(rules: &mut Vec<Rule>, own_field: &'static str, map: &str) {
    rules.push(rule(vec![Stmt::Assign {
        key: Expr::CtMark,
        value: Expr::Int(0),
    }]));
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        rules.push(rule(vec![
            nfproto(v4),
            Stmt::Assign {
                key: Expr::CtMark,
                value: Expr::Map {
                    key: Box::new(addr(v4, own_field)),
                    map: format!("{map}{f}"),
                },
            },
        ]));
    }
}

fn fields(dir: Dir) -> (&'static str, &'static str) {
    match dir {
        Dir::Egress => ("saddr", "daddr"),
        Dir::Ingress => ("daddr", "saddr"),
    }
}

/// One admin tier: the local pod's tier group, then one verdict map lookup
/// for a pod peer (by identity) and one for any other peer (by address).
/// No element matches: the flow goes on to the next stage.
fn tier_stage(rules: &mut Vec<Rule>, dir: Dir, t: tier::Tier) {
    let name = dir.name();
    let (own_field, peer_field) = fields(dir);
    let prefix = format!("{name}_{}", t.name());
    local_group(rules, own_field, &format!("{prefix}_group"));
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        rules.push(commented(
            vec![
                nfproto(v4),
                Stmt::Vmap {
                    key: Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark), l4(), dport()]),
                    map: format!("{prefix}_peer{f}"),
                },
            ],
            &format!("{} tier, pod peer", t.name()),
        ));
    }
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        rules.push(commented(
            vec![
                Stmt::is(Expr::Meta(MetaKey::Mark), Expr::Int(0)),
                Stmt::Vmap {
                    key: Expr::Concat(vec![Expr::CtMark, addr(v4, peer_field), l4(), dport()]),
                    map: format!("{prefix}_cidr{f}"),
                },
            ],
            &format!("{} tier, other peer", t.name()),
        ));
    }
}

/// The policy check of one direction: admin tier, NetworkPolicy (in
/// `{dir}_np`, entered with `goto`: its verdict is final), baseline tier;
/// falling off the end allows.
///
/// The NetworkPolicy stage is one rule per family: the group lookup writes
/// `ct mark` and jumps in the same rule, and a miss (not isolated) ends the
/// rule before either happens, so no reset of `ct mark` is needed.
fn direction_chain(dir: Dir, stages: Stages) -> Chain {
    let name = dir.name();
    let (own_field, peer_field) = fields(dir);
    let mut rules = Vec::new();
    if stages.admin || stages.baseline {
        peer_identity(&mut rules, peer_field);
    }
    if stages.admin {
        tier_stage(&mut rules, dir, tier::Tier::Admin);
    }
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        rules.push(commented(
            vec![
                nfproto(v4),
                Stmt::Assign {
                    key: Expr::CtMark,
                    value: Expr::Map {
                        key: Box::new(addr(v4, own_field)),
                        map: format!("{name}_group{f}"),
                    },
                },
                Stmt::Goto(format!("{name}_np")),
            ],
            &format!("isolated for {name}"),
        ));
    }
    if stages.baseline {
        tier_stage(&mut rules, dir, tier::Tier::Baseline);
    }
    Chain {
        name: name.to_string(),
        hook: None,
        rules,
    }
}

/// The NetworkPolicy check of one direction, for an isolated pod whose
/// group is in `ct mark`: allowed (`return`) or dropped. Three chains:
/// `{dir}_np` looks the peer's identity up into `meta mark` and, for a pod
/// peer, goes to `{dir}_np_pod` (the identity-keyed sets, then the address
/// checks); any other peer goes straight to `{dir}_np_addr` (own node,
/// ipBlocks, rules without peers, else drop). Identity marks are never 0,
/// so a non-pod peer could not match an identity-keyed set anyway.
fn np_chains(dir: Dir) -> Vec<Chain> {
    let name = dir.name();
    let (_, peer_field) = fields(dir);
    let mut np = Vec::new();
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        np.push(commented(
            vec![
                nfproto(v4),
                Stmt::Assign {
                    key: Expr::Meta(MetaKey::Mark),
                    value: Expr::Map {
                        key: Box::new(addr(v4, peer_field)),
                        map: format!("identity{f}"),
                    },
                },
                Stmt::Goto(format!("{name}_np_pod")),
            ],
            "pod peer",
        ));
    }
    np.push(rule(vec![Stmt::Goto(format!("{name}_np_addr"))]));

    let mut pod = Vec::new();
    let peer_port = || Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark), l4(), dport()]);
    pod.push(rule(vec![
        Stmt::is(l4(), Expr::AnonSet(vec!["tcp", "udp", "sctp"])),
        Stmt::is(
            Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark)]),
            Expr::SetRef(format!("{name}_peer_all")),
        ),
        Stmt::Return,
    ]));
    pod.push(rule(vec![
        Stmt::is(peer_port(), Expr::SetRef(format!("{name}_peer_port"))),
        Stmt::Return,
    ]));
    pod.push(rule(vec![
        Stmt::is(
            Expr::Concat(vec![Expr::CtMark, Expr::Meta(MetaKey::Mark), l4()]),
            Expr::SetRef(format!("{name}_peer_proto")),
        ),
        Stmt::Return,
    ]));
    pod.push(rule(vec![
        Stmt::is(peer_port(), Expr::SetRef(format!("{name}_peer_range"))),
        Stmt::Return,
    ]));
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        pod.push(rule(vec![
            nfproto(v4),
            Stmt::is(peer_port(), Expr::SetRef(format!("{name}_peer{f}"))),
            Stmt::Return,
        ]));
    }
    pod.push(rule(vec![Stmt::Goto(format!("{name}_np_addr"))]));

    let mut by_addr = Vec::new();
    if dir == Dir::Ingress {
        for v4 in [true, false] {
            let f = if v4 { "4" } else { "6" };
            by_addr.push(commented(
                vec![
                    Stmt::is(addr(v4, "saddr"), Expr::SetRef(format!("own_node{f}"))),
                    Stmt::Return,
                ],
                "own node",
            ));
        }
    }
    for v4 in [true, false] {
        let f = if v4 { "4" } else { "6" };
        by_addr.push(rule(vec![
            Stmt::is(
                Expr::Concat(vec![Expr::CtMark, addr(v4, peer_field), l4(), dport()]),
                Expr::SetRef(format!("{name}_cidr{f}")),
            ),
            Stmt::Return,
        ]));
    }
    by_addr.push(rule(vec![
        Stmt::is(
            Expr::Concat(vec![Expr::CtMark, l4(), dport()]),
            Expr::SetRef(format!("{name}_any")),
        ),
        Stmt::Return,
    ]));
    by_addr.push(commented(vec![Stmt::Drop], &format!("{name} denied")));
    let chain = |suffix: &str, rules| Chain {
        name: format!("{name}{suffix}"),
        hook: None,
        rules,
    };
    vec![
        chain("_np", np),
        chain("_np_pod", pod),
        chain("_np_addr", by_addr),
    ]
}

fn src(v4: bool) -> Expr {
    addr(v4, "saddr")
}

fn fam(v4: bool) -> &'static str {
    if v4 {
        "4"
    } else {
        "6"
    }
}

/// `iifname . ip saddr` is (`Op::Eq`) or is not (`Op::Ne`) a local pod's,
/// as the wiring says.
fn pod_source(v4: bool, op: Op) -> Stmt {
    Stmt::Match {
        left: Expr::Concat(vec![Expr::Meta(MetaKey::Iifname), src(v4)]),
        op,
        right: Expr::SetRef(format!("pod_src{}", fam(v4))),
    }
}

fn on_pod_interface() -> Stmt {
    Stmt::is(
        Expr::Meta(MetaKey::Iifname),
        Expr::SetRef("pod_ifaces".into()),
    )
}

/// IPv6 link-local and unspecified sources (neighbour discovery) are
/// exempt from anti-spoofing: the kernel never forwards them. Shared by
/// the bridge table.
pub(crate) fn not_link_local() -> Vec<Stmt> {
    vec![
        Stmt::is_not(src(false), Expr::Prefix("fe80::".into(), 10)),
        Stmt::is_not(src(false), Expr::Prefix("::".into(), 128)),
    ]
}

/// What fails closed, for packets that are not a known local pod's: from
/// a pod interface (a pod whose address is not known, or a spoofed
/// source), or with a local pod's address from anywhere else (a pod whose
/// interface is not known yet, or a spoofer elsewhere).
fn unknown_source_rules(input: bool) -> Vec<Rule> {
    let mut rules = Vec::new();
    for v4 in [true, false] {
        let mut stmts = vec![nfproto(v4), on_pod_interface()];
        if !v4 {
            stmts.extend(not_link_local());
        }
        if input {
            stmts.push(pod_source(v4, Op::Ne));
        }
        stmts.push(Stmt::Drop);
        rules.push(commented(stmts, "unknown source on a pod interface"));
    }
    for v4 in [true, false] {
        let mut stmts = vec![Stmt::is(src(v4), Expr::SetRef(format!("local{}", fam(v4))))];
        if input {
            stmts.push(pod_source(v4, Op::Ne));
        }
        stmts.push(Stmt::Drop);
        rules.push(commented(stmts, "local pod address on another interface"));
    }
    rules
}

/// A new connection to a local pod meets its ingress check, found by
/// destination address whatever interface it leaves on; one to a pod
/// interface that no local pod's address explains (a pod the agent does
/// not know) is dropped.
fn to_pod_rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for v4 in [true, false] {
        rules.push(rule(vec![
            Stmt::is(addr(v4, "daddr"), Expr::SetRef(format!("local{}", fam(v4)))),
            Stmt::Goto("ingress".into()),
        ]));
    }
    for v4 in [true, false] {
        let mut stmts = vec![
            nfproto(v4),
            Stmt::is(
                Expr::Meta(MetaKey::Oifname),
                Expr::SetRef("pod_ifaces".into()),
            ),
        ];
        if !v4 {
            // Bridged pods' link-local and multicast traffic (neighbour
            // discovery, MLD) passes this hook too; it is no pod's.
            for (a, l) in [("fe80::", 10), ("ff00::", 8)] {
                stmts.push(Stmt::is_not(
                    addr(false, "daddr"),
                    Expr::Prefix(a.into(), l),
                ));
            }
        }
        stmts.push(Stmt::Drop);
        rules.push(commented(stmts, "unknown pod"));
    }
    rules
}

/// Neighbour discovery between pods of one bridge reaches the `inet`
/// forward hook (bridge netfilter) with its hop limit intact, 255, which
/// no routed packet has here: accepted before any policy, as the API
/// does not govern it; so is neighbour discovery to the node. Its sources
/// are the bridge table's to check.
fn neighbour_discovery() -> Rule {
    let mut stmts = on_link(vec![
        "nd-router-solicit",
        "nd-router-advert",
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "nd-redirect",
    ]);
    stmts.push(Stmt::Accept);
    commented(stmts, "neighbour discovery between bridged pods")
}

/// ICMPv6 of these types with hop limit 255: sent on the link, never
/// routed. Shared by the bridge table.
pub(crate) fn on_link(types: Vec<&'static str>) -> Vec<Stmt> {
    vec![
        Stmt::is(Expr::payload("icmpv6", "type"), Expr::AnonSet(types)),
        Stmt::is(Expr::payload("ip6", "hoplimit"), Expr::Int(255)),
    ]
}

/// The base chains.
///
/// `forward` first recognizes a local pod's packets by `iifname . saddr`
/// (one lookup per family: the wiring's `pod_src`, which is also the
/// anti-spoofing check) and sends them to `from_pod`: conntrack, egress,
/// then ingress when the destination is local too. Anything else from a
/// pod interface, or with a local pod's address, is dropped (see
/// [`unknown_source_rules`]); the rest meets conntrack and, if new and
/// bound for a local pod address, the ingress check.
///
/// Anti-spoofing stays *before* conntrack, on every packet from a pod,
/// established or not. Skipping it for established packets would be
/// unsound: conntrack matches a packet to an entry by its addresses,
/// protocol and ports only, never by the interface it came in on, so a pod
/// that sends a packet with exactly the tuple of another pod's connection
/// (either direction: as that pod, or as its peer answering it) would ride
/// that entry as `established` and be forwarded. For UDP nothing more is
/// needed (e.g. a forged DNS answer to a neighbour's query); for TCP
/// conntrack's window tracking makes it harder, not impossible.
///
/// Policy is keyed by address only (groups, identities), never by
/// interface: bridged pods all reach the IP layer on their bridge, and a
/// pod's interface may appear after the pod.
fn chains(stages: Stages) -> Vec<Chain> {
    let conntrack = vec![
        rule(vec![
            Stmt::Match {
                left: Expr::CtState,
                op: Op::In,
                right: Expr::Flags(vec!["established", "related"]),
            },
            Stmt::Accept,
        ]),
        rule(vec![
            Stmt::Match {
                left: Expr::CtState,
                op: Op::In,
                right: Expr::Flags(vec!["invalid"]),
            },
            Stmt::Drop,
        ]),
    ];
    let mut forward = vec![neighbour_discovery()];
    forward.extend([true, false].into_iter().map(|v4| {
        rule(vec![
            nfproto(v4),
            pod_source(v4, Op::Eq),
            Stmt::Goto("from_pod".into()),
        ])
    }));
    forward.extend(unknown_source_rules(false));
    forward.extend(conntrack.clone());
    forward.extend(to_pod_rules());
    let mut pod = conntrack;
    pod.push(rule(vec![Stmt::Jump("egress".into())]));
    pod.extend(to_pod_rules());
    // A bridged pod that is not bound yet answers the node's neighbour
    // solicitation from its own address: how it gets bound.
    let mut input = vec![neighbour_discovery()];
    input.extend(unknown_source_rules(true));
    let mut out = vec![
        Chain {
            name: "forward".into(),
            hook: Some(Hook {
                hook: "forward",
                priority: 0,
            }),
            rules: forward,
        },
        Chain {
            name: "input".into(),
            hook: Some(Hook {
                hook: "input",
                priority: 0,
            }),
            rules: input,
        },
        Chain {
            name: "from_pod".into(),
            hook: None,
            rules: pod,
        },
        direction_chain(Dir::Egress, stages),
    ];
    out.extend(np_chains(Dir::Egress));
    out.push(direction_chain(Dir::Ingress, stages));
    out.extend(np_chains(Dir::Ingress));
    out
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
