//! One node's ruleset from the engine's index: policy groups, their
//! allows, the address maps, and the admin tiers.

use super::*;

/// Which admin tiers the cluster has: their stages are in the chains only
/// then (adding the first admin policy changes chains; pods never do).
#[derive(Clone, Copy, Default)]
pub(crate) struct Stages {
    pub(crate) admin: bool,
    pub(crate) baseline: bool,
}

pub fn compile_with(engine: &Engine, opts: &Options) -> Result<Ruleset, CompileError> {
    compile_numbered(engine, opts, Numbering::Dense)
}

/// [`compile_with`], with identity marks and group ids numbered as asked
/// (see [`Numbering`]).
pub fn compile_numbered(
    engine: &Engine,
    opts: &Options,
    numbering: Numbering,
) -> Result<Ruleset, CompileError> {
    let idx = engine.index();
    let view = View::new(engine, &opts.local);
    let groups = np_groups(engine, &view.local_ids, numbering);
    let marks = numbering::identity_marks(engine, numbering);
    let mark_of = |id: usize| marks[id];
    let (egress, ingress) = np_allows(engine, &groups, &view.pod_ids, &mark_of);
    let mut sets = address_sets(engine, opts, &view, &groups, &mark_of);
    sets.extend(allow_sets(Dir::Egress, egress));
    sets.extend(allow_sets(Dir::Ingress, ingress));
    let has = |t: AdminTier| idx.admin().iter().any(|a| a.policy.tier == t);
    let stages = Stages {
        admin: has(AdminTier::Admin),
        baseline: has(AdminTier::Baseline),
    };
    sets.extend(admin_tier_sets(engine, &view, stages, &mark_of, numbering));
    if let Some(f) = &opts.flow_log {
        sets.push(SetId::Generation.set(generation_elements(f.generation)));
    }
    Ok(Ruleset {
        sets,
        chains: chains(stages, opts.flow_log.as_ref(), opts.kept_mark),
    })
}

/// The generation map's elements: every logged protocol maps to
/// `generation` (nft has no constant-keyed map; the protocol is a key
/// every logged packet has).
pub fn generation_elements(generation: u32) -> Vec<Element> {
    Protocol::ALL
        .into_iter()
        .map(|p| Element {
            key: vec![Value::Proto(p.number())],
            data: Some(Value::Mark(generation)),
        })
        .collect()
}

/// The node's view of the index: its local endpoint pods, their
/// identities, and the identities that can be peers (not host-network,
/// and with an address: a workload's pod template has none, so the
/// kernel has nothing to match it by).
struct View {
    local: Vec<usize>,
    local_ids: BTreeSet<usize>,
    pod_ids: Vec<usize>,
}

impl View {
    fn new(engine: &Engine, local: &Local) -> View {
        let idx = engine.index();
        let local = local_pods(engine, local);
        let local_ids = local.iter().map(|&i| identity(engine, i)).collect();
        let pod_ids = (0..idx.identities().len())
            .filter(|&i| !idx.identities()[i].host_network && idx.identities()[i].has_address())
            .collect();
        View {
            local,
            local_ids,
            pod_ids,
        }
    }
}

/// The identity of endpoint pod `i`.
fn identity(engine: &Engine, i: usize) -> usize {
    let id = engine.index().identity_of(PodId::new(i));
    id.expect("an endpoint pod").index()
}

/// A representative pod of an identity (named ports resolve on it).
fn rep(engine: &Engine, id: usize) -> &Pod {
    let idx = engine.index();
    &engine.cluster().pods[idx.identities()[id].members[0].index()]
}

/// The NetworkPolicy groups of the local identities, numbered: egress by
/// isolating policies, ingress by isolating policies and how the named
/// ports they use resolve on the identity.
struct NpGroups {
    egress: BTreeMap<Vec<usize>, u32>,
    ingress: IngressGroups,
    egress_of: BTreeMap<usize, u32>,
    ingress_of: BTreeMap<usize, u32>,
}

fn ingress_rules(engine: &Engine, pi: usize) -> &[ResolvedRule] {
    engine
        .index()
        .policy(pi)
        .ingress
        .as_deref()
        .unwrap_or_default()
}

fn egress_rules(engine: &Engine, pi: usize) -> &[ResolvedRule] {
    engine
        .index()
        .policy(pi)
        .egress
        .as_deref()
        .unwrap_or_default()
}

/// A local identity's ingress group key: its isolating policies and how the
/// named ports they use resolve on it (ingress resolves on the pod).
fn ingress_key(engine: &Engine, id: usize) -> Option<(Vec<usize>, Vec<Vec<u16>>)> {
    let ident = &engine.index().identities()[id];
    if ident.ingress_policies.is_empty() {
        return None;
    }
    let r = rep(engine, id);
    let named = ident
        .ingress_policies
        .iter()
        .flat_map(|&pi| ingress_rules(engine, pi).iter())
        .flat_map(|rule| rule.ports.iter().flatten())
        .filter_map(|s| match s {
            PortSpec::Named { protocol, name } => Some(r.named_port(name, *protocol)),
            _ => None,
        })
        .collect();
    Some((ident.ingress_policies.clone(), named))
}

fn np_groups(engine: &Engine, local_ids: &BTreeSet<usize>, numbering: Numbering) -> NpGroups {
    let idx = engine.index();
    let mut e_keys = BTreeSet::new();
    let mut i_keys = BTreeMap::new();
    for &id in local_ids {
        let ident = &idx.identities()[id];
        if !ident.egress_policies.is_empty() {
            e_keys.insert(ident.egress_policies.clone());
        }
        if let Some(key) = ingress_key(engine, id) {
            i_keys.entry(key).or_insert(id);
        }
    }
    let e_keys: Vec<Vec<usize>> = e_keys.into_iter().collect();
    let e_ids = numbering::assign(numbering, e_keys.len(), |i| {
        numbering::policy_names(engine, &e_keys[i])
    });
    let egress: BTreeMap<Vec<usize>, u32> = e_keys.into_iter().zip(e_ids).collect();
    let i_keys: Vec<_> = i_keys.into_iter().collect();
    let i_ids = numbering::assign(numbering, i_keys.len(), |i| {
        let ((policies, named), _) = &i_keys[i];
        (numbering::policy_names(engine, policies), named.clone())
    });
    let ingress: IngressGroups = i_keys
        .into_iter()
        .zip(i_ids)
        .map(|((k, id), g)| (k, (g, id)))
        .collect();
    let mut egress_of = BTreeMap::new();
    let mut ingress_of = BTreeMap::new();
    for &id in local_ids {
        if let Some(&g) = egress.get(&idx.identities()[id].egress_policies) {
            egress_of.insert(id, g);
        }
        if let Some(key) = ingress_key(engine, id) {
            ingress_of.insert(id, ingress[&key].0);
        }
    }
    NpGroups {
        egress,
        ingress,
        egress_of,
        ingress_of,
    }
}

/// The groups' allows, egress and ingress.
fn np_allows(
    engine: &Engine,
    groups: &NpGroups,
    pod_ids: &[usize],
    mark_of: &dyn Fn(usize) -> u32,
) -> (Allows, Allows) {
    // Egress allows: named ports resolve on the destination (the peer).
    let mut egress = Allows::default();
    let rep = |id: usize| rep(engine, id);
    for (policies, &g) in &groups.egress {
        for &pi in policies {
            for rule in egress_rules(engine, pi) {
                egress_rule(&mut egress, engine, g, rule, pod_ids, &rep, mark_of);
            }
        }
    }
    // Ingress allows: named ports resolve on the selected (local) pod.
    let mut ingress = Allows::default();
    for ((policies, _), &(g, id)) in &groups.ingress {
        let holder = rep(id);
        for &pi in policies {
            for rule in ingress_rules(engine, pi) {
                let items = port_items(&rule.ports, Some(holder));
                match &rule.peers {
                    None => {
                        for &(p, a, b) in &items {
                            ingress
                                .any
                                .entry((g, p))
                                .or_default()
                                .push((a.into(), b.into()));
                        }
                    }
                    Some(peers) => {
                        for m in peers {
                            peer_allows(&mut ingress, engine, g, m, &items, mark_of);
                        }
                    }
                }
            }
        }
    }
    (egress, ingress)
}

/// An address-keyed element, per family.
fn by_family(out: &mut [Vec<Element>; 2], ip: IpAddr, data: Option<Value>) {
    let (fam, v) = ip_value(ip);
    out[fam].push(Element { key: vec![v], data });
}

/// The sets keyed by address: wiring, local pods, identities, groups, and
/// this node's own addresses.
fn address_sets(
    engine: &Engine,
    opts: &Options,
    view: &View,
    groups: &NpGroups,
    mark_of: &dyn Fn(usize) -> u32,
) -> Vec<Set> {
    let (cluster, idx) = (engine.cluster(), engine.index());
    let mut local_addr = [Vec::new(), Vec::new()];
    let mut eg_map = [Vec::new(), Vec::new()];
    let mut in_map = [Vec::new(), Vec::new()];
    for &i in &view.local {
        let id = identity(engine, i);
        for &ip in &cluster.pods[i].ips {
            by_family(&mut local_addr, ip, None);
            if let Some(&g) = groups.egress_of.get(&id) {
                by_family(&mut eg_map, ip, Some(Value::Mark(g)));
            }
            if let Some(&g) = groups.ingress_of.get(&id) {
                by_family(&mut in_map, ip, Some(Value::Mark(g)));
            }
        }
    }
    let mut id_map = [Vec::new(), Vec::new()];
    for (ip, pi) in idx.pod_addresses() {
        if let Some(id) = idx.identity_of(pi) {
            by_family(&mut id_map, *ip, Some(Value::Mark(mark_of(id.index()))));
        }
    }
    let mut own = [Vec::new(), Vec::new()];
    if let Local::Node(n) = &opts.local {
        let mut addrs: Vec<IpAddr> = idx.node_addresses(n).cloned().unwrap_or_default();
        for p in &cluster.pods {
            if p.host_network && p.is_endpoint() && p.node.as_deref() == Some(n.as_str()) {
                addrs.extend(p.ips.iter().copied());
            }
        }
        for a in addrs {
            by_family(&mut own, a, None);
        }
    }
    let [local4, local6] = local_addr;
    let [(_, ifaces), (_, src4), (_, src6)] = opts.wiring.inet_elements();
    let [eg4, eg6] = eg_map;
    let [in4, in6] = in_map;
    let [id4, id6] = id_map;
    let [own4, own6] = own;
    use Family::{V4, V6};
    vec![
        SetId::PodIfaces.set(ifaces),
        SetId::PodSrc(V4).set(src4),
        SetId::PodSrc(V6).set(src6),
        SetId::Local(V4).set(local4),
        SetId::Local(V6).set(local6),
        SetId::Identity(V4).set(id4),
        SetId::Identity(V6).set(id6),
        SetId::Group(Dir::Egress, V4).set(eg4),
        SetId::Group(Dir::Egress, V6).set(eg6),
        SetId::Group(Dir::Ingress, V4).set(in4),
        SetId::Group(Dir::Ingress, V6).set(in6),
        SetId::OwnNode(V4).set(own4),
        SetId::OwnNode(V6).set(own6),
    ]
}

/// The admin tiers' maps, for the tiers the cluster has.
fn admin_tier_sets(
    engine: &Engine,
    view: &View,
    stages: Stages,
    mark_of: &dyn Fn(usize) -> u32,
    numbering: Numbering,
) -> Vec<Set> {
    let mut sets = Vec::new();
    for dir in [Dir::Egress, Dir::Ingress] {
        for (on, t) in [
            (stages.admin, tier::Tier::Admin),
            (stages.baseline, tier::Tier::Baseline),
        ] {
            if !on {
                continue;
            }
            let c = tier::compile(
                engine,
                dir.engine(),
                t,
                &view.local_ids,
                &view.pod_ids,
                mark_of,
                numbering,
            );
            let mut groups = [Vec::new(), Vec::new()];
            for &i in &view.local {
                if let Some(&g) = c.of.get(&identity(engine, i)) {
                    for &ip in &engine.cluster().pods[i].ips {
                        by_family(&mut groups, ip, Some(Value::Mark(g)));
                    }
                }
            }
            sets.extend(tier_sets(dir, t, c, groups));
        }
    }
    sets
}
