//! Palisade's node agent: keeps one node's nftables table `inet palisade`
//! equal to the compiled policy of a changing cluster.
//!
//! ```text
//!  dir (notify) ─┐
//!  etcd (watch) ─┼─► Input ─► Agent (one owner): Store ─► Cluster ─► Engine ─► compile(node)
//!  kube (watch) ─┘                         │                                      │
//!                                          └──── diff(applied, desired) ◄─────────┘
//!                                                   │ one `nft -f` transaction
//!                                                   ▼
//!                                                Backend (nft / dry-run / recording)
//! ```
//!
//! - **Sources** turn whatever they watch into one closed [`Input`] type,
//!   already decoded and validated by `palisade-k8s`. Each source owns a
//!   *scope* (a prefix of origins): a [`Input::Resync`] replaces everything
//!   under it, so objects deleted while a source was away disappear.
//! - **The store** keeps the last *good* version of every object: an invalid
//!   update is reported (log, metric, `/healthz`) and ignored.
//! - **The loop** owns the store and the backend; bursts are debounced; each
//!   sync recompiles the node's ruleset with stable numbering
//!   ([`palisade_nft::Numbering::Stable`]) and applies only the difference
//!   ([`delta`]): element additions and removals when only elements differ,
//!   an atomic `delete table` + re-add when chains or set definitions change.
//! - **Incremental path**: pod, policy, namespace and node changes are compiled
//!   incrementally ([`palisade_nft::incr`]): only the contributions they
//!   touch are recomputed, no engine is rebuilt; unreachable interval
//!   elements are removed while idle. Anything it refuses, and every
//!   change in a cluster it cannot start from, takes the full path.
//! - **Applying**: element deltas go to one long-lived `nft -i` in the
//!   node's network namespace, one atomic transaction per sync
//!   ([`backend::Nft`]): no process start and no netlink socket close per
//!   event (closing one after a deletion waits for the kernel's deferred
//!   destruction). Table replacements run `nft -f -`.
//! - **Restart**: the first sync reads the kernel's table, recognises its
//!   structure by a hash kept in the table comment, and applies only the
//!   element difference: established connections are never cut.

pub mod agent;
pub mod backend;
mod burst;
pub mod conntrack;
pub mod datastore;
pub mod delta;
pub mod dir;
mod error;
pub mod etcd;
pub mod facts;
pub mod flowlog;
pub mod http;
mod incr;
pub mod input;
pub mod kernel;
pub mod kube;
pub mod manifests;
pub mod message;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod privileges;
pub mod promote;
pub mod snapshot;
pub mod store;
pub mod wiring;

pub use agent::{Agent, AgentConfig, Health, SyncPath};
pub use backend::{Backend, BackendError, DryRun, Nft, NftCounts, Recording};
pub use delta::Delta;
pub use error::Error;
pub use input::{Entry, Input};
pub use store::Store;
