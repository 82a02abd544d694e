//! Peer atoms: the things a rule's peers can tell apart. An endpoint
//! identity at its first address of each family, and one address of each
//! class interval of the address space (addresses no matcher tells apart).
//! Whole-cluster questions ("does some rule allow this to anyone?") are
//! asked per atom, never per pod or per address.

use std::net::IpAddr;

use crate::index::first_of_family;
use crate::{Engine, IdentityId, PeerMatch};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Atom {
    /// An endpoint identity (not host-network), at the first address of
    /// one family of its members.
    Pod { identity: IdentityId, ip: IpAddr },
    /// A representative address of one class interval.
    Addr(IpAddr),
}

pub(crate) struct Atoms {
    pub list: Vec<Atom>,
    /// Per shared set and per matcher: the atoms it matches, sorted.
    set_atoms: Vec<Vec<u32>>,
    matcher_atoms: Vec<Vec<u32>>,
}

impl Atoms {
    pub(crate) fn build(engine: &Engine) -> Atoms {
        let index = engine.index();
        let cluster = engine.cluster();
        let mut list = Vec::new();
        let mut of_identity = vec![Vec::new(); index.identities().len()];
        for (i, id) in index.identities().iter().enumerate() {
            if id.host_network {
                continue;
            }
            let ips = &cluster.pods[id.members[0].index()].ips;
            for v4 in [true, false] {
                if let Some(ip) = first_of_family(ips, v4) {
                    of_identity[i].push(list.len() as u32);
                    list.push(Atom::Pod {
                        identity: IdentityId::new(i),
                        ip,
                    });
                }
            }
        }
        for fam in 0..2 {
            list.extend(index.addr_classes().interval_starts(fam).map(Atom::Addr));
        }
        let set_atoms = index
            .sets()
            .iter()
            .map(|s| {
                s.iter()
                    .flat_map(|id| of_identity[id.index()].iter().copied())
                    .collect()
            })
            .collect();
        let matcher_atoms = index
            .matchers()
            .iter()
            .map(|m| {
                (0..list.len() as u32)
                    .filter(|&a| m.contains(&ip_of(&list[a as usize])))
                    .collect()
            })
            .collect();
        Atoms {
            list,
            set_atoms,
            matcher_atoms,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn identity(&self, a: u32) -> Option<IdentityId> {
        match self.list[a as usize] {
            Atom::Pod { identity, .. } => Some(identity),
            Atom::Addr(_) => None,
        }
    }

    /// The atoms one peer matches, sorted.
    pub(crate) fn of_peer(&self, m: &PeerMatch) -> &[u32] {
        match *m {
            PeerMatch::Set(s) => &self.set_atoms[s.index()],
            PeerMatch::Addr(a) => &self.matcher_atoms[a.index()],
        }
    }

    /// The atoms a list of peers matches (`None`: every atom), sorted and
    /// deduplicated.
    pub(crate) fn of_peers(&self, peers: &Option<Vec<PeerMatch>>) -> Vec<u32> {
        match peers {
            None => (0..self.list.len() as u32).collect(),
            Some(ps) if ps.len() == 1 => self.of_peer(&ps[0]).to_vec(),
            Some(ps) => {
                let mut v: Vec<u32> = ps.iter().flat_map(|p| self.of_peer(p)).copied().collect();
                v.sort_unstable();
                v.dedup();
                v
            }
        }
    }

    /// Whether a peer matches an atom, as the verdict function matches a
    /// peer: a selector set by identity, an address matcher by address.
    pub(crate) fn matches(&self, engine: &Engine, m: &PeerMatch, a: u32) -> bool {
        let atom = &self.list[a as usize];
        match (*m, atom) {
            (PeerMatch::Set(s), Atom::Pod { identity, .. }) => {
                engine.index().set(s).contains(*identity)
            }
            (PeerMatch::Set(_), Atom::Addr(_)) => false,
            (PeerMatch::Addr(x), _) => engine.index().matcher(x).contains(&ip_of(atom)),
        }
    }

    /// Whether a rule's peers (`None`: all) match an atom.
    pub(crate) fn rule_matches(
        &self,
        engine: &Engine,
        peers: &Option<Vec<PeerMatch>>,
        a: u32,
    ) -> bool {
        peers
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|m| self.matches(engine, m, a)))
    }

    /// `pod shop/web` (the identity's first member) or `address 10.0.0.0`.
    pub(crate) fn describe(&self, engine: &Engine, a: u32) -> String {
        match self.list[a as usize] {
            Atom::Pod { identity, ip } => {
                let id = engine.index().identity(identity);
                let pod = &engine.cluster().pods[id.members[0].index()];
                format!("pod {} ({ip})", pod.key())
            }
            Atom::Addr(ip) => format!("address {ip}"),
        }
    }
}

pub(crate) fn ip_of(a: &Atom) -> IpAddr {
    match *a {
        Atom::Pod { ip, .. } | Atom::Addr(ip) => ip,
    }
}
