//! The flow log's record: one observed connection attempt and the rule
//! that decided it. The agent writes these (JSON lines, one per record);
//! `palisade flows`, `generate` and `replay` read them. The format is
//! documented in docs/flows.md; keys are never renamed, only added.

use std::net::IpAddr;

use palisade_model::Protocol;
use serde::{Deserialize, Serialize};

use crate::{Decision, Direction, Endpoint, Engine, Flow};

/// What the enforced policies did with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    Allowed,
    Denied,
}

impl FlowVerdict {
    /// As records spell it (`allowed`, `denied`).
    pub fn as_str(self) -> &'static str {
        match self {
            FlowVerdict::Allowed => "allowed",
            FlowVerdict::Denied => "denied",
        }
    }

    pub fn of(allowed: bool) -> FlowVerdict {
        if allowed {
            FlowVerdict::Allowed
        } else {
            FlowVerdict::Denied
        }
    }

    /// [`FlowVerdict::as_str`] read back.
    pub fn parse(s: &str) -> Option<FlowVerdict> {
        [FlowVerdict::Allowed, FlowVerdict::Denied]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
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

impl StagedVerdict {
    /// As records spell it (`would-deny`, `would-allow`).
    pub fn as_str(self) -> &'static str {
        match self {
            StagedVerdict::WouldDeny => "would-deny",
            StagedVerdict::WouldAllow => "would-allow",
        }
    }
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

/// Who decided one direction of an observed packet, as a record names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub allowed: bool,
    pub policy: Option<String>,
    pub rule: Option<usize>,
    pub reason: String,
}

impl Engine {
    /// The flow of a packet seen by the kernel: its addresses as they are
    /// (an address held by an endpoint pod is that pod).
    pub fn packet_flow(&self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Flow {
        let (s, d) = (self.endpoint_for_ip(src), self.endpoint_for_ip(dst));
        let first = |e: Endpoint, ip: IpAddr| {
            self.ips_of(&e).iter().find(|a| a.is_ipv4() == ip.is_ipv4()) == Some(&ip)
        };
        Flow {
            src: s,
            dst: d,
            src_ip: Some(src),
            dst_ip: Some(dst),
            protocol,
            port,
            primary: (first(s, src), first(d, dst)),
            resolved: self.resolve(s, d),
        }
    }

    /// The deciding rule of one direction of `flow`: the policy
    /// (`namespace/name`, or `Kind/name` for an admin policy) and the
    /// rule's index in that policy's list for the direction; neither for a
    /// default deny or a direction no rule decides.
    pub fn attribute(&self, flow: &Flow, dir: Direction) -> Attribution {
        let o = self.outcome(dir, flow);
        let (policy, rule) = match o.decision {
            Decision::Allowed { policy, rule, .. } => {
                (Some(self.cluster.policies[policy].key()), Some(rule))
            }
            Decision::Admin { admin, rule, .. } => {
                let p = &self.index.admin()[admin].policy;
                (Some(format!("{}/{}", p.kind, p.name)), Some(rule))
            }
            Decision::Denied | Decision::NotIsolated | Decision::NotSubject | Decision::OwnNode => {
                (None, None)
            }
        };
        Attribution {
            allowed: o.allowed(),
            policy,
            rule,
            reason: self.render(&o, flow),
        }
    }

    /// `namespace/pod` or the address, and the pod's top-level workload
    /// (`namespace/name[Kind]`), as a record names an endpoint.
    pub fn record_names(&self, e: Endpoint) -> (String, Option<String>) {
        match e {
            Endpoint::Pod(i) => {
                let p = &self.cluster.pods[i];
                let w = p
                    .workload()
                    .map(|(k, n)| format!("{}/{n}[{k}]", p.namespace));
                (p.display_name(), w)
            }
            Endpoint::Ip(ip) => (ip.to_string(), None),
        }
    }
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

#[cfg(test)]
mod attribution {
    use palisade_model::*;

    use super::*;

    fn pod(name: &str, ip: &str) -> Pod {
        Pod {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), name.to_string())].into(),
            ips: vec![ip.parse().unwrap()],
            node: None,
            host_network: false,
            source: PodSource::Live {
                phase: PodPhase::Running,
                owner: Some(Workload {
                    kind: WorkloadKind::Deployment,
                    name: format!("{name}-app"),
                }),
            },
            ports: Vec::new(),
        }
    }

    #[test]
    fn rules_and_default_denies_are_named() {
        let mut c = Cluster {
            pods: vec![pod("a", "10.0.0.1"), pod("b", "10.0.0.2")],
            policies: vec![NetworkPolicy {
                namespace: "default".into(),
                name: "b-from-a".into(),
                pod_selector: LabelSelector::from_labels([("app", "b")]),
                ingress: Some(vec![Rule {
                    peers: Some(vec![Peer::Pods {
                        namespaces: NamespaceScope::Own("default".into()),
                        pods: LabelSelector::from_labels([("app", "a")]),
                    }]),
                    ports: Some(vec![PortSpec::Range {
                        protocol: Protocol::Tcp,
                        start: 80,
                        end: 80,
                    }]),
                }]),
                egress: None,
                staged: false,
            }],
            ..Cluster::default()
        };
        c.complete_namespaces();
        let e = Engine::new(c);
        let ip = |s: &str| s.parse().unwrap();
        let ok = e.packet_flow(ip("10.0.0.1"), ip("10.0.0.2"), Protocol::Tcp, 80);
        let a = e.attribute(&ok, Direction::Ingress);
        assert_eq!(
            (a.allowed, a.policy.as_deref(), a.rule),
            (true, Some("default/b-from-a"), Some(0))
        );
        let no = e.packet_flow(ip("10.0.0.1"), ip("10.0.0.2"), Protocol::Udp, 80);
        let d = e.attribute(&no, Direction::Ingress);
        assert_eq!((d.allowed, d.policy, d.rule), (false, None, None));
        assert_eq!(
            d.reason,
            "ingress denied: default/b is isolated for ingress by default/b-from-a and no rule allows 10.0.0.1 to port 80/UDP"
        );
        assert_eq!(
            e.record_names(ok.src),
            (
                "default/a".to_string(),
                Some("default/a-app[Deployment]".to_string())
            )
        );
        let out = e.packet_flow(ip("10.0.0.1"), ip("192.0.2.1"), Protocol::Tcp, 443);
        assert_eq!(e.record_names(out.dst), ("192.0.2.1".to_string(), None));
        let x = e.attribute(&out, Direction::Egress);
        assert_eq!((x.allowed, x.policy), (true, None));
    }
}
