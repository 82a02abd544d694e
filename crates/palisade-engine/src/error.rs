//! The engine's one error type: what a user named that the cluster does
//! not have, or a flow that cannot exist.

use palisade_model::PodPhase;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is neither namespace/pod nor an IP address")]
    NotAnEndpoint(String),
    #[error("pod {0} not found")]
    PodNotFound(String),
    /// `ns/name[Kind]` that no template of the input is; `live` lists the
    /// pods of that workload the input has instead.
    #[error(
        "{name} not found{}",
        if live.is_empty() { String::new() } else {
            format!(" as a template: the input has its live pods instead ({})", live.join(", "))
        }
    )]
    WorkloadNotFound { name: String, live: Vec<String> },
    /// `ns/name` shared by a pod and templates, or templates of several kinds.
    #[error("{name} is ambiguous: it names {}; write one of them", candidates.join(", "))]
    AmbiguousName {
        name: String,
        candidates: Vec<String>,
    },
    #[error("{text:?}: unknown workload kind {kind:?} (expected Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job or CronJob)")]
    UnknownWorkloadKind { text: String, kind: String },
    /// A pod that exists but takes no traffic.
    #[error(
        "pod {pod} is not an endpoint ({}, phase {phase:?})",
        if *.has_ip { "terminated" } else { "no IP address" }
    )]
    NotServing {
        pod: String,
        has_ip: bool,
        phase: PodPhase,
    },
    #[error("{src} and {dst} have no address family in common")]
    NoCommonFamily { src: String, dst: String },
    #[error("{src} and {dst} are of different address families")]
    MixedFamilies { src: String, dst: String },
    #[error("{endpoint} has no {family} address")]
    NoAddressOfFamily {
        endpoint: String,
        family: &'static str,
    },
    #[error("invalid port {port:?} in {text:?} (expected 1-65535)")]
    InvalidPort { port: String, text: String },
    /// The model's own message for a protocol it does not know.
    #[error("{0}")]
    Protocol(String),
}
