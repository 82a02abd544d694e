//! The verdict function: the one place that decides whether a flow is
//! allowed. Evaluation yields a [`Decision`] made of indexes (cheap, no
//! allocation); reasons are rendered from it only when asked for.
//!
//! `parse` reads what users write (`ns/pod`, addresses, `port/proto`),
//! `flow` builds flows, `evaluate` decides them, `render` says why, and
//! `write` holds the allocation-free number and address writers that
//! rendering uses.

mod evaluate;
mod flow;
mod parse;
mod render;
mod write;

use std::net::IpAddr;

use palisade_model::{AdminAction, Protocol};

use crate::IdentityId;

pub(crate) use render::ReasonParts;
pub use render::Who;

/// One side of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// An index into `Cluster::pods` (an endpoint pod).
    Pod(usize),
    /// An address that is not an endpoint pod's.
    Ip(IpAddr),
}

/// A connection attempt: the first packet of `src_ip` → `dst_ip:port`.
/// Build it with [`crate::Engine::flow`], which resolves addresses to pods.
/// An address is `None` exactly when its endpoint is a workload's pod
/// template, which has none: no address rule (ipBlock, admin `networks`,
/// a node's addresses) matches that side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub protocol: Protocol,
    pub port: u16,
    /// Whether `src_ip` / `dst_ip` is its pod's first address of its
    /// family, the one the pod's identity was classified by (or absent, for
    /// a template): the verdict then reuses the identity's address class
    /// instead of looking the address up.
    pub(crate) primary: (bool, bool),
    pub(crate) resolved: Resolved,
}

/// The identities of a flow's pods, resolved when the engine built the
/// flow, so that a verdict does not look them up again. Valid only for the
/// engine that built it (another engine may group pods differently), which
/// the stamp checks. Not part of a flow's identity: two flows that differ
/// only here are the same flow.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Resolved {
    stamp: u32,
    src: Option<IdentityId>,
    dst: Option<IdentityId>,
}

impl PartialEq for Resolved {
    fn eq(&self, _: &Resolved) -> bool {
        true
    }
}

impl Eq for Resolved {}

impl std::hash::Hash for Resolved {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// How one direction of a flow was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The subject is an external address, a host-network pod or a
    /// non-endpoint: no policy applies to it.
    NotSubject,
    /// No NetworkPolicy isolates the pod in this direction and no admin
    /// policy matched.
    NotIsolated,
    /// Ingress to an isolated pod from its own node.
    OwnNode,
    /// A NetworkPolicy rule allows it. `peer`/`port` are `None` when the
    /// rule has no peers / ports (which means all).
    Allowed {
        policy: usize,
        rule: usize,
        peer: Option<usize>,
        port: Option<usize>,
    },
    /// Isolated by NetworkPolicy and no rule allows it.
    Denied,
    /// An admin policy rule (index into `Index::admin`) with action Allow or
    /// Deny decided.
    Admin {
        admin: usize,
        rule: usize,
        action: AdminAction,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub direction: Direction,
    /// The admin rule that passed the flow down to NetworkPolicy, if any.
    pub passed: Option<(usize, usize)>,
    pub decision: Decision,
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        match self.decision {
            Decision::Denied => false,
            Decision::Admin { action, .. } => action != AdminAction::Deny,
            _ => true,
        }
    }
}

/// The answer for one flow: allowed iff both directions allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub egress: Outcome,
    pub ingress: Outcome,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        self.egress.allowed() && self.ingress.allowed()
    }
}
