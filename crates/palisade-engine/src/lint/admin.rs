//! Admin-tier findings, decided with the engine's precedence function
//! (`first_match`): Pass rules whose removal changes no verdict, and two
//! policies of one tier and priority that decide some flow differently.

use std::collections::HashMap;

use palisade_model::{AdminAction, Protocol};

use super::atoms::Atoms;
use super::ports::{self, PortSet};
use super::selection::admin_object;
use super::{finding, path, Finding, ADMIN_PRIORITY_OVERLAP, PASS_RULE_NO_EFFECT};
use crate::first_match::{first_match, PortItem, PortVerdict};
use crate::index::FlatRule;
use crate::{Direction, Engine, IdentityId};

/// Subjects that see the same admin rules: admin and baseline policies,
/// and named ports (for ingress).
type GroupKey<'a> = (&'a [usize], &'a [usize], &'a [(u32, Protocol, u16)]);

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

pub(super) fn run(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    pass_rules(engine, atoms, out);
    same_priority(engine, atoms, out);
}

/// The admin rules of a subject's plan for one direction: the admin tier,
/// or the baseline tier.
fn tier_rules(engine: &Engine, id: IdentityId, d: Direction, baseline: bool) -> &[FlatRule] {
    let plan = engine.index().identity(id).plan(d);
    if baseline {
        &plan.baseline
    } else {
        &plan.admin
    }
}

/// One identity per group of subjects that the admin policy `ai` applies
/// to and that see the same admin rules in direction `d` (for ingress,
/// with the same named ports, on which rules resolve).
fn subject_groups(engine: &Engine, ai: usize, d: Direction) -> Vec<IdentityId> {
    let mut groups: HashMap<GroupKey, IdentityId> = HashMap::new();
    for (i, id) in engine.index().identities().iter().enumerate() {
        if id.host_network || !(id.admin.contains(&ai) || id.baseline.contains(&ai)) {
            continue;
        }
        let named = match d {
            Direction::Ingress => &id.named_ports[..],
            Direction::Egress => &[],
        };
        groups
            .entry((&id.admin, &id.baseline, named))
            .or_insert(IdentityId::new(i));
    }
    let mut v: Vec<IdentityId> = groups.into_values().collect();
    v.sort();
    v
}

/// The ports a rule covers towards one atom (named ports resolved on the
/// destination: the subject for ingress, the atom for egress).
fn ports_at(
    engine: &Engine,
    atoms: &Atoms,
    d: Direction,
    subject: IdentityId,
    r: &FlatRule,
    a: u32,
) -> PortSet {
    let index = engine.index();
    let named = match d {
        Direction::Ingress => &index.identity(subject).named_ports[..],
        Direction::Egress => atoms
            .identity(a)
            .map_or(&[][..], |i| &index.identity(i).named_ports[..]),
    };
    ports::of_rule(&r.ports, named)
}

/// First match over the rules (of `rules`, skipping `skip`) that match
/// atom `a`, with Pass and no match both meaning "left to NetworkPolicy".
fn decide(
    engine: &Engine,
    atoms: &Atoms,
    d: Direction,
    subject: IdentityId,
    rules: &[&FlatRule],
    a: u32,
) -> Vec<PortVerdict> {
    let list: Vec<(AdminAction, Vec<PortItem>)> = rules
        .iter()
        .filter(|r| atoms.rule_matches(engine, &r.peers, a))
        .map(|r| (r.action, ports_at(engine, atoms, d, subject, r, a)))
        .collect();
    first_match(&list)
}

/// Drops Pass (left to NetworkPolicy, like no match) and joins what is
/// then adjacent, so that two results compare equal iff they decide alike.
fn without_pass(v: Vec<PortVerdict>) -> Vec<PortVerdict> {
    let mut out: Vec<PortVerdict> = Vec::new();
    for x in v.into_iter().filter(|x| x.3 != AdminAction::Pass) {
        match out.last_mut() {
            Some(l) if l.0 == x.0 && l.3 == x.3 && u32::from(l.2) + 1 == u32::from(x.1) => {
                l.2 = x.2
            }
            _ => out.push(x),
        }
    }
    out
}

fn pass_rules(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    let index = engine.index();
    for (ai, a) in index.admin().iter().enumerate() {
        for d in DIRECTIONS {
            let written = match d {
                Direction::Ingress => &a.policy.ingress,
                Direction::Egress => &a.policy.egress,
            };
            for (ri, rule) in written.iter().enumerate() {
                if rule.action != AdminAction::Pass {
                    continue;
                }
                let groups = subject_groups(engine, ai, d);
                if groups.is_empty() {
                    continue;
                }
                let changes = groups
                    .iter()
                    .any(|&s| pass_changes(engine, atoms, d, s, ai, ri));
                if !changes {
                    out.push(finding(
                        PASS_RULE_NO_EFFECT,
                        admin_object(&a.policy),
                        path::rule(d, ri),
                        format!(
                            "Pass rule {:?} changes no verdict: no later admin rule matches the traffic it passes (or earlier rules match it all first)",
                            rule.name
                        ),
                        "remove the rule, or give it the peers and ports of the later admin rule it is meant to skip",
                    ));
                }
            }
        }
    }
}

/// Whether removing admin rule `ri` of policy `ai` changes the admin
/// tier's decision for some flow of subject `s`.
fn pass_changes(
    engine: &Engine,
    atoms: &Atoms,
    d: Direction,
    s: IdentityId,
    ai: usize,
    ri: usize,
) -> bool {
    let rules = tier_rules(engine, s, d, false);
    let Some(pass) = rules.iter().find(|r| r.owner == ai && r.rule == ri) else {
        return false;
    };
    let with: Vec<&FlatRule> = rules.iter().collect();
    let without: Vec<&FlatRule> = rules
        .iter()
        .filter(|r| !(r.owner == ai && r.rule == ri))
        .collect();
    atoms.of_peers(&pass.peers).into_iter().any(|a| {
        without_pass(decide(engine, atoms, d, s, &with, a))
            != without_pass(decide(engine, atoms, d, s, &without, a))
    })
}

/// Ports where two first-match results disagree: the protocol, the
/// first such range, and the two actions.
fn conflict(
    x: &[PortVerdict],
    y: &[PortVerdict],
) -> Option<(u8, u16, u16, AdminAction, AdminAction)> {
    x.iter().find_map(|&(p, a, b, ax)| {
        y.iter()
            .find(|&&(q, c, e, ay)| p == q && a <= e && c <= b && ax != ay)
            .map(|&(_, c, e, ay)| (p, a.max(c), b.min(e), ax, ay))
    })
}

fn same_priority(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    let admin = engine.index().admin();
    for (xi, x) in admin.iter().enumerate() {
        for (yi, y) in admin.iter().enumerate().skip(xi + 1) {
            if (x.policy.tier, x.policy.priority) != (y.policy.tier, y.policy.priority) {
                break;
            }
            if let Some(example) = overlap(engine, atoms, xi, yi) {
                out.push(finding(
                    ADMIN_PRIORITY_OVERLAP,
                    admin_object(&y.policy),
                    "spec.priority".into(),
                    format!(
                        "has the same priority ({}) as {} {} and the two decide {example} differently; the API leaves their order undefined (Palisade evaluates {} first, by name)",
                        y.policy.priority, x.policy.kind, x.policy.name, x.policy.name
                    ),
                    "give one of the two policies a different priority",
                ));
            }
        }
    }
}

/// A flow on which admin policies `xi` and `yi` (same tier and priority)
/// decide differently, described.
fn overlap(engine: &Engine, atoms: &Atoms, xi: usize, yi: usize) -> Option<String> {
    let baseline = engine.index().admin()[xi].policy.tier == palisade_model::AdminTier::Baseline;
    for d in DIRECTIONS {
        for s in subject_groups(engine, xi, d) {
            let id = engine.index().identity(s);
            if !(id.admin.contains(&yi) || id.baseline.contains(&yi)) {
                continue;
            }
            let rules = tier_rules(engine, s, d, baseline);
            let of = |owner: usize| -> Vec<&FlatRule> {
                rules.iter().filter(|r| r.owner == owner).collect()
            };
            let (rx, ry) = (of(xi), of(yi));
            let mut cands: Vec<u32> = rx
                .iter()
                .chain(&ry)
                .flat_map(|r| atoms.of_peers(&r.peers))
                .collect();
            cands.sort_unstable();
            cands.dedup();
            for a in cands {
                let fx = decide(engine, atoms, d, s, &rx, a);
                let fy = decide(engine, atoms, d, s, &ry, a);
                if let Some((proto, lo, hi, ax, ay)) = conflict(&fx, &fy) {
                    let proto = Protocol::ALL
                        .iter()
                        .find(|p| p.number() == proto)
                        .map_or("?", |p| p.as_str());
                    let ports = match (lo, hi) {
                        (0, u16::MAX) => format!("every {proto} port"),
                        (lo, hi) if lo == hi => format!("{proto} {lo}"),
                        (lo, hi) => format!("{proto} {lo}-{hi}"),
                    };
                    let pod = &engine.cluster().pods[id.members[0].index()];
                    let peer = atoms.describe(engine, a);
                    let flow = match d {
                        Direction::Ingress => format!("ingress to {} from {peer}", pod.key()),
                        Direction::Egress => format!("egress from {} to {peer}", pod.key()),
                    };
                    return Some(format!("{flow} on {ports} ({ax} vs {ay})"));
                }
            }
        }
    }
    None
}
