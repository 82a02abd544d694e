//! Deciding the representative flows of class pairs in both versions, and
//! turning the pieces whose verdict changed into port ranges and member
//! pairs.

use std::collections::HashMap;

use palisade_model::Protocol;

use super::space::PortRange;
use super::{Change, ChangeKind};
use crate::{Decision, Direction, Endpoint, Engine, Flow, Outcome, PodId};

/// One side of a representative flow: the endpoint in BASE and in HEAD
/// (`None` where it is absent).
#[derive(Clone, Copy, Debug)]
pub(super) struct Rep {
    pub(super) base: Option<Endpoint>,
    pub(super) head: Option<Endpoint>,
}

impl Rep {
    pub(super) fn pods(base: Option<usize>, head: Option<usize>) -> Rep {
        Rep {
            base: base.map(Endpoint::Pod),
            head: head.map(Endpoint::Pod),
        }
    }
}

/// A run of adjacent changed port pieces with one (before, after).
struct Run {
    protocol: Protocol,
    ports: PortRange,
    before: bool,
    after: bool,
    policies: Vec<String>,
}

pub(super) struct Eval<'a> {
    pub(super) base: &'a Engine,
    pub(super) head: &'a Engine,
    pub(super) ports: [Vec<PortRange>; 3],
    causes: HashMap<Vec<String>, u32>,
    pub(super) policies: Vec<Vec<String>>,
    pub(super) changes: Vec<Change>,
}

/// The flow between two endpoints in one engine, at any port: each piece
/// only sets the protocol and port.
fn flow(e: &Engine, src: Option<Endpoint>, dst: Option<Endpoint>) -> Option<Flow> {
    e.flow(src?, dst?, Protocol::Tcp, 1).ok()
}

fn at(f: Option<Flow>, protocol: Protocol, port: u16) -> Option<Flow> {
    f.map(|mut f| {
        f.protocol = protocol;
        f.port = port;
        f
    })
}

impl<'a> Eval<'a> {
    pub(super) fn new(base: &'a Engine, head: &'a Engine, ports: [Vec<PortRange>; 3]) -> Eval<'a> {
        Eval {
            base,
            head,
            ports,
            causes: HashMap::new(),
            policies: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Decides `src → dst` on every port piece in both versions and records
    /// each changed range for every pair of `src_members × dst_members`
    /// (an endpoint is never paired with itself). A connection that cannot
    /// be made (absent endpoint, no common address family) is denied.
    pub(super) fn pair(
        &mut self,
        kind: ChangeKind,
        src: Rep,
        dst: Rep,
        src_members: &[u32],
        dst_members: &[u32],
    ) {
        let (fb, fh) = match kind {
            ChangeKind::Changed => (
                flow(self.base, src.base, dst.base),
                flow(self.head, src.head, dst.head),
            ),
            ChangeKind::Added => (None, flow(self.head, src.head, dst.head)),
            ChangeKind::Removed => (flow(self.base, src.base, dst.base), None),
        };
        if fb.is_none() && fh.is_none() {
            return;
        }
        let mut runs: Vec<Run> = Vec::new();
        for (slot, protocol) in Protocol::ALL.into_iter().enumerate() {
            for pi in 0..self.ports[slot].len() {
                let piece = self.ports[slot][pi];
                let (b, h) = (at(fb, protocol, piece.start), at(fh, protocol, piece.start));
                let before = b.is_some_and(|f| self.base.allowed(&f));
                let after = h.is_some_and(|f| self.head.allowed(&f));
                if before == after {
                    continue;
                }
                let mut policies = Vec::new();
                self.causes_of(kind, b, h, &mut policies);
                match runs.last_mut() {
                    Some(r)
                        if r.protocol == protocol
                            && (r.before, r.after) == (before, after)
                            && u32::from(r.ports.end) + 1 == u32::from(piece.start) =>
                    {
                        r.ports.end = piece.end;
                        for p in policies {
                            if !r.policies.contains(&p) {
                                r.policies.push(p);
                            }
                        }
                    }
                    _ => runs.push(Run {
                        protocol,
                        ports: piece,
                        before,
                        after,
                        policies,
                    }),
                }
            }
        }
        for r in runs {
            let policies = self.intern(r.policies);
            for &s in src_members {
                for &d in dst_members.iter().filter(|&&d| d != s) {
                    self.changes.push(Change {
                        src: s,
                        dst: d,
                        protocol: r.protocol,
                        ports: r.ports,
                        before: r.before,
                        after: r.after,
                        kind,
                        policies,
                    });
                }
            }
        }
    }

    fn intern(&mut self, p: Vec<String>) -> u32 {
        if let Some(&i) = self.causes.get(&p) {
            return i;
        }
        let i = self.policies.len() as u32;
        self.policies.push(p.clone());
        self.causes.insert(p, i);
        i
    }

    /// The policies that decided the directions whose verdict changed, in
    /// BASE then HEAD, egress then ingress; for an added or removed
    /// endpoint, those that allowed it in the version it is present in.
    fn causes_of(&self, kind: ChangeKind, b: Option<Flow>, h: Option<Flow>, out: &mut Vec<String>) {
        let mut push = |s: String| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        for dir in [Direction::Egress, Direction::Ingress] {
            let ob = b.map(|f| (f, self.base.outcome(dir, &f)));
            let oh = h.map(|f| (f, self.head.outcome(dir, &f)));
            let allowed =
                |o: &Option<(Flow, Outcome)>| o.as_ref().is_some_and(|(_, o)| o.allowed());
            if kind == ChangeKind::Changed && allowed(&ob) == allowed(&oh) {
                continue;
            }
            for (e, o) in [(self.base, ob), (self.head, oh)] {
                match o {
                    Some((f, o)) => labels(e, &f, &o, &mut push),
                    None if kind == ChangeKind::Changed => push("no common address family".into()),
                    None => {}
                }
            }
        }
    }
}

/// How a policy is named in a diff: `ns/name` for a NetworkPolicy,
/// `Kind/name` for an admin one, the default deny with the policies that
/// isolate the subject.
fn labels(e: &Engine, f: &Flow, o: &Outcome, push: &mut impl FnMut(String)) {
    let admin = |ai: usize| {
        let p = &e.index().admin()[ai].policy;
        format!("{}/{}", p.kind, p.name)
    };
    if let Some((ai, _)) = o.passed {
        push(admin(ai));
    }
    match o.decision {
        Decision::Allowed { policy, .. } => push(e.cluster().policies[policy].key()),
        Decision::Admin { admin: ai, .. } => push(admin(ai)),
        Decision::Denied => {
            let subject = match o.direction {
                Direction::Egress => f.src,
                Direction::Ingress => f.dst,
            };
            let by = match subject {
                Endpoint::Pod(p) => e
                    .index()
                    .identity_of(PodId::new(p))
                    .map(|i| e.index().identity(i).plan(o.direction).isolated_by.clone()),
                Endpoint::Ip(_) => None,
            };
            push(format!(
                "default deny (isolated by {})",
                by.unwrap_or_default()
            ));
        }
        Decision::OwnNode => push("own node".into()),
        Decision::NotIsolated | Decision::NotSubject => {}
    }
}

impl Engine {
    /// The policies that decided `flow`, named as a diff names them: of
    /// the directions that denied it when it is denied, else of both,
    /// egress then ingress.
    pub fn deciding_policies(&self, flow: &Flow) -> Vec<String> {
        let ex = self.explain(flow);
        let denied = !ex.allowed();
        let mut out: Vec<String> = Vec::new();
        for o in [ex.egress, ex.ingress] {
            if denied && o.allowed() {
                continue;
            }
            labels(self, flow, &o, &mut |s: String| {
                if !out.contains(&s) {
                    out.push(s);
                }
            });
        }
        out
    }
}
