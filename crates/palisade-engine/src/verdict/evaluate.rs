//! Deciding a flow: one direction at a time, the subject's classifier row
//! gives the deciding rule of each tier; `outcome` then names the peer and
//! port of the rule that matched, for explanations.

use std::net::IpAddr;

use palisade_model::{AdminAction, Protocol};

use super::{Decision, Direction, Endpoint, Explanation, Flow, Outcome};
use crate::classify::{DirClassifier, Flags, Matches, Peer};
use crate::index::{FlatPortKind, FlatRule, PeerMatch};
use crate::{Engine, IdentityId, PodId};

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
    peer_ip: Option<IpAddr>,
    peer_id: Option<IdentityId>,
    holder: Option<IdentityId>,
    cls: &'a DirClassifier,
    flags: Flags,
    matches: Matches,
}

/// A flow seen from one direction: the subject whose policies decide it
/// and the peer they are matched against.
struct Sides {
    subject: Endpoint,
    subject_id: Option<IdentityId>,
    peer: Endpoint,
    peer_id: Option<IdentityId>,
    peer_ip: Option<IpAddr>,
    /// Whether `peer_ip` is the peer pod's first address of its family.
    peer_primary: bool,
}

impl Sides {
    /// The peer as the classifier sees it.
    #[inline(always)]
    fn peer(&self) -> Peer<'_> {
        Peer {
            identity: self.peer_id,
            primary: self.peer_primary,
            ip: self.peer_ip.as_ref(),
        }
    }

    #[inline(always)]
    fn of(dir: Direction, flow: &Flow, (src_id, dst_id): Ids) -> Sides {
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
    identity: IdentityId,
    cls: &'a DirClassifier,
    flags: Flags,
}

/// The identities of a flow's source and destination.
type Ids = (Option<IdentityId>, Option<IdentityId>);

/// The fixed facts of one direction's evaluation.
struct Ctx<'a> {
    /// The peer's identity, when the peer is an endpoint pod.
    peer_id: Option<IdentityId>,
    peer_ip: Option<IpAddr>,
    protocol: Protocol,
    port: u16,
    /// The destination pod's named ports (empty for a non-pod).
    named: &'a [(u32, Protocol, u16)],
}

impl Engine {
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

    #[inline(always)]
    fn allowed_with(&self, dir: Direction, flow: &Flow, ids: Ids) -> bool {
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
        let m = cls.first_of_each_tier(identity, s.peer(), flow.protocol, flow.port, ids.1);
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

    #[inline]
    fn peer_matches(&self, m: &PeerMatch, ctx: &Ctx) -> bool {
        match *m {
            PeerMatch::Set(s) => ctx.peer_id.is_some_and(|id| self.index.set(s).contains(id)),
            PeerMatch::Addr(a) => ctx
                .peer_ip
                .is_some_and(|ip| self.index.matcher(a).contains(&ip)),
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
    fn classifier(&self, dir: Direction) -> &DirClassifier {
        self.index.classifier(dir)
    }

    /// One direction's subject, when it is a policy subject: an endpoint
    /// pod on the pod network.
    #[inline(always)]
    fn subject(&self, dir: Direction, flow: &Flow, ids: Ids) -> Option<Subject<'_>> {
        let sides = Sides::of(dir, flow, ids);
        let (Endpoint::Pod(pod), Some(id)) = (sides.subject, sides.subject_id) else {
            return None;
        };
        let cls = self.classifier(dir);
        let flags = cls.flags(id);
        if flags.host_network {
            return None;
        }
        Some(Subject {
            sides,
            pod,
            identity: id,
            cls,
            flags,
        })
    }

    #[inline(always)]
    fn classified_with(&self, dir: Direction, flow: &Flow, ids: Ids) -> Option<Classified<'_>> {
        let Subject {
            sides: s,
            pod: sp,
            identity,
            cls,
            flags,
        } = self.subject(dir, flow, ids)?;
        let holder = ids.1;
        let matches = cls.classify(identity, s.peer(), flow.protocol, flow.port, holder);
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
                .map(|i| self.index.identity(i))
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
    fn is_from_own_node(&self, subject: usize, peer: Endpoint, peer_ip: Option<IpAddr>) -> bool {
        let peer = match peer {
            Endpoint::Pod(p) => Some(PodId::new(p)),
            Endpoint::Ip(_) => None,
        };
        self.index
            .nodes()
            .is_own_node(PodId::new(subject), peer, peer_ip)
    }
}
