//! Admin-tier groups (AdminNetworkPolicy and baseline): the ordered rules
//! that select a local identity, resolved to first-match verdict elements.

use std::collections::BTreeSet;

use palisade_engine::live::{IdentityKey, LiveIdentity};
use palisade_model::{AdminAction, AdminPort, Pod};

use super::{ElementDelta, Group, Incremental, Op, TierKey};
use crate::numbering::hash32;
use crate::schema::{Family, SetId};
use crate::tier::verdict;
use crate::{addr_value, block_ranges_of, proto_value, Dir, Element, PortItem, Value};
use palisade_engine::first_match::{first_match, first_match_2d, AddrBox};

impl Incremental {
    fn admin_rules(&self, ai: usize, dir: Dir) -> &[palisade_model::AdminRule] {
        let a = &self.live.admin()[ai];
        match dir {
            Dir::Egress => &a.egress,
            Dir::Ingress => &a.ingress,
        }
    }

    /// The admin-tier group of a local identity in tier `t`, if any rule
    /// of that tier selects it.
    pub(super) fn tier_key(&self, t: usize, ik: &IdentityKey) -> Option<TierKey> {
        let ts = &self.tiers[t];
        let mut rules = Vec::new();
        for (ai, a) in self.live.admin().iter().enumerate() {
            if a.tier == ts.tier && self.live.admin_subject_selects(ai, ik) {
                rules.extend((0..self.admin_rules(ai, ts.dir).len()).map(|ri| (ai, ri)));
            }
        }
        if rules.is_empty() {
            return None;
        }
        let named = match ts.dir {
            Dir::Ingress => {
                let names: BTreeSet<&str> = rules
                    .iter()
                    .flat_map(|&(ai, ri)| self.admin_rules(ai, ts.dir)[ri].ports.iter().flatten())
                    .filter_map(|p| match p {
                        AdminPort::Named(n) => Some(n.as_str()),
                        _ => None,
                    })
                    .collect();
                named_ports(&self.ident(ik).rep)
                    .into_iter()
                    .filter(|(n, _, _)| names.contains(n.as_str()))
                    .collect()
            }
            Dir::Egress => Vec::new(),
        };
        Some((rules, named))
    }

    /// A tier group's id: a hash of its rules (policy kind, name, rule
    /// position) and named ports, as the full numbering hashes them.
    pub(super) fn tier_id(&self, k: &TierKey) -> u32 {
        let admin = self.live.admin();
        let rules: Vec<(&str, &str, usize)> =
            k.0.iter()
                .map(|&(ai, ri)| (admin[ai].kind.as_str(), admin[ai].name.as_str(), ri))
                .collect();
        let named: Vec<(&str, u8, u16)> =
            k.1.iter().map(|(n, q, v)| (n.as_str(), *q, *v)).collect();
        hash32(&(rules, named))
    }

    /// Tier group `k`'s elements for peer identity `ident` (its first
    /// address of each family decides the address matchers).
    pub(super) fn tier_peer_part(
        &self,
        t: usize,
        k: &TierKey,
        g: &Group,
        ident: &LiveIdentity,
        out: &mut ElementDelta,
        op: Op,
    ) {
        let ts = &self.tiers[t];
        let rep = &ident.rep;
        let mark = self.mark(&ident.key);
        let peer_named;
        let named: &[(String, u8, u16)] = match ts.dir {
            Dir::Egress => {
                peer_named = named_ports(rep);
                &peer_named
            }
            Dir::Ingress => &k.1,
        };
        for v4 in [true, false] {
            if !rep.ips.iter().any(|ip| ip.is_ipv4() == v4) {
                continue;
            }
            let list: Vec<(AdminAction, Vec<PortItem>)> =
                k.0.iter()
                    .map(|&(ai, ri)| &self.admin_rules(ai, ts.dir)[ri])
                    .filter(|r| {
                        r.peers
                            .iter()
                            .any(|p| self.live.admin_peer_selects(p, ident, v4))
                    })
                    .map(|r| (r.action, admin_ports(&r.ports, named)))
                    .collect();
            if list.is_empty() {
                continue;
            }
            for (p, lo, hi, action) in first_match(&list) {
                let Some(v) = verdict(action, ts.dir) else {
                    continue;
                };
                out.put(
                    SetId::TierPeer(ts.dir, ts.tier, Family::of_v4(v4)).name(),
                    Element {
                        key: vec![
                            Value::Mark(g.id),
                            Value::Mark(mark),
                            proto_value(p),
                            Value::PortRange(lo, hi),
                        ],
                        data: Some(v),
                    },
                    op,
                );
            }
        }
    }

    /// Tier group `k`'s elements for addresses that are not pods.
    fn tier_static(&self, t: usize, k: &TierKey, g: &Group, out: &mut ElementDelta, op: Op) {
        let ts = &self.tiers[t];
        let dest_named: &[(String, u8, u16)] = match ts.dir {
            Dir::Ingress => &k.1,
            Dir::Egress => &[],
        };
        let rules: Vec<&palisade_model::AdminRule> =
            k.0.iter()
                .map(|&(ai, ri)| &self.admin_rules(ai, ts.dir)[ri])
                .collect();
        let resolved: Vec<(AdminAction, Vec<PortItem>)> = rules
            .iter()
            .map(|r| (r.action, admin_ports(&r.ports, dest_named)))
            .collect();
        for (fam, v4) in [(0usize, true), (1, false)] {
            let mut boxes = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                for p in &r.peers {
                    if let Some(m) = self.live.admin_matcher(p) {
                        boxes.extend(block_ranges_of(m, v4).into_iter().map(|(lo, hi)| AddrBox {
                            lo,
                            hi,
                            rule: i,
                        }));
                    }
                }
            }
            if boxes.is_empty() {
                continue;
            }
            for (lo, hi, ports) in first_match_2d(&boxes, &resolved) {
                for (p, plo, phi, action) in ports {
                    let Some(v) = verdict(action, ts.dir) else {
                        continue;
                    };
                    out.put(
                        SetId::TierCidr(ts.dir, ts.tier, Family::of_index(fam)).name(),
                        Element {
                            key: vec![
                                Value::Mark(g.id),
                                addr_value(v4, lo, hi),
                                proto_value(p),
                                Value::PortRange(plo, phi),
                            ],
                            data: Some(v),
                        },
                        op,
                    );
                }
            }
        }
    }

    /// Every element of one tier group.
    pub(super) fn tier_group_elements(
        &self,
        t: usize,
        k: &TierKey,
        g: &Group,
        out: &mut ElementDelta,
        op: Op,
    ) {
        self.tier_static(t, k, g, out, op);
        for ident in self.live.endpoint_identities() {
            self.tier_peer_part(t, k, g, ident, out, op);
        }
    }
}

/// A pod's named container ports as an identity holds them (sorted,
/// deduplicated): name, protocol, port.
fn named_ports(p: &Pod) -> Vec<(String, u8, u16)> {
    let mut ports = p.ports.clone();
    ports.sort();
    ports.dedup();
    ports
        .into_iter()
        .filter_map(|c| Some((c.name?, c.protocol.number(), c.port)))
        .collect()
}

/// An admin rule's ports, named ones resolved on the destination's named
/// ports (an admin named port matches whatever the protocol).
fn admin_ports(ports: &Option<Vec<AdminPort>>, named: &[(String, u8, u16)]) -> Vec<PortItem> {
    match ports {
        None => crate::every_port(),
        Some(list) => list
            .iter()
            .flat_map(|p| match p {
                AdminPort::Number { protocol, port } => vec![(protocol.number(), *port, *port)],
                AdminPort::Range {
                    protocol,
                    start,
                    end,
                } => vec![(protocol.number(), *start, *end)],
                AdminPort::Named(n) => named
                    .iter()
                    .filter(|(m, _, _)| m == n)
                    .map(|&(_, q, v)| (q, v, v))
                    .collect(),
            })
            .collect(),
    }
}
