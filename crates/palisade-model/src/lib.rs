//! Plain, validated types shared by every Palisade crate.
//!
//! Everything here is already normalized: API defaults applied, `null`s
//! folded into absent values, and invalid states (an `endPort` below its
//! `port`, an `except` outside its `cidr`) rejected by the decoder before a
//! value of these types exists. The engine and the compiler therefore never
//! re-validate.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use ipnet::IpNet;

mod selector;
pub use selector::{LabelSelector, Requirement};

/// The label every namespace carries, as Kubernetes sets it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// IANA protocol number, as nftables' `meta l4proto` sees it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    /// Case-insensitive on the command line; the decoder is strict on manifests.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

/// A port a container declares; the only source of named ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    /// Always contains [`NAMESPACE_NAME_LABEL`].
    pub labels: Labels,
}

impl Namespace {
    /// A namespace known only by name, as Kubernetes labels every namespace.
    pub fn implicit(name: &str) -> Self {
        let mut labels = Labels::new();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        Namespace {
            name: name.to_string(),
            labels,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// The workload kinds whose pod template Palisade reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 7] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::ReplicationController,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
    ];

    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::ReplicationController => "ReplicationController",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// The kind spelled exactly as Kubernetes does (`Deployment`, not
    /// `deployment`): names in output and input use that spelling.
    pub fn from_name(s: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workload in the pod's namespace: `Deployment web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

/// Where a pod-like endpoint comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PodSource {
    /// A pod object. `owner` is its controlling workload: as written in
    /// `metadata.ownerReferences` when decoded, resolved to the top-level
    /// workload (a ReplicaSet to its Deployment, a Job to its CronJob) once
    /// the whole input is assembled.
    Live {
        phase: PodPhase,
        owner: Option<Workload>,
    },
    /// The pod template of a workload (`name` is the workload's): it stands
    /// for pods that may not exist yet, so it has no address, no node and
    /// no phase. It is an endpoint all the same: its labels, namespace and
    /// ports say what policies select it and what it may reach.
    Template(WorkloadKind),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `status.podIPs` (or `status.podIP`), IPv4 and IPv6. Always empty for
    /// a template (see [`Pod::template`]).
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`; `None` for a template.
    pub node: Option<String>,
    pub host_network: bool,
    pub source: PodSource,
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// The endpoint of a workload's pod template: no address, no node.
    pub fn template(
        kind: WorkloadKind,
        namespace: String,
        name: String,
        labels: Labels,
        host_network: bool,
        ports: Vec<ContainerPort>,
    ) -> Pod {
        Pod {
            namespace,
            name,
            labels,
            ips: Vec::new(),
            node: None,
            host_network,
            source: PodSource::Template(kind),
            ports,
        }
    }

    /// Terminated pods and pods without an address are not endpoints: their
    /// address may already belong to another pod. A template is one,
    /// though it has no address.
    pub fn is_endpoint(&self) -> bool {
        match self.source {
            PodSource::Template(_) => true,
            PodSource::Live { phase, .. } => {
                !self.ips.is_empty() && !matches!(phase, PodPhase::Succeeded | PodPhase::Failed)
            }
        }
    }

    /// The phase of a live pod; `None` for a template.
    pub fn phase(&self) -> Option<PodPhase> {
        match self.source {
            PodSource::Live { phase, .. } => Some(phase),
            PodSource::Template(_) => None,
        }
    }

    /// The kind of the workload whose template this is.
    pub fn template_kind(&self) -> Option<WorkloadKind> {
        match self.source {
            PodSource::Template(k) => Some(k),
            PodSource::Live { .. } => None,
        }
    }

    /// The workload this endpoint belongs to: its own for a template, the
    /// owner for a live pod that has one.
    pub fn workload(&self) -> Option<(WorkloadKind, &str)> {
        match &self.source {
            PodSource::Template(k) => Some((*k, &self.name)),
            PodSource::Live { owner, .. } => owner.as_ref().map(|w| (w.kind, w.name.as_str())),
        }
    }

    /// How output names the endpoint: `ns/name` for a pod,
    /// `ns/name[Kind]` for a template.
    pub fn display_name(&self) -> String {
        match self.source {
            PodSource::Template(k) => format!("{}/{}[{k}]", self.namespace, self.name),
            PodSource::Live { .. } => self.key(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Resolves a named port on this pod for one protocol: every number
    /// the name is given to, sorted. Two containers may give one name to
    /// two numbers (the API only warns); a policy naming it allows both, as
    /// the engine decides.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .ports
            .iter()
            .filter(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    /// `status.addresses` that parse as IP addresses.
    pub addresses: Vec<IpAddr>,
}

/// An `ipBlock`: `cidr` minus every `except`. The decoder guarantees each
/// `except` lies inside `cidr` and that prefixes are normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        for e in &self.except {
            write!(f, " except {e}")?;
        }
        Ok(())
    }
}

/// Which namespaces a NetworkPolicy peer's pod selector looks in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceScope {
    /// `podSelector` alone: the policy's own namespace.
    Own(String),
    /// `namespaceSelector` (`{}` selects every namespace).
    Selector(LabelSelector),
}

impl NamespaceScope {
    /// Whether namespace `ns` is in scope; its labels are asked for only
    /// when a selector needs them.
    pub fn contains<'a>(&self, ns: &str, ns_labels: impl FnOnce() -> &'a Labels) -> bool {
        match self {
            NamespaceScope::Own(own) => own == ns,
            NamespaceScope::Selector(sel) => sel.matches(ns_labels()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// Pods in `namespaces` matching `pods` (`namespaceSelector` alone
    /// carries the empty selector: all pods there).
    Pods {
        namespaces: NamespaceScope,
        pods: LabelSelector,
    },
    IpBlock(IpBlock),
}

/// A port in a NetworkPolicy rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    /// `{protocol}` with no port: every port of that protocol.
    AllPorts(Protocol),
    /// `port` (with `endPort`, inclusive): `start == end` for a single port.
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// A named port, resolved on the destination pod by name and protocol.
    Named { protocol: Protocol, name: String },
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::AllPorts(p) => write!(f, "any/{p}"),
            PortSpec::Range {
                protocol,
                start,
                end,
            } if start == end => write!(f, "{start}/{protocol}"),
            PortSpec::Range {
                protocol,
                start,
                end,
            } => write!(f, "{start}-{end}/{protocol}"),
            PortSpec::Named { protocol, name } => write!(f, "{name}/{protocol}"),
        }
    }
}

/// One ingress or egress rule. `None` means the field was absent or empty,
/// which in the API means "everything".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    /// `Some` iff the policy isolates selected pods for ingress (after
    /// `policyTypes` defaulting); the rules are then the only allows.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    /// Annotated `palisade.dev/staged: "true"`: evaluated beside the
    /// enforced policies for comparison, never enforced.
    pub staged: bool,
}

impl NetworkPolicy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdminAction {
    Allow,
    Deny,
    Pass,
}

impl fmt::Display for AdminAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminAction::Allow => "Allow",
            AdminAction::Deny => "Deny",
            AdminAction::Pass => "Pass",
        })
    }
}

/// Which pods an admin policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AdminSubject {
    Namespaces(LabelSelector),
    Pods {
        namespaces: LabelSelector,
        pods: LabelSelector,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AdminPeer {
    Namespaces(LabelSelector),
    Pods {
        namespaces: LabelSelector,
        pods: LabelSelector,
    },
    /// Egress only: the addresses of matching nodes.
    Nodes(LabelSelector),
    /// Egress only: CIDRs, matching pod addresses too.
    Networks(Vec<IpNet>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AdminPort {
    Number {
        protocol: Protocol,
        port: u16,
    },
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// Matches a destination pod's container port of that name, whatever
    /// its protocol.
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AdminRule {
    pub name: String,
    pub action: AdminAction,
    pub peers: Vec<AdminPeer>,
    /// `None`: all ports.
    pub ports: Option<Vec<AdminPort>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdminTier {
    /// AdminNetworkPolicy, or ClusterNetworkPolicy tier `Admin`.
    Admin,
    /// BaselineAdminNetworkPolicy, or ClusterNetworkPolicy tier `Baseline`.
    Baseline,
}

/// AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy
/// in one normalized form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AdminPolicy {
    /// The kind as written, for messages.
    pub kind: String,
    pub name: String,
    pub tier: AdminTier,
    /// Baseline objects of the v1alpha1 API have no priority: 0.
    pub priority: u32,
    pub subject: AdminSubject,
    pub ingress: Vec<AdminRule>,
    pub egress: Vec<AdminRule>,
    /// As [`NetworkPolicy::staged`].
    pub staged: bool,
}

impl AdminPolicy {
    /// `Kind/name`, as flow records, `diff` and `promote` name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Everything a set of manifests (or a datastore) describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub policies: Vec<NetworkPolicy>,
    pub admin_policies: Vec<AdminPolicy>,
}

impl Cluster {
    /// Whether any policy of the cluster is staged.
    pub fn has_staged(&self) -> bool {
        self.policies.iter().any(|p| p.staged) || self.admin_policies.iter().any(|p| p.staged)
    }

    /// The cluster without its staged policies: what is enforced.
    pub fn enforced(&self) -> Cluster {
        let mut c = self.clone();
        c.drop_staged();
        c
    }

    /// Removes the staged policies, in place.
    pub fn drop_staged(&mut self) {
        self.policies.retain(|p| !p.staged);
        self.admin_policies.retain(|p| !p.staged);
    }
    /// Adds the implicit namespace of every pod and policy that has no
    /// Namespace object, as Kubernetes would have it.
    pub fn complete_namespaces(&mut self) {
        let names: Vec<String> = self
            .pods
            .iter()
            .map(|p| p.namespace.clone())
            .chain(self.policies.iter().map(|p| p.namespace.clone()))
            .collect();
        for n in names {
            self.namespaces
                .entry(n.clone())
                .or_insert_with(|| Namespace::implicit(&n));
        }
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}
