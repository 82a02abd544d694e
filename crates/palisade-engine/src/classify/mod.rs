//! Bit-vector classification (the "BV" scheme of packet classifiers): every
//! rule of one direction gets a bit, numbered in evaluation order (admin
//! tier, then NetworkPolicy, then baseline). A flow's candidate rules are the
//! AND of three precomputed masks — rules that apply to the subject, rules
//! whose peers contain the peer, rules whose ports contain the port — so a
//! verdict costs a few word operations per 64 rules instead of a walk over
//! every rule, and the first set bit is the rule that decides.

mod build;
mod partition;

use std::net::IpAddr;

use palisade_model::{AdminAction, Protocol};

use crate::index::FlatRule;
use crate::{IdentityId, RuleId};

use partition::proto_index;
pub(crate) use partition::{key, net_bounds, Partition};

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
    /// The rule bits a flow matches, in evaluation order: the first in the
    /// admin range, whether any in the NetworkPolicy range, the first in the
    /// baseline range.
    // Inlined so that `Matches` stays in registers: returned through memory
    // it costs a store-forwarding stall per direction on the hot path.
    #[inline(always)]
    pub fn classify(
        &self,
        subject: IdentityId,
        peer: Peer<'_>,
        protocol: Protocol,
        port: u16,
        named_holder: Option<IdentityId>,
    ) -> Matches {
        let mut m = Matches::default();
        let s = subject.index();
        let words = &self.words[self.subject_start[s] as usize..self.subject_start[s + 1] as usize];
        if words.is_empty() {
            return m;
        }
        let w = self.width;
        let f = self.flags[s];
        let named: &[(Protocol, u16, u32)] = match named_holder {
            Some(h) if f.needs_named => &self.named[h.index()],
            _ => &[],
        };
        // The address and port intervals are looked up only when a
        // candidate rule needs them: most flows are settled by the
        // subject and peer masks alone.
        let fam = peer.family();
        let (peer_row, addr_known) = self.peer_row(&peer);
        let mut addr_at = usize::MAX;
        let mut port_at = usize::MAX;
        let pi = proto_index(protocol);

        for sw in words {
            let (i, s, meta) = (sw.index as usize, sw.bits, &sw.meta);
            let mut peers = meta.any_peer | peer_row[i];
            if !addr_known && meta.addr != 0 {
                if let Some(ip) = peer.ip {
                    if addr_at == usize::MAX {
                        addr_at = w * self.addr[fam].find(key(ip).1);
                    }
                    peers |= self.addr_masks[fam][addr_at + i];
                }
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
        let fam = peer.family();
        match peer.identity {
            Some(p) if peer.primary => {
                let p = p.index();
                (&self.peer_full[fam][p * w..(p + 1) * w], true)
            }
            Some(p) => {
                let p = p.index();
                (&self.peer[p * w..(p + 1) * w], false)
            }
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
        subject: IdentityId,
        peer: Peer<'_>,
        protocol: Protocol,
        port: u16,
        named_holder: Option<IdentityId>,
    ) -> Matches {
        let w = self.width;
        let f = self.flags[subject.index()];
        let zero = &self.zero[..w];
        let fam = peer.family();
        let (peer_row, addr_known) = self.peer_row(&peer);
        let addr_row = match peer.ip {
            Some(ip) if !addr_known && f.needs_addr => {
                let at = w * self.addr[fam].find(key(ip).1);
                &self.addr_masks[fam][at..at + w]
            }
            _ => zero,
        };
        let pi = proto_index(protocol);
        let at = self.port_row[pi][port as usize] as usize;
        let port_row = &self.port_masks[pi][at..at + w];
        // The destination's named ports, when a rule names one: the row of
        // the rules naming this port, chosen without a branch.
        let holder = match named_holder {
            Some(h) if f.needs_named => h.index(),
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
        let at = self.fast_at[subject.index()].map(|x| x as usize);
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
                m.admin = Some(RuleId::new(bit));
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
        m.np = (np != 0).then_some(RuleId::new(self.admin_end));
        for fw in &self.fast[at[2]..at[3]] {
            let c = matches(fw);
            if c != 0 {
                m.baseline = Some(RuleId::new(
                    fw.index as usize * 64 + c.trailing_zeros() as usize,
                ));
                break;
            }
        }
        m
    }

    /// Records a matching rule bit (bits arrive in evaluation order);
    /// `true` when nothing after it can change the verdict.
    #[inline]
    fn take(&self, m: &mut Matches, bit: usize) -> bool {
        let id = RuleId::new(bit);
        if bit < self.admin_end {
            if m.admin.is_none() {
                m.admin = Some(id);
                // Allow and Deny are final.
                return self.rules[bit].rule.action != AdminAction::Pass;
            }
            false
        } else if bit < self.np_end {
            // The first NetworkPolicy match settles an isolated pod;
            // baseline rules only apply to pods that are not.
            m.np = Some(id);
            true
        } else {
            m.baseline = Some(id);
            true
        }
    }

    #[inline]
    pub fn flags(&self, identity: IdentityId) -> Flags {
        self.flags[identity.index()]
    }

    pub fn rule(&self, bit: RuleId) -> &RuleBit {
        &self.rules[bit.index()]
    }

    #[inline]
    pub fn action(&self, bit: RuleId) -> AdminAction {
        self.rules[bit.index()].rule.action
    }
}

/// The other side of a flow, as the classifier sees it.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Its identity, when it is an endpoint pod.
    pub identity: Option<IdentityId>,
    /// Whether `ip` is that pod's first address of its family (always,
    /// for a template, which has none).
    pub primary: bool,
    /// `None` for a template: no address rule matches it.
    pub ip: Option<&'a IpAddr>,
}

impl Peer<'_> {
    /// The address family's index (0 IPv4, 1 IPv6); a template's rows are
    /// the same in both, having no address to add.
    #[inline(always)]
    fn family(&self) -> usize {
        self.ip.map_or(0, |ip| usize::from(ip.is_ipv6()))
    }
}

/// The first matching rule bit of each tier.
#[derive(Clone, Copy, Debug, Default)]
pub struct Matches {
    pub admin: Option<RuleId>,
    pub np: Option<RuleId>,
    pub baseline: Option<RuleId>,
}
