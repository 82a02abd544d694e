//! The check of a generated set, asked of an engine built on the cluster
//! with its NetworkPolicies replaced by the generated ones: (a) every
//! observed connection is allowed; (b) between every ordered pair of
//! workloads, and between each workload and every piece of the outside
//! address space, nothing is allowed beyond the observed protocols and
//! ports and the DNS exception.
//!
//! (b) is exact without probing every port and address: ports are cut
//! into the pieces no rule tells apart and addresses likewise (the cuts
//! `diff` uses), and pods into identities, so one decision per piece,
//! identity pair and protocol answers for all of them. Ingress from a
//! node's own address is left out: the API allows it to every pod of that
//! node whatever the policies say.

use std::collections::BTreeSet;

use palisade_model::Protocol;

use std::net::IpAddr;

use super::{family_of, DnsTarget, Generated, Observed, DNS_NAMESPACE};
use crate::diff::space::{addr_pieces, port_pieces};
use crate::diff::PortRange;
use crate::matrix::Cell;
use crate::{Endpoint, Engine, PortProto};

/// What the check found. `passed()` iff both lists are empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Distinct observed connections (source, destination, protocol, port).
    pub observed: usize,
    pub workloads: usize,
    /// Observed connections the generated set does not allow, with why.
    pub not_allowed: Vec<String>,
    /// Connections allowed that were never observed and are not DNS.
    pub beyond: Vec<String>,
    /// Connections allowed to or from a workload only because it shares a
    /// policy with workloads its stable labels cannot tell apart (observed
    /// for another member of the union): reported, not a failure.
    pub widened: Vec<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.not_allowed.is_empty() && self.beyond.is_empty()
    }

    /// `check: 12 observed flows allowed; 7 workloads allow nothing beyond
    /// what was observed (DNS egress kept)`, or what failed.
    pub fn summary(&self) -> String {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        if !self.passed() {
            return format!(
                "check failed: {} of {} observed flow{} not allowed; {} connection{} allowed beyond what was observed",
                self.not_allowed.len(),
                self.observed,
                s(self.observed),
                self.beyond.len(),
                s(self.beyond.len())
            );
        }
        let verb = if self.workloads == 1 {
            "allows"
        } else {
            "allow"
        };
        let mut line = format!(
            "check: {} observed flow{} allowed; {} workload{} {verb} nothing beyond what was observed (DNS egress kept)",
            self.observed,
            s(self.observed),
            self.workloads,
            s(self.workloads)
        );
        if !self.widened.is_empty() {
            line.push_str(&format!(
                ", but for {} connection{} that a shared policy widens",
                self.widened.len(),
                s(self.widened.len())
            ));
        }
        line
    }
}

/// One side of a connection, as the check tells them apart: a workload
/// (a union's index and the member's), or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Workload(usize, usize),
    Addr(IpAddr),
}

impl Side {
    /// The same side as the generated policies see it: the whole union.
    fn union(self) -> Side {
        match self {
            Side::Workload(w, _) => Side::Workload(w, usize::MAX),
            a => a,
        }
    }
}

/// Which workload member each selectable pod belongs to.
fn members(engine: &Engine, g: &Generated) -> Vec<Option<(usize, usize)>> {
    let mut of = vec![None; engine.cluster().pods.len()];
    for (w, wl) in g.workloads.iter().enumerate() {
        for (m, pods) in wl.parts.iter().enumerate() {
            for &p in pods {
                of[p] = Some((w, m));
            }
        }
    }
    of
}

/// As `generate::side`, at the level of union members.
fn side(engine: &Engine, of: &[Option<(usize, usize)>], e: Endpoint, v4: bool) -> Option<Side> {
    match e {
        Endpoint::Ip(ip) => Some(Side::Addr(ip)),
        Endpoint::Pod(i) => match of.get(i).copied().flatten() {
            Some((w, m)) => Some(Side::Workload(w, m)),
            None => engine.cluster().pods[i]
                .ips
                .iter()
                .find(|ip| ip.is_ipv4() == v4)
                .map(|ip| Side::Addr(*ip)),
        },
    }
}

struct Ctx<'a> {
    engine: &'a Engine,
    g: &'a Generated,
    /// Observed connections, per member and per union.
    seen: BTreeSet<(Side, Side, Protocol, u16)>,
    beyond: BTreeSet<String>,
    widened: BTreeSet<String>,
}

impl Ctx<'_> {
    fn name(&self, s: Side) -> String {
        match s {
            Side::Workload(w, m) => self.g.workloads[w].names[m].clone(),
            Side::Addr(ip) => ip.to_string(),
        }
    }

    fn is_dns(&self, dst: Side, protocol: Protocol, port: u16) -> bool {
        let Side::Workload(w, _) = dst else {
            return false;
        };
        if port != super::DNS_PORT || protocol == Protocol::Sctp {
            return false;
        }
        let wl = &self.g.workloads[w];
        match &self.g.dns {
            DnsTarget::Pods(d) => wl.pods.iter().any(|p| d.contains(p)),
            DnsTarget::Namespace => wl.namespace == DNS_NAMESPACE,
        }
    }

    /// `src → dst` is allowed on every port of `piece`: each must have
    /// been observed or be DNS.
    fn allowed_piece(&mut self, src: Side, dst: Side, protocol: Protocol, piece: PortRange) {
        let mut widened = None;
        let extra = (piece.start..=piece.end).find(|&p| {
            if self.seen.contains(&(src, dst, protocol, p)) || self.is_dns(dst, protocol, p) {
                return false;
            }
            if self.seen.contains(&(src.union(), dst.union(), protocol, p)) {
                widened.get_or_insert(p);
                return false;
            }
            true
        });
        let what = |p: u16| {
            if piece.start == piece.end {
                format!("{protocol} {p}")
            } else {
                format!("{protocol} {p} (of {piece})")
            }
        };
        let pair = format!("{} => {} :", self.name(src), self.name(dst));
        if let Some(p) = extra {
            self.beyond
                .insert(format!("{pair} {} allowed, never observed", what(p)));
        } else if let Some(p) = widened {
            self.widened.insert(format!(
                "{pair} {} allowed, observed only for another workload of its union",
                what(p)
            ));
        }
    }
}

/// Checks `g` (made from `observed`) on `engine`, whose cluster must be
/// the one `g` was generated from with its NetworkPolicies replaced by
/// `g.policies` (see [`with_generated`]).
pub fn check(engine: &Engine, g: &Generated, observed: &[Observed]) -> Check {
    let of = members(engine, g);
    let distinct: BTreeSet<Observed> = observed.iter().copied().collect();
    let mut not_allowed = Vec::new();
    let mut seen = BTreeSet::new();
    for o in &distinct {
        let v4 = family_of(o);
        if let (Some(s), Some(d)) = (side(engine, &of, o.src, v4), side(engine, &of, o.dst, v4)) {
            seen.insert((s, d, o.protocol, o.port));
            seen.insert((s.union(), d.union(), o.protocol, o.port));
        }
        let what = format!(
            "{} => {} : {} {}",
            engine.who(o.src),
            engine.who(o.dst),
            o.protocol,
            o.port
        );
        match engine.flow(o.src, o.dst, o.protocol, o.port) {
            Ok(f) if engine.allowed(&f) => {}
            Ok(f) => not_allowed.push(format!("{what}: {}", engine.verdict(&f).reasons.join("; "))),
            Err(e) => not_allowed.push(format!("{what}: {e}")),
        }
    }
    let mut cx = Ctx {
        engine,
        g,
        seen,
        beyond: BTreeSet::new(),
        widened: BTreeSet::new(),
    };
    cx.pairs(&of);
    cx.outside(&of);
    Check {
        observed: distinct.len(),
        workloads: g.workloads.iter().map(|w| w.names.len()).sum(),
        not_allowed,
        beyond: cx.beyond.into_iter().collect(),
        widened: cx.widened.into_iter().collect(),
    }
}

/// The cluster of `engine` with its NetworkPolicies replaced by the
/// generated ones (admin policies kept), as an engine.
pub fn with_generated(engine: &Engine, g: &Generated) -> Engine {
    let mut c = engine.cluster().clone();
    c.policies = g.policies.clone();
    c.policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Engine::new(c)
}

impl Ctx<'_> {
    /// Every port piece of every protocol, with the port standing for it.
    fn port_pieces(&self) -> Vec<(PortProto, PortRange)> {
        let c = self.engine.cluster();
        let pieces = port_pieces(c, c);
        Protocol::ALL
            .into_iter()
            .zip(pieces)
            .flat_map(|(protocol, ps)| {
                ps.into_iter().map(move |r| {
                    (
                        PortProto {
                            port: r.start,
                            protocol,
                        },
                        r,
                    )
                })
            })
            .collect()
    }

    /// The workloads of an identity's members (one, unless a union).
    fn sides_of(&self, of: &[Option<(usize, usize)>], id: crate::IdentityId) -> Vec<Side> {
        let mut ws: Vec<(usize, usize)> = self
            .engine
            .index()
            .identity(id)
            .members
            .iter()
            .filter_map(|m| of[m.index()])
            .collect();
        ws.sort_unstable();
        ws.dedup();
        ws.into_iter().map(|(w, m)| Side::Workload(w, m)).collect()
    }

    fn pairs(&mut self, of: &[Option<(usize, usize)>]) {
        let pieces = self.port_pieces();
        let ports: Vec<PortProto> = pieces.iter().map(|p| p.0).collect();
        let mut rows = self.engine.matrix_rows(&ports);
        let sides: Vec<Vec<Side>> = rows
            .identities
            .iter()
            .map(|&id| self.sides_of(of, id))
            .collect();
        for row in rows.by_ref() {
            let (pp, piece) = pieces[row.port];
            for (d, cell) in row.cells.iter().enumerate() {
                if *cell != Cell::Allowed {
                    continue;
                }
                for &s in &sides[row.source] {
                    for &t in &sides[d] {
                        self.allowed_piece(s, t, pp.protocol, piece);
                    }
                }
            }
        }
    }

    fn outside(&mut self, of: &[Option<(usize, usize)>]) {
        let engine = self.engine;
        let idx = engine.index();
        let pieces = self.port_pieces();
        let reps: Vec<(Endpoint, Vec<Side>)> = (0..idx.identities().len())
            .map(crate::IdentityId::new)
            .filter(|&id| !idx.identity(id).host_network)
            .map(|id| {
                let rep = Endpoint::Pod(idx.identity(id).members[0].index());
                (rep, self.sides_of(of, id))
            })
            .collect();
        for a in addr_pieces(engine, engine) {
            // One address is compared with what was observed of it; a
            // piece of several was never observed as a whole, so anything
            // allowed to or from it is beyond.
            let single = (a.range.start == a.range.end).then_some(Side::Addr(a.rep));
            for (rep, sides) in &reps {
                let out = engine.flow(*rep, Endpoint::Ip(a.rep), Protocol::Tcp, 1);
                let inn = engine.flow(Endpoint::Ip(a.rep), *rep, Protocol::Tcp, 1);
                for &(pp, piece) in &pieces {
                    let allowed = |f: &Result<crate::Flow, crate::Error>| {
                        f.as_ref().is_ok_and(|f| {
                            let mut f = *f;
                            f.protocol = pp.protocol;
                            f.port = pp.port;
                            engine.allowed(&f)
                        })
                    };
                    let (to, from) = (allowed(&out), !a.node && allowed(&inn));
                    for &w in sides {
                        match single {
                            Some(addr) => {
                                if to {
                                    self.allowed_piece(w, addr, pp.protocol, piece);
                                }
                                if from {
                                    self.allowed_piece(addr, w, pp.protocol, piece);
                                }
                            }
                            None => {
                                let (range, name) = (a.range.to_string(), self.name(w));
                                let what =
                                    format!("{} {piece} allowed, never observed", pp.protocol);
                                if to {
                                    self.beyond.insert(format!("{name} => {range} : {what}"));
                                }
                                if from {
                                    self.beyond.insert(format!("{range} => {name} : {what}"));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
