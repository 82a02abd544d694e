//! AdminNetworkPolicy and BaselineAdminNetworkPolicy
//! (`policy.networking.k8s.io/v1alpha1`) and ClusterNetworkPolicy
//! (`policy.networking.k8s.io/v1alpha2`), strictly, as one [`AdminPolicy`].

use palisade_model::{
    AdminAction, AdminPeer, AdminPolicy, AdminPort, AdminRule, AdminSubject, AdminTier,
    LabelSelector,
};
use serde_json::{Map, Value};

use crate::walk::{
    as_map, as_str, cidr, field, get_int, get_list, get_str, has, index, join, port_name,
    port_number, protocol, selector, Cx,
};
use crate::Meta;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// AdminNetworkPolicy, v1alpha1.
    Anp,
    /// BaselineAdminNetworkPolicy, v1alpha1.
    Banp,
    /// ClusterNetworkPolicy, v1alpha2.
    Cnp,
}

impl Flavor {
    fn kind(self) -> &'static str {
        match self {
            Flavor::Anp => "AdminNetworkPolicy",
            Flavor::Banp => "BaselineAdminNetworkPolicy",
            Flavor::Cnp => "ClusterNetworkPolicy",
        }
    }

    fn spec_fields(self) -> &'static [&'static str] {
        match self {
            Flavor::Anp => &["priority", "subject", "ingress", "egress"],
            Flavor::Banp => &["subject", "ingress", "egress"],
            Flavor::Cnp => &["tier", "priority", "subject", "ingress", "egress"],
        }
    }

    /// The API's bound on rules per direction, peers per rule and ports per
    /// rule.
    fn max_items(self) -> usize {
        match self {
            Flavor::Anp | Flavor::Banp => 100,
            Flavor::Cnp => 25,
        }
    }

    fn ports_key(self) -> &'static str {
        match self {
            Flavor::Anp | Flavor::Banp => "ports",
            Flavor::Cnp => "protocols",
        }
    }

    fn action(self, s: &str) -> Result<AdminAction, &'static str> {
        match (self, s) {
            (Flavor::Anp | Flavor::Banp, "Allow") | (Flavor::Cnp, "Accept") => {
                Ok(AdminAction::Allow)
            }
            (_, "Deny") => Ok(AdminAction::Deny),
            (Flavor::Anp | Flavor::Cnp, "Pass") => Ok(AdminAction::Pass),
            (Flavor::Anp, _) => Err("Allow, Deny or Pass"),
            (Flavor::Banp, _) => Err("Allow or Deny"),
            (Flavor::Cnp, _) => Err("Accept, Deny or Pass"),
        }
    }
}

const MAX_RULE_NAME: usize = 100;
const MAX_NETWORKS: usize = 25;

pub(crate) fn decode(
    cx: &mut Cx,
    obj: &Map<String, Value>,
    meta: Meta,
    flavor: Flavor,
) -> AdminPolicy {
    if flavor == Flavor::Banp && !meta.name.is_empty() && meta.name != "default" {
        cx.error(
            "metadata.name",
            format!(
                "a BaselineAdminNetworkPolicy must be named \"default\", not {:?}",
                meta.name
            ),
        );
    }
    let spec = match field(obj, "spec") {
        Some(v) => as_map(cx, v, "spec", Some(flavor.spec_fields()))
            .cloned()
            .unwrap_or_default(),
        None => {
            cx.error("spec", "missing spec");
            Map::new()
        }
    };

    let tier = match flavor {
        Flavor::Anp => AdminTier::Admin,
        Flavor::Banp => AdminTier::Baseline,
        Flavor::Cnp => match get_str(cx, &spec, "spec", "tier") {
            Some("Admin") => AdminTier::Admin,
            Some("Baseline") => AdminTier::Baseline,
            Some(other) => {
                cx.error(
                    "spec.tier",
                    format!("unknown tier {other:?} (expected Admin or Baseline)"),
                );
                AdminTier::Admin
            }
            None => {
                if !has(&spec, "tier") {
                    cx.error("spec.tier", "missing tier (Admin or Baseline)");
                }
                AdminTier::Admin
            }
        },
    };

    let priority = match flavor {
        Flavor::Banp => 0,
        Flavor::Anp | Flavor::Cnp => match get_int(cx, &spec, "spec", "priority") {
            Some(p) if (0..=1000).contains(&p) => p as u32,
            Some(p) => {
                cx.error("spec.priority", format!("{p} is out of range (0-1000)"));
                0
            }
            None => {
                if !has(&spec, "priority") {
                    cx.error("spec.priority", "missing priority (0-1000)");
                }
                0
            }
        },
    };

    let subject = match field(&spec, "subject") {
        Some(v) => subject(cx, v, "spec.subject", flavor),
        None => {
            cx.error("spec.subject", "missing subject");
            None
        }
    };

    let ingress = rules(cx, &spec, "ingress", flavor);
    let egress = rules(cx, &spec, "egress", flavor);

    AdminPolicy {
        kind: flavor.kind().to_string(),
        name: meta.name,
        tier,
        priority,
        subject: subject.unwrap_or(AdminSubject::Namespaces(LabelSelector::everything())),
        ingress,
        egress,
        staged: meta.staged,
    }
}

/// Exactly one of `keys` set in `m` (already checked for unknown fields).
fn one_of<'m>(
    cx: &mut Cx,
    m: &'m Map<String, Value>,
    path: &str,
    keys: &[&'static str],
    what: &str,
) -> Option<(&'static str, &'m Value)> {
    let set: Vec<(&'static str, &Value)> = keys
        .iter()
        .filter_map(|k| field(m, k).map(|v| (*k, v)))
        .collect();
    match set.as_slice() {
        [one] => Some(*one),
        [] => {
            cx.error(
                path,
                format!("empty {what}: set exactly one of {}", keys.join(", ")),
            );
            None
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
            cx.error(
                path,
                format!(
                    "{what} sets {}; set exactly one of {}",
                    names.join(" and "),
                    keys.join(", ")
                ),
            );
            None
        }
    }
}

fn subject(cx: &mut Cx, v: &Value, path: &str, flavor: Flavor) -> Option<AdminSubject> {
    let keys = &["namespaces", "pods"];
    let m = as_map(cx, v, path, Some(keys))?;
    match one_of(cx, m, path, keys, "subject")? {
        ("namespaces", v) => Some(AdminSubject::Namespaces(selector(
            cx,
            v,
            &join(path, "namespaces"),
        ))),
        (_, v) => {
            let (namespaces, pods) = namespaced_pods(cx, v, &join(path, "pods"), flavor)?;
            Some(AdminSubject::Pods { namespaces, pods })
        }
    }
}

fn namespaced_pods(
    cx: &mut Cx,
    v: &Value,
    path: &str,
    flavor: Flavor,
) -> Option<(LabelSelector, LabelSelector)> {
    let m = as_map(cx, v, path, Some(&["namespaceSelector", "podSelector"]))?;
    let namespaces = match field(m, "namespaceSelector") {
        Some(v) => selector(cx, v, &join(path, "namespaceSelector")),
        None => {
            // Required in v1alpha1, optional (everything) in v1alpha2.
            if flavor != Flavor::Cnp {
                cx.error(
                    &join(path, "namespaceSelector"),
                    "missing namespaceSelector",
                );
            }
            LabelSelector::everything()
        }
    };
    let pods = match field(m, "podSelector") {
        Some(v) => selector(cx, v, &join(path, "podSelector")),
        None => {
            cx.error(&join(path, "podSelector"), "missing podSelector");
            LabelSelector::everything()
        }
    };
    Some((namespaces, pods))
}

fn rules(cx: &mut Cx, spec: &Map<String, Value>, dir: &str, flavor: Flavor) -> Vec<AdminRule> {
    let mut out = Vec::new();
    let path = join("spec", dir);
    let Some(list) = get_list(cx, spec, "spec", dir) else {
        return out;
    };
    let max = flavor.max_items();
    if list.len() > max {
        cx.error(
            &path,
            format!("{} rules; at most {max} are allowed", list.len()),
        );
    }
    let egress = dir == "egress";
    let peers_key = if egress { "to" } else { "from" };
    let ports_key = flavor.ports_key();
    let allowed = ["name", "action", peers_key, ports_key];
    for (i, r) in list.iter().enumerate() {
        let rp = index(&path, i);
        let Some(m) = as_map(cx, r, &rp, Some(&allowed)) else {
            continue;
        };
        let name = get_str(cx, m, &rp, "name").unwrap_or_default();
        if name.chars().count() > MAX_RULE_NAME {
            cx.error(
                &join(&rp, "name"),
                format!(
                    "rule name is {} characters; at most {MAX_RULE_NAME} are allowed",
                    name.chars().count()
                ),
            );
        }
        let action = rule_action(cx, m, &rp, flavor);
        let peers = rule_peers(cx, m, &rp, peers_key, egress, flavor);
        let kp = join(&rp, ports_key);
        let ports = rule_ports(cx, m, &rp, ports_key, flavor);
        let named = ports
            .as_ref()
            .is_some_and(|p| p.iter().any(|p| matches!(p, AdminPort::Named(_))));
        let hostish = peers
            .iter()
            .any(|p| matches!(p, AdminPeer::Nodes(_) | AdminPeer::Networks(_)));
        if named && hostish {
            cx.error(
                &kp,
                "a named port cannot be used with nodes or networks peers: they have no named ports",
            );
        }

        if let Some(action) = action {
            out.push(AdminRule {
                name: name.to_string(),
                action,
                peers,
                ports,
            });
        }
    }
    out
}

fn rule_action(
    cx: &mut Cx,
    m: &Map<String, Value>,
    rp: &str,
    flavor: Flavor,
) -> Option<palisade_model::AdminAction> {
    match get_str(cx, m, rp, "action") {
        Some(a) => match flavor.action(a) {
            Ok(a) => Some(a),
            Err(expected) => {
                cx.error(
                    &join(rp, "action"),
                    format!(
                        "unknown action {a:?} for {} (expected {expected})",
                        flavor.kind()
                    ),
                );
                None
            }
        },
        None => {
            if !has(m, "action") {
                cx.error(&join(rp, "action"), "missing action");
            }
            None
        }
    }
}

fn rule_peers(
    cx: &mut Cx,
    m: &Map<String, Value>,
    rp: &str,
    peers_key: &str,
    egress: bool,
    flavor: Flavor,
) -> Vec<AdminPeer> {
    let max = flavor.max_items();
    let pp = join(rp, peers_key);
    let mut peers = Vec::new();
    match get_list(cx, m, rp, peers_key) {
        None => {
            if !has(m, peers_key) {
                cx.error(&pp, format!("missing {peers_key}: list at least one peer"));
            }
        }
        Some(l) if l.is_empty() => {
            cx.error(&pp, format!("{peers_key} must list at least one peer"));
        }
        Some(l) => {
            if l.len() > max {
                cx.error(&pp, format!("{} peers; at most {max} are allowed", l.len()));
            }
            for (j, p) in l.iter().enumerate() {
                if let Some(p) = peer(cx, p, &index(&pp, j), egress, flavor) {
                    peers.push(p);
                }
            }
        }
    }
    peers
}

fn rule_ports(
    cx: &mut Cx,
    m: &Map<String, Value>,
    rp: &str,
    ports_key: &str,
    flavor: Flavor,
) -> Option<Vec<AdminPort>> {
    let max = flavor.max_items();
    let kp = join(rp, ports_key);
    match get_list(cx, m, rp, ports_key) {
        None => None,
        Some(l) if l.is_empty() => {
            cx.error(
                &kp,
                format!("{ports_key} is empty: list at least one port, or leave {ports_key} out to match all ports"),
            );
            None
        }
        Some(l) => {
            if l.len() > max {
                cx.error(
                    &kp,
                    format!("{} entries; at most {max} are allowed", l.len()),
                );
            }
            let ports: Vec<AdminPort> = l
                .iter()
                .enumerate()
                .filter_map(|(j, p)| {
                    let p2 = index(&kp, j);
                    match flavor {
                        Flavor::Cnp => cnp_protocol(cx, p, &p2),
                        _ => anp_port(cx, p, &p2),
                    }
                })
                .collect();
            Some(ports)
        }
    }
}

fn peer(cx: &mut Cx, v: &Value, path: &str, egress: bool, flavor: Flavor) -> Option<AdminPeer> {
    let all = &["namespaces", "pods", "nodes", "networks", "domainNames"];
    let keys: &[&'static str] = if egress {
        &["namespaces", "pods", "nodes", "networks"]
    } else {
        &["namespaces", "pods"]
    };
    let m = as_map(cx, v, path, Some(all))?;
    if field(m, "domainNames").is_some() {
        cx.error(
            &join(path, "domainNames"),
            if egress {
                "domainNames peers are not supported"
            } else {
                "domainNames peers are only allowed in egress rules"
            },
        );
        return None;
    }
    if !egress {
        for k in ["nodes", "networks"] {
            if has(m, k) {
                cx.error(
                    &join(path, k),
                    format!("{k} peers are only allowed in egress rules"),
                );
                return None;
            }
        }
    }
    let (key, v) = one_of(cx, m, path, keys, "peer")?;
    let p = join(path, key);
    match key {
        "namespaces" => Some(AdminPeer::Namespaces(selector(cx, v, &p))),
        "pods" => {
            let (namespaces, pods) = namespaced_pods(cx, v, &p, flavor)?;
            Some(AdminPeer::Pods { namespaces, pods })
        }
        "nodes" => Some(AdminPeer::Nodes(selector(cx, v, &p))),
        _ => {
            let list = crate::walk::as_list(cx, v, &p)?;
            if list.is_empty() {
                cx.error(&p, "networks must list at least one CIDR");
                return None;
            }
            if list.len() > MAX_NETWORKS {
                cx.error(
                    &p,
                    format!("{} CIDRs; at most {MAX_NETWORKS} are allowed", list.len()),
                );
            }
            let mut nets = Vec::new();
            for (i, n) in list.iter().enumerate() {
                let np = index(&p, i);
                if let Some(net) = as_str(cx, n, &np).and_then(|s| cidr(cx, s, &np)) {
                    if !nets.contains(&net) {
                        nets.push(net);
                    }
                }
            }
            Some(AdminPeer::Networks(nets))
        }
    }
}

/// A required port number field.
fn required_port(cx: &mut Cx, m: &Map<String, Value>, path: &str, key: &str) -> Option<u16> {
    match field(m, key) {
        Some(v) => port_number(cx, v, &join(path, key)),
        None => {
            cx.error(&join(path, key), format!("missing {key}"));
            None
        }
    }
}

fn anp_port(cx: &mut Cx, v: &Value, path: &str) -> Option<AdminPort> {
    let keys = &["portNumber", "namedPort", "portRange"];
    let m = as_map(cx, v, path, Some(keys))?;
    let (key, v) = one_of(cx, m, path, keys, "port")?;
    let p = join(path, key);
    match key {
        "portNumber" => {
            let m = as_map(cx, v, &p, Some(&["protocol", "port"]))?;
            let protocol = protocol(cx, m, &p);
            let port = required_port(cx, m, &p, "port")?;
            Some(AdminPort::Number { protocol, port })
        }
        "namedPort" => {
            let s = as_str(cx, v, &p)?;
            port_name(cx, s, &p).map(AdminPort::Named)
        }
        _ => {
            let m = as_map(cx, v, &p, Some(&["protocol", "start", "end"]))?;
            let protocol = protocol(cx, m, &p);
            let start = required_port(cx, m, &p, "start");
            let end = required_port(cx, m, &p, "end");
            let (start, end) = (start?, end?);
            if end < start {
                cx.error(&join(&p, "end"), format!("{end} is below start {start}"));
                return None;
            }
            Some(AdminPort::Range {
                protocol,
                start,
                end,
            })
        }
    }
}

fn cnp_protocol(cx: &mut Cx, v: &Value, path: &str) -> Option<AdminPort> {
    let keys = &["tcp", "udp", "sctp", "destinationNamedPort"];
    let m = as_map(cx, v, path, Some(keys))?;
    let (key, v) = one_of(cx, m, path, keys, "protocol entry")?;
    let p = join(path, key);
    let protocol = match key {
        "tcp" => palisade_model::Protocol::Tcp,
        "udp" => palisade_model::Protocol::Udp,
        "sctp" => palisade_model::Protocol::Sctp,
        _ => {
            let s = as_str(cx, v, &p)?;
            return port_name(cx, s, &p).map(AdminPort::Named);
        }
    };
    let m = as_map(cx, v, &p, Some(&["destinationPort"]))?;
    let dp = join(&p, "destinationPort");
    let Some(d) = field(m, "destinationPort") else {
        cx.error(&dp, "missing destinationPort");
        return None;
    };
    let keys = &["number", "range"];
    let d = as_map(cx, d, &dp, Some(keys))?;
    match one_of(cx, d, &dp, keys, "destinationPort")? {
        ("number", v) => {
            let port = port_number(cx, v, &join(&dp, "number"))?;
            Some(AdminPort::Number { protocol, port })
        }
        (_, v) => {
            let rp = join(&dp, "range");
            let r = as_map(cx, v, &rp, Some(&["start", "end"]))?;
            let start = required_port(cx, r, &rp, "start");
            let end = required_port(cx, r, &rp, "end");
            let (start, end) = (start?, end?);
            if end <= start {
                cx.error(
                    &join(&rp, "end"),
                    format!("{end} is not above start {start} (a range needs start < end)"),
                );
                return None;
            }
            Some(AdminPort::Range {
                protocol,
                start,
                end,
            })
        }
    }
}
