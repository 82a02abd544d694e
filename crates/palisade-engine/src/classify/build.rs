//! Building one direction's classifier from the identities' plans: number
//! the rules in evaluation order, then compute each mask table in turn.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use palisade_model::Protocol;

use super::partition::{key, proto_index, Partition};
use super::{
    bits_in, set_bit, DirClassifier, FastWord, Flags, NamedFast, RuleBit, SubjectWord, Tier,
    WordMeta, FAST_STEP, NAMED_FAST,
};
use crate::index::{sweep, AddressMatcher, FlatPortKind, FlatRule, Identity, Plan, Step};
use crate::{Direction, IdSet, MatcherId, PeerMatch};

/// A plan's rule lists with their tier numbers.
fn tiers_of(p: &Plan) -> [(u8, &Vec<FlatRule>); 3] {
    [(0, &p.admin), (1, &p.np), (2, &p.baseline)]
}

/// The distinct rules of a direction, numbered in evaluation order.
struct Numbered {
    rules: Vec<RuleBit>,
    /// `(tier, owner, rule)` → its bit.
    bit_of: HashMap<(u8, usize, usize), usize>,
    admin_end: usize,
    np_end: usize,
}

/// Plans list admin rules in global order already; a rule shared by many
/// identities gets one bit.
fn number_rules(dir: Direction, identities: &[Identity]) -> Numbered {
    let mut rules: Vec<RuleBit> = Vec::new();
    let mut seen: HashMap<(u8, usize, usize), usize> = Default::default();
    let mut tiers: [Vec<(usize, usize, FlatRule)>; 3] = Default::default();
    for id in identities {
        for (t, list) in tiers_of(id.plan(dir)) {
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
    Numbered {
        rules,
        bit_of: seen,
        admin_end,
        np_end,
    }
}

/// Per identity, the non-zero words `(word index, bits)` of the rules that
/// apply to it, and where each identity's words start (one more entry
/// than identities).
fn subject_words(
    dir: Direction,
    identities: &[Identity],
    num: &Numbered,
    width: usize,
) -> (Vec<(u32, u64)>, Vec<u32>) {
    let mut subject = Vec::new();
    let mut subject_start = Vec::with_capacity(identities.len() + 1);
    let mut row = vec![0u64; width];
    for id in identities {
        row.iter_mut().for_each(|w| *w = 0);
        for (t, list) in tiers_of(id.plan(dir)) {
            for r in list {
                set_bit(&mut row, num.bit_of[&(t, r.owner, r.rule)]);
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
    (subject, subject_start)
}

/// The rules' peer and port conditions: masks where a condition is the
/// same for every flow, lists of `(bit, condition)` where it is not.
struct Conditions {
    /// Per identity: the rules whose selector peers contain it.
    peer: Vec<u64>,
    any_peer: Vec<u64>,
    addr_rules: Vec<(usize, MatcherId)>,
    all_ports: Vec<u64>,
    port_rules: Vec<(usize, Protocol, u16, u16)>,
    /// `(name, protocol or None for any)` → rules.
    named_rules: HashMap<(u32, Option<Protocol>), Vec<usize>>,
}

fn conditions(rules: &[RuleBit], sets: &[IdSet], n: usize, width: usize) -> Conditions {
    let mut c = Conditions {
        peer: vec![0u64; n * width],
        any_peer: vec![0u64; width],
        addr_rules: Vec::new(),
        all_ports: vec![0u64; width],
        port_rules: Vec::new(),
        named_rules: Default::default(),
    };
    for (bit, rb) in rules.iter().enumerate() {
        match &rb.rule.peers {
            None => set_bit(&mut c.any_peer, bit),
            Some(ps) => {
                for m in ps {
                    match *m {
                        PeerMatch::Set(s) => {
                            for id in sets[s.index()].iter().map(|id| id.index()) {
                                if id < n {
                                    set_bit(&mut c.peer[id * width..(id + 1) * width], bit);
                                }
                            }
                        }
                        PeerMatch::Addr(a) => c.addr_rules.push((bit, a)),
                    }
                }
            }
        }
        match &rb.rule.ports {
            None => set_bit(&mut c.all_ports, bit),
            Some(ps) => {
                for p in ps {
                    match p.kind {
                        FlatPortKind::Range(proto, s, e) => c.port_rules.push((bit, proto, s, e)),
                        FlatPortKind::Named(proto, name) => c
                            .named_rules
                            .entry((name, Some(proto)))
                            .or_default()
                            .push(bit),
                        FlatPortKind::NamedAnyProtocol(name) => {
                            c.named_rules.entry((name, None)).or_default().push(bit)
                        }
                    }
                }
            }
        }
    }
    c
}

/// The address partition (boundaries at every edge of a matcher some rule
/// uses) and, per interval, the rules whose address peers contain it.
fn address_masks(
    addr_rules: &[(usize, MatcherId)],
    matchers: &[AddressMatcher],
    width: usize,
) -> ([Partition; 2], [Vec<u64>; 2]) {
    let mut bounds: [Vec<u128>; 2] = Default::default();
    for &(_, a) in addr_rules {
        matchers[a.index()].push_bounds(&mut bounds);
    }
    let [b4, b6] = bounds;
    let addr = [Partition::new(b4), Partition::new(b6)];
    let addr_masks = [0, 1].map(|fam| {
        let part = &addr[fam];
        let mut masks = vec![0u64; part.bounds.len() * width];
        // Per rule bit, how many of its address peers contain the sweep
        // position (a rule may have many).
        let mut peers = vec![0u32; width * 64];
        let mut row = vec![0u64; width];
        let items = addr_rules.iter().map(|&(_, a)| &matchers[a.index()]);
        sweep(fam, &part.bounds, items, |step| match step {
            Step::Toggle(item, on) => {
                let bit = addr_rules[item as usize].0;
                let n = &mut peers[bit];
                if on {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                }
                if *n > 0 {
                    set_bit(&mut row, bit);
                } else {
                    row[bit / 64] &= !(1 << (bit % 64));
                }
            }
            Step::Interval(i) => masks[i * width..(i + 1) * width].copy_from_slice(&row),
        });
        masks
    });
    (addr, addr_masks)
}

/// Per protocol, the partition of the port space at the rules' port
/// boundaries and, per interval, the rules whose numeric ports contain it.
fn port_masks(
    port_rules: &[(usize, Protocol, u16, u16)],
    width: usize,
) -> ([Partition; 3], [Vec<u64>; 3]) {
    let ports = Protocol::ALL.map(|proto| {
        let mut b = Vec::new();
        for &(_, p, s, e) in port_rules {
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
            for &(bit, p, s, e) in port_rules {
                if proto_index(p) == pi && (s as u128) <= start && start <= e as u128 {
                    set_bit(&mut masks[i * width..(i + 1) * width], bit);
                }
            }
        }
        masks
    });
    (ports, port_masks)
}

/// Per identity, the `(protocol, port, mask row)` of each of its named
/// ports that some rule names.
type NamedRows = Vec<Vec<(Protocol, u16, u32)>>;

/// One mask row per named-port condition, and the identities' rows.
fn named_masks(
    named_rules: &HashMap<(u32, Option<Protocol>), Vec<usize>>,
    identities: &[Identity],
    width: usize,
) -> (Vec<u64>, NamedRows) {
    let mut masks = Vec::new();
    let mut row_of: HashMap<(u32, Option<Protocol>), u32> = Default::default();
    for (k, bits) in named_rules {
        let row = (masks.len() / width) as u32;
        masks.resize(masks.len() + width, 0);
        let start = row as usize * width;
        for &bit in bits {
            set_bit(&mut masks[start..start + width], bit);
        }
        row_of.insert(*k, row);
    }
    let named = identities
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
    (masks, named)
}

/// The branch-free form of `named` (see `DirClassifier::named_fast`), and
/// the combined rows it points at, starting with the zero row.
fn named_fast(
    named: &[Vec<(Protocol, u16, u32)>],
    named_masks: &[u64],
    width: usize,
) -> (Vec<Option<NamedFast>>, Vec<u64>) {
    let mut fast_masks = vec![0u64; width];
    let fast = named
        .iter()
        .chain(std::iter::once(&Vec::new()))
        .map(|list| {
            let mut rows: BTreeMap<u32, Vec<u64>> = Default::default();
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
                e.offsets[j] = fast_masks.len() as u32;
                fast_masks.extend(combined);
            }
            Some(e)
        })
        .collect();
    (fast, fast_masks)
}

/// Per word, the flow-independent masks of all rules.
fn word_meta(c: &Conditions, width: usize) -> Vec<WordMeta> {
    let mut addr_bits = vec![0u64; width];
    for &(bit, _) in &c.addr_rules {
        set_bit(&mut addr_bits, bit);
    }
    let mut port_bits = vec![0u64; width];
    for &(bit, ..) in &c.port_rules {
        set_bit(&mut port_bits, bit);
    }
    let mut named_bits = vec![0u64; width];
    for bits in c.named_rules.values() {
        for &bit in bits {
            set_bit(&mut named_bits, bit);
        }
    }
    (0..width)
        .map(|i| WordMeta {
            any_peer: c.any_peer[i],
            all_ports: c.all_ports[i],
            addr: addr_bits[i],
            ports: port_bits[i],
            named: named_bits[i],
        })
        .collect()
}

fn flags(
    dir: Direction,
    identities: &[Identity],
    (subject, subject_start): (&[(u32, u64)], &[u32]),
    meta: &[WordMeta],
) -> Vec<Flags> {
    identities
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let words = &subject[subject_start[i] as usize..subject_start[i + 1] as usize];
            let any =
                |m: fn(&WordMeta) -> u64| words.iter().any(|&(w, b)| m(&meta[w as usize]) & b != 0);
            Flags {
                host_network: id.host_network,
                isolated: id.plan(dir).isolated,
                needs_named: any(|m| m.named),
                needs_addr: any(|m| m.addr),
            }
        })
        .collect()
}

/// Per family, each identity's `peer` row ORed with the address row of its
/// members' first address of that family. Members of an identity share
/// that address's class, hence its interval's mask row.
fn peer_full(
    peer: &[u64],
    first_ips: &[[Option<IpAddr>; 2]],
    addr: &[Partition; 2],
    addr_masks: &[Vec<u64>; 2],
    width: usize,
) -> [Vec<u64>; 2] {
    [0, 1].map(|fam| {
        let mut rows = peer.to_vec();
        for (id, ips) in first_ips.iter().enumerate() {
            if let Some(ip) = ips[fam] {
                let a = addr[fam].find(key(&ip).1);
                for i in 0..width {
                    rows[id * width + i] |= addr_masks[fam][a * width + i];
                }
            }
        }
        rows
    })
}

/// The subject words with each word's masks restricted to its bits.
fn subject_records(subject: &[(u32, u64)], meta: &[WordMeta]) -> Vec<SubjectWord> {
    subject
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
        .collect()
}

/// Per identity its words split by tier: admin, NetworkPolicy (padded to
/// steps), baseline; and where each identity's tiers start.
fn fast_words(
    words: &[SubjectWord],
    subject_start: &[u32],
    tier_bits: [(usize, usize); 3],
) -> (Vec<FastWord>, Vec<[u32; 4]>) {
    let n = subject_start.len() - 1;
    let mut fast = Vec::new();
    let mut fast_at = Vec::with_capacity(n);
    for id in 0..n {
        let ws = &words[subject_start[id] as usize..subject_start[id + 1] as usize];
        let mut at = [0u32; 4];
        for (t, &(start, end)) in tier_bits.iter().enumerate() {
            at[t] = fast.len() as u32;
            let before = fast.len();
            for sw in ws {
                let bits = sw.bits & bits_in(sw.index as usize, start, end);
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
    (fast, fast_at)
}

impl DirClassifier {
    pub(crate) fn build(
        dir: Direction,
        identities: &[Identity],
        first_ips: &[[Option<IpAddr>; 2]],
        sets: &[IdSet],
        matchers: &[AddressMatcher],
    ) -> DirClassifier {
        let num = number_rules(dir, identities);
        let width = num.rules.len().div_ceil(64).max(1);
        let (subject, subject_start) = subject_words(dir, identities, &num, width);
        let c = conditions(&num.rules, sets, identities.len(), width);
        let (addr, addr_masks) = address_masks(&c.addr_rules, matchers, width);
        let (ports, port_masks) = port_masks(&c.port_rules, width);
        let (named_masks, named) = named_masks(&c.named_rules, identities, width);
        let (named_fast, named_fast_masks) = named_fast(&named, &named_masks, width);
        let meta = word_meta(&c, width);
        let flags = flags(dir, identities, (&subject, &subject_start), &meta);
        let peer_full = peer_full(&c.peer, first_ips, &addr, &addr_masks, width);
        let words = subject_records(&subject, &meta);
        let tier_bits = [
            (0, num.admin_end),
            (num.admin_end, num.np_end),
            (num.np_end, num.rules.len()),
        ];
        let (fast, fast_at) = fast_words(&words, &subject_start, tier_bits);
        DirClassifier {
            words,
            fast,
            fast_at,
            zero: vec![0; width],
            peer_full,
            port_row: [0, 1, 2].map(|pi| ports[pi].port_table(width)),
            flags,
            width,
            rules: num.rules,
            admin_end: num.admin_end,
            np_end: num.np_end,
            subject_start,
            peer: c.peer,
            addr,
            addr_masks,
            port_masks,
            named_masks,
            named,
            named_fast,
            named_fast_masks,
        }
    }
}
