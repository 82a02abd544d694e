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
    /// Tells this engine's flows from other engines' (see `Resolved`).
    stamp: u32,
    /// The fixed pieces of reasons, made when the first is rendered.
    parts: std::sync::OnceLock<verdict::ReasonParts>,
    /// Endpoint names, made when the first is resolved.
    names: std::sync::OnceLock<names::Names>,
}

static STAMPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Engine {
    pub fn new(cluster: Cluster) -> Engine {
        let index = Index::build(&cluster);
        let stamp = STAMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Engine {
            cluster,
            index,
            stamp,
            parts: Default::default(),
            names: Default::default(),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn index(&self) -> &Index {
        &self.index
    }
}
