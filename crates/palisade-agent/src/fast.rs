//! The fast path: pod events that cannot change any rule.
//!
//! A pod whose identity ([`palisade_engine::index::Index::identity_for`])
//! already exists, with another member on the same side of the node (local
//! pods have interface, anti-spoofing and group elements; remote pods only
//! their identity mark), changes no rule: it only adds the per-pod elements
//! its sibling has, with the sibling's addresses (and interface) replaced by
//! its own. Likewise a pod that leaves an identity keeping another member on
//! its side only removes the elements that name its addresses. The fast path
//! computes exactly that against the applied table, without rebuilding the
//! engine or compiling, and refuses (the caller falls back to the full
//! rebuild) whenever that reasoning might not hold:
//!
//! - a new identity, or an identity losing its last member on that side;
//! - host-network pods, a node change, several addresses of one family,
//!   addresses of different families than the sibling's;
//! - an address shared with another pod, a node, or a host-network pod;
//!   an element naming the address as a one-address range (an `ipBlock`
//!   `/32`): such elements are not per-pod;
//! - per-pod elements whose shape differs between two members of an
//!   identity (the leaving pod and its remaining sibling; the sibling copied
//!   and a second one, when there is one);
//! - a pod defined by several origins, a non-endpoint pod appearing or
//!   disappearing (it may be all that keeps its namespace).
//!
//! Everything that is not a pod (namespaces, nodes, policies, resyncs)
//! always takes the full path, which also rebuilds this state.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_engine::{Engine, PodId};
use palisade_model::Pod;
use palisade_nft::{Element, Ruleset, Type, Value, WIRING_SETS};

use crate::delta::SetDelta;
use crate::store::Store;

/// One pod as the fast path knows it.
#[derive(Clone, Debug)]
struct Tracked {
    origin: String,
    ips: Vec<IpAddr>,
    node: Option<String>,
    host_network: bool,
    /// Its identity in the engine of the last full build (`None`: not an
    /// endpoint).
    identity: Option<u32>,
    /// A local endpoint.
    local: bool,
}

/// One pod's change: its key, the origin that carries it, its new version.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub key: String,
    pub origin: String,
    pub new: Option<Pod>,
}

/// What the per-pod elements of one pod are found by: its address of each
/// family (and whether it is local: local pods have more of them).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Probe {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    local: bool,
}

impl Probe {
    /// `None` when the pod has several addresses of one family.
    fn new(ips: &[IpAddr], local: bool) -> Option<Probe> {
        let mut p = Probe {
            v4: None,
            v6: None,
            local,
        };
        for ip in ips {
            match ip {
                IpAddr::V4(a) if p.v4.is_none() => p.v4 = Some(*a),
                IpAddr::V6(a) if p.v6.is_none() => p.v6 = Some(*a),
                _ => return None,
            }
        }
        Some(p)
    }

    fn compatible(&self, o: &Probe) -> bool {
        self.v4.is_some() == o.v4.is_some()
            && self.v6.is_some() == o.v6.is_some()
            && self.local == o.local
    }

    /// Whether `v` is exactly one of the pod's values.
    fn names(&self, v: &Value) -> bool {
        match v {
            Value::Ipv4(a) => self.v4 == Some(*a),
            Value::Ipv6(a) => self.v6 == Some(*a),
            _ => false,
        }
    }

    /// Whether `v` is a one-address range of one of the pod's addresses:
    /// an element that is not per-pod names the address.
    fn ranges(&self, v: &Value) -> bool {
        match v {
            Value::Ipv4Range(a, b) => a == b && self.v4 == Some(*a),
            Value::Ipv6Range(a, b) => a == b && self.v6 == Some(*a),
            _ => false,
        }
    }

    /// `e` with this pod's values replaced by `to`'s.
    fn substitute(&self, e: &Element, to: &Probe) -> Element {
        let map = |v: &Value| match v {
            Value::Ipv4(a) if self.v4 == Some(*a) => Value::Ipv4(to.v4.unwrap_or(*a)),
            Value::Ipv6(a) if self.v6 == Some(*a) => Value::Ipv6(to.v6.unwrap_or(*a)),
            other => other.clone(),
        };
        Element {
            key: e.key.iter().map(map).collect(),
            data: e.data.as_ref().map(map),
        }
    }
}

/// Elements by set index.
type Found = BTreeSet<(usize, Element)>;

/// The applied table with this sync's changes so far.
struct View<'a> {
    base: &'a Ruleset,
    remove: Vec<BTreeSet<Element>>,
    add: Vec<BTreeSet<Element>>,
}

impl<'a> View<'a> {
    fn new(base: &'a Ruleset) -> View<'a> {
        let n = base.sets.len();
        View {
            base,
            remove: vec![BTreeSet::new(); n],
            add: vec![BTreeSet::new(); n],
        }
    }

    fn remove(&mut self, set: usize, e: Element) {
        if !self.add[set].remove(&e) {
            self.remove[set].insert(e);
        }
    }

    fn add(&mut self, set: usize, e: Element) {
        if !self.remove[set].remove(&e) {
            self.add[set].insert(e);
        }
    }

    /// The elements naming each probe; an error when an element names one
    /// of their addresses as a one-address range. Sets that cannot hold an
    /// address or interface are skipped; sorted hash sets whose only such
    /// field is the first of the key are searched by bisection; the others
    /// are scanned.
    fn scan(&self, probes: &[&Probe]) -> Result<Vec<Found>, &'static str> {
        let mut out = vec![Found::new(); probes.len()];
        for (i, s) in self.base.sets.iter().enumerate() {
            let bearing = |t: &Type| matches!(t, Type::Ipv4 | Type::Ipv6);
            // The wiring's sets are the node's, not the pod's: the agent
            // updates them itself.
            if !s.key.iter().chain(&s.data).any(bearing) || WIRING_SETS.contains(&s.name.as_str()) {
                continue;
            }
            let removed = &self.remove[i];
            let present = |e: &&Element| removed.is_empty() || !removed.contains(*e);
            let mut visit = |e: &Element| -> Result<(), &'static str> {
                for (k, p) in probes.iter().enumerate() {
                    let mut values = e.key.iter().chain(&e.data);
                    if values.clone().any(|v| p.ranges(v)) {
                        return Err("an address range names a pod address");
                    }
                    if values.any(|v| p.names(v)) {
                        out[k].insert((i, e.clone()));
                    }
                }
                Ok(())
            };
            let first_only = !s.interval
                && s.data.as_ref().is_none_or(|t| !bearing(t))
                && s.key.iter().skip(1).all(|t| !bearing(t));
            if first_only {
                let mut firsts: Vec<Value> = Vec::new();
                for p in probes {
                    match s.key.first() {
                        Some(Type::Ipv4) => firsts.extend(
                            p.v4.into_iter()
                                .flat_map(|a| [Value::Ipv4(a), Value::Ipv4Range(a, a)]),
                        ),
                        Some(Type::Ipv6) => firsts.extend(
                            p.v6.into_iter()
                                .flat_map(|a| [Value::Ipv6(a), Value::Ipv6Range(a, a)]),
                        ),
                        _ => {}
                    }
                }
                for v in &firsts {
                    let from = s.elements.partition_point(|e| e.key.first() < Some(v));
                    for e in s.elements[from..]
                        .iter()
                        .take_while(|e| e.key.first() == Some(v))
                        .filter(present)
                    {
                        visit(e)?;
                    }
                }
            } else {
                for e in s.elements.iter().filter(present) {
                    visit(e)?;
                }
            }
            for e in &self.add[i] {
                visit(e)?;
            }
        }
        Ok(out)
    }

    fn into_deltas(self) -> Vec<SetDelta> {
        let mut out = Vec::new();
        for (i, (remove, add)) in self.remove.into_iter().zip(self.add).enumerate() {
            if remove.is_empty() && add.is_empty() {
                continue;
            }
            out.push(SetDelta {
                set: self.base.sets[i].name.clone(),
                remove: remove.into_iter().collect(),
                add: add.into_iter().collect(),
            });
        }
        out
    }
}

/// Whether `a`'s elements, with `a`'s values replaced by `b`'s, are `b`'s.
fn same_shape(a: &Probe, ea: &Found, b: &Probe, eb: &Found) -> bool {
    ea.len() == eb.len()
        && ea
            .iter()
            .all(|(s, e)| eb.contains(&(*s, a.substitute(e, b))))
}

/// What the fast path needs from the last full build, kept up to date by
/// the pod changes it applies.
pub(crate) struct Fast {
    engine: Engine,
    node: String,
    pods: HashMap<String, Tracked>,
    /// Pod keys by identity.
    members: Vec<BTreeSet<String>>,
    /// Endpoint (not host-network) pods by address.
    owners: HashMap<IpAddr, u32>,
    /// Node addresses and host-network pod addresses.
    reserved: HashSet<IpAddr>,
    /// Pod keys that several origins define.
    duplicated: HashSet<String>,
}

impl Fast {
    /// The state of a full build: `engine` compiled from `store`'s objects.
    pub(crate) fn new(engine: Engine, store: &Store, node: &str) -> Fast {
        let mut origin_of: HashMap<String, &str> = HashMap::new();
        let mut duplicated = HashSet::new();
        for (origin, objects) in store.entries() {
            for o in objects {
                if let palisade_k8s::Object::Pod(p) = &o.value {
                    let key = p.key();
                    match origin_of.entry(key) {
                        Entry::Occupied(e) => {
                            duplicated.insert(e.key().clone());
                        }
                        Entry::Vacant(e) => {
                            e.insert(origin);
                        }
                    }
                }
            }
        }
        let idx = engine.index();
        let mut reserved: HashSet<IpAddr> = idx.all_node_addresses().copied().collect();
        let mut pods = HashMap::new();
        let mut members = vec![BTreeSet::new(); idx.identities().len()];
        let mut owners: HashMap<IpAddr, u32> = HashMap::new();
        for (i, p) in engine.cluster().pods.iter().enumerate() {
            let key = p.key();
            let identity = idx.identity_of(PodId::new(i)).map(|id| id.index() as u32);
            if p.host_network {
                reserved.extend(p.ips.iter().copied());
            } else if identity.is_some() {
                for ip in &p.ips {
                    *owners.entry(*ip).or_default() += 1;
                }
            }
            if let Some(id) = identity {
                members[id as usize].insert(key.clone());
            }
            let local = identity.is_some() && !p.host_network && p.node.as_deref() == Some(node);
            let t = Tracked {
                origin: origin_of
                    .get(&key)
                    .map_or_else(String::new, |o| o.to_string()),
                ips: p.ips.clone(),
                node: p.node.clone(),
                host_network: p.host_network,
                identity,
                local,
            };
            pods.insert(key, t);
        }
        Fast {
            engine,
            node: node.to_string(),
            pods,
            members,
            owners,
            reserved,
            duplicated,
        }
    }

    fn insert(&mut self, key: String, t: Tracked) {
        if let Some(id) = t.identity {
            self.members[id as usize].insert(key.clone());
            for ip in &t.ips {
                *self.owners.entry(*ip).or_default() += 1;
            }
        }
        self.pods.insert(key, t);
    }

    fn remove(&mut self, key: &str) {
        let Some(t) = self.pods.remove(key) else {
            return;
        };
        if let Some(id) = t.identity {
            self.members[id as usize].remove(key);
            for ip in &t.ips {
                if let Some(n) = self.owners.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.owners.remove(ip);
                    }
                }
            }
        }
    }

    /// A pod's addresses are its own: no node, host-network pod or other
    /// endpoint has them (`owners`: how many endpoints may hold each).
    fn exclusive(&self, ips: &[IpAddr], owners: u32) -> bool {
        ips.iter().all(|ip| {
            !self.reserved.contains(ip) && self.owners.get(ip).copied().unwrap_or(0) == owners
        })
    }

    /// Up to `n` members of `identity` on the side `local`, other than
    /// `except`, whose addresses are their own and shaped like `like`.
    fn siblings(&self, identity: u32, except: &str, like: &Probe, n: usize) -> Vec<Probe> {
        let mut out = Vec::new();
        for key in &self.members[identity as usize] {
            if key == except {
                continue;
            }
            let Some(t) = self.pods.get(key) else {
                continue;
            };
            if t.local != like.local || !self.exclusive(&t.ips, 1) {
                continue;
            }
            if let Some(p) = Probe::new(&t.ips, t.local) {
                if p.compatible(like) {
                    out.push(p);
                    if out.len() == n {
                        break;
                    }
                }
            }
        }
        out
    }

    /// The element changes that bring `applied` from the last state to
    /// `changes`, or why they need a full rebuild. On error the state is
    /// unusable (the caller drops it and rebuilds).
    pub(crate) fn plan(
        &mut self,
        applied: &Ruleset,
        changes: Vec<Change>,
    ) -> Result<Vec<SetDelta>, &'static str> {
        let mut view = View::new(applied);
        for c in changes {
            self.change(&mut view, c)?;
        }
        Ok(view.into_deltas())
    }

    fn change(&mut self, view: &mut View<'_>, c: Change) -> Result<(), &'static str> {
        if self.duplicated.contains(&c.key) {
            return Err("pod defined by several origins");
        }
        let old = self.pods.get(&c.key).cloned();
        if old.as_ref().is_some_and(|o| o.origin != c.origin) {
            return Err("pod defined by another origin");
        }
        if old.as_ref().is_some_and(|o| o.host_network)
            || c.new.as_ref().is_some_and(|p| p.host_network)
        {
            return Err("host-network pod");
        }
        if let (Some(o), Some(n)) = (&old, &c.new) {
            if o.node != n.node {
                return Err("pod changed node");
            }
        }
        let new_endpoint = c.new.as_ref().is_some_and(Pod::is_endpoint);
        match (&old, &c.new) {
            (None, None) => return Ok(()),
            (None, Some(_)) if !new_endpoint => {
                return Err("new pod that is not an endpoint");
            }
            (Some(o), None) if o.identity.is_none() => {
                return Err("deleted pod that was not an endpoint");
            }
            _ => {}
        }

        // The old version leaves its identity.
        if let Some(o) = old.as_ref().filter(|o| o.identity.is_some()) {
            let id = o.identity.unwrap_or_default();
            let op = Probe::new(&o.ips, o.local).ok_or("several addresses of a family")?;
            if !self.exclusive(&o.ips, 1) {
                return Err("address not exclusive to the pod");
            }
            let sp = self
                .siblings(id, &c.key, &op, 1)
                .pop()
                .ok_or("last member of its identity on this side")?;
            let [mine, theirs] =
                <[Found; 2]>::try_from(view.scan(&[&op, &sp])?).map_err(|_| "scan")?;
            if theirs.is_empty() || !same_shape(&op, &mine, &sp, &theirs) {
                return Err("per-pod elements differ from its sibling's");
            }
            for (s, e) in mine {
                view.remove(s, e);
            }
        }
        self.remove(&c.key);

        // The new version joins one.
        let Some(p) = c.new else {
            return Ok(());
        };
        let identity = if new_endpoint {
            Some(
                self.engine
                    .index()
                    .identity_for(&p)
                    .ok_or("new identity")?
                    .index() as u32,
            )
        } else {
            None
        };
        let local = identity.is_some() && p.node.as_deref() == Some(self.node.as_str());
        if let Some(id) = identity {
            let np = Probe::new(&p.ips, local).ok_or("several addresses of a family")?;
            if !self.exclusive(&p.ips, 0) {
                return Err("address not exclusive to the pod");
            }
            let sibs = self.siblings(id, &c.key, &np, 2);
            let sp = sibs
                .first()
                .ok_or("no member of its identity on this side")?;
            let mut probes = vec![&np, sp];
            probes.extend(sibs.get(1));
            let found = view.scan(&probes)?;
            if !found[0].is_empty() {
                return Err("an element already names the pod");
            }
            if found[1].is_empty() {
                return Err("sibling has no elements");
            }
            if let Some(s2) = sibs.get(1) {
                if !same_shape(sp, &found[1], s2, &found[2]) {
                    return Err("per-pod elements differ between siblings");
                }
            }
            for (s, e) in &found[1] {
                view.add(*s, sp.substitute(e, &np));
            }
        }
        let t = Tracked {
            origin: c.origin,
            local,
            ips: p.ips,
            node: p.node,
            host_network: p.host_network,
            identity,
        };
        self.insert(c.key, t);
        Ok(())
    }
}

/// Applies element changes to a table in memory (sorted, as compiled).
pub(crate) fn apply_in_place(table: &mut Ruleset, sets: &[SetDelta]) {
    for d in sets {
        let Some(s) = table.sets.iter_mut().find(|s| s.name == d.set) else {
            continue;
        };
        // The elements are kept sorted. A few changes are placed by
        // bisection; hashing every element of a 10,000-element set to
        // filter it costs about a millisecond.
        if d.remove.len() + d.add.len() <= 64 {
            for e in &d.remove {
                if let Ok(i) = s.elements.binary_search(e) {
                    s.elements.remove(i);
                }
            }
            for e in &d.add {
                if let Err(i) = s.elements.binary_search(e) {
                    s.elements.insert(i, e.clone());
                }
            }
            continue;
        }
        if !d.remove.is_empty() {
            let gone: HashSet<&Element> = d.remove.iter().collect();
            s.elements.retain(|e| !gone.contains(e));
        }
        s.elements.extend(d.add.iter().cloned());
        s.elements.sort();
        s.elements.dedup();
    }
}
