//! The verdict function: the one place that decides whether a flow is
//! allowed. Evaluation yields a [`Decision`] made of indexes (cheap, no
//! allocation); reasons are rendered from it only when asked for.

use std::fmt::Write as _;
use std::net::IpAddr;

use palisade_model::{AdminAction, AdminTier, NetworkPolicy, Pod, PortSpec, Protocol};

use crate::index::{FlatPortKind, FlatRule, PeerMatch};
use crate::Engine;

/// One side of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An index into `Cluster::pods` (an endpoint pod).
    Pod(usize),
    /// An address that is not an endpoint pod's.
    Ip(IpAddr),
}

/// A connection attempt: the first packet of `src_ip` → `dst_ip:port`.
/// Build it with [`Engine::flow`], which resolves addresses to pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// Whether `src_ip` / `dst_ip` is its pod's first address of its
    /// family, the one the pod's identity was classified by: the verdict
    /// then reuses the identity's address class instead of looking the
    /// address up.
    pub(crate) primary: (bool, bool),
    pub(crate) resolved: Resolved,
}

/// The identities of a flow's pods, resolved when the engine built the
/// flow, so that a verdict does not look them up again. Valid only for the
/// engine that built it (another engine may group pods differently), which
/// the stamp checks. Not part of a flow's identity: two flows that differ
/// only here are the same flow.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Resolved {
    stamp: u32,
    src: Option<u32>,
    dst: Option<u32>,
}

impl PartialEq for Resolved {
    fn eq(&self, _: &Resolved) -> bool {
        true
    }
}

impl Eq for Resolved {}

impl std::hash::Hash for Resolved {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// How one direction of a flow was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The subject is an external address, a host-network pod or a
    /// non-endpoint: no policy applies to it.
    NotSubject,
    /// No NetworkPolicy isolates the pod in this direction and no admin
    /// policy matched.
    NotIsolated,
    /// Ingress to an isolated pod from its own node.
    OwnNode,
    /// A NetworkPolicy rule allows it. `peer`/`port` are `None` when the
    /// rule has no peers / ports (which means all).
    Allowed {
        policy: usize,
        rule: usize,
        peer: Option<usize>,
        port: Option<usize>,
    },
    /// Isolated by NetworkPolicy and no rule allows it.
    Denied,
    /// An admin policy rule (index into `Index::admin`) with action Allow or
    /// Deny decided.
    Admin {
        admin: usize,
        rule: usize,
        action: AdminAction,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub direction: Direction,
    /// The admin rule that passed the flow down to NetworkPolicy, if any.
    pub passed: Option<(usize, usize)>,
    pub decision: Decision,
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        match self.decision {
            Decision::Denied => false,
            Decision::Admin { action, .. } => action != AdminAction::Deny,
            _ => true,
        }
    }
}

/// The answer for one flow: allowed iff both directions allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub egress: Outcome,
    pub ingress: Outcome,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        self.egress.allowed() && self.ingress.allowed()
    }
}

#[inline]
fn port_matches(
    kind: FlatPortKind,
    protocol: Protocol,
    port: u16,
    named: &[(u32, Protocol, u16)],
) -> bool {
    match kind {
        FlatPortKind::Range(p, start, end) => p == protocol && start <= port && port <= end,
        FlatPortKind::Named(p, name) => {
            p == protocol
                && named
                    .iter()
                    .any(|&(n, q, v)| n == name && q == protocol && v == port)
        }
        FlatPortKind::NamedAnyProtocol(name) => named
            .iter()
            .any(|&(n, q, v)| n == name && q == protocol && v == port),
    }
}

struct Classified<'a> {
    subject: usize,
    peer: Endpoint,
    peer_ip: IpAddr,
    peer_id: Option<u32>,
    holder: Option<u32>,
    cls: &'a crate::classify::DirClassifier,
    flags: crate::classify::Flags,
    matches: crate::classify::Matches,
}

/// A flow seen from one direction: the subject whose policies decide it
/// and the peer they are matched against.
struct Sides {
    subject: Endpoint,
    subject_id: Option<u32>,
    peer: Endpoint,
    peer_id: Option<u32>,
    peer_ip: IpAddr,
    /// Whether `peer_ip` is the peer pod's first address of its family.
    peer_primary: bool,
}

impl Sides {
    /// The peer as the classifier sees it.
    #[inline(always)]
    fn peer(&self) -> crate::classify::Peer<'_> {
        crate::classify::Peer {
            identity: self.peer_id.map(|i| i as usize),
            primary: self.peer_primary,
            ip: &self.peer_ip,
        }
    }

    #[inline(always)]
    fn of(dir: Direction, flow: &Flow, (src_id, dst_id): (Option<u32>, Option<u32>)) -> Sides {
        match dir {
            Direction::Ingress => Sides {
                subject: flow.dst,
                subject_id: dst_id,
                peer: flow.src,
                peer_id: src_id,
                peer_ip: flow.src_ip,
                peer_primary: flow.primary.0,
            },
            Direction::Egress => Sides {
                subject: flow.src,
                subject_id: src_id,
                peer: flow.dst,
                peer_id: dst_id,
                peer_ip: flow.dst_ip,
                peer_primary: flow.primary.1,
            },
        }
    }
}

/// A policy subject of one direction, with what deciding it needs.
struct Subject<'a> {
    sides: Sides,
    pod: usize,
    identity: usize,
    cls: &'a crate::classify::DirClassifier,
    flags: crate::classify::Flags,
}

/// The fixed facts of one direction's evaluation.
struct Ctx<'a> {
    /// The peer's identity, when the peer is an endpoint pod.
    peer_id: Option<u32>,
    peer_ip: IpAddr,
    protocol: Protocol,
    port: u16,
    /// The destination pod's named ports (empty for a non-pod).
    named: &'a [(u32, Protocol, u16)],
}

impl Engine {
    /// Resolves `namespace/name` or an IP address to an endpoint.
    pub fn endpoint(&self, s: &str) -> Result<Endpoint, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(self.endpoint_for_ip(ip));
        }
        let Some((ns, name)) = s.split_once('/') else {
            return Err(format!("{s:?} is neither namespace/pod nor an IP address"));
        };
        let Some(i) = self
            .cluster
            .pods
            .iter()
            .position(|p| p.namespace == ns && p.name == name)
        else {
            return Err(format!("pod {s} not found"));
        };
        if self.index.pod_identity[i].is_none() {
            let p = &self.cluster.pods[i];
            return Err(format!(
                "pod {s} is not an endpoint ({}, phase {:?})",
                if p.ips.is_empty() {
                    "no IP address"
                } else {
                    "terminated"
                },
                p.phase
            ));
        }
        Ok(Endpoint::Pod(i))
    }

    /// An address is a pod when an endpoint pod (not host-network) holds it.
    pub fn endpoint_for_ip(&self, ip: IpAddr) -> Endpoint {
        match self.index.ip_to_pod.get(&ip) {
            Some(&i) => Endpoint::Pod(i),
            None => Endpoint::Ip(ip),
        }
    }

    fn ips_of<'a>(&'a self, e: &'a Endpoint) -> &'a [IpAddr] {
        match *e {
            Endpoint::Pod(i) => &self.cluster.pods[i].ips,
            Endpoint::Ip(ref ip) => std::slice::from_ref(ip),
        }
    }

    /// Builds a flow, choosing the addresses: the family of an explicit
    /// address, else IPv4 when both pods have it, else IPv6.
    pub fn flow(
        &self,
        src: Endpoint,
        dst: Endpoint,
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, String> {
        let families: &[bool] = match (src, dst) {
            (Endpoint::Ip(a), _) | (_, Endpoint::Ip(a)) => {
                if a.is_ipv4() {
                    &[true]
                } else {
                    &[false]
                }
            }
            _ => &[true, false],
        };
        for &v4 in families {
            let s = self.ips_of(&src).iter().find(|ip| ip.is_ipv4() == v4);
            let d = self.ips_of(&dst).iter().find(|ip| ip.is_ipv4() == v4);
            if let (Some(&s), Some(&d)) = (s, d) {
                return Ok(Flow {
                    src,
                    dst,
                    src_ip: s,
                    dst_ip: d,
                    protocol,
                    port,
                    primary: (true, true),
                    resolved: self.resolve(src, dst),
                });
            }
        }
        Err(format!(
            "{} and {} have no address family in common",
            self.describe(src),
            self.describe(dst)
        ))
    }

    /// Resolves `SRC DST` as written by a user: `namespace/pod` or an
    /// address. An address fixes the family and, for a pod with several
    /// addresses, which one the flow uses.
    pub fn flow_between(
        &self,
        src: &str,
        dst: &str,
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, String> {
        let s = self.endpoint(src)?;
        let d = self.endpoint(dst)?;
        let (sip, dip) = (src.parse::<IpAddr>().ok(), dst.parse::<IpAddr>().ok());
        let Some(v4) = sip.or(dip).map(|ip| ip.is_ipv4()) else {
            return self.flow(s, d, protocol, port);
        };
        if let (Some(a), Some(b)) = (sip, dip) {
            if a.is_ipv4() != b.is_ipv4() {
                return Err(format!("{src} and {dst} are of different address families"));
            }
        }
        let pick = |e: Endpoint, explicit: Option<IpAddr>| -> Result<IpAddr, String> {
            explicit
                .or_else(|| {
                    self.ips_of(&e)
                        .iter()
                        .copied()
                        .find(|ip| ip.is_ipv4() == v4)
                })
                .ok_or_else(|| {
                    format!(
                        "{} has no {} address",
                        self.describe(e),
                        if v4 { "IPv4" } else { "IPv6" }
                    )
                })
        };
        let (src_ip, dst_ip) = (pick(s, sip)?, pick(d, dip)?);
        let first = |e: Endpoint, ip: IpAddr| {
            self.ips_of(&e).iter().find(|a| a.is_ipv4() == v4) == Some(&ip)
        };
        Ok(Flow {
            src: s,
            dst: d,
            src_ip,
            dst_ip,
            protocol,
            port,
            primary: (first(s, src_ip), first(d, dst_ip)),
            resolved: self.resolve(s, d),
        })
    }

    /// Like [`Engine::flow`] but over one address family (`true`: IPv4).
    pub fn flow_in_family(
        &self,
        src: Endpoint,
        dst: Endpoint,
        protocol: Protocol,
        port: u16,
        v4: bool,
    ) -> Option<Flow> {
        let s = *self.ips_of(&src).iter().find(|ip| ip.is_ipv4() == v4)?;
        let d = *self.ips_of(&dst).iter().find(|ip| ip.is_ipv4() == v4)?;
        Some(Flow {
            src,
            dst,
            src_ip: s,
            dst_ip: d,
            protocol,
            port,
            primary: (true, true),
            resolved: self.resolve(src, dst),
        })
    }

    /// Displays an endpoint as `namespace/pod` or its address, without
    /// allocating.
    pub fn who(&self, e: Endpoint) -> Who<'_> {
        Who(self, e)
    }

    pub fn describe(&self, e: Endpoint) -> String {
        match e {
            Endpoint::Pod(i) => self.cluster.pods[i].key(),
            Endpoint::Ip(ip) => ip.to_string(),
        }
    }

    /// The fast path: no reasons, no allocation.
    #[inline]
    pub fn allowed(&self, flow: &Flow) -> bool {
        let ids = self.identities_of(flow);
        self.allowed_with(Direction::Egress, flow, ids)
            && self.allowed_with(Direction::Ingress, flow, ids)
    }

    /// [`Engine::outcome`]`(dir, flow).allowed()` without building the
    /// explanation; the property tests hold the two equal.
    #[inline]
    pub fn allowed_in(&self, dir: Direction, flow: &Flow) -> bool {
        self.allowed_with(dir, flow, self.identities_of(flow))
    }

    fn resolve(&self, src: Endpoint, dst: Endpoint) -> Resolved {
        Resolved {
            stamp: self.stamp,
            src: self.identity_of(src),
            dst: self.identity_of(dst),
        }
    }

    #[inline(always)]
    fn identity_of(&self, e: Endpoint) -> Option<u32> {
        match e {
            Endpoint::Pod(p) => self.index.pod_identity[p],
            Endpoint::Ip(_) => None,
        }
    }

    /// The identities of the flow's source and destination pods.
    #[inline(always)]
    fn identities_of(&self, flow: &Flow) -> (Option<u32>, Option<u32>) {
        let r = &flow.resolved;
        if r.stamp == self.stamp {
            (r.src, r.dst)
        } else {
            (self.identity_of(flow.src), self.identity_of(flow.dst))
        }
    }

    #[inline(always)]
    fn allowed_with(&self, dir: Direction, flow: &Flow, ids: (Option<u32>, Option<u32>)) -> bool {
        let Some(Subject {
            sides: s,
            pod: sp,
            identity,
            cls,
            flags,
        }) = self.subject(dir, flow, ids)
        else {
            return true;
        };
        let m = cls.first_of_each_tier(
            identity,
            s.peer(),
            flow.protocol,
            flow.port,
            ids.1.map(|i| i as usize),
        );
        if let Some(bit) = m.admin {
            match cls.action(bit) {
                AdminAction::Allow => return true,
                AdminAction::Deny => return false,
                AdminAction::Pass => {}
            }
        }
        if flags.isolated {
            return m.np.is_some()
                || (dir == Direction::Ingress && self.is_from_own_node(sp, s.peer, s.peer_ip));
        }
        m.baseline
            .is_none_or(|bit| cls.action(bit) != AdminAction::Deny)
    }

    pub fn explain(&self, flow: &Flow) -> Explanation {
        Explanation {
            egress: self.outcome(Direction::Egress, flow),
            ingress: self.outcome(Direction::Ingress, flow),
        }
    }

    pub fn verdict(&self, flow: &Flow) -> Verdict {
        let e = self.explain(flow);
        Verdict {
            allowed: e.allowed(),
            reasons: vec![self.render(&e.egress, flow), self.render(&e.ingress, flow)],
        }
    }

    #[inline]
    fn peer_matches(&self, m: &PeerMatch, ctx: &Ctx) -> bool {
        match *m {
            PeerMatch::Set(s) => ctx
                .peer_id
                .is_some_and(|id| self.index.sets[s].contains(id as usize)),
            PeerMatch::Addr(a) => self.index.matchers[a].contains(&ctx.peer_ip),
        }
    }

    /// Whether a rule matches; `Some((peer, port))` gives the positions
    /// that matched (`None` where the rule has no peers / ports).
    #[inline]
    fn rule_matches(&self, r: &FlatRule, ctx: &Ctx) -> Option<(Option<usize>, Option<usize>)> {
        let port = match &r.ports {
            None => None,
            Some(ps) => Some(
                ps.iter()
                    .find(|p| port_matches(p.kind, ctx.protocol, ctx.port, ctx.named))?
                    .index,
            ),
        };
        let peer = match &r.peers {
            None => None,
            Some(ps) => Some(ps.iter().position(|m| self.peer_matches(m, ctx))?),
        };
        Some((peer, port))
    }

    /// The classification of one direction of a flow; `None` when the
    /// subject is not a policy subject (an address, a host-network pod).
    #[inline]
    fn classified(&self, dir: Direction, flow: &Flow) -> Option<Classified<'_>> {
        self.classified_with(dir, flow, self.identities_of(flow))
    }

    #[inline(always)]
    fn classifier(&self, dir: Direction) -> &crate::classify::DirClassifier {
        &self.index.classifiers[match dir {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }]
    }

    /// One direction's subject, when it is a policy subject: an endpoint
    /// pod on the pod network.
    #[inline(always)]
    fn subject(
        &self,
        dir: Direction,
        flow: &Flow,
        ids: (Option<u32>, Option<u32>),
    ) -> Option<Subject<'_>> {
        let sides = Sides::of(dir, flow, ids);
        let (Endpoint::Pod(pod), Some(id)) = (sides.subject, sides.subject_id) else {
            return None;
        };
        let cls = self.classifier(dir);
        let flags = cls.flags(id as usize);
        if flags.host_network {
            return None;
        }
        Some(Subject {
            sides,
            pod,
            identity: id as usize,
            cls,
            flags,
        })
    }

    #[inline(always)]
    fn classified_with(
        &self,
        dir: Direction,
        flow: &Flow,
        ids: (Option<u32>, Option<u32>),
    ) -> Option<Classified<'_>> {
        let Subject {
            sides: s,
            pod: sp,
            identity,
            cls,
            flags,
        } = self.subject(dir, flow, ids)?;
        let holder = ids.1;
        let matches = cls.classify(
            identity,
            s.peer(),
            flow.protocol,
            flow.port,
            holder.map(|i| i as usize),
        );
        Some(Classified {
            subject: sp,
            peer: s.peer,
            peer_ip: s.peer_ip,
            peer_id: s.peer_id,
            holder,
            cls,
            flags,
            matches,
        })
    }

    pub fn outcome(&self, dir: Direction, flow: &Flow) -> Outcome {
        let done = |passed, decision| Outcome {
            direction: dir,
            passed,
            decision,
        };
        let Some(c) = self.classified(dir, flow) else {
            return done(None, Decision::NotSubject);
        };
        let Classified {
            subject: sp,
            peer,
            peer_ip,
            peer_id,
            holder,
            cls,
            flags,
            matches: m,
        } = c;
        // Only an explanation needs the rule itself.
        let ctx = || Ctx {
            peer_id,
            peer_ip,
            protocol: flow.protocol,
            port: flow.port,
            named: holder
                .map(|i| &self.index.identities[i as usize])
                .filter(|i| !i.host_network)
                .map_or(&[], |i| &i.named_ports[..]),
        };

        let mut passed = None;
        if let Some(bit) = m.admin {
            let r = &cls.rule(bit).rule;
            if r.action == AdminAction::Pass {
                passed = Some((r.owner, r.rule));
            } else {
                return done(
                    None,
                    Decision::Admin {
                        admin: r.owner,
                        rule: r.rule,
                        action: r.action,
                    },
                );
            }
        }

        if flags.isolated {
            if dir == Direction::Ingress && self.is_from_own_node(sp, peer, peer_ip) {
                return done(passed, Decision::OwnNode);
            }
            return match m.np {
                Some(bit) => {
                    let r = &cls.rule(bit).rule;
                    // Which peer and port of the rule matched, for the
                    // explanation: one rule, checked directly.
                    let (peer, port) = self.rule_matches(r, &ctx()).unwrap_or((None, None));
                    done(
                        passed,
                        Decision::Allowed {
                            policy: r.owner,
                            rule: r.rule,
                            peer,
                            port,
                        },
                    )
                }
                None => done(passed, Decision::Denied),
            };
        }

        if let Some(bit) = m.baseline {
            let r = &cls.rule(bit).rule;
            // Pass has no meaning in the baseline tier (the decoder refuses
            // it): the flow is left to the default, allow.
            if r.action != AdminAction::Pass {
                return done(
                    passed,
                    Decision::Admin {
                        admin: r.owner,
                        rule: r.rule,
                        action: r.action,
                    },
                );
            }
        }
        done(passed, Decision::NotIsolated)
    }

    /// Ingress to pod `subject` from its own node: from one of the node's
    /// addresses, or from a host-network pod on that node.
    fn is_from_own_node(&self, subject: usize, peer: Endpoint, peer_ip: IpAddr) -> bool {
        let Some(node) = self.index.pod_node[subject] else {
            return false;
        };
        if let Endpoint::Pod(p) = peer {
            let host = self.index.pod_host_network[p];
            if host && self.index.pod_node[p] == Some(node) {
                return true;
            }
            if !host && !self.index.node_address_is_pod_address {
                return false;
            }
        }
        self.index.node_address_lists[node as usize].contains(&peer_ip)
    }

    fn admin_label(&self, ai: usize) -> String {
        let p = &self.index.admin[ai].policy;
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

    /// Renders one direction's outcome as a sentence naming the objects
    /// that decided it.
    pub fn render(&self, o: &Outcome, flow: &Flow) -> String {
        let dir = o.direction.as_str();
        let (subject, peer) = match o.direction {
            Direction::Ingress => (flow.dst, flow.src),
            Direction::Egress => (flow.src, flow.dst),
        };
        // Room for the longest usual sentence, which names every isolating
        // policy: growing it would cost a reallocation per reason.
        let mut s = String::with_capacity(320);
        if let Some((ai, ri)) = o.passed {
            let _ = write!(
                s,
                "{dir} passed by {} rule {ri} {:?}, then ",
                self.admin_label(ai),
                self.index.admin[ai]
                    .policy
                    .ingress_or_egress(o.direction, ri)
                    .name
            );
        }
        let _ = match o.decision {
            Decision::NotSubject => {
                let why = match subject {
                    Endpoint::Ip(_) => "is not a pod",
                    Endpoint::Pod(_) => "uses the host network",
                };
                write!(s, "{dir} not restricted: {} {why}", self.who(subject))
            }
            Decision::NotIsolated => {
                // The most frequent sentences are assembled by hand from
                // pieces made once: a verdict with reasons is on the audit
                // tools' hot path.
                s.push_str(match o.direction {
                    Direction::Ingress => "ingress allowed: ",
                    Direction::Egress => "egress allowed: ",
                });
                self.push_who(&mut s, subject);
                s.push_str(match o.direction {
                    Direction::Ingress => " is not isolated for ingress",
                    Direction::Egress => " is not isolated for egress",
                });
                Ok(())
            }
            Decision::OwnNode => write!(
                s,
                "{dir} allowed: {} accepts traffic from its own node {}",
                self.who(subject),
                match subject {
                    Endpoint::Pod(p) => self.cluster.pods[p].node.as_deref().unwrap_or("?"),
                    Endpoint::Ip(_) => "?",
                }
            ),
            Decision::Allowed {
                policy,
                rule,
                peer: pe,
                port: po,
            } => {
                let p = &self.cluster.policies[policy];
                let rules = match o.direction {
                    Direction::Ingress => p.ingress.as_deref(),
                    Direction::Egress => p.egress.as_deref(),
                }
                .unwrap_or_default();
                let fromto = match o.direction {
                    Direction::Ingress => "from",
                    Direction::Egress => "to",
                };
                s.push_str(match o.direction {
                    Direction::Ingress => "ingress allowed by ",
                    Direction::Egress => "egress allowed by ",
                });
                s.push_str(&self.parts().policy_keys[policy]);
                s.push_str(" rule ");
                push_usize(&mut s, rule);
                s.push_str(" (");
                s.push_str(fromto);
                s.push(' ');
                match pe {
                    Some(i) => {
                        s.push_str("peer ");
                        push_usize(&mut s, i);
                        s.push_str(", ");
                    }
                    None => s.push_str("any peer, "),
                }
                let push_port = |s: &mut String| {
                    push_u32(s, flow.port.into());
                    s.push('/');
                    s.push_str(flow.protocol.as_str());
                    s.push(')');
                };
                match po.and_then(|i| rules.get(rule)?.ports.as_ref()?.get(i)) {
                    Some(PortSpec::Named { name, .. }) => {
                        s.push_str("port ");
                        s.push_str(name);
                        s.push('=');
                    }
                    Some(PortSpec::Range { start, end, .. }) if start != end => {
                        s.push_str("ports ");
                        push_u32(&mut s, (*start).into());
                        s.push('-');
                        push_u32(&mut s, (*end).into());
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
                push_port(&mut s);
                Ok(())
            }
            Decision::Denied => {
                let ident = match subject {
                    Endpoint::Pod(p) => self.index.pod_identity[p],
                    Endpoint::Ip(_) => None,
                };
                s.push_str(match o.direction {
                    Direction::Ingress => "ingress denied: ",
                    Direction::Egress => "egress denied: ",
                });
                self.push_who(&mut s, subject);
                let d = match o.direction {
                    Direction::Ingress => 0,
                    Direction::Egress => 1,
                };
                match ident {
                    Some(i) => s.push_str(&self.parts().denied_by[d][i as usize]),
                    None => {
                        s.push_str(" is isolated for ");
                        s.push_str(dir);
                        s.push_str(" by  and no rule allows ");
                    }
                }
                let _ = peer;
                match o.direction {
                    Direction::Egress if flow.dst_ip.is_ipv6() => {
                        s.push('[');
                        push_ip(&mut s, flow.dst_ip);
                        s.push_str("]:");
                    }
                    Direction::Egress => {
                        push_ip(&mut s, flow.dst_ip);
                        s.push(':');
                    }
                    Direction::Ingress => {
                        push_ip(&mut s, flow.src_ip);
                        s.push_str(" to port ");
                    }
                }
                push_u32(&mut s, flow.port.into());
                s.push('/');
                s.push_str(flow.protocol.as_str());
                Ok(())
            }
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
                write!(
                    s,
                    "{dir} {verb} by {} rule {rule} {:?}",
                    self.admin_label(admin),
                    self.index.admin[admin]
                        .policy
                        .ingress_or_egress(o.direction, rule)
                        .name
                )
            }
        };
        s
    }
}

/// The pieces of reasons that depend only on the cluster: one copy each
/// instead of several pushes per sentence.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReasonParts {
    /// Per pod: `namespace/name`.
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
            pod_keys: self.cluster.pods.iter().map(Pod::key).collect(),
            policy_keys: self
                .cluster
                .policies
                .iter()
                .map(NetworkPolicy::key)
                .collect(),
            denied_by: [Direction::Ingress, Direction::Egress].map(|d| {
                self.index
                    .identities
                    .iter()
                    .map(|id| {
                        let by = match d {
                            Direction::Ingress => &id.ingress_plan.isolated_by,
                            Direction::Egress => &id.egress_plan.isolated_by,
                        };
                        format!(
                            " is isolated for {} by {by} and no rule allows ",
                            d.as_str()
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

/// Decimal forms of 0..1000: address octets, ports and rule numbers are
/// mostly below 1000, and reasons are on the audit tools' hot path.
static DEC: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..1000u32).map(|n| n.to_string()).collect());

fn push_u32(s: &mut String, n: u32) {
    if n < 1000 {
        s.push_str(&DEC[n as usize]);
        return;
    }
    push_u32(s, n / 1000);
    // Lower groups are three digits, with leading zeros.
    let r = n % 1000;
    s.push(char::from(b'0' + (r / 100) as u8));
    s.push(char::from(b'0' + (r / 10 % 10) as u8));
    s.push(char::from(b'0' + (r % 10) as u8));
}

fn push_usize(s: &mut String, n: usize) {
    match u32::try_from(n) {
        Ok(n) => push_u32(s, n),
        Err(_) => {
            let _ = write!(s, "{n}");
        }
    }
}

fn push_ip(s: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            s.push_str(&DEC[a as usize]);
            s.push('.');
            s.push_str(&DEC[b as usize]);
            s.push('.');
            s.push_str(&DEC[c as usize]);
            s.push('.');
            s.push_str(&DEC[d as usize]);
        }
        IpAddr::V6(a) => push_ipv6(s, a),
    }
}

/// `Ipv6Addr`'s `Display` (RFC 5952: lowercase hex, the longest run of two
/// or more zero groups, the first of equals, as `::`; IPv4-mapped addresses
/// dotted) without `fmt`, which cost several hundred instructions an
/// address on the reasons' hot path. A test holds the two equal over every
/// placement of zero runs.
fn push_ipv6(s: &mut String, a: std::net::Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        s.push_str("::ffff:");
        push_ip(s, IpAddr::V4(v4));
        return;
    }
    let g = a.segments();
    // The longest run of zero groups (length > 1), the first if tied.
    let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
    for (i, &x) in g.iter().enumerate() {
        if x == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best, best_len) = (run, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let hex = |s: &mut String, x: u16| {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let d = (x >> shift) & 0xf;
            if d != 0 || started || shift == 0 {
                s.push(char::from(DIGITS[d as usize]));
                started = true;
            }
        }
    };
    if best_len < 2 {
        for (i, &x) in g.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            hex(s, x);
        }
        return;
    }
    for (i, &x) in g[..best].iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        hex(s, x);
    }
    s.push_str("::");
    for (i, &x) in g[best + best_len..].iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        hex(s, x);
    }
}

pub struct Who<'a>(&'a Engine, Endpoint);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Endpoint::Pod(i) => {
                let p = &self.0.cluster.pods[i];
                write!(f, "{}/{}", p.namespace, p.name)
            }
            Endpoint::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

trait AdminRules {
    fn ingress_or_egress(&self, dir: Direction, i: usize) -> &palisade_model::AdminRule;
}

impl AdminRules for palisade_model::AdminPolicy {
    fn ingress_or_egress(&self, dir: Direction, i: usize) -> &palisade_model::AdminRule {
        match dir {
            Direction::Ingress => &self.ingress[i],
            Direction::Egress => &self.egress[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_formatting_matches_display() {
        for ip in [
            "0.0.0.0",
            "10.0.2.1",
            "255.255.255.255",
            "192.168.100.9",
            "1.20.3.100",
            "fd00::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
        // Every pattern of zero and non-zero groups (so every placement of
        // zero runs, ties included), with values of every hex width, and
        // IPv4-mapped and -compatible forms.
        let mut v6: Vec<std::net::Ipv6Addr> = Vec::new();
        for pattern in 0u32..256 {
            for (k, fill) in [1u16, 0xabcd, 0x0f00, 0x10, 0xffff].into_iter().enumerate() {
                let g: [u16; 8] = std::array::from_fn(|i| {
                    if pattern >> i & 1 == 1 {
                        fill.rotate_left((i + k) as u32)
                    } else {
                        0
                    }
                });
                v6.push(g.into());
            }
        }
        v6.extend(
            [
                "::ffff:10.0.0.1",
                "::10.0.0.1",
                "::ffff:0:0",
                "::ffff:0:1:2",
                "64:ff9b::1.2.3.4",
            ]
            .iter()
            .map(|a| a.parse::<std::net::Ipv6Addr>().unwrap()),
        );
        for a in v6 {
            let mut s = String::new();
            push_ip(&mut s, IpAddr::V6(a));
            assert_eq!(s, a.to_string(), "{:?}", a.segments());
        }
        for n in (0..70_000).chain([100_007, 1_000_000, 4_000_000_009, u32::MAX]) {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
