//! Address matchers (`ipBlock`, admin `networks` and `nodes` peers) and the
//! address classes they cut the address space into.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_model::IpBlock;

use crate::classify::{key, net_bounds, Partition};
use crate::index::sweep::{self, SetIds, Step};

/// Matches on an address rather than on labels; which of these contain a
/// pod's address is part of its identity, because `ipBlock` applies to pod
/// addresses too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressMatcher {
    Block(IpBlock),
    Networks(Vec<IpNet>),
    /// The addresses of the nodes an admin `nodes` peer selects.
    Nodes(Vec<IpAddr>),
}

impl AddressMatcher {
    #[inline]
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self {
            AddressMatcher::Block(b) => b.contains(ip),
            AddressMatcher::Networks(n) => n.iter().any(|n| n.contains(ip)),
            AddressMatcher::Nodes(a) => a.contains(ip),
        }
    }

    /// Adds the matcher's edges (where containment can change) to the
    /// per-family boundary lists.
    pub(crate) fn push_bounds(&self, bounds: &mut [Vec<u128>; 2]) {
        match self {
            AddressMatcher::Block(b) => {
                net_bounds(&b.cidr, bounds);
                for e in &b.except {
                    net_bounds(e, bounds);
                }
            }
            AddressMatcher::Networks(ns) => ns.iter().for_each(|n| net_bounds(n, bounds)),
            AddressMatcher::Nodes(a) => a.iter().for_each(|a| net_bounds(&IpNet::from(*a), bounds)),
        }
    }
}

/// The first address of an interval's start, per family (0: IPv4).
pub(crate) fn interval_start(fam: usize, start: u128) -> IpAddr {
    if fam == 0 {
        IpAddr::V4((start as u32).into())
    } else {
        IpAddr::V6(start.into())
    }
}

/// Addresses grouped by which address matchers contain them: the address
/// space cut at every matcher edge, each interval labelled with the class of
/// its matcher set. Two addresses of one class are told apart by no rule.
#[derive(Clone, Debug)]
pub struct AddrClasses {
    parts: [Partition; 2],
    class: [Vec<u32>; 2],
}

impl AddrClasses {
    pub(crate) fn build(matchers: &[AddressMatcher]) -> AddrClasses {
        let mut bounds: [Vec<u128>; 2] = Default::default();
        for m in matchers {
            m.push_bounds(&mut bounds);
        }
        let [b4, b6] = bounds;
        let parts = [Partition::new(b4), Partition::new(b6)];
        // Classes are numbered in order of first appearance, IPv4 first;
        // the empty set is one class in both families.
        let mut sets = SetIds::new(matchers.len());
        let mut ids: HashMap<u32, u32> = HashMap::new();
        let class = [0, 1].map(|fam| {
            let mut class = Vec::with_capacity(parts[fam].bounds.len());
            let mut set = sweep::EMPTY;
            sweep::sweep(
                fam,
                &parts[fam].bounds,
                matchers.iter(),
                |step| match step {
                    Step::Toggle(item, on) => set = sets.with(set, item, on),
                    Step::Interval(_) => {
                        let next = ids.len() as u32;
                        class.push(*ids.entry(set).or_insert(next));
                    }
                },
            );
            class
        });
        AddrClasses { parts, class }
    }

    /// The class of an address; `u32::MAX` for none.
    pub(crate) fn class(&self, ip: Option<IpAddr>) -> u32 {
        ip.map_or(u32::MAX, |ip| {
            let (fam, k) = key(&ip);
            self.class[fam][self.parts[fam].find(k)]
        })
    }

    /// The first address of every class interval of a family (0: IPv4):
    /// one representative of each stretch of addresses that no rule tells
    /// apart.
    pub(crate) fn interval_starts(&self, fam: usize) -> impl Iterator<Item = IpAddr> + '_ {
        self.parts[fam]
            .bounds
            .iter()
            .map(move |&s| interval_start(fam, s))
    }

    /// The classes of a pod's first IPv4 and IPv6 addresses.
    pub(crate) fn classes_of(&self, ips: &[IpAddr]) -> (u32, u32) {
        (
            self.class(first_of_family(ips, true)),
            self.class(first_of_family(ips, false)),
        )
    }
}

pub(crate) fn first_of_family(ips: &[IpAddr], v4: bool) -> Option<IpAddr> {
    ips.iter().copied().find(|ip| ip.is_ipv4() == v4)
}
