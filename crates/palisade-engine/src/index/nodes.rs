//! Where pods run, for the one rule that depends on it: an isolated pod
//! still accepts ingress from its own node.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_model::Cluster;

use crate::PodId;

#[derive(Clone, Debug)]
pub(crate) struct Nodes {
    /// Node name → its addresses.
    pub(crate) addresses: HashMap<String, Vec<IpAddr>>,
    /// The addresses of host-network endpoint pods on some node: traffic
    /// from them is that node's.
    pub(crate) host_pod_addresses: Vec<IpAddr>,
    /// Each pod's node (`Cluster::pods` order), as an index into `lists`.
    pod_node: Vec<Option<u32>>,
    /// Whether each pod is a host-network endpoint, apart from `Pod` for
    /// the hot path.
    pod_host_network: Vec<bool>,
    lists: Vec<Vec<IpAddr>>,
    /// Whether some node's address (host-network pods' included) is also
    /// an endpoint pod's address; when not, a pod peer can never be "the
    /// pod's own node".
    address_is_pod_address: bool,
}

impl Nodes {
    pub(crate) fn build(cluster: &Cluster, ip_to_pod: &HashMap<IpAddr, PodId>) -> Nodes {
        let mut addresses: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for n in &cluster.nodes {
            addresses.insert(n.name.clone(), n.addresses.clone());
        }
        let mut node_ids: HashMap<&str, u32> = HashMap::new();
        let mut lists: Vec<Vec<IpAddr>> = Vec::new();
        let pod_node = cluster
            .pods
            .iter()
            .map(|p| {
                let n = p.node.as_deref()?;
                Some(*node_ids.entry(n).or_insert_with(|| {
                    lists.push(addresses.get(n).cloned().unwrap_or_default());
                    lists.len() as u32 - 1
                }))
            })
            .collect();
        // A host-network pod's traffic is its node's, also when a flow
        // names its address rather than the pod (the compiler puts those
        // addresses in the node's own set too).
        let mut host_pod_addresses = Vec::new();
        for p in cluster
            .pods
            .iter()
            .filter(|p| p.host_network && p.is_endpoint())
        {
            if let Some(&id) = p.node.as_deref().and_then(|n| node_ids.get(n)) {
                lists[id as usize].extend(p.ips.iter().copied());
                host_pod_addresses.extend(p.ips.iter().copied());
            }
        }
        let address_is_pod_address = lists.iter().flatten().any(|a| ip_to_pod.contains_key(a));
        Nodes {
            addresses,
            host_pod_addresses,
            pod_node,
            pod_host_network: cluster
                .pods
                .iter()
                .map(|p| p.host_network && p.is_endpoint())
                .collect(),
            lists,
            address_is_pod_address,
        }
    }

    /// Whether traffic to pod `subject` from `peer` (its pod, when it is
    /// one) at `peer_ip` comes from the subject's own node: from one of the
    /// node's addresses, or from a host-network pod on that node.
    #[inline]
    pub(crate) fn is_own_node(
        &self,
        subject: PodId,
        peer: Option<PodId>,
        peer_ip: Option<IpAddr>,
    ) -> bool {
        let Some(node) = self.pod_node[subject.index()] else {
            return false;
        };
        if let Some(p) = peer {
            let host = self.pod_host_network[p.index()];
            if host && self.pod_node[p.index()] == Some(node) {
                return true;
            }
            if !host && !self.address_is_pod_address {
                return false;
            }
        }
        peer_ip.is_some_and(|ip| self.lists[node as usize].contains(&ip))
    }
}
