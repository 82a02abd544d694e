//! Bit-vector classification (the "BV" scheme of packet classifiers): every
//! rule of one direction gets a bit, numbered in evaluation order (admin
//! tier, then NetworkPolicy, then baseline). A flow's candidate rules are the
//! AND of three precomputed masks — rules that apply to the subject, rules
//! whose peers contain the peer, rules whose ports contain the port — so a
//! verdict costs a few word operations per 64 rules instead of a walk over
//! every rule, and the first set bit is the rule that decides.

use std::net::IpAddr;

use palisade_model::{AdminAction, Protocol};

use crate::index::{AddressMatcher, FlatPortKind, FlatRule, Identity, PeerMatch, Plan};
use crate::{Direction, IdSet};

/// Where a rule bit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Admin,
    NetworkPolicy,
    Baseline,
}

#[derive(Clone, Debug)]
pub struct RuleBit {
    pub tier: Tier,
    pub rule: FlatRule,
}

/// Sorted boundaries over an ordered key space; interval `i` covers
/// `[bounds[i], bounds[i + 1])` and has mask row `i`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partition {
    pub(crate) bounds: Vec<u128>,
    /// The same bounds as u32 when they all fit (IPv4 addresses, ports):
    /// half the compares' cost on the hot path.
    narrow: Option<Vec<u32>>,
}

impl Partition {
    pub(crate) fn new(mut bounds: Vec<u128>) -> Partition {
        bounds.push(0);
        bounds.sort_unstable();
        bounds.dedup();
        let narrow = bounds
            .iter()
            .map(|&b| u32::try_from(b).ok())
            .collect::<Option<Vec<u32>>>();
        Partition { bounds, narrow }
    }

    /// For a partition of the port space: per port, `width` times its
    /// interval (the offset of its mask row).
    fn port_table(&self, width: usize) -> Box<[u32]> {
        // Bounds are sorted and start at 0: interval `i` runs up to the
        // next bound.
        let b = &self.bounds;
        let mut row = Vec::with_capacity(1 << 16);
        for (i, &start) in b.iter().enumerate() {
            let end = b.get(i + 1).map_or(1 << 16, |&e| e.min(1 << 16));
            row.extend((start..end).map(|_| (i * width) as u32));
        }
        row.into_boxed_slice()
    }

    #[inline]
    pub(crate) fn find(&self, x: u128) -> usize {
        match (&self.narrow, u32::try_from(x)) {
            (Some(n), Ok(x)) => n.partition_point(|&b| b <= x) - 1,
            _ => self.bounds.partition_point(|&b| b <= x) - 1,
        }
    }
}

pub(crate) fn key(ip: &IpAddr) -> (usize, u128) {
    match ip {
        IpAddr::V4(a) => (0, u32::from(*a) as u128),
        IpAddr::V6(a) => (1, u128::from(*a)),
    }
}

fn proto_index(p: Protocol) -> usize {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

pub(crate) fn net_bounds(n: &ipnet::IpNet, out: &mut [Vec<u128>; 2]) {
    let (fam, start) = key(&n.network());
    let (_, end) = key(&n.broadcast());
    out[fam].push(start);
    if end
        < if fam == 0 {
            u32::MAX as u128
        } else {
            u128::MAX
        }
    {
        out[fam].push(end + 1);
    }
}

/// Masks that do not depend on the flow, one per 64 rules, kept together so
/// a word costs one bounds check and one cache line.
#[derive(Clone, Copy, Debug, Default)]
struct WordMeta {
    any_peer: u64,
    all_ports: u64,
    addr: u64,
    ports: u64,
    named: u64,
}

/// One non-zero word of a subject's rule bits, with the word's masks
/// restricted to them.
#[derive(Clone, Copy, Debug, Default)]
struct SubjectWord {
    index: u32,
    bits: u64,
    meta: WordMeta,
}

/// Per-identity facts the hot path needs, kept apart from `Identity` so a
/// verdict touches a few bytes per identity rather than the whole struct.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub host_network: bool,
    /// Isolated by NetworkPolicy in this direction.
    pub isolated: bool,
    /// Whether any of the identity's rules names a port: the destination's
    /// named ports are consulted only then.
    needs_named: bool,
    /// Whether any of the identity's rules has an address peer.
    needs_addr: bool,
}

/// The classifier of one direction.
#[derive(Clone, Debug)]
pub struct DirClassifier {
    /// Words per mask.
    width: usize,
    pub rules: Vec<RuleBit>,
    /// Bit ranges: admin `[0, admin_end)`, NetworkPolicy
    /// `[admin_end, np_end)`, baseline `[np_end, rules.len())`.
    admin_end: usize,
    np_end: usize,
    /// Per identity, `words[subject_start[id]..subject_start[id + 1]]`.
    subject_start: Vec<u32>,
    /// Per identity: the rules whose selector peers contain it.
    peer: Vec<u64>,
    /// Per address family: partition of the address space and, per
    /// interval, the rules whose address peers contain it.
    addr: [Partition; 2],
    addr_masks: [Vec<u64>; 2],
    /// Per family and identity: its `peer` row ORed with the address row
    /// of its members' first address of that family: the whole peer side
    /// of a flow from or to a pod at that address, in one row.
    peer_full: [Vec<u64>; 2],
    /// Per protocol: per interval of the partition of the port space at
    /// the rules' port boundaries, the rules whose numeric ports contain it.
    port_masks: [Vec<u64>; 3],
    /// Per protocol and port: the offset of its mask row in `port_masks`
    /// (the partition's answer, precomputed: one load instead of a binary
    /// search over the rules' port boundaries).
    port_row: [Box<[u32]>; 3],
    /// Masks of rules that match a destination's named port; per identity,
    /// the `(protocol, port, mask row)` of each of its named ports that
    /// some rule names.
    named_masks: Vec<u64>,
    named: Vec<Vec<(Protocol, u16, u32)>>,
    /// The same per identity for [`DirClassifier::first_of_each_tier`]: per
    /// distinct `(protocol, port)` of its named ports, the key
    /// `protocol index << 16 | port` and the offset in `named_fast_masks`
    /// of the OR of that port's rows; padded to [`NAMED_FAST`] entries that
    /// match no port and point at the zero row, so that the scan has no
    /// branch. The last entry stands for an identity with no named ports;
    /// `None` for one with more distinct named ports than fit.
    named_fast: Vec<Option<NamedFast>>,
    /// Starts with the zero row (offset 0).
    named_fast_masks: Vec<u64>,
    flags: Vec<Flags>,
    /// Per identity: the rules that apply to it as the subject, as its
    /// non-zero words (identities are subject to few of the cluster's
    /// rules, so this keeps the scan short), each with the word's
    /// flow-independent masks (rules with no peers, no ports, address
    /// peers, numeric ports, named ports) restricted to the subject's bits:
    /// one record per word, read in order.
    words: Vec<SubjectWord>,
    /// `width` zero words: the row of a mask that does not apply.
    zero: Vec<u64>,
    /// The subject words again for [`DirClassifier::first_of_each_tier`],
    /// split by tier: per identity, its admin words are
    /// `fast[fast_at[id][0]..fast_at[id][1]]`, its NetworkPolicy words (padded
    /// to steps) up to `fast_at[id][2]`, its baseline words up to
    /// `fast_at[id][3]`.
    fast: Vec<FastWord>,
    fast_at: Vec<[u32; 4]>,
}

/// Named-port entries per identity that [`DirClassifier::first_of_each_tier`]
/// scans without a branch; more than that take the general path.
const NAMED_FAST: usize = 4;

/// A subject word as [`DirClassifier::first_of_each_tier`] reads it: only the
/// masks it needs, two words to a cache line.
#[derive(Clone, Copy, Debug, Default)]
struct FastWord {
    bits: u64,
    any_peer: u64,
    all_ports: u64,
    index: u64,
}

/// Subject words per step of [`DirClassifier::first_of_each_tier`]: each subject's
/// list is padded with empty words to a multiple of this, so that the loop
/// runs a number of times that is the same for most subjects (mispredicted
/// loop exits cost more than the padding).
const FAST_STEP: usize = 4;

#[derive(Clone, Copy, Debug)]
struct NamedFast {
    keys: [u32; NAMED_FAST],
    offsets: [u32; NAMED_FAST],
}

/// The bits of word `i` that stand for rules `[start, end)`.
fn bits_in(i: usize, start: usize, end: usize) -> u64 {
    (0..64)
        .filter(|b| (start..end).contains(&(i * 64 + b)))
        .fold(0, |m, b| m | 1 << b)
}

fn set_bit(m: &mut [u64], bit: usize) {
    m[bit / 64] |= 1 << (bit % 64);
}

impl DirClassifier {
    pub fn build(
        dir: Direction,
        identities: &[Identity],
        first_ips: &[[Option<IpAddr>; 2]],
        sets: &[IdSet],
        matchers: &[AddressMatcher],
        port_names: usize,
    ) -> DirClassifier {
        fn plan_of(dir: Direction, id: &Identity) -> &Plan {
            match dir {
                Direction::Ingress => &id.ingress_plan,
                Direction::Egress => &id.egress_plan,
            }
        }
        // Number the distinct rules in evaluation order. Plans list admin
        // rules in global order already; a rule shared by many identities
        // gets one bit.
        let mut rules: Vec<RuleBit> = Vec::new();
        let mut seen: std::collections::HashMap<(u8, usize, usize), usize> = Default::default();
        let mut tiers: [Vec<(usize, usize, FlatRule)>; 3] = Default::default();
        for id in identities {
            let p = plan_of(dir, id);
            for (t, list) in [(0u8, &p.admin), (1, &p.np), (2, &p.baseline)] {
                for r in list {
                    if seen.insert((t, r.owner, r.rule), 0).is_none() {
                        tiers[t as usize].push((r.owner, r.rule, r.clone()));
                    }
                }
            }
        }
        // Admin and baseline owners are already indexes in evaluation
        // order; NetworkPolicy order never changes a verdict.
        for (t, tier) in tiers.iter_mut().enumerate() {
            tier.sort_by_key(|(o, r, _)| (*o, *r));
            for (o, r, rule) in tier.drain(..) {
                seen.insert((t as u8, o, r), rules.len());
                rules.push(RuleBit {
                    tier: [Tier::Admin, Tier::NetworkPolicy, Tier::Baseline][t],
                    rule,
                });
            }
        }
        let admin_end = rules.iter().filter(|r| r.tier == Tier::Admin).count();
        let np_end = admin_end
            + rules
                .iter()
                .filter(|r| r.tier == Tier::NetworkPolicy)
                .count();
        let width = rules.len().div_ceil(64).max(1);
        let n = identities.len();

        let mut subject = Vec::new();
        let mut subject_start = Vec::with_capacity(n + 1);
        let mut row = vec![0u64; width];
        for id in identities {
            let p = plan_of(dir, id);
            row.iter_mut().for_each(|w| *w = 0);
            for (t, list) in [(0u8, &p.admin), (1, &p.np), (2, &p.baseline)] {
                for r in list {
                    set_bit(&mut row, seen[&(t, r.owner, r.rule)]);
                }
            }
            subject_start.push(subject.len() as u32);
            subject.extend(
                row.iter()
                    .enumerate()
                    .filter(|(_, &w)| w != 0)
                    .map(|(i, &w)| (i as u32, w)),
            );
        }
        subject_start.push(subject.len() as u32);

        let mut peer = vec![0u64; n * width];
        let mut any_peer = vec![0u64; width];
        let mut addr_rules: Vec<(usize, usize)> = Vec::new();
        let mut all_ports = vec![0u64; width];
        let mut port_rules: Vec<(usize, Protocol, u16, u16)> = Vec::new();
        // (name, protocol or None for any) → rules.
        let mut named_rules: std::collections::HashMap<(u32, Option<Protocol>), Vec<usize>> =
            Default::default();
        for (bit, rb) in rules.iter().enumerate() {
            match &rb.rule.peers {
                None => set_bit(&mut any_peer, bit),
                Some(ps) => {
                    for m in ps {
                        match *m {
                            PeerMatch::Set(s) => {
                                for id in sets[s].iter() {
                                    if id < n {
                                        set_bit(&mut peer[id * width..(id + 1) * width], bit);
                                    }
                                }
                            }
                            PeerMatch::Addr(a) => addr_rules.push((bit, a)),
                        }
                    }
                }
            }
            match &rb.rule.ports {
                None => set_bit(&mut all_ports, bit),
                Some(ps) => {
                    for p in ps {
                        match p.kind {
                            FlatPortKind::Range(proto, s, e) => port_rules.push((bit, proto, s, e)),
                            FlatPortKind::Named(proto, name) => named_rules
                                .entry((name, Some(proto)))
                                .or_default()
                                .push(bit),
                            FlatPortKind::NamedAnyProtocol(name) => {
                                named_rules.entry((name, None)).or_default().push(bit)
                            }
                        }
                    }
                }
            }
        }

        // Address partition: boundaries at every matcher edge.
        let mut bounds: [Vec<u128>; 2] = Default::default();
        for &(_, a) in &addr_rules {
            match &matchers[a] {
                AddressMatcher::Block(b) => {
                    net_bounds(&b.cidr, &mut bounds);
                    for e in &b.except {
                        net_bounds(e, &mut bounds);
                    }
                }
                AddressMatcher::Networks(ns) => {
                    for n in ns {
                        net_bounds(n, &mut bounds);
                    }
                }
                AddressMatcher::Nodes(addrs) => {
                    for a in addrs {
                        net_bounds(&ipnet::IpNet::from(*a), &mut bounds);
                    }
                }
            }
        }
        let [b4, b6] = bounds;
        let addr = [Partition::new(b4), Partition::new(b6)];
        let addr_masks = [0, 1].map(|fam| {
            let part = &addr[fam];
            let mut masks = vec![0u64; part.bounds.len() * width];
            for (i, &start) in part.bounds.iter().enumerate() {
                let ip = if fam == 0 {
                    IpAddr::V4((start as u32).into())
                } else {
                    IpAddr::V6(start.into())
                };
                for &(bit, a) in &addr_rules {
                    if matchers[a].contains(&ip) {
                        set_bit(&mut masks[i * width..(i + 1) * width], bit);
                    }
                }
            }
            masks
        });

        // Members of an identity share the address class of their first
        // address per family, hence its interval's mask row (`u32::MAX`:
        // none).
        let id_addr_row: Vec<[u32; 2]> = first_ips
            .iter()
            .map(|ips| {
                [0, 1].map(|fam| ips[fam].map_or(u32::MAX, |ip| addr[fam].find(key(&ip).1) as u32))
            })
            .collect();

        let ports = Protocol::ALL.map(|proto| {
            let mut b = Vec::new();
            for &(_, p, s, e) in &port_rules {
                if p == proto {
                    b.push(s as u128);
                    b.push(e as u128 + 1);
                }
            }
            Partition::new(b)
        });
        let port_masks = [0, 1, 2].map(|pi| {
            let part = &ports[pi];
            let mut masks = vec![0u64; part.bounds.len() * width];
            for (i, &start) in part.bounds.iter().enumerate() {
                for &(bit, p, s, e) in &port_rules {
                    if proto_index(p) == pi && (s as u128) <= start && start <= e as u128 {
                        set_bit(&mut masks[i * width..(i + 1) * width], bit);
                    }
                }
            }
            masks
        });

        let mut named_masks = Vec::new();
        let mut row_of: std::collections::HashMap<(u32, Option<Protocol>), u32> =
            Default::default();
        for (k, bits) in &named_rules {
            let row = (named_masks.len() / width) as u32;
            named_masks.resize(named_masks.len() + width, 0);
            let start = row as usize * width;
            for &bit in bits {
                set_bit(&mut named_masks[start..start + width], bit);
            }
            row_of.insert(*k, row);
        }
        let _ = port_names;
        let named: Vec<Vec<(Protocol, u16, u32)>> = identities
            .iter()
            .map(|id| {
                let mut v = Vec::new();
                if id.host_network {
                    return v;
                }
                for &(name, proto, port) in &id.named_ports {
                    for k in [(name, Some(proto)), (name, None)] {
                        if let Some(&row) = row_of.get(&k) {
                            v.push((proto, port, row));
                        }
                    }
                }
                v
            })
            .collect();

        let mut named_fast_masks = vec![0u64; width];
        let named_fast = named
            .iter()
            .chain(std::iter::once(&Vec::new()))
            .map(|list| {
                let mut rows: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
                for &(p, port, row) in list {
                    let key = (proto_index(p) as u32) << 16 | port as u32;
                    let combined = rows.entry(key).or_insert_with(|| vec![0; width]);
                    let row = &named_masks[row as usize * width..(row as usize + 1) * width];
                    combined.iter_mut().zip(row).for_each(|(c, r)| *c |= r);
                }
                if rows.len() > NAMED_FAST {
                    return None;
                }
                let mut e = NamedFast {
                    keys: [u32::MAX; NAMED_FAST],
                    offsets: [0; NAMED_FAST],
                };
                for (j, (key, combined)) in rows.into_iter().enumerate() {
                    e.keys[j] = key;
                    e.offsets[j] = named_fast_masks.len() as u32;
                    named_fast_masks.extend(combined);
                }
                Some(e)
            })
            .collect();

        let mut addr_bits = vec![0u64; width];
        for &(bit, _) in &addr_rules {
            set_bit(&mut addr_bits, bit);
        }
        let mut port_bits = vec![0u64; width];
        for &(bit, ..) in &port_rules {
            set_bit(&mut port_bits, bit);
        }
        let mut named_bits = vec![0u64; width];
        for bits in named_rules.values() {
            for &bit in bits {
                set_bit(&mut named_bits, bit);
            }
        }
        let flags = identities
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let words = &subject[subject_start[i] as usize..subject_start[i + 1] as usize];
                let any = |m: &[u64]| words.iter().any(|&(w, b)| m[w as usize] & b != 0);
                let p = plan_of(dir, id);
                Flags {
                    host_network: id.host_network,
                    isolated: p.isolated,
                    needs_named: any(&named_bits),
                    needs_addr: any(&addr_bits),
                }
            })
            .collect();

        let meta: Vec<WordMeta> = (0..width)
            .map(|i| WordMeta {
                any_peer: any_peer[i],
                all_ports: all_ports[i],
                addr: addr_bits[i],
                ports: port_bits[i],
                named: named_bits[i],
            })
            .collect();

        let port_row = [0, 1, 2].map(|pi| ports[pi].port_table(width));

        let peer_full = [0, 1].map(|fam| {
            let mut rows = peer.clone();
            for (id, at) in id_addr_row.iter().enumerate() {
                let a: u32 = at[fam];
                if a != u32::MAX {
                    let (a, w) = (a as usize, width);
                    for i in 0..w {
                        rows[id * w + i] |= addr_masks[fam][a * w + i];
                    }
                }
            }
            rows
        });

        let words: Vec<SubjectWord> = subject
            .iter()
            .map(|&(i, bits)| {
                let m: WordMeta = meta[i as usize];
                SubjectWord {
                    index: i,
                    bits,
                    meta: WordMeta {
                        any_peer: m.any_peer & bits,
                        all_ports: m.all_ports & bits,
                        addr: m.addr & bits,
                        ports: m.ports & bits,
                        named: m.named & bits,
                    },
                }
            })
            .collect();

        // Per identity its words split by tier: admin, NetworkPolicy
        // (padded to steps), baseline.
        let tier_bits = [(0, admin_end), (admin_end, np_end), (np_end, rules.len())];
        let mut fast = Vec::new();
        let mut fast_at = Vec::with_capacity(n);
        for id in 0..n {
            let ws: &[SubjectWord] =
                &words[subject_start[id] as usize..subject_start[id + 1] as usize];
            let mut at = [0u32; 4];
            for (t, &(start, end)) in tier_bits.iter().enumerate() {
                at[t] = fast.len() as u32;
                let before = fast.len();
                for sw in ws {
                    let i = sw.index as usize;
                    let bits = sw.bits & bits_in(i, start, end);
                    if bits != 0 {
                        fast.push(FastWord {
                            bits,
                            any_peer: sw.meta.any_peer & bits,
                            all_ports: sw.meta.all_ports & bits,
                            index: sw.index as u64,
                        });
                    }
                }
                if t == 1 {
                    let len = fast.len() - before;
                    let padded = len.div_ceil(FAST_STEP) * FAST_STEP;
                    fast.resize(before + padded, FastWord::default());
                }
            }
            at[3] = fast.len() as u32;
            fast_at.push(at);
        }

        DirClassifier {
            words,
            fast,
            fast_at,
            zero: vec![0; width],
            peer_full,
            port_row,
            flags,
            width,
            rules,
            admin_end,
            np_end,
            subject_start,
            peer,
            addr,
            addr_masks,
            port_masks,
            named_masks,
            named,
            named_fast,
            named_fast_masks,
        }
    }

    /// The rule bits a flow matches, in evaluation order: the first in the
    /// admin range, whether any in the NetworkPolicy range, the first in the
    /// baseline range.
    // Inlined so that `Matches` stays in registers: returned through memory
    // it costs a store-forwarding stall per direction on the hot path.
    #[inline(always)]
    pub fn classify(
        &self,
        subject: usize,
        peer: Peer<'_>,
        protocol: Protocol,
        port: u16,
        named_holder: Option<usize>,
    ) -> Matches {
        let mut m = Matches::default();
        let words = &self.words
            [self.subject_start[subject] as usize..self.subject_start[subject + 1] as usize];
        if words.is_empty() {
            return m;
        }
        let w = self.width;
        let f = self.flags[subject];
        let named: &[(Protocol, u16, u32)] = match named_holder {
            Some(h) if f.needs_named => &self.named[h],
            _ => &[],
        };
        // The address and port intervals are looked up only when a
        // candidate rule needs them: most flows are settled by the
        // subject and peer masks alone.
        let fam = usize::from(peer.ip.is_ipv6());
        let (peer_row, addr_known) = self.peer_row(&peer);
        let mut addr_at = usize::MAX;
        let mut port_at = usize::MAX;
        let pi = proto_index(protocol);

        for sw in words {
            let (i, s, meta) = (sw.index as usize, sw.bits, &sw.meta);
            let mut peers = meta.any_peer | peer_row[i];
            if !addr_known && meta.addr != 0 {
                if addr_at == usize::MAX {
                    addr_at = w * self.addr[fam].find(key(peer.ip).1);
                }
                peers |= self.addr_masks[fam][addr_at + i];
            }
            let candidates = s & peers;
            if candidates == 0 {
                continue;
            }
            let mut ports = meta.all_ports;
            if candidates & meta.ports != 0 {
                if port_at == usize::MAX {
                    port_at = self.port_row[pi][port as usize] as usize;
                }
                ports |= self.port_masks[pi][port_at + i];
            }
            if candidates & meta.named != 0 {
                for &(q, v, row) in named {
                    if q == protocol && v == port {
                        ports |= self.named_masks[row as usize * w + i];
                    }
                }
            }
            let mut c = candidates & ports;
            while c != 0 {
                let bit = i * 64 + c.trailing_zeros() as usize;
                c &= c - 1;
                if self.take(&mut m, bit) {
                    return m;
                }
            }
        }
        m
    }

    /// The rules whose selector peers contain the peer, and whether that
    /// row already holds its address's rules too (a pod at its first
    /// address of the family); the zero row for a peer that is no endpoint
    /// pod.
    #[inline(always)]
    fn peer_row(&self, peer: &Peer<'_>) -> (&[u64], bool) {
        let w = self.width;
        let fam = usize::from(peer.ip.is_ipv6());
        match peer.identity {
            Some(p) if peer.primary => (&self.peer_full[fam][p * w..(p + 1) * w], true),
            Some(p) => (&self.peer[p * w..(p + 1) * w], false),
            None => (&self.zero[..w], false),
        }
    }

    /// What a verdict without explanation needs of the classification: the
    /// first admin match, whether any NetworkPolicy rule matches (`np` is
    /// then some NetworkPolicy bit, not necessarily the first), and the
    /// first baseline match, each found regardless of the other tiers
    /// (unlike [`DirClassifier::classify`], which stops at the match that
    /// settles the verdict), except that an admin match that allows or
    /// denies ends the scan. The NetworkPolicy words, most of a subject's,
    /// are scanned with no branch on the flow: every mask that does not
    /// apply is a row of zeros. Mispredicted branches on random flows, not
    /// loads, were most of a verdict's cost.
    #[inline(always)]
    pub fn first_of_each_tier(
        &self,
        subject: usize,
        peer: Peer<'_>,
        protocol: Protocol,
        port: u16,
        named_holder: Option<usize>,
    ) -> Matches {
        let w = self.width;
        let f = self.flags[subject];
        let zero = &self.zero[..w];
        let fam = usize::from(peer.ip.is_ipv6());
        let (peer_row, addr_known) = self.peer_row(&peer);
        let addr_row = if addr_known || !f.needs_addr {
            zero
        } else {
            let at = w * self.addr[fam].find(key(peer.ip).1);
            &self.addr_masks[fam][at..at + w]
        };
        let pi = proto_index(protocol);
        let at = self.port_row[pi][port as usize] as usize;
        let port_row = &self.port_masks[pi][at..at + w];
        // The destination's named ports, when a rule names one: the row of
        // the rules naming this port, chosen without a branch.
        let holder = match named_holder {
            Some(h) if f.needs_named => h,
            _ => self.named_fast.len() - 1,
        };
        let Some(entries) = &self.named_fast[holder] else {
            return self.classify(subject, peer, protocol, port, named_holder);
        };
        let want = (pi as u32) << 16 | port as u32;
        // Keys are distinct: at most one entry hits. Masks, not `if`: the
        // compiler turns selects here into branches.
        let mut at = 0;
        for j in 0..NAMED_FAST {
            at |= entries.offsets[j] & u32::from(entries.keys[j] == want).wrapping_neg();
        }
        let named = &self.named_fast_masks[at as usize..at as usize + w];
        let at = self.fast_at[subject].map(|x| x as usize);
        let matches = |fw: &FastWord| {
            let i = fw.index as usize;
            let peers = fw.any_peer | peer_row[i] | addr_row[i];
            let ports = fw.all_ports | port_row[i] | named[i];
            fw.bits & peers & ports
        };
        let mut m = Matches::default();
        // Admin rules: the first match settles it unless it passes (few
        // subjects have admin rules, and their first match ends the scan).
        for fw in &self.fast[at[0]..at[1]] {
            let c = matches(fw);
            if c != 0 {
                let bit = fw.index as usize * 64 + c.trailing_zeros() as usize;
                m.admin = Some(bit);
                if self.rules[bit].rule.action != AdminAction::Pass {
                    return m;
                }
                break;
            }
        }
        let mut np = 0;
        for step in self.fast[at[1]..at[2]].chunks_exact(FAST_STEP) {
            for fw in step {
                np |= matches(fw);
            }
        }
        // Any bit stands for "some NetworkPolicy rule matches": all that
        // counts for a verdict without explanation.
        m.np = (np != 0).then_some(self.admin_end);
        for fw in &self.fast[at[2]..at[3]] {
            let c = matches(fw);
            if c != 0 {
                m.baseline = Some(fw.index as usize * 64 + c.trailing_zeros() as usize);
                break;
            }
        }
        m
    }

    /// Records a matching rule bit (bits arrive in evaluation order);
    /// `true` when nothing after it can change the verdict.
    #[inline]
    fn take(&self, m: &mut Matches, bit: usize) -> bool {
        if bit < self.admin_end {
            if m.admin.is_none() {
                m.admin = Some(bit);
                // Allow and Deny are final.
                return self.rules[bit].rule.action != AdminAction::Pass;
            }
            false
        } else if bit < self.np_end {
            // The first NetworkPolicy match settles an isolated pod;
            // baseline rules only apply to pods that are not.
            m.np = Some(bit);
            true
        } else {
            m.baseline = Some(bit);
            true
        }
    }

    #[inline]
    pub fn flags(&self, identity: usize) -> Flags {
        self.flags[identity]
    }

    pub fn rule(&self, bit: usize) -> &RuleBit {
        &self.rules[bit]
    }

    pub fn action(&self, bit: usize) -> AdminAction {
        self.rules[bit].rule.action
    }
}

/// The other side of a flow, as the classifier sees it.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Its identity, when it is an endpoint pod.
    pub identity: Option<usize>,
    /// Whether `ip` is that pod's first address of its family.
    pub primary: bool,
    pub ip: &'a IpAddr,
}

/// The first matching rule bit of each tier.
#[derive(Clone, Copy, Debug, Default)]
pub struct Matches {
    pub admin: Option<usize>,
    pub np: Option<usize>,
    pub baseline: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_table_agrees_with_the_partition() {
        for bounds in [
            vec![],
            vec![80, 81],
            vec![1, 1000, 65535],
            vec![0, 443, 444, 65536],
        ] {
            let part = Partition::new(bounds);
            let row = part.port_table(3);
            assert_eq!(row.len(), 1 << 16);
            for p in 0..=u16::MAX {
                assert_eq!(
                    row[p as usize] as usize,
                    3 * part.find(p as u128),
                    "port {p}"
                );
            }
        }
    }
}
