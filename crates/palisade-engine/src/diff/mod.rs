//! The connectivity change between two versions of a cluster (BASE and
//! HEAD): for every ordered pair of endpoints, and between endpoints and
//! the outside address space, every protocol and port whose verdict
//! differs, with the policies that decided it in each version.
//!
//! The answer is exact over the whole space, yet only a few flows are
//! decided: ports and outside addresses are cut into pieces that no rule of
//! either version tells apart (`space`), endpoints into classes that get
//! the same verdicts (`classes`), and only classes that a change can reach
//! are decided (`affected`, which gives the argument). An endpoint is a pod
//! that is an endpoint and not on the host network, matched between the
//! versions by namespace and name; one present in a single version has its
//! allowed connections reported as added or removed.

mod affected;
mod classes;
mod eval;
pub(crate) mod space;

use std::collections::HashMap;

use palisade_model::Protocol;

pub use space::{AddrRange, PortRange};

use crate::{Endpoint, Engine};
use classes::{Class, Group};
use eval::{Eval, Rep};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Both endpoints are present in both versions.
    Changed,
    /// An endpoint is present in HEAD only: a connection it has there.
    Added,
    /// An endpoint is present in BASE only: a connection it had there.
    Removed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Changed => "changed",
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One side of a changed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffEndpoint {
    /// An endpoint pod: its index in BASE's and HEAD's `Cluster::pods`.
    Pod {
        base: Option<usize>,
        head: Option<usize>,
    },
    /// Outside addresses that every rule of both versions treats alike.
    Outside(AddrRange),
}

/// A connection whose verdict differs: `src → dst` on `ports` of
/// `protocol`. Endpoints and policy lists are positions in [`Diff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub src: u32,
    pub dst: u32,
    pub protocol: Protocol,
    pub ports: PortRange,
    pub before: bool,
    pub after: bool,
    pub kind: ChangeKind,
    pub policies: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub changed: usize,
    /// Connections allowed in HEAD that were not in BASE (added ones too).
    pub allowed: usize,
    pub denied: usize,
    pub added: usize,
    pub removed: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Diff {
    /// Every endpoint a change can name: pods by name, then outside
    /// pieces, IPv4 before IPv6.
    pub endpoints: Vec<DiffEndpoint>,
    /// Each endpoint's name, from the engine's own rendering (HEAD's where
    /// the pod is present there) or as an address range.
    pub names: Vec<String>,
    /// The policy lists changes refer to.
    pub policies: Vec<Vec<String>>,
    /// Sorted by source, destination, protocol and first port.
    pub changes: Vec<Change>,
}

impl Diff {
    pub fn name(&self, endpoint: u32) -> &str {
        &self.names[endpoint as usize]
    }

    pub fn policies_of(&self, c: &Change) -> &[String] {
        &self.policies[c.policies as usize]
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            changed: self.changes.len(),
            ..Summary::default()
        };
        for c in &self.changes {
            if c.after {
                s.allowed += 1;
            } else {
                s.denied += 1;
            }
            match c.kind {
                ChangeKind::Added => s.added += 1,
                ChangeKind::Removed => s.removed += 1,
                ChangeKind::Changed => {}
            }
        }
        s
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Pod(String),
    Outside((usize, u128)),
}

/// Every endpoint of both versions and every outside piece, sorted, with
/// their names; the second value maps each outside piece to its id.
fn endpoint_table(
    base: &Engine,
    head: &Engine,
    pieces: &[space::AddrPiece],
) -> (Vec<DiffEndpoint>, Vec<String>, Vec<u32>) {
    let b = classes::endpoint_pods(base);
    let h = classes::endpoint_pods(head);
    let key = |e: &Engine, p: usize| {
        let pod = &e.cluster().pods[p];
        (pod.namespace.clone(), pod.name.clone())
    };
    let mut in_head: HashMap<(String, String), usize> =
        h.iter().map(|&p| (key(head, p), p)).collect();
    let mut rows: Vec<(SortKey, DiffEndpoint, String, Option<usize>)> = Vec::new();
    for &p in &b {
        let hp = in_head.remove(&key(base, p));
        let name = match hp {
            Some(hp) => head.who(Endpoint::Pod(hp)).to_string(),
            None => base.who(Endpoint::Pod(p)).to_string(),
        };
        let ep = DiffEndpoint::Pod {
            base: Some(p),
            head: hp,
        };
        rows.push((SortKey::Pod(name.clone()), ep, name, None));
    }
    for &p in &h {
        if in_head.contains_key(&key(head, p)) {
            let name = head.who(Endpoint::Pod(p)).to_string();
            let ep = DiffEndpoint::Pod {
                base: None,
                head: Some(p),
            };
            rows.push((SortKey::Pod(name.clone()), ep, name, None));
        }
    }
    for (i, piece) in pieces.iter().enumerate() {
        let r = piece.range;
        rows.push((
            SortKey::Outside(r.sort_key()),
            DiffEndpoint::Outside(r),
            r.to_string(),
            Some(i),
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut piece_ids = vec![0; pieces.len()];
    let mut table = Vec::with_capacity(rows.len());
    let mut names = Vec::with_capacity(rows.len());
    for (id, (_, ep, name, piece)) in rows.into_iter().enumerate() {
        if let Some(i) = piece {
            piece_ids[i] = id as u32;
        }
        table.push(ep);
        names.push(name);
    }
    (table, names, piece_ids)
}

/// The connectivity change from `base` to `head`.
pub fn diff(base: &Engine, head: &Engine) -> Diff {
    let pieces = space::addr_pieces(base, head);
    let (table, names, piece_ids) = endpoint_table(base, head, &pieces);
    let hit = affected::Affected::new(base, head);
    let cls = classes::classes(base, head, &table, &hit);
    let ports = space::port_pieces(base.cluster(), head.cluster());
    let mut ev = Eval::new(base, head, ports);
    let outside: Vec<(Rep, [u32; 1], bool)> = pieces
        .iter()
        .zip(&piece_ids)
        .map(|(p, &id)| {
            let ip = Some(Endpoint::Ip(p.rep));
            (Rep { base: ip, head: ip }, [id], p.node)
        })
        .collect();
    let ctx = Ctx {
        table: &table,
        outside: &outside,
    };
    ctx.changed(&mut ev, &cls.both);
    ctx.one_version(&mut ev, ChangeKind::Added, &cls.only_head, &cls.all_head);
    ctx.one_version(&mut ev, ChangeKind::Removed, &cls.only_base, &cls.all_base);
    let Eval {
        policies,
        mut changes,
        ..
    } = ev;
    changes.sort_unstable_by_key(|c| (c.src, c.dst, c.protocol, c.ports.start));
    Diff {
        endpoints: table,
        names,
        policies,
        changes,
    }
}

struct Ctx<'a> {
    table: &'a [DiffEndpoint],
    /// Per outside piece: its representative, its endpoint id, whether it
    /// is a node address.
    outside: &'a [(Rep, [u32; 1], bool)],
}

impl Ctx<'_> {
    fn rep(g: &Group) -> Rep {
        Rep::pods(g.base, g.head)
    }

    /// A second member of a class, so that the flows within a class are
    /// decided between two pods rather than from a pod to itself.
    fn other_member(&self, c: &Class) -> Rep {
        match c.members.get(1).map(|&m| self.table[m as usize]) {
            Some(DiffEndpoint::Pod { base, head }) => Rep::pods(base, head),
            _ => Rep::pods(c.base, c.head),
        }
    }

    /// Between outside pieces and the class `c`, both directions.
    fn outside(&self, ev: &mut Eval, kind: ChangeKind, c: &Class) {
        let (base, head) = (ev.base.cluster(), ev.head.cluster());
        let node_groups = self
            .outside
            .iter()
            .any(|o| o.2)
            .then(|| c.node_groups(self.table, base, head));
        for (rep, id, node) in self.outside {
            ev.pair(kind, Self::rep(&c.group()), *rep, &c.members, id);
            match (&node_groups, node) {
                (Some(groups), true) => {
                    for g in groups {
                        ev.pair(kind, *rep, Self::rep(g), id, &g.members);
                    }
                }
                _ => ev.pair(kind, *rep, Self::rep(&c.group()), id, &c.members),
            }
        }
    }

    /// Endpoints present in both versions: every pair with an affected
    /// class on either side, and affected classes with the outside.
    fn changed(&self, ev: &mut Eval, both: &[Class]) {
        for (ai, a) in both.iter().enumerate().filter(|(_, c)| c.affected) {
            for (bi, b) in both.iter().enumerate() {
                let dst = if ai == bi {
                    self.other_member(b)
                } else {
                    Self::rep(&b.group())
                };
                ev.pair(
                    ChangeKind::Changed,
                    Self::rep(&a.group()),
                    dst,
                    &a.members,
                    &b.members,
                );
                // A pair of two affected classes is decided once each way,
                // when each is the outer one.
                if !b.affected {
                    ev.pair(
                        ChangeKind::Changed,
                        Self::rep(&b.group()),
                        Self::rep(&a.group()),
                        &b.members,
                        &a.members,
                    );
                }
            }
            self.outside(ev, ChangeKind::Changed, a);
        }
    }

    /// Endpoints present in one version only (`only`) with each other,
    /// with the endpoints present in both (`partners`, grouped by their
    /// identity in that version) and with the outside.
    fn one_version(&self, ev: &mut Eval, kind: ChangeKind, only: &[Class], partners: &[Class]) {
        for (ai, a) in only.iter().enumerate() {
            for (bi, b) in only.iter().enumerate() {
                let dst = if ai == bi {
                    self.other_member(b)
                } else {
                    Self::rep(&b.group())
                };
                ev.pair(kind, Self::rep(&a.group()), dst, &a.members, &b.members);
            }
            for p in partners {
                ev.pair(
                    kind,
                    Self::rep(&a.group()),
                    Self::rep(&p.group()),
                    &a.members,
                    &p.members,
                );
                ev.pair(
                    kind,
                    Self::rep(&p.group()),
                    Self::rep(&a.group()),
                    &p.members,
                    &a.members,
                );
            }
            self.outside(ev, kind, a);
        }
    }
}
