//! Namespaces, Pods and Nodes: read leniently (unknown fields are fine), but
//! every field Palisade uses is checked.

use std::net::IpAddr;

use palisade_model::{
    ContainerPort, Namespace, Node, Pod, PodPhase, PodSource, NAMESPACE_NAME_LABEL,
};
use serde_json::{Map, Value};

use crate::limits::Q;
use crate::walk::{
    as_map, as_str, field, get_bool, get_list, get_str, index, join, port_name, port_number,
    protocol, Cx,
};
use crate::{address, Meta};

pub(crate) fn namespace(_cx: &mut Cx, _obj: &Map<String, Value>, meta: Meta) -> Namespace {
    let mut labels = meta.labels;
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), meta.name.clone());
    Namespace {
        name: meta.name,
        labels,
    }
}

fn ip(cx: &mut Cx, v: &Value, path: &str, out: &mut Vec<IpAddr>) {
    let Some(s) = as_str(cx, v, path) else { return };
    match address::ip(s.trim()) {
        Ok(ip) => {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        Err(bad) => cx.error(
            path,
            format!("{s:?} is not a valid IP address{}", bad.reason(), s = Q(s)),
        ),
    }
}

pub(crate) fn pod(cx: &mut Cx, obj: &Map<String, Value>, meta: Meta) -> Pod {
    let spec = match field(obj, "spec") {
        Some(v) => as_map(cx, v, "spec", None).cloned().unwrap_or_default(),
        None => Map::new(),
    };
    let status = match field(obj, "status") {
        Some(v) => as_map(cx, v, "status", None).cloned().unwrap_or_default(),
        None => Map::new(),
    };

    let node = get_str(cx, &spec, "spec", "nodeName")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let host_network = get_bool(cx, &spec, "spec", "hostNetwork").unwrap_or(false);

    let ports = container_ports_of(cx, &spec, "spec");

    let mut ips = Vec::new();
    let pod_ips = get_list(cx, &status, "status", "podIPs").filter(|l| !l.is_empty());
    if let Some(list) = pod_ips {
        for (i, entry) in list.iter().enumerate() {
            let p = index("status.podIPs", i);
            if let Some(m) = as_map(cx, entry, &p, None) {
                if let Some(v) = field(m, "ip") {
                    ip(cx, v, &join(&p, "ip"), &mut ips);
                }
            }
        }
    } else if let Some(v) = field(&status, "podIP") {
        if v.as_str() != Some("") {
            ip(cx, v, "status.podIP", &mut ips);
        }
    }

    let phase = match get_str(cx, &status, "status", "phase") {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        Some(other) => {
            cx.error(
                "status.phase",
                format!("unknown phase {other:?} (expected Pending, Running, Succeeded, Failed or Unknown)", other = Q(other)),
            );
            PodPhase::Unknown
        }
        None if ips.is_empty() => PodPhase::Pending,
        None => PodPhase::Running,
    };

    Pod {
        namespace: meta.namespace,
        name: meta.name,
        labels: meta.labels,
        ips,
        node,
        host_network,
        source: PodSource::Live {
            phase,
            owner: meta.owner,
        },
        ports,
    }
}

/// The named and numbered ports of a pod spec at `path`: every container's,
/// and those of sidecars among the init containers.
pub(crate) fn container_ports_of(
    cx: &mut Cx,
    spec: &Map<String, Value>,
    path: &str,
) -> Vec<ContainerPort> {
    let mut ports = Vec::new();
    for (key, init) in [("containers", false), ("initContainers", true)] {
        if let Some(list) = get_list(cx, spec, path, key) {
            for (i, c) in list.iter().enumerate() {
                container_ports(cx, c, &index(&join(path, key), i), init, &mut ports);
            }
        }
    }
    ports
}

/// Ports of one container; init containers count only as sidecars
/// (`restartPolicy: Always`), since only those keep running.
fn container_ports(cx: &mut Cx, c: &Value, path: &str, init: bool, out: &mut Vec<ContainerPort>) {
    let Some(c) = as_map(cx, c, path, None) else {
        return;
    };
    if init && get_str(cx, c, path, "restartPolicy") != Some("Always") {
        return;
    }
    let Some(list) = get_list(cx, c, path, "ports") else {
        return;
    };
    for (i, p) in list.iter().enumerate() {
        let pp = index(&join(path, "ports"), i);
        let Some(m) = as_map(cx, p, &pp, None) else {
            continue;
        };
        let proto = protocol(cx, m, &pp);
        let number = match field(m, "containerPort") {
            Some(v) => port_number(cx, v, &join(&pp, "containerPort")),
            None => {
                cx.error(&join(&pp, "containerPort"), "missing containerPort");
                None
            }
        };
        let name = get_str(cx, m, &pp, "name")
            .filter(|s| !s.is_empty())
            .and_then(|s| port_name(cx, s, &join(&pp, "name")));
        if let Some(port) = number {
            let cp = ContainerPort {
                name,
                port,
                protocol: proto,
            };
            if !out.contains(&cp) {
                out.push(cp);
            }
        }
    }
}

pub(crate) fn node(cx: &mut Cx, obj: &Map<String, Value>, meta: Meta) -> Node {
    let mut addresses = Vec::new();
    let status = field(obj, "status").and_then(|v| as_map(cx, v, "status", None));
    if let Some(list) = status.and_then(|s| get_list(cx, s, "status", "addresses")) {
        for (i, a) in list.iter().enumerate() {
            let p = index("status.addresses", i);
            let Some(m) = as_map(cx, a, &p, None) else {
                continue;
            };
            // Hostnames live here too; only addresses that are IPs count,
            // and one that would be read two ways is an error.
            if let Some(s) = get_str(cx, m, &p, "address") {
                match address::ip(s.trim()) {
                    Ok(ip) => {
                        if !addresses.contains(&ip) {
                            addresses.push(ip);
                        }
                    }
                    Err(address::Bad::Invalid) => {}
                    Err(bad) => cx.error(
                        &join(&p, "address"),
                        format!("{s:?} is not a valid IP address{}", bad.reason(), s = Q(s)),
                    ),
                }
            }
        }
    }
    Node {
        name: meta.name,
        labels: meta.labels,
        addresses,
    }
}
