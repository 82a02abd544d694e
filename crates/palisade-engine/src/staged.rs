//! Staged policies beside the enforced ones: which observed connections
//! they would decide differently, and which staged policy makes the
//! difference.
//!
//! Two engines of one cluster take part: [`Engine::new`] (what the kernel
//! enforces) and [`Engine::with_staged`] (the same plus the staged
//! policies). A connection is stamped separately in each (their identities
//! differ), from its addresses as a packet shows them or from names.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_model::Protocol;

use crate::flowlog::StagedVerdict;
use crate::{Decision, Direction, Endpoint, Engine, Error, Flow, Outcome, PodId};

/// One end of an observed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    /// An address from a packet: the pod that holds it, or outside.
    Addr(IpAddr),
    /// `namespace/pod`, `namespace/name[Kind]` or an address, as
    /// [`Engine::endpoint`] reads it.
    Name(&'a str),
}

impl From<IpAddr> for Place<'_> {
    fn from(ip: IpAddr) -> Self {
        Place::Addr(ip)
    }
}

impl<'a> From<&'a str> for Place<'a> {
    fn from(s: &'a str) -> Self {
        Place::Name(s)
    }
}

/// Where the staged policies change one direction's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub verdict: StagedVerdict,
    /// The staged policy that decides it (`ns/name`, or `Kind/name` for an
    /// admin policy): the owner of the deciding rule when it is staged, else
    /// the staged admin policy whose Pass rule sent the connection on, else,
    /// for a default deny, the first by name of the staged policies that
    /// isolate the pod. `None` only if none of these is staged.
    pub policy: Option<String>,
}

/// One observed connection, in the direction a node enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed<'a> {
    pub src: Place<'a>,
    pub dst: Place<'a>,
    pub protocol: Protocol,
    pub port: u16,
    pub direction: Direction,
}

/// What one staged policy would change, as positions in the observed list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyEffect {
    pub would_deny: Vec<usize>,
    pub would_allow: Vec<usize>,
}

/// What the staged policies would change in a list of observed connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Per observed connection, in order: the difference, if any, or why
    /// the connection could not be evaluated.
    pub flows: Vec<Result<Option<Difference>, Error>>,
    /// Every staged policy (so that one that changes nothing is listed too,
    /// with empty lists), by name.
    pub by_policy: BTreeMap<String, PolicyEffect>,
    /// Changed connections that no staged policy could be named for.
    pub unattributed: Vec<usize>,
}

/// The names of the staged policies `engine` holds ([`Engine::with_staged`]
/// keeps them; [`Engine::new`] has none), sorted.
pub fn staged_policies(engine: &Engine) -> Vec<String> {
    let c = engine.cluster();
    let mut out: Vec<String> = c
        .policies
        .iter()
        .filter(|p| p.staged)
        .map(|p| p.key())
        .chain(
            c.admin_policies
                .iter()
                .filter(|p| p.staged)
                .map(|p| p.key()),
        )
        .collect();
    out.sort();
    out
}

/// How the staged policies change direction `dir` of the connection
/// `src` → `dst`: `None` where `enforced` and `staged` agree. `staged` is
/// the [`Engine::with_staged`] engine of the cluster `enforced` was built
/// from with [`Engine::new`].
pub fn compare(
    enforced: &Engine,
    staged: &Engine,
    src: Place,
    dst: Place,
    protocol: Protocol,
    port: u16,
    dir: Direction,
) -> Result<Option<Difference>, Error> {
    let ef = flow_in(enforced, src, dst, protocol, port)?;
    let before = enforced.allowed_in(dir, &ef);
    let sf = flow_in(staged, src, dst, protocol, port)?;
    let after = staged.allowed_in(dir, &sf);
    if before == after {
        return Ok(None);
    }
    let verdict = if after {
        StagedVerdict::WouldAllow
    } else {
        StagedVerdict::WouldDeny
    };
    let outcome = staged.outcome(dir, &sf);
    Ok(Some(Difference {
        verdict,
        policy: deciding_staged(staged, &sf, &outcome),
    }))
}

/// [`compare`] for every observed connection, grouped by staged policy.
pub fn effects(enforced: &Engine, staged: &Engine, observed: &[Observed]) -> Effects {
    let mut out = Effects {
        by_policy: staged_policies(staged)
            .into_iter()
            .map(|p| (p, PolicyEffect::default()))
            .collect(),
        ..Effects::default()
    };
    for (i, o) in observed.iter().enumerate() {
        let d = compare(
            enforced,
            staged,
            o.src,
            o.dst,
            o.protocol,
            o.port,
            o.direction,
        );
        if let Ok(Some(diff)) = &d {
            match diff.policy.as_ref().and_then(|p| out.by_policy.get_mut(p)) {
                Some(e) => match diff.verdict {
                    StagedVerdict::WouldDeny => e.would_deny.push(i),
                    StagedVerdict::WouldAllow => e.would_allow.push(i),
                },
                None => out.unattributed.push(i),
            }
        }
        out.flows.push(d);
    }
    out
}

fn flow_in(
    engine: &Engine,
    src: Place,
    dst: Place,
    protocol: Protocol,
    port: u16,
) -> Result<Flow, Error> {
    match (src, dst) {
        (Place::Addr(s), Place::Addr(d)) => engine.flow_between_addresses(s, d, protocol, port),
        (s, d) => {
            let text = |p: Place| match p {
                Place::Addr(ip) => ip.to_string(),
                Place::Name(n) => n.to_string(),
            };
            engine.flow_between(&text(s), &text(d), protocol, port)
        }
    }
}

/// The staged policy behind `outcome` of `engine` (see
/// [`Difference::policy`]).
fn deciding_staged(engine: &Engine, flow: &Flow, outcome: &Outcome) -> Option<String> {
    let c = engine.cluster();
    let admin = |ai: usize| {
        let p = &engine.index().admin()[ai].policy;
        p.staged.then(|| p.key())
    };
    let decided = match outcome.decision {
        Decision::Allowed { policy, .. } => {
            let p = &c.policies[policy];
            p.staged.then(|| p.key())
        }
        Decision::Admin { admin: ai, .. } => admin(ai),
        _ => None,
    };
    if decided.is_some() {
        return decided;
    }
    if let Some(passed) = outcome.passed.and_then(|(ai, _)| admin(ai)) {
        return Some(passed);
    }
    if outcome.decision != Decision::Denied {
        return None;
    }
    let subject = match outcome.direction {
        Direction::Egress => flow.src,
        Direction::Ingress => flow.dst,
    };
    let Endpoint::Pod(p) = subject else {
        return None;
    };
    let id = engine.index().identity_of(PodId::new(p))?;
    let identity = engine.index().identity(id);
    let isolating = match outcome.direction {
        Direction::Ingress => &identity.ingress_policies,
        Direction::Egress => &identity.egress_policies,
    };
    isolating
        .iter()
        .map(|&pi| &c.policies[pi])
        .filter(|p| p.staged)
        .map(|p| p.key())
        .min()
}
