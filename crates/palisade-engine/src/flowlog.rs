//! The flow log's record: one observed connection attempt and the rule
//! that decided it. The agent writes these (JSON lines, one per record);
//! `palisade flows`, `generate` and `replay` read them. The format is
//! documented in docs/flows.md; keys are never renamed, only added.

use std::net::IpAddr;

use palisade_model::Protocol;
use serde::{Deserialize, Serialize};

use crate::Direction;

/// What the enforced policies did with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    Allowed,
    Denied,
}

/// What the staged policies, added to the enforced ones, would have done
/// where that differs from what was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StagedVerdict {
    #[serde(rename = "would-deny")]
    WouldDeny,
    #[serde(rename = "would-allow")]
    WouldAllow,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// RFC 3339, UTC, when the agent read the kernel's report.
    pub time: String,
    /// The reporter: the node that enforced `direction`.
    pub node: String,
    pub direction: Direction,
    /// `namespace/pod`, or the address when it is no pod's.
    pub src: String,
    /// `namespace/name[Kind]` of the pod's top-level workload, if known.
    #[serde(default)]
    pub src_workload: Option<String>,
    #[serde(default)]
    pub src_ip: Option<IpAddr>,
    pub dst: String,
    #[serde(default)]
    pub dst_workload: Option<String>,
    #[serde(default)]
    pub dst_ip: Option<IpAddr>,
    #[serde(with = "protocol")]
    pub protocol: Protocol,
    pub port: u16,
    pub verdict: FlowVerdict,
    /// `namespace/name` of a NetworkPolicy, `Kind/name` of an admin
    /// policy; `None` when no rule decided (a default deny, or a direction
    /// no policy isolates).
    pub policy: Option<String>,
    /// The index of the deciding rule in its policy's list for
    /// `direction`; `None` with `policy`.
    pub rule: Option<usize>,
    /// One sentence: the engine's explanation of this direction.
    pub reason: String,
    /// Set only where the staged policies would change the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedVerdict>,
    /// The staged policy that decides the `staged` verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_policy: Option<String>,
    /// The agent's policy generation the kernel enforced; `None` when the
    /// report could not be tied to one (then `policy`, `rule` and `reason`
    /// say "unknown").
    #[serde(default)]
    pub generation: Option<u64>,
    /// Reports lost (kernel queue overrun, ring overflow) just before this
    /// one, so that loss is visible in the log itself.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

mod protocol {
    use palisade_model::Protocol;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(&s))
            .ok_or_else(|| de::Error::custom(format!("unknown protocol {s:?} (TCP, UDP or SCTP)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let line = r#"{"time":"2026-12-01T10:00:00.000Z","node":"node-1","direction":"ingress","src":"default/a","src_workload":"default/a[Deployment]","src_ip":"10.0.0.1","dst":"10.0.0.9","dst_workload":null,"dst_ip":"10.0.0.9","protocol":"UDP","port":53,"verdict":"denied","policy":null,"rule":null,"reason":"ingress denied: x","staged":"would-allow","staged_policy":"default/p","generation":3}"#;
        let r: FlowRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.protocol, Protocol::Udp);
        assert_eq!(r.direction, Direction::Ingress);
        assert_eq!(r.staged, Some(StagedVerdict::WouldAllow));
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
    }

    #[test]
    fn an_unknown_protocol_is_named() {
        let line = r#"{"time":"t","node":"n","direction":"egress","src":"a","dst":"b","protocol":"ICMP","port":0,"verdict":"allowed","policy":null,"rule":null,"reason":""}"#;
        let e = serde_json::from_str::<FlowRecord>(line).unwrap_err();
        assert!(e.to_string().contains("unknown protocol \"ICMP\""), "{e}");
    }
}
