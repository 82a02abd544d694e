//! Palisade's engine: decides any flow exactly as the Kubernetes
//! NetworkPolicy and AdminNetworkPolicy APIs specify, and says why.
//!
//! Pure: it takes a [`Cluster`] value and answers questions about it. The
//! [`Index`] groups pods into identities so that whole-cluster questions
//! (the reachability matrix, the dataplane compiler) work over classes of
//! pods rather than pairs.

#![forbid(unsafe_code)]

mod classify;
pub mod diff;
mod error;
pub mod first_match;
pub mod flowlog;
pub mod generate;
mod ids;
pub mod index;
pub mod lint;
pub mod live;
pub mod matrix;
mod names;
pub mod staged;
mod verdict;

pub use error::Error;
pub use ids::{IdentityId, MatcherId, PodId, RuleId, SetId};
pub use index::{IdSet, Identity, Index, PeerMatch};
pub use matrix::{Matrix, MatrixRow, MatrixRows, PortProto};
pub use verdict::{Decision, Direction, Endpoint, Explanation, Flow, Outcome, Verdict, Who};

use palisade_model::Cluster;

/// A cluster snapshot with its index. Immutable: a change builds a new one.
#[derive(Clone, Debug)]
pub struct Engine {
    cluster: Cluster,
    index: Index,
    /// Whether staged policies are enforced here ([`Engine::with_staged`]).
    with_staged: bool,
    /// Tells this engine's flows from other engines' (see `Resolved`).
    stamp: u32,
    /// The fixed pieces of reasons, made when the first is rendered.
    parts: std::sync::OnceLock<verdict::ReasonParts>,
    /// Endpoint names, made when the first is resolved.
    names: std::sync::OnceLock<names::Names>,
}

static STAMPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Engine {
    /// The engine of what `cluster` enforces: its staged policies are
    /// dropped, so that no consumer (the compiler, the agent, the audit
    /// commands) can enforce or report one by mistake. `cluster()` returns
    /// the cluster without them.
    pub fn new(mut cluster: Cluster) -> Engine {
        cluster.drop_staged();
        Engine::build(cluster, false)
    }

    /// The engine that enforces the staged policies of `cluster` as well,
    /// to compare with [`Engine::new`] (see [`staged`]). `cluster()` keeps
    /// them, flags included, so that a decision can be traced to them.
    pub fn with_staged(cluster: Cluster) -> Engine {
        Engine::build(cluster, true)
    }

    fn build(cluster: Cluster, with_staged: bool) -> Engine {
        let index = Index::build_all(&cluster);
        let stamp = STAMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Engine {
            cluster,
            index,
            with_staged,
            stamp,
            parts: Default::default(),
            names: Default::default(),
        }
    }

    /// Whether this engine enforces staged policies too
    /// ([`Engine::with_staged`]).
    pub fn enforces_staged(&self) -> bool {
        self.with_staged
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn index(&self) -> &Index {
        &self.index
    }
}
