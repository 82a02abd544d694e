//! Reasons: one sentence per direction naming the objects that decided it.
//! The frequent sentences are assembled from pieces made once per engine,
//! since a verdict with reasons is on the audit tools' hot path.

use std::fmt::Write as _;

use palisade_model::{AdminAction, AdminTier, NetworkPolicy, Pod, PortSpec};

use super::write::{push_ip, push_u32, push_usize};
use super::{Decision, Direction, Endpoint, Flow, Outcome, Verdict};
use crate::{Engine, PodId};

impl Engine {
    pub fn verdict(&self, flow: &Flow) -> Verdict {
        let e = self.explain(flow);
        Verdict {
            allowed: e.allowed(),
            reasons: vec![self.render(&e.egress, flow), self.render(&e.ingress, flow)],
        }
    }

    /// Displays an endpoint as [`Engine::describe`] does, without
    /// allocating.
    pub fn who(&self, e: Endpoint) -> Who<'_> {
        Who(self, e)
    }

    /// `namespace/pod`, `namespace/name[Kind]` for a workload's pod
    /// template, or the address.
    pub fn describe(&self, e: Endpoint) -> String {
        match e {
            Endpoint::Pod(i) => self.cluster.pods[i].display_name(),
            Endpoint::Ip(ip) => ip.to_string(),
        }
    }

    fn admin_label(&self, ai: usize) -> String {
        let p = &self.index.admin()[ai].policy;
        match (p.kind.as_str(), p.tier) {
            ("BaselineAdminNetworkPolicy", _) => format!("{} {}", p.kind, p.name),
            ("AdminNetworkPolicy", _) => format!("{} {} (priority {})", p.kind, p.name, p.priority),
            (_, AdminTier::Admin) => format!(
                "{} {} (Admin tier, priority {})",
                p.kind, p.name, p.priority
            ),
            (_, AdminTier::Baseline) => {
                format!(
                    "{} {} (Baseline tier, priority {})",
                    p.kind, p.name, p.priority
                )
            }
        }
    }

    /// The name of rule `ri` of admin policy `ai` in one direction.
    fn admin_rule_name(&self, ai: usize, dir: Direction, ri: usize) -> &str {
        let p = &self.index.admin()[ai].policy;
        match dir {
            Direction::Ingress => &p.ingress[ri].name,
            Direction::Egress => &p.egress[ri].name,
        }
    }

    /// Renders one direction's outcome as a sentence naming the objects
    /// that decided it.
    pub fn render(&self, o: &Outcome, flow: &Flow) -> String {
        let dir = o.direction.as_str();
        let subject = match o.direction {
            Direction::Ingress => flow.dst,
            Direction::Egress => flow.src,
        };
        // Room for the longest usual sentence, which names every isolating
        // policy: growing it would cost a reallocation per reason.
        let mut s = String::with_capacity(320);
        if let Some((ai, ri)) = o.passed {
            let _ = write!(
                s,
                "{dir} passed by {} rule {ri} {:?}, then ",
                self.admin_label(ai),
                self.admin_rule_name(ai, o.direction, ri)
            );
        }
        match o.decision {
            Decision::NotSubject => {
                let why = match subject {
                    Endpoint::Ip(_) => "is not a pod",
                    Endpoint::Pod(_) => "uses the host network",
                };
                let _ = write!(s, "{dir} not restricted: {} {why}", self.who(subject));
            }
            Decision::NotIsolated => {
                s.push_str(match o.direction {
                    Direction::Ingress => "ingress allowed: ",
                    Direction::Egress => "egress allowed: ",
                });
                self.push_who(&mut s, subject);
                s.push_str(match o.direction {
                    Direction::Ingress => " is not isolated for ingress",
                    Direction::Egress => " is not isolated for egress",
                });
            }
            Decision::OwnNode => {
                let _ = write!(
                    s,
                    "{dir} allowed: {} accepts traffic from its own node {}",
                    self.who(subject),
                    match subject {
                        Endpoint::Pod(p) => self.cluster.pods[p].node.as_deref().unwrap_or("?"),
                        Endpoint::Ip(_) => "?",
                    }
                );
            }
            Decision::Allowed {
                policy,
                rule,
                peer,
                port,
            } => self.push_allowed(&mut s, o.direction, flow, (policy, rule), (peer, port)),
            Decision::Denied => self.push_denied(&mut s, o.direction, flow, subject),
            Decision::Admin {
                admin,
                rule,
                action,
            } => {
                let verb = match action {
                    AdminAction::Allow => "allowed",
                    AdminAction::Deny => "denied",
                    AdminAction::Pass => "passed",
                };
                let _ = write!(
                    s,
                    "{dir} {verb} by {} rule {rule} {:?}",
                    self.admin_label(admin),
                    self.admin_rule_name(admin, o.direction, rule)
                );
            }
        }
        s
    }

    /// `DIR allowed by NS/NAME rule N (from|to PEER, PORT)`.
    fn push_allowed(
        &self,
        s: &mut String,
        dir: Direction,
        flow: &Flow,
        (policy, rule): (usize, usize),
        (pe, po): (Option<usize>, Option<usize>),
    ) {
        let p = &self.cluster.policies[policy];
        let rules = match dir {
            Direction::Ingress => p.ingress.as_deref(),
            Direction::Egress => p.egress.as_deref(),
        }
        .unwrap_or_default();
        let fromto = match dir {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        s.push_str(match dir {
            Direction::Ingress => "ingress allowed by ",
            Direction::Egress => "egress allowed by ",
        });
        s.push_str(&self.parts().policy_keys[policy]);
        s.push_str(" rule ");
        push_usize(s, rule);
        s.push_str(" (");
        s.push_str(fromto);
        s.push(' ');
        match pe {
            Some(i) => {
                s.push_str("peer ");
                push_usize(s, i);
                s.push_str(", ");
            }
            None => s.push_str("any peer, "),
        }
        match po.and_then(|i| rules.get(rule)?.ports.as_ref()?.get(i)) {
            Some(PortSpec::Named { name, .. }) => {
                s.push_str("port ");
                s.push_str(name);
                s.push('=');
            }
            Some(PortSpec::Range { start, end, .. }) if start != end => {
                s.push_str("ports ");
                push_u32(s, (*start).into());
                s.push('-');
                push_u32(s, (*end).into());
                s.push('/');
                s.push_str(flow.protocol.as_str());
                s.push_str(", ");
            }
            Some(PortSpec::AllPorts(_)) => {
                s.push_str("any ");
                s.push_str(flow.protocol.as_str());
                s.push_str(" port, ");
            }
            _ if po.is_none() => s.push_str("any port, "),
            _ => s.push_str("port "),
        }
        push_u32(s, flow.port.into());
        s.push('/');
        s.push_str(flow.protocol.as_str());
        s.push(')');
    }

    /// `DIR denied: POD is isolated for DIR by POLICIES and no rule allows
    /// PEER...`.
    fn push_denied(&self, s: &mut String, dir: Direction, flow: &Flow, subject: Endpoint) {
        let ident = match subject {
            Endpoint::Pod(p) => self.index.identity_of(PodId::new(p)),
            Endpoint::Ip(_) => None,
        };
        s.push_str(match dir {
            Direction::Ingress => "ingress denied: ",
            Direction::Egress => "egress denied: ",
        });
        self.push_who(s, subject);
        let d = match dir {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        };
        match ident {
            Some(i) => s.push_str(&self.parts().denied_by[d][i.index()]),
            None => {
                s.push_str(" is isolated for ");
                s.push_str(dir.as_str());
                s.push_str(" by  and no rule allows ");
            }
        }
        let (peer, peer_ip) = match dir {
            Direction::Egress => (flow.dst, flow.dst_ip),
            Direction::Ingress => (flow.src, flow.src_ip),
        };
        match (dir, peer_ip) {
            (Direction::Egress, Some(ip)) if ip.is_ipv6() => {
                s.push('[');
                push_ip(s, ip);
                s.push_str("]:");
            }
            (Direction::Egress, Some(ip)) => {
                push_ip(s, ip);
                s.push(':');
            }
            (Direction::Egress, None) => {
                self.push_who(s, peer);
                s.push_str(" port ");
            }
            (Direction::Ingress, Some(ip)) => {
                push_ip(s, ip);
                s.push_str(" to port ");
            }
            (Direction::Ingress, None) => {
                self.push_who(s, peer);
                s.push_str(" to port ");
            }
        }
        push_u32(s, flow.port.into());
        s.push('/');
        s.push_str(flow.protocol.as_str());
        if peer_ip.is_none() {
            s.push_str(" (");
            self.push_who(s, peer);
            s.push_str(" has no address, so no ipBlock matches it)");
        }
    }
}

/// The pieces of reasons that depend only on the cluster: one copy each
/// instead of several pushes per sentence.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReasonParts {
    /// Per pod: `namespace/name` (`namespace/name[Kind]` for a template).
    pod_keys: Vec<String>,
    /// Per NetworkPolicy: `namespace/name`.
    policy_keys: Vec<String>,
    /// Per direction (ingress, egress) and identity: what follows the pod
    /// in a denial, ` is isolated for DIR by POLICIES and no rule allows `.
    denied_by: [Vec<String>; 2],
}

impl Engine {
    fn parts(&self) -> &ReasonParts {
        self.parts.get_or_init(|| ReasonParts {
            pod_keys: self.cluster.pods.iter().map(Pod::display_name).collect(),
            policy_keys: self
                .cluster
                .policies
                .iter()
                .map(NetworkPolicy::key)
                .collect(),
            denied_by: [Direction::Ingress, Direction::Egress].map(|d| {
                self.index
                    .identities()
                    .iter()
                    .map(|id| {
                        format!(
                            " is isolated for {} by {} and no rule allows ",
                            d.as_str(),
                            id.plan(d).isolated_by
                        )
                    })
                    .collect()
            }),
        })
    }

    fn push_who(&self, s: &mut String, e: Endpoint) {
        match e {
            Endpoint::Pod(i) => s.push_str(&self.parts().pod_keys[i]),
            Endpoint::Ip(ip) => push_ip(s, ip),
        }
    }
}

pub struct Who<'a>(&'a Engine, Endpoint);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Endpoint::Pod(i) => {
                let p = &self.0.cluster.pods[i];
                write!(f, "{}/{}", p.namespace, p.name)?;
                match p.template_kind() {
                    Some(k) => write!(f, "[{k}]"),
                    None => Ok(()),
                }
            }
            Endpoint::Ip(ip) => write!(f, "{ip}"),
        }
    }
}
