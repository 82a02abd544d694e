//! Reading the kernel's table back (`nft -j list table inet palisade`).
//!
//! Only what the agent needs on start: the structure hash (the comment of
//! the marker set, see [`super::replace_text`]) and the elements of
//! every set and map, typed with the desired ruleset's set definitions.
//! Anything unexpected makes [`KernelTable::as_ruleset`] return `None`, and
//! the agent replaces the table instead of patching it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value as Json;

use super::render::parse_mac;
use super::STRUCTURE_COMMENT;
use crate::ir::{Element, Ruleset, Set, Type, Value, Verdict};
use crate::schema::SetId;
use crate::structure::structure_hash;

/// The parts of the kernel's table the agent reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelTable {
    pub comment: Option<String>,
    /// Set or map name → its elements as nft prints them.
    pub sets: BTreeMap<String, Vec<Json>>,
}

impl KernelTable {
    /// Parses `nft -j list table inet palisade` output.
    pub fn from_json(doc: &Json) -> Option<KernelTable> {
        let items = doc.get("nftables")?.as_array()?;
        let mut t = KernelTable::default();
        for item in items {
            for kind in ["set", "map"] {
                if let Some(s) = item.get(kind) {
                    let name = s.get("name")?.as_str()?.to_string();
                    if name == SetId::Structure.name() {
                        t.comment = s.get("comment").and_then(Json::as_str).map(str::to_string);
                        continue;
                    }
                    let elems = s
                        .get("elem")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    t.sets.insert(name, elems);
                }
            }
        }
        Some(t)
    }

    /// The structure hash recorded in the marker set's comment.
    pub fn structure(&self) -> Option<&str> {
        self.comment.as_deref()?.strip_prefix(STRUCTURE_COMMENT)
    }

    /// The kernel's table as a ruleset, when its structure is `desired`'s:
    /// `desired` with each set's elements replaced by the kernel's.
    pub fn as_ruleset(&self, desired: &Ruleset) -> Option<Ruleset> {
        if self.structure()? != structure_hash(desired) || self.sets.len() != desired.sets.len() {
            return None;
        }
        let mut out = desired.clone();
        for set in &mut out.sets {
            let raw = self.sets.get(&set.name)?;
            let mut elems = Vec::with_capacity(raw.len());
            for e in raw {
                elems.push(parse_element(set, e)?);
            }
            elems.sort();
            set.elements = elems;
        }
        Some(out)
    }
}

fn parse_element(set: &Set, e: &Json) -> Option<Element> {
    // `{"elem": {"val": ...}}` wraps elements with options.
    let e = e.get("elem").and_then(|x| x.get("val")).unwrap_or(e);
    let (key, data) = match (set.data, e) {
        (Some(t), Json::Array(pair)) if pair.len() == 2 => {
            (&pair[0], Some(parse_field(t, false, &pair[1])?))
        }
        (Some(_), _) => return None,
        (None, k) => (k, None),
    };
    let key = if set.key.len() == 1 {
        vec![parse_field(set.key[0], set.interval, key)?]
    } else {
        let parts = key.get("concat")?.as_array()?;
        if parts.len() != set.key.len() {
            return None;
        }
        set.key
            .iter()
            .zip(parts)
            .map(|(&t, v)| parse_field(t, set.interval, v))
            .collect::<Option<Vec<_>>>()?
    };
    Some(Element { key, data })
}

fn int(v: &Json) -> Option<u64> {
    match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// An inclusive range of addresses from a plain address, a `range` or a
/// `prefix`.
fn addr_range(v: &Json) -> Option<(IpAddr, IpAddr)> {
    if let Some(s) = v.as_str() {
        let a: IpAddr = s.parse().ok()?;
        return Some((a, a));
    }
    if let Some(r) = v.get("range").and_then(Json::as_array) {
        let a: IpAddr = r.first()?.as_str()?.parse().ok()?;
        let b: IpAddr = r.get(1)?.as_str()?.parse().ok()?;
        return Some((a, b));
    }
    let p = v.get("prefix")?;
    let a: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
    let len = p.get("len")?.as_u64()? as u32;
    Some(match a {
        IpAddr::V4(a) => {
            let host = if len >= 32 { 0 } else { u32::MAX >> len };
            let n = u32::from(a) & !host;
            (
                IpAddr::V4(Ipv4Addr::from(n)),
                IpAddr::V4(Ipv4Addr::from(n | host)),
            )
        }
        IpAddr::V6(a) => {
            let host = if len >= 128 { 0 } else { u128::MAX >> len };
            let n = u128::from(a) & !host;
            (
                IpAddr::V6(Ipv6Addr::from(n)),
                IpAddr::V6(Ipv6Addr::from(n | host)),
            )
        }
    })
}

fn parse_field(t: Type, interval: bool, v: &Json) -> Option<Value> {
    Some(match t {
        Type::Ifname => Value::Ifname(v.as_str()?.to_string()),
        Type::NdTarget => {
            let hex = v.as_str()?.strip_prefix("0x")?;
            Value::NdTarget(Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?))
        }
        Type::Ether => Value::Ether(parse_mac(v.as_str()?)?),
        Type::Verdict => {
            let o = v.as_object()?;
            if o.len() != 1 {
                return None;
            }
            match o.keys().next()?.as_str() {
                "return" => Value::Verdict(Verdict::Return),
                "goto" => {
                    let target = o.get("goto")?.get("target")?.as_str()?;
                    let d = [crate::Dir::Egress, crate::Dir::Ingress]
                        .into_iter()
                        .find(|&d| crate::chains::denied_chain(d) == target)?;
                    Value::Verdict(Verdict::Deny(d))
                }
                _ => return None,
            }
        }
        Type::Mark => {
            let m = match v.get("range").and_then(Json::as_array) {
                Some(r) if r.len() == 2 && r[0] == r[1] => int(&r[0])?,
                Some(_) => return None,
                None => int(v)?,
            };
            Value::Mark(u32::try_from(m).ok()?)
        }
        Type::Proto => match v {
            Json::String(s) => match s.as_str() {
                "tcp" => Value::Proto(6),
                "udp" => Value::Proto(17),
                "sctp" => Value::Proto(132),
                other => Value::Proto(other.parse().ok()?),
            },
            other => Value::Proto(u8::try_from(int(other)?).ok()?),
        },
        Type::Port => {
            let (a, b) = match v.get("range").and_then(Json::as_array) {
                Some(r) if r.len() == 2 => (int(&r[0])?, int(&r[1])?),
                Some(_) => return None,
                None => {
                    let p = int(v)?;
                    (p, p)
                }
            };
            let (a, b) = (u16::try_from(a).ok()?, u16::try_from(b).ok()?);
            if interval {
                Value::PortRange(a, b)
            } else if a == b {
                Value::Port(a)
            } else {
                return None;
            }
        }
        Type::Ipv4 => match addr_range(v)? {
            (IpAddr::V4(a), IpAddr::V4(b)) if interval => Value::Ipv4Range(a, b),
            (IpAddr::V4(a), IpAddr::V4(b)) if a == b => Value::Ipv4(a),
            _ => return None,
        },
        Type::Ipv6 => match addr_range(v)? {
            (IpAddr::V6(a), IpAddr::V6(b)) if interval => Value::Ipv6Range(a, b),
            (IpAddr::V6(a), IpAddr::V6(b)) if a == b => Value::Ipv6(a),
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_compilers_own_json() {
        let rs = Ruleset {
            sets: vec![
                Set {
                    name: "identity4".into(),
                    key: vec![Type::Ipv4],
                    data: Some(Type::Mark),
                    interval: false,
                    comment: String::new(),
                    elements: vec![Element {
                        key: vec![Value::Ipv4("10.0.0.1".parse().unwrap())],
                        data: Some(Value::Mark(7)),
                    }],
                },
                Set {
                    name: "peer".into(),
                    key: vec![Type::Mark, Type::Ipv4, Type::Proto, Type::Port],
                    data: None,
                    interval: true,
                    comment: String::new(),
                    elements: vec![Element {
                        key: vec![
                            Value::Mark(1),
                            Value::Ipv4Range(
                                "10.0.0.0".parse().unwrap(),
                                "10.0.0.255".parse().unwrap(),
                            ),
                            Value::Proto(6),
                            Value::PortRange(80, 80),
                        ],
                        data: None,
                    }],
                },
            ],
            chains: Vec::new(),
        };
        let mut doc = rs.to_json();
        doc["nftables"].as_array_mut().unwrap().push(json!({"set": {
            "name": SetId::Structure.name(), "type": "mark",
            "comment": format!("{STRUCTURE_COMMENT}{}", structure_hash(&rs)),
        }}));
        let k = KernelTable::from_json(&doc).unwrap();
        assert_eq!(k.as_ruleset(&rs), Some(rs.clone()));
        // As nft prints it: a prefix for the range, a bare port.
        let mut k2 = k.clone();
        k2.sets.insert(
            "peer".into(),
            vec![json!({"concat": [1, {"prefix": {"addr": "10.0.0.0", "len": 24}}, "tcp", 80]})],
        );
        assert_eq!(k2.as_ruleset(&rs), Some(rs.clone()));
        let mut other = rs.clone();
        other.sets[1].interval = false;
        assert_eq!(k.as_ruleset(&other), None);
    }
}
