//! `networking.k8s.io/v1` NetworkPolicy, strictly, with API defaulting.

use palisade_model::{IpBlock, LabelSelector, NamespaceScope, NetworkPolicy, Peer, PortSpec, Rule};
use serde_json::{Map, Value};

use crate::walk::{
    as_int, as_map, as_str, cidr, field, get_list, get_map, get_str, has, index, join, port_name,
    port_number, protocol, selector, Cx,
};
use crate::Meta;

const SPEC: &[&str] = &["podSelector", "ingress", "egress", "policyTypes"];
const PEER: &[&str] = &["podSelector", "namespaceSelector", "ipBlock"];
const IP_BLOCK: &[&str] = &["cidr", "except"];
const PORT: &[&str] = &["protocol", "port", "endPort"];

pub(crate) fn decode(cx: &mut Cx, obj: &Map<String, Value>, meta: Meta) -> NetworkPolicy {
    let ns = meta.namespace.clone();
    let spec = match field(obj, "spec") {
        Some(v) => as_map(cx, v, "spec", Some(SPEC))
            .cloned()
            .unwrap_or_default(),
        None => {
            cx.warn(
                "spec",
                "no spec: the policy selects every pod in its namespace and denies all their ingress",
            );
            Map::new()
        }
    };

    let pod_selector = field(&spec, "podSelector")
        .map(|v| selector(cx, v, "spec.podSelector"))
        .unwrap_or_else(LabelSelector::everything);

    let ingress = rules(cx, &spec, "ingress", "from", &ns);
    let egress = rules(cx, &spec, "egress", "to", &ns);

    let mut types: Vec<&str> = Vec::new();
    if let Some(list) = get_list(cx, &spec, "spec", "policyTypes") {
        for (i, v) in list.iter().enumerate() {
            let p = index("spec.policyTypes", i);
            let Some(t) = as_str(cx, v, &p) else { continue };
            if t != "Ingress" && t != "Egress" {
                cx.error(
                    &p,
                    format!("unknown policy type {t:?} (expected Ingress or Egress)"),
                );
            } else if types.contains(&t) {
                cx.error(&p, format!("duplicate policy type {t:?}"));
            } else {
                types.push(t);
            }
        }
    }

    // API defaulting: without policyTypes, Ingress always, Egress iff there
    // are egress rules.
    let explicit = field(&spec, "policyTypes")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    let (has_ingress, has_egress) = if explicit {
        (types.contains(&"Ingress"), types.contains(&"Egress"))
    } else {
        (true, egress.as_ref().is_some_and(|r| !r.is_empty()))
    };
    if explicit {
        for (dir, present, rules) in [
            ("Ingress", has_ingress, &ingress),
            ("Egress", has_egress, &egress),
        ] {
            if !present && rules.as_ref().is_some_and(|r| !r.is_empty()) {
                cx.warn(
                    &format!("spec.{}", dir.to_ascii_lowercase()),
                    format!("ignored: policyTypes does not include {dir}"),
                );
            }
        }
    }

    NetworkPolicy {
        namespace: meta.namespace,
        name: meta.name,
        pod_selector,
        ingress: has_ingress.then(|| ingress.unwrap_or_default()),
        egress: has_egress.then(|| egress.unwrap_or_default()),
        staged: meta.staged,
    }
}

fn rules(
    cx: &mut Cx,
    spec: &Map<String, Value>,
    dir: &str,
    peers_key: &str,
    ns: &str,
) -> Option<Vec<Rule>> {
    let list = get_list(cx, spec, "spec", dir)?;
    let allowed = [peers_key, "ports"];
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let path = index(&join("spec", dir), i);
        let Some(m) = as_map(cx, r, &path, Some(&allowed)) else {
            continue;
        };
        let peers = get_list(cx, m, &path, peers_key).filter(|l| !l.is_empty());
        let peers = peers.map(|l| {
            l.iter()
                .enumerate()
                .filter_map(|(j, p)| peer(cx, p, &index(&join(&path, peers_key), j), ns))
                .collect()
        });
        let ports = get_list(cx, m, &path, "ports").filter(|l| !l.is_empty());
        let ports = ports.map(|l| {
            l.iter()
                .enumerate()
                .filter_map(|(j, p)| port(cx, p, &index(&join(&path, "ports"), j)))
                .collect()
        });
        out.push(Rule { peers, ports });
    }
    Some(out)
}

fn peer(cx: &mut Cx, v: &Value, path: &str, ns: &str) -> Option<Peer> {
    let m = as_map(cx, v, path, Some(PEER))?;
    let pods = field(m, "podSelector").map(|v| selector(cx, v, &join(path, "podSelector")));
    let nss =
        field(m, "namespaceSelector").map(|v| selector(cx, v, &join(path, "namespaceSelector")));
    if let Some(b) = get_map(cx, m, path, "ipBlock", Some(IP_BLOCK)) {
        if pods.is_some() || nss.is_some() {
            cx.error(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            );
            return None;
        }
        return ip_block(cx, b, &join(path, "ipBlock")).map(Peer::IpBlock);
    }
    if has(m, "ipBlock") {
        return None; // not a mapping: already reported
    }
    match (nss, pods) {
        (None, None) => {
            cx.error(
                path,
                "empty peer: set podSelector, namespaceSelector or ipBlock",
            );
            None
        }
        (None, Some(pods)) => Some(Peer::Pods {
            namespaces: NamespaceScope::Own(ns.to_string()),
            pods,
        }),
        (Some(nss), pods) => Some(Peer::Pods {
            namespaces: NamespaceScope::Selector(nss),
            pods: pods.unwrap_or_else(LabelSelector::everything),
        }),
    }
}

fn ip_block(cx: &mut Cx, m: &Map<String, Value>, path: &str) -> Option<IpBlock> {
    let cidr_path = join(path, "cidr");
    let text = get_str(cx, m, path, "cidr");
    if text.is_none() && !has(m, "cidr") {
        cx.error(&cidr_path, "missing cidr");
    }
    let net = text.and_then(|s| cidr(cx, s, &cidr_path));
    let mut except = Vec::new();
    if let Some(list) = get_list(cx, m, path, "except") {
        for (i, v) in list.iter().enumerate() {
            let p = index(&join(path, "except"), i);
            let Some(s) = as_str(cx, v, &p) else { continue };
            let Some(e) = cidr(cx, s, &p) else { continue };
            let (Some(net), Some(text)) = (net, text) else {
                continue;
            };
            // Kubernetes requires a strict subset of cidr.
            let same_family = e.addr().is_ipv4() == net.addr().is_ipv4();
            if !same_family {
                cx.error(
                    &p,
                    format!("{s} is not inside cidr {text} (different address family)"),
                );
            } else if !net.contains(&e.network()) || e.prefix_len() < net.prefix_len() {
                cx.error(&p, format!("{s} is not inside cidr {text}"));
            } else if e.prefix_len() == net.prefix_len() {
                cx.error(
                    &p,
                    format!(
                        "{s} is not strictly inside cidr {text}: it would except the whole block"
                    ),
                );
            } else if !except.contains(&e) {
                except.push(e);
            }
        }
    }
    except.sort();
    Some(IpBlock { cidr: net?, except })
}

fn port(cx: &mut Cx, v: &Value, path: &str) -> Option<PortSpec> {
    let m = as_map(cx, v, path, Some(PORT))?;
    let proto = protocol(cx, m, path);
    let port_path = join(path, "port");
    let end_path = join(path, "endPort");
    let end = field(m, "endPort").and_then(|v| {
        let n = as_int(cx, v, &end_path)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                cx.error(
                    &end_path,
                    format!("{n} is not a valid port (must be 1-65535)"),
                );
                None
            }
        }
    });
    let end_given = has(m, "endPort");
    match field(m, "port") {
        None => {
            if end_given {
                cx.error(&end_path, "endPort requires a numeric port");
                return None;
            }
            Some(PortSpec::AllPorts(proto))
        }
        Some(Value::String(s)) => {
            let name = port_name(cx, s, &port_path);
            if end_given {
                cx.error(&end_path, "endPort cannot be used with a named port");
                return None;
            }
            Some(PortSpec::Named {
                protocol: proto,
                name: name?,
            })
        }
        Some(v) => {
            let start = port_number(cx, v, &port_path)?;
            if end_given && end.is_none() {
                return None;
            }
            let end = end.unwrap_or(start);
            if end < start {
                cx.error(&end_path, format!("{end} is below port {start}"));
                return None;
            }
            Some(PortSpec::Range {
                protocol: proto,
                start,
                end,
            })
        }
    }
}
