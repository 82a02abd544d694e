//! Which address matchers contain each interval of an address partition,
//! found in one sweep over the matchers' edges rather than by asking every
//! matcher about every interval: n matchers cut the space into about 2n
//! intervals, and asking each of them is quadratic (50,000 distinct
//! `ipBlock`s in one rule took a minute and 2.5 GB that way).

use std::collections::HashMap;

use crate::classify::key;
use crate::index::AddressMatcher;

/// One edge of a matcher: at `at`, `item`'s count of containing ranges
/// (`cidr` or network, or `except`) changes.
struct Edge {
    at: u128,
    item: u32,
    except: bool,
    enter: bool,
}

/// Per item, how many of its ranges and of its `except`s contain the sweep
/// position. An item contains the position iff it is in one of its ranges
/// and in none of its exceptions, which is [`AddressMatcher::contains`]
/// (a block's `cidr` with its `except`s, a list of networks, a list of
/// node addresses).
#[derive(Clone, Copy, Default)]
struct Depth {
    ranges: u32,
    excepts: u32,
}

impl Depth {
    fn active(self) -> bool {
        self.ranges > 0 && self.excepts == 0
    }
}

fn push_net(edges: &mut Vec<Edge>, fam: usize, net: &ipnet::IpNet, item: u32, except: bool) {
    let (f, start) = key(&net.network());
    if f != fam {
        return;
    }
    let (_, end) = key(&net.broadcast());
    edges.push(Edge {
        at: start,
        item,
        except,
        enter: true,
    });
    // A range that runs to the family's last address never ends.
    if let Some(next) = end
        .checked_add(1)
        .filter(|&n| fam == 1 || n <= u32::MAX as u128)
    {
        edges.push(Edge {
            at: next,
            item,
            except,
            enter: false,
        });
    }
}

fn edges_of(fam: usize, m: &AddressMatcher, item: u32, edges: &mut Vec<Edge>) {
    match m {
        AddressMatcher::Block(b) => {
            push_net(edges, fam, &b.cidr, item, false);
            for e in &b.except {
                push_net(edges, fam, e, item, true);
            }
        }
        AddressMatcher::Networks(ns) => {
            for n in ns {
                push_net(edges, fam, n, item, false);
            }
        }
        AddressMatcher::Nodes(a) => {
            for a in a {
                push_net(edges, fam, &ipnet::IpNet::from(*a), item, false);
            }
        }
    }
}

/// What a sweep reports, in address order.
pub(crate) enum Step {
    /// The item (numbered in the order given) starts (`true`) or stops
    /// containing the sweep position.
    Toggle(u32, bool),
    /// The position is the partition's bound `i`: the toggles so far make
    /// up the set of items containing interval `i`.
    Interval(usize),
}

/// Sweeps family `fam` (0: IPv4) of a partition whose `bounds` include
/// every edge of `items`, reporting each [`Step`] to `step`.
pub(crate) fn sweep<'m>(
    fam: usize,
    bounds: &[u128],
    items: impl Iterator<Item = &'m AddressMatcher>,
    mut step: impl FnMut(Step),
) {
    let mut edges = Vec::new();
    let mut n = 0u32;
    for m in items {
        edges_of(fam, m, n, &mut edges);
        n += 1;
    }
    edges.sort_unstable_by_key(|e| e.at);
    let mut depth = vec![Depth::default(); n as usize];
    let mut next = 0;
    for (i, &b) in bounds.iter().enumerate() {
        while let Some(e) = edges.get(next).filter(|e| e.at <= b) {
            let d = &mut depth[e.item as usize];
            let before = d.active();
            let count = if e.except {
                &mut d.excepts
            } else {
                &mut d.ranges
            };
            if e.enter {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
            }
            if d.active() != before {
                step(Step::Toggle(e.item, !before));
            }
            next += 1;
        }
        step(Step::Interval(i));
    }
}

/// Sets of item numbers, hash-consed: equal sets get the same id, so an id
/// names a set exactly and in constant space. A set is a binary trie over
/// the bits of the item numbers; adding or removing one item makes
/// `levels` new nodes at most.
pub(crate) struct SetIds {
    levels: u32,
    nodes: Vec<(u32, u32)>,
    table: HashMap<(u32, u32), u32>,
}

/// The empty set's id.
pub(crate) const EMPTY: u32 = 0;
/// A trie leaf that holds its item.
const PRESENT: u32 = 1;

impl SetIds {
    /// For sets of items numbered below `n`.
    pub(crate) fn new(n: usize) -> SetIds {
        SetIds {
            levels: usize::BITS - n.leading_zeros(),
            nodes: vec![(0, 0), (0, 0)],
            table: HashMap::new(),
        }
    }

    /// The id of `set` with `item` added (`on`) or removed.
    pub(crate) fn with(&mut self, set: u32, item: u32, on: bool) -> u32 {
        self.set(set, self.levels, item, on)
    }

    fn set(&mut self, node: u32, level: u32, item: u32, on: bool) -> u32 {
        if level == 0 {
            return if on { PRESENT } else { EMPTY };
        }
        let (l, r) = self.nodes[node as usize];
        let (l, r) = if (item >> (level - 1)) & 1 == 0 {
            (self.set(l, level - 1, item, on), r)
        } else {
            (l, self.set(r, level - 1, item, on))
        };
        if (l, r) == (EMPTY, EMPTY) {
            return EMPTY;
        }
        // Children of one level are never ids of another (ids are fresh
        // for each new pair, and 0 and 1 are never inner nodes), so one
        // table serves every level.
        let fresh = self.nodes.len() as u32;
        let id = *self.table.entry((l, r)).or_insert(fresh);
        if id == fresh {
            self.nodes.push((l, r));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    use ipnet::IpNet;
    use palisade_model::IpBlock;
    use proptest::prelude::*;

    use super::*;
    use crate::classify::Partition;
    use crate::index::{interval_start, AddrClasses};

    /// Networks in a small corner of each family, so that they overlap,
    /// nest and share edges; prefix 0 and the family's last address too.
    fn net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (0u32..64, 24u8..=32).prop_map(|(x, len)| {
                IpNet::new(IpAddr::V4((0x0a00_0000 | x << 2).into()), len)
                    .unwrap()
                    .trunc()
            }),
            (0u128..64, 120u8..=128).prop_map(|(x, len)| {
                IpNet::new(IpAddr::V6((0x2001_0db8u128 << 96 | x << 2).into()), len)
                    .unwrap()
                    .trunc()
            }),
            Just("0.0.0.0/0".parse().unwrap()),
            Just("255.255.255.255/32".parse().unwrap()),
            Just("::/0".parse().unwrap()),
            Just(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
                    .parse()
                    .unwrap()
            ),
        ]
    }

    fn matcher() -> impl Strategy<Value = AddressMatcher> {
        prop_oneof![
            (net(), prop::collection::vec(net(), 0..3))
                .prop_map(|(cidr, except)| AddressMatcher::Block(IpBlock { cidr, except })),
            prop::collection::vec(net(), 1..4).prop_map(AddressMatcher::Networks),
            prop::collection::vec(net(), 1..3)
                .prop_map(|n| AddressMatcher::Nodes(n.iter().map(|n| n.network()).collect())),
        ]
    }

    proptest! {
        /// The sweep finds, for every interval, exactly the matchers whose
        /// `contains` says so, and the classes are numbered as asking every
        /// matcher about every interval numbers them.
        #[test]
        fn the_sweep_agrees_with_asking_every_matcher(
            matchers in prop::collection::vec(matcher(), 0..12)
        ) {
            let mut bounds: [Vec<u128>; 2] = Default::default();
            for m in &matchers {
                m.push_bounds(&mut bounds);
            }
            let [b4, b6] = bounds;
            let parts = [Partition::new(b4), Partition::new(b6)];
            let mut naive_ids: HashMap<Vec<bool>, u32> = HashMap::new();
            let mut naive_class = Vec::new();
            for fam in [0, 1] {
                let mut active = BTreeSet::new();
                let mut swept = Vec::new();
                sweep(fam, &parts[fam].bounds, matchers.iter(), |step| match step {
                    Step::Toggle(item, true) => assert!(active.insert(item)),
                    Step::Toggle(item, false) => assert!(active.remove(&item)),
                    Step::Interval(i) => swept.push((i, active.clone())),
                });
                prop_assert_eq!(swept.len(), parts[fam].bounds.len());
                for (i, set) in swept {
                    let ip = interval_start(fam, parts[fam].bounds[i]);
                    let asked: BTreeSet<u32> = (0..matchers.len() as u32)
                        .filter(|&m| matchers[m as usize].contains(&ip))
                        .collect();
                    prop_assert_eq!(&set, &asked, "interval at {}", ip);
                    let key: Vec<bool> = matchers.iter().map(|m| m.contains(&ip)).collect();
                    let next = naive_ids.len() as u32;
                    naive_class.push(*naive_ids.entry(key).or_insert(next));
                }
            }
            let built = AddrClasses::build(&matchers);
            let classes: Vec<u32> = [0, 1]
                .into_iter()
                .flat_map(|fam| {
                    built
                        .interval_starts(fam)
                        .map(|ip| built.class(Some(ip)))
                        .collect::<Vec<_>>()
                })
                .collect();
            prop_assert_eq!(classes, naive_class);
        }
    }

    #[test]
    fn equal_sets_share_an_id_whatever_the_order_of_changes() {
        let mut ids = SetIds::new(10);
        let a = ids.with(EMPTY, 3, true);
        let a = ids.with(a, 7, true);
        let b = ids.with(EMPTY, 7, true);
        let b = ids.with(b, 9, true);
        let b = ids.with(b, 3, true);
        let b = ids.with(b, 9, false);
        assert_eq!(a, b);
        let c = ids.with(a, 3, false);
        let c = ids.with(c, 7, false);
        assert_eq!(c, EMPTY);
        let d = ids.with(EMPTY, 9, true);
        assert_ne!(d, a);
        assert_ne!(ids.with(EMPTY, 0, true), EMPTY);
    }
}
