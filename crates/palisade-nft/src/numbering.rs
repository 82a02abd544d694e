//! How identity marks and policy-group ids are numbered.
//!
//! [`Numbering::Dense`] numbers them 1, 2, 3... in index order: compact and
//! readable, but adding one pod or policy can shift every later number, so
//! two rulesets of nearly equal clusters differ in almost every element.
//!
//! [`Numbering::Stable`] derives each number from a 32-bit FNV-1a hash of
//! what the identity or group *is* (namespace, labels, container ports,
//! address-matcher membership; the names of the isolating policies), never
//! from its position. Collisions are resolved by deterministic linear
//! probing over the keys sorted by (hash, key), so the numbering is a pure
//! function of the set of keys: an incremental rebuild and a full rebuild of
//! the same state agree, and a change only renumbers what it touches (or, on
//! a rare collision, the key probed past it). 0 is never assigned: it means
//! "not a pod" / "not isolated". The hashes are taken over the explicit
//! encoding of [`crate::encode`], never over the standard library's `Hash`,
//! so numbers are the same in every build and toolchain until that
//! encoding's version changes.

use std::collections::HashSet;
use std::hash::Hasher;
use std::net::IpAddr;

use crate::encode::{encoding, Encode};

use palisade_engine::Engine;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Numbering {
    #[default]
    Dense,
    Stable,
}

/// FNV-1a, 64 bits: a hash that is the same in every process and release,
/// unlike the standard library's, so it can be stored in the kernel.
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// FNV-1a of `k`'s explicit encoding.
pub(crate) fn hash64<K: Encode + ?Sized>(k: &K) -> u64 {
    let mut h = Fnv::new();
    h.write(&encoding(k));
    h.finish()
}

pub(crate) fn hash32<K: Encode + ?Sized>(k: &K) -> u32 {
    let x = hash64(k);
    (x ^ (x >> 32)) as u32
}

/// Numbers `n` keys: `stable(i)` is the content key of the i-th. Returns one
/// number per key, all distinct and non-zero.
pub(crate) fn assign<S: Encode + Ord>(
    numbering: Numbering,
    n: usize,
    stable: impl Fn(usize) -> S,
) -> Vec<u32> {
    match numbering {
        Numbering::Dense => (1..=n as u32).collect(),
        Numbering::Stable => {
            let mut keys: Vec<(u32, S, usize)> =
                (0..n).map(|i| (hash32(&stable(i)), stable(i), i)).collect();
            keys.sort();
            let mut used: HashSet<u32> = HashSet::with_capacity(n);
            let mut out = vec![0; n];
            for (h, _, i) in keys {
                let mut m = h;
                while m == 0 || used.contains(&m) {
                    m = m.wrapping_add(1);
                }
                used.insert(m);
                out[i] = m;
            }
            out
        }
    }
}

/// What an identity's stable mark is derived from: namespace, labels,
/// container ports (sorted, deduplicated), host networking, which families
/// it has, and which address matchers contain its first address of each
/// family (by matcher hash, sorted).
pub(crate) type MarkKey = (
    String,
    palisade_model::Labels,
    Vec<palisade_model::ContainerPort>,
    bool,
    bool,
    bool,
    Vec<(u64, bool, bool)>,
);

/// The hashes of the index's address matchers, as [`mark_key`] takes them.
pub(crate) fn matcher_hashes(
    engine: &Engine,
) -> Vec<(palisade_engine::index::AddressMatcher, u64)> {
    engine
        .index()
        .matchers()
        .iter()
        .map(|m| (m.clone(), hash64(m)))
        .collect()
}

/// The content key of an identity with these members' properties (`ips`:
/// any member's addresses; `ports` as the identity holds them).
pub(crate) fn mark_key(
    namespace: &str,
    labels: &palisade_model::Labels,
    ports: &[palisade_model::ContainerPort],
    host_network: bool,
    ips: &[IpAddr],
    matchers: &[(palisade_engine::index::AddressMatcher, u64)],
) -> MarkKey {
    let first = |v4: bool| ips.iter().copied().find(|ip| ip.is_ipv4() == v4);
    let (v4, v6) = (first(true), first(false));
    let mut sig: Vec<(u64, bool, bool)> = matchers
        .iter()
        .filter_map(|(m, h)| {
            let a = v4.is_some_and(|a| m.contains(&a));
            let b = v6.is_some_and(|a| m.contains(&a));
            (a || b).then_some((*h, a, b))
        })
        .collect();
    sig.sort();
    (
        namespace.to_string(),
        labels.clone(),
        ports.to_vec(),
        host_network,
        v4.is_some(),
        v6.is_some(),
        sig,
    )
}

/// The mark of every identity of the engine's index (`Index::identities`
/// order).
pub(crate) fn identity_marks(engine: &Engine, numbering: Numbering) -> Vec<u32> {
    if numbering == Numbering::Dense {
        return assign(numbering, engine.index().identities().len(), |_| ());
    }
    let keys = identity_keys(engine);
    assign(numbering, keys.len(), |i| keys[i].clone())
}

/// The content key of every identity of the engine's index
/// (`Index::identities` order), from its first member.
pub(crate) fn identity_keys(engine: &Engine) -> Vec<MarkKey> {
    let idx = engine.index();
    let cluster = engine.cluster();
    let matchers = matcher_hashes(engine);
    idx.identities()
        .iter()
        .map(|ident| {
            let ips = ident
                .members
                .first()
                .map(|&p| cluster.pods[p.index()].ips.as_slice())
                .unwrap_or_default();
            mark_key(
                &ident.namespace,
                &ident.labels,
                &ident.ports,
                ident.host_network,
                ips,
                &matchers,
            )
        })
        .collect()
}

/// The `namespace/name` of NetworkPolicies given by index.
pub(crate) fn policy_names(engine: &Engine, policies: &[usize]) -> Vec<(String, String)> {
    let c = engine.cluster();
    policies
        .iter()
        .map(|&p| (c.policies[p].namespace.clone(), c.policies[p].name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_numbers_depend_on_keys_only() {
        let a = assign(Numbering::Stable, 3, |i| ["x", "y", "z"][i]);
        let b = assign(Numbering::Stable, 2, |i| ["z", "x"][i]);
        assert_eq!((a[0], a[2]), (b[1], b[0]));
        assert!(a.iter().all(|&m| m != 0));
        assert_eq!(assign(Numbering::Dense, 3, |_| ()), vec![1, 2, 3]);
    }

    /// Fixed keys, fixed numbers: these are written into every node's
    /// table, so a change of the encoding must be deliberate (bump
    /// [`crate::encode::FORMAT_VERSION`] and update the numbers here).
    #[test]
    fn stable_numbers_are_golden() {
        use palisade_engine::index::AddressMatcher;
        use palisade_model::{ContainerPort, IpBlock, Labels, Protocol};

        let block = AddressMatcher::Block(IpBlock {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
        });
        let nodes = AddressMatcher::Nodes(vec!["192.168.0.1".parse().unwrap()]);
        let networks = AddressMatcher::Networks(vec!["fd00::/64".parse().unwrap()]);
        assert_eq!(hash64(&block), GOLDEN[0]);
        assert_eq!(hash64(&nodes), GOLDEN[1]);
        assert_eq!(hash64(&networks), GOLDEN[2]);

        let matchers: Vec<_> = [block, nodes, networks]
            .into_iter()
            .map(|m| {
                let h = hash64(&m);
                (m, h)
            })
            .collect();
        let labels: Labels = [("app", "web"), ("tier", "front")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ports = [ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }];
        let ips = ["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        let key = mark_key("shop", &labels, &ports, false, &ips, &matchers);
        assert_eq!(u64::from(hash32(&key)), GOLDEN[3]);
        let bare = mark_key("shop", &Labels::new(), &[], true, &[], &matchers);
        assert_eq!(u64::from(hash32(&bare)), GOLDEN[4]);

        // NetworkPolicy groups: the isolating policies' names (egress),
        // with how named ports resolve (ingress).
        let policies = vec![
            ("shop".to_string(), "default-deny".to_string()),
            ("shop".to_string(), "web".to_string()),
        ];
        assert_eq!(u64::from(hash32(&policies)), GOLDEN[5]);
        let ingress = (policies, vec![vec![8080u16], vec![]]);
        assert_eq!(u64::from(hash32(&ingress)), GOLDEN[6]);
        // Admin tier groups: (kind, name, rule) and named ports.
        let tier = (
            vec![("AdminNetworkPolicy", "pass-monitoring", 0usize)],
            vec![("http", 6u8, 8080u16)],
        );
        assert_eq!(u64::from(hash32(&tier)), GOLDEN[7]);
    }

    const GOLDEN: [u64; 8] = [
        17_533_080_301_700_608_104,
        7_585_900_177_787_427_778,
        178_345_813_281_553_303,
        2_190_862_006,
        1_105_394_804,
        3_958_532_381,
        2_417_218_093,
        2_304_051_472,
    ];

    #[test]
    fn collisions_are_probed() {
        // Equal content keys still get distinct numbers.
        let m = assign(Numbering::Stable, 3, |_| "same");
        let set: HashSet<u32> = m.iter().copied().collect();
        assert_eq!(set.len(), 3);
    }
}
