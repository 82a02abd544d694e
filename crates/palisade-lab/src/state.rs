//! What a lab made, recorded before it is made, so that another process
//! can probe it and `down` can remove exactly it.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{cni, io_err, CniPlugin, Error, Result};

/// Where lab state files live.
pub const STATE_DIR: &str = "/run/palisade-lab";

pub(crate) fn state_path(name: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{name}.json"))
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 16
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::Msg(format!(
            "lab name {name:?}: use 1-16 lowercase letters and digits"
        )));
    }
    Ok(())
}

pub(crate) fn prefix(name: &str) -> String {
    format!("pl-{name}-")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    pub netns: String,
    /// The cluster node, or `None` for the lab's node of pods that name none.
    pub node: Option<String>,
    /// Keys (`namespace/name`) of the pods on this node.
    pub pods: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodState {
    pub key: String,
    pub netns: String,
    pub node: usize,
    pub ips: Vec<IpAddr>,
    /// CNI mode: the addresses (with prefixes) the plugin's result gave
    /// `eth0`.
    #[serde(default)]
    pub addresses: Vec<ipnet::IpNet>,
    /// CNI mode: the pod's host-side interface, as the plugin's result
    /// names it.
    #[serde(default)]
    pub host_interface: Option<String>,
    /// CNI mode: what DEL needs.
    #[serde(default)]
    pub cni: Option<cni::PodCni>,
}

/// What a lab made: enough to probe it from another process and to remove
/// exactly it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// Every namespace the lab made (or was about to make).
    pub netns: Vec<String>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// Listener processes (pid, expected command line fragment).
    pub pids: Vec<u32>,
    /// Opaque to the lab: what the caller built the cluster from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Ports the listeners serve.
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// The CNI plugin that wired the pods; `None`: the lab's own veths.
    #[serde(default)]
    pub cni: Option<CniPlugin>,
    /// Where the CNI plugins are (CNI mode).
    #[serde(default)]
    pub cni_bin_dir: Option<PathBuf>,
}

impl State {
    /// The lab pod `key` (`namespace/name`).
    pub fn pod(&self, key: &str) -> Option<&PodState> {
        self.pods.iter().find(|p| p.key == key)
    }

    pub(crate) fn save(&self) -> Result<()> {
        std::fs::create_dir_all(STATE_DIR).map_err(io_err(STATE_DIR))?;
        let p = state_path(&self.name);
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&p, text).map_err(io_err(p.display().to_string()))
    }
}

/// Loads a running lab's state (for probing from another process).
pub fn load(name: &str) -> Result<State> {
    check_name(name)?;
    let p = state_path(name);
    let text =
        std::fs::read_to_string(&p).map_err(io_err(format!("lab {name:?} ({})", p.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Msg(format!("{}: {e}", p.display())))
}

/// Each cluster pod's position by `namespace/name`.
pub(crate) fn pod_index(
    cluster: &palisade_model::Cluster,
) -> std::collections::HashMap<String, usize> {
    cluster
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| p.template_kind().is_none())
        .map(|(i, p)| (p.key(), i))
        .collect()
}
