//! Shadowed NetworkPolicy rules: a rule is shadowed when, for every
//! endpoint it applies to, everything it allows (peer atoms × ports) is
//! also allowed by other rules of the NetworkPolicies that isolate that
//! endpoint in the same direction. Endpoints are taken per group of
//! identities with the same isolating policies (and, for ingress, the same
//! named ports, on which the rules' named ports resolve), since nothing
//! else of the subject changes what its NetworkPolicy rules allow. Where
//! two rules allow exactly the same to a subject, the later one (by
//! policy, then rule position) does not cover the earlier, so that of two
//! duplicates only the second is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use palisade_model::Protocol;

use super::atoms::Atoms;
use super::ports::{self, PortSet};
use super::selection::np_object;
use super::{finding, path, Finding, RULE_SHADOWED};
use crate::index::FlatRule;
use crate::{Direction, Engine, IdentityId};

/// Subjects whose NetworkPolicy rules allow the same: isolating policies,
/// and named ports (for ingress).
type GroupKey<'a> = (&'a [usize], &'a [(u32, Protocol, u16)]);

#[derive(Default)]
struct State {
    /// Allows something to some peer of some endpoint it applies to.
    allows: bool,
    /// Some endpoint has something only this rule allows.
    needed: bool,
    /// Rules that allow what it allows: (policy, rule).
    by: BTreeSet<(usize, usize)>,
}

/// The atoms a rule's peers match; `None` for every atom.
fn rule_atoms(atoms: &Atoms, r: &FlatRule) -> Option<Vec<u32>> {
    r.peers.as_ref().map(|_| atoms.of_peers(&r.peers))
}

pub(super) fn run(engine: &Engine, atoms: &Atoms, out: &mut Vec<Finding>) {
    for d in [Direction::Ingress, Direction::Egress] {
        let states = direction(engine, atoms, d);
        for ((pi, ri), st) in states {
            if !st.allows || st.needed {
                continue;
            }
            let p = &engine.cluster().policies[pi];
            let by: Vec<String> = st
                .by
                .iter()
                .take(3)
                .map(|&(q, r)| {
                    format!("{} {}[{r}]", engine.cluster().policies[q].key(), d.as_str())
                })
                .collect();
            let more = st.by.len().saturating_sub(3);
            let by = match more {
                0 => by.join(", "),
                n => format!("{} and {n} more", by.join(", ")),
            };
            out.push(finding(
                RULE_SHADOWED,
                np_object(p),
                path::rule(d, ri),
                format!(
                    "allows nothing that other rules do not: for every pod it applies to, all it allows is also allowed by {by}"
                ),
                "remove this rule, or the rules that cover it if this one states the intent",
            ));
        }
    }
}

/// The state of every rule of one direction, over all subject groups.
fn direction(engine: &Engine, atoms: &Atoms, d: Direction) -> BTreeMap<(usize, usize), State> {
    let index = engine.index();
    let mut groups: HashMap<GroupKey, IdentityId> = HashMap::new();
    for (i, id) in index.identities().iter().enumerate() {
        let plan = id.plan(d);
        if id.host_network || !plan.isolated {
            continue;
        }
        let isolating = match d {
            Direction::Ingress => &id.ingress_policies[..],
            Direction::Egress => &id.egress_policies[..],
        };
        let named = match d {
            Direction::Ingress => &id.named_ports[..],
            Direction::Egress => &[],
        };
        groups
            .entry((isolating, named))
            .or_insert(IdentityId::new(i));
    }
    let mut reps: Vec<IdentityId> = groups.into_values().collect();
    reps.sort();
    let mut states: BTreeMap<(usize, usize), State> = BTreeMap::new();
    let mut hits: Vec<Vec<u16>> = vec![Vec::new(); atoms.len()];
    for rep in reps {
        group(engine, atoms, d, rep, &mut hits, &mut states);
    }
    states
}

/// Checks every rule of one subject group.
fn group(
    engine: &Engine,
    atoms: &Atoms,
    d: Direction,
    rep: IdentityId,
    hits: &mut [Vec<u16>],
    states: &mut BTreeMap<(usize, usize), State>,
) {
    let index = engine.index();
    let subject = index.identity(rep);
    let rules = &subject.plan(d).np;
    let of_rule: Vec<Option<Vec<u32>>> = rules.iter().map(|r| rule_atoms(atoms, r)).collect();
    let everywhere: Vec<usize> = (0..rules.len()).filter(|&k| of_rule[k].is_none()).collect();
    let mut touched: Vec<u32> = Vec::new();
    for (k, list) in of_rule.iter().enumerate() {
        for &a in list.iter().flatten() {
            if hits[a as usize].is_empty() {
                touched.push(a);
            }
            hits[a as usize].push(k as u16);
        }
    }
    let fixed: Vec<Option<PortSet>> = rules
        .iter()
        .map(|r| (!r.names_ports()).then(|| ports::of_rule(&r.ports, &[])))
        .collect();
    let ports_for = |k: usize, a: u32| -> PortSet {
        if let Some(p) = &fixed[k] {
            return p.clone();
        }
        let named = match d {
            Direction::Ingress => &subject.named_ports[..],
            Direction::Egress => atoms
                .identity(a)
                .map_or(&[][..], |i| &index.identity(i).named_ports[..]),
        };
        ports::of_rule(&rules[k].ports, named)
    };
    // Everything a rule allows to this subject: (atom, ports) where the
    // ports are not empty.
    let allowed = |k: usize, list: &Option<Vec<u32>>| -> Vec<(u32, PortSet)> {
        let every: Box<dyn Iterator<Item = u32>> = match list {
            Some(l) => Box::new(l.iter().copied()),
            None => Box::new(0..atoms.len() as u32),
        };
        every
            .map(|a| (a, ports_for(k, a)))
            .filter(|(_, p)| !p.is_empty())
            .collect()
    };
    let mut same: HashMap<(usize, usize), bool> = HashMap::new();
    for (k, r) in rules.iter().enumerate() {
        let st = states.entry((r.owner, r.rule)).or_default();
        if st.needed {
            continue;
        }
        let all: Vec<u32>;
        let list: &[u32] = match &of_rule[k] {
            Some(l) => l,
            None => {
                all = (0..atoms.len() as u32).collect();
                &all
            }
        };
        for &a in list {
            let mine = ports_for(k, a);
            if mine.is_empty() {
                continue;
            }
            st.allows = true;
            let others = hits[a as usize]
                .iter()
                .map(|&k2| k2 as usize)
                .chain(everywhere.iter().copied())
                .filter(|&k2| k2 != k);
            let mut union = PortSet::new();
            let mut by = Vec::new();
            for k2 in others {
                let theirs = ports_for(k2, a);
                if theirs.is_empty() {
                    continue;
                }
                // Of two rules that allow exactly the same to this subject,
                // the first is the one kept: a later duplicate does not
                // cover it.
                let later = (rules[k2].owner, rules[k2].rule) > (r.owner, r.rule);
                if later && theirs == mine {
                    let dup = *same
                        .entry((k, k2))
                        .or_insert_with(|| allowed(k, &of_rule[k]) == allowed(k2, &of_rule[k2]));
                    if dup {
                        continue;
                    }
                }
                if ports::overlaps(&theirs, &mine) {
                    by.push((rules[k2].owner, rules[k2].rule));
                }
                union.extend(theirs);
            }
            ports::normalize(&mut union);
            if !ports::covers(&union, &mine) {
                st.needed = true;
                break;
            }
            if st.by.len() < 8 {
                st.by.extend(by);
            }
        }
    }
    for a in touched {
        hits[a as usize].clear();
    }
}
