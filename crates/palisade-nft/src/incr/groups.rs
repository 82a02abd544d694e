//! NetworkPolicy groups: which groups a local identity belongs to, their
//! life (acquired by their first user, released by their last) and their
//! elements, static and per peer identity.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use palisade_engine::live::{IdentityKey, LiveIdentity};
use palisade_engine::Direction;
use palisade_model::{Peer, Pod, PortSpec};

use super::{ElementDelta, Group, Groups, Incremental, Key, Op};
use crate::encode::Encode;
use crate::numbering::hash32;
use crate::{allow_sets, block_ranges, has_named, named_items, port_items, Allows, Dir};

impl Incremental {
    /// The groups a local identity belongs to, from the current policies.
    pub(super) fn groups_for(&self, ik: &IdentityKey) -> Groups {
        let egress = self.live.isolating(ik, Direction::Egress);
        let ingress = self.live.isolating(ik, Direction::Ingress);
        let rep = &self.ident(ik).rep;
        let named = ingress
            .iter()
            .filter_map(|k| self.live.policy(k))
            .flat_map(|p| p.ingress.iter().flatten())
            .flat_map(|rule| rule.ports.iter().flatten())
            .filter_map(|s| match s {
                PortSpec::Named { protocol, name } => Some(rep.named_port(name, *protocol)),
                _ => None,
            })
            .collect();
        Groups {
            egress: (!egress.is_empty()).then_some(egress),
            ingress: (!ingress.is_empty()).then_some((ingress, named)),
            tiers: (0..self.tiers.len())
                .map(|i| self.tier_key(i, ik))
                .collect(),
        }
    }

    /// Makes `ik` a user of `groups`, creating (and, with `out`, emitting)
    /// groups that did not exist. `false` on a group id collision.
    pub(super) fn acquire(
        &mut self,
        ik: &super::Ident,
        groups: Groups,
        mut out: Option<&mut ElementDelta>,
    ) -> bool {
        let holder = self.ident(ik).rep.clone();
        if let Some(k) = &groups.egress {
            match join(&mut self.egress, &mut self.used_egress, k, &holder) {
                Joined::Existing => {}
                Joined::Collision => return false,
                Joined::New(g) => {
                    if let Some(out) = out.as_deref_mut() {
                        self.group_elements(Dir::Egress, k, &g, out, Op::Add);
                    }
                    self.egress.insert(k.clone(), *g);
                }
            }
        }
        if let Some(k) = &groups.ingress {
            match join(&mut self.ingress, &mut self.used_ingress, k, &holder) {
                Joined::Existing => {}
                Joined::Collision => return false,
                Joined::New(g) => {
                    if let Some(out) = out.as_deref_mut() {
                        self.group_elements(Dir::Ingress, &k.0, &g, out, Op::Add);
                    }
                    self.ingress.insert(k.clone(), *g);
                }
            }
        }
        for (t, k) in groups.tiers.iter().enumerate() {
            let Some(k) = k else { continue };
            if let Some(g) = self.tiers[t].groups.get_mut(k) {
                g.users += 1;
                continue;
            }
            let id = self.tier_id(k);
            if id == 0 || !self.tiers[t].used.insert(id) {
                return false;
            }
            let g = Group {
                id,
                users: 1,
                holder: holder.clone(),
            };
            if let Some(out) = out.as_deref_mut() {
                self.tier_group_elements(t, k, &g, out, Op::Add);
            }
            self.tiers[t].groups.insert(k.clone(), g);
        }
        self.groups_of.insert(ik.clone(), groups);
        true
    }

    /// Ends `ik`'s use of its groups, removing groups nobody uses.
    pub(super) fn release(&mut self, ik: &super::Ident, out: &mut ElementDelta) {
        let Some(groups) = self.groups_of.remove(ik) else {
            return;
        };
        if let Some(k) = &groups.egress {
            if let Some(g) = leave(&mut self.egress, &mut self.used_egress, k) {
                self.group_elements(Dir::Egress, k, &g, out, Op::Remove);
            }
        }
        if let Some(k) = &groups.ingress {
            if let Some(g) = leave(&mut self.ingress, &mut self.used_ingress, k) {
                self.group_elements(Dir::Ingress, &k.0, &g, out, Op::Remove);
            }
        }
        for (t, k) in groups.tiers.iter().enumerate() {
            let Some(k) = k else { continue };
            let g = self.tiers[t].groups.get_mut(k).expect("acquired");
            g.users -= 1;
            if g.users == 0 {
                let g = self.tiers[t].groups.remove(k).expect("acquired");
                self.tier_group_elements(t, k, &g, out, Op::Remove);
                self.tiers[t].used.remove(&g.id);
            }
        }
    }

    /// Every element of one group: its static part and the peer part of
    /// every identity.
    fn group_elements(
        &self,
        dir: Dir,
        policies: &[Key],
        g: &Group,
        out: &mut ElementDelta,
        op: Op,
    ) {
        let mut a = Allows::default();
        for rule in self.rules(dir, policies) {
            let items = match dir {
                Dir::Egress => port_items(&rule.ports, None),
                Dir::Ingress => port_items(&rule.ports, Some(&g.holder)),
            };
            match &rule.peers {
                None => {
                    for &(p, lo, hi) in &items {
                        a.any
                            .entry((g.id, p))
                            .or_default()
                            .push((lo.into(), hi.into()));
                    }
                }
                Some(peers) => {
                    for peer in peers {
                        if let Peer::IpBlock(b) = peer {
                            let (v4, ranges) = block_ranges(b);
                            let fam = usize::from(!v4);
                            for &(lo, hi) in &ranges {
                                for &(p, pa, pb) in &items {
                                    a.cidr[fam].entry((g.id, p)).or_default().push((
                                        lo,
                                        hi,
                                        pa.into(),
                                        pb.into(),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        let rules: Vec<&palisade_model::Rule> = self.rules(dir, policies).collect();
        match self.peer_namespaces(dir, policies) {
            Some(namespaces) => {
                for ns in namespaces {
                    for ident in self.live.identities_in(&ns) {
                        self.peer_part(&mut a, dir, &rules, g, ident);
                    }
                }
            }
            None => {
                for ident in self.live.endpoint_identities() {
                    self.peer_part(&mut a, dir, &rules, g, ident);
                }
            }
        }
        emit(dir, a, out, op);
    }

    /// The namespaces whose identities the rules of `policies` can give a
    /// peer part; `None`: any namespace (a named port without a selector).
    fn peer_namespaces(&self, dir: Dir, policies: &[Key]) -> Option<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for rule in self.rules(dir, policies) {
            let named = dir == Dir::Egress && has_named(&rule.ports);
            let Some(peers) = &rule.peers else {
                if named {
                    return None;
                }
                continue;
            };
            for peer in peers {
                match peer {
                    Peer::Pods { namespaces, .. } => out.extend(
                        self.live
                            .scope_namespaces(namespaces)
                            .into_iter()
                            .map(str::to_string),
                    ),
                    Peer::IpBlock(_) if named => return None,
                    Peer::IpBlock(_) => {}
                }
            }
        }
        Some(out)
    }

    fn rules<'a>(
        &'a self,
        dir: Dir,
        policies: &'a [Key],
    ) -> impl Iterator<Item = &'a palisade_model::Rule> + 'a {
        policies
            .iter()
            .filter_map(|k| self.live.policy(k))
            .flat_map(move |p| match dir {
                Dir::Egress => p.egress.iter().flatten(),
                Dir::Ingress => p.ingress.iter().flatten(),
            })
    }

    /// The allows of group `g` whose peer is identity `ident`, exactly as
    /// the full compilation derives them.
    fn peer_part(
        &self,
        a: &mut Allows,
        dir: Dir,
        rules: &[&palisade_model::Rule],
        g: &Group,
        ident: &LiveIdentity,
    ) {
        let mark = self.mark(&ident.key);
        let rep = &ident.rep;
        for rule in rules {
            let named = dir == Dir::Egress && has_named(&rule.ports);
            let Some(peers) = &rule.peers else {
                if named {
                    for item in named_items(&rule.ports, rep) {
                        both(a, g.id, mark, item);
                    }
                }
                continue;
            };
            for peer in peers {
                match peer {
                    Peer::Pods { .. } => {
                        if !self.live.peer_selects(peer, ident) {
                            continue;
                        }
                        let holder = match dir {
                            Dir::Egress => rep,
                            Dir::Ingress => &g.holder,
                        };
                        for item in port_items(&rule.ports, Some(holder)) {
                            both(a, g.id, mark, item);
                        }
                    }
                    Peer::IpBlock(b) => {
                        if !named {
                            continue;
                        }
                        let fams = self.live.block_holds_first(b, ident);
                        for item in named_items(&rule.ports, rep) {
                            for (fam, inside) in fams.iter().enumerate() {
                                if *inside {
                                    a.peer(fam, g.id, mark, item);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds or removes identity `ik`'s peer part in every group.
    pub(super) fn peer_parts_everywhere(&self, ik: &IdentityKey, out: &mut ElementDelta, op: Op) {
        let ident = self.ident(ik);
        let mut a = Allows::default();
        for (k, g) in &self.egress {
            let rules: Vec<_> = self.rules(Dir::Egress, k).collect();
            self.peer_part(&mut a, Dir::Egress, &rules, g, ident);
        }
        emit(Dir::Egress, a, out, op);
        let mut a = Allows::default();
        for ((k, _), g) in &self.ingress {
            let rules: Vec<_> = self.rules(Dir::Ingress, k).collect();
            self.peer_part(&mut a, Dir::Ingress, &rules, g, ident);
        }
        emit(Dir::Ingress, a, out, op);
        for t in 0..self.tiers.len() {
            for (k, g) in &self.tiers[t].groups {
                self.tier_peer_part(t, k, g, ident, out, op);
            }
        }
    }
}

/// What joining a NetworkPolicy group did.
enum Joined {
    Existing,
    /// A group to create (not yet in the map): emit its elements, insert it.
    New(Box<Group>),
    /// Its id, a hash of its key, is taken or zero.
    Collision,
}

fn join<K: Ord + Encode>(
    groups: &mut BTreeMap<K, Group>,
    used: &mut HashSet<u32>,
    k: &K,
    holder: &Pod,
) -> Joined {
    if let Some(g) = groups.get_mut(k) {
        g.users += 1;
        return Joined::Existing;
    }
    let id = hash32(k);
    if id == 0 || !used.insert(id) {
        return Joined::Collision;
    }
    Joined::New(Box::new(Group {
        id,
        users: 1,
        holder: holder.clone(),
    }))
}

/// Ends one use of group `k`; the group, removed, when that was its last.
fn leave<K: Ord>(groups: &mut BTreeMap<K, Group>, used: &mut HashSet<u32>, k: &K) -> Option<Group> {
    let g = groups.get_mut(k).expect("acquired");
    g.users -= 1;
    if g.users > 0 {
        return None;
    }
    let g = groups.remove(k).expect("acquired");
    used.remove(&g.id);
    Some(g)
}

fn both(a: &mut Allows, g: u32, mark: u32, item: crate::PortItem) {
    a.peer(0, g, mark, item);
    a.peer(1, g, mark, item);
}

/// Renders allows as the full compilation does and records the elements.
fn emit(dir: Dir, a: Allows, out: &mut ElementDelta, op: Op) {
    for set in allow_sets(dir, a) {
        for e in set.elements {
            out.put(&set.name, e, op);
        }
    }
}
