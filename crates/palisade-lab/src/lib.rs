//! A network-namespace lab: the cluster's nodes and pods as real network
//! namespaces, each node enforcing the ruleset Palisade compiles for it, and
//! probes that send real packets and compare what arrives with the engine.
//!
//! Edge crate: it runs `ip` and `nft`, enters namespaces and needs root.
//!
//! # Layout
//!
//! Every name starts with `pl-<lab>-`, so several labs and the host never
//! clash; nothing is created in the host namespace.
//!
//! - `pl-<lab>-fab`: the fabric, a router with one veth to each node; it
//!   routes every pod address to its node.
//! - `pl-<lab>-n<i>`: one per node (or one node when no pod names a node).
//!   Its `fab0` leads to the fabric; one veth per local pod, named as
//!   [`palisade_nft::interface_name`] names it, carries `169.254.1.1` and
//!   `fe80::1` as the pods' gateway. The node forwards and loads the
//!   compiled `inet palisade` table.
//! - `pl-<lab>-p<j>`: one per endpoint pod (host-network pods are node
//!   traffic and get none), `eth0` with the pod's IPv4 and IPv6 addresses.
//!
//! In CNI mode ([`Config::cni`]) a standard CNI plugin wires each pod
//! instead, run in the node's namespace as a container runtime runs it; the
//! pods keep the cluster's addresses, each node also routes every remote
//! pod's address via `fab0`, and the lab loads no ruleset (the node agents
//! do). The [`cni`] module describes it.
//!
//! TCP and UDP listeners echo on the probed ports in every pod namespace;
//! the kernel has no SCTP sockets, so SCTP is probed with a raw INIT whose
//! arrival a raw socket in the destination namespace observes.
//!
//! The state of a lab (`/run/palisade-lab/<lab>.json`) lists what it made;
//! [`down`] removes that and nothing else.

mod cmd;
pub mod cni;
mod lab;
mod probe;
pub mod raw;
mod serve;
mod state;
pub mod sys;

pub use cmd::{existing_netns, in_netns};
pub use cni::{Cni, CniPlugin};
pub use lab::{down, serve_forever, up, Config, Lab, Serve};
pub use probe::{
    connect, connect_from, echo_roundtrip, probe, render_matrices, render_summary, Observation,
    ProbeOptions,
};
pub use serve::{bind as bind_listeners, Listeners};
pub use state::{load, NodeState, PodState, State, STATE_DIR};

use cmd::{ip_batch, run, run_output};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Compile(#[from] palisade_nft::CompileError),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |error| Error::Io { context, error }
}
