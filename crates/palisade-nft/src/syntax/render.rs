//! Rendering the IR as `nft -f` text and as nftables JSON (`nft -j -f`).
//! Deterministic: the compiler sorts every element list before it gets
//! here.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::ir::{
    Element, Expr, MetaKey, Op, Ruleset, Stmt, Type, Value, Verdict, BRIDGE_FAMILY, FAMILY, TABLE,
};

impl Type {
    pub fn nft_name(self) -> &'static str {
        match self {
            Type::Ifname => "ifname",
            Type::Ether => "ether_addr",
            Type::Ipv4 => "ipv4_addr",
            Type::Ipv6 => "ipv6_addr",
            Type::Mark => "mark",
            Type::Proto => "inet_proto",
            Type::Port => "inet_service",
            Type::Verdict => "verdict",
            Type::NdTarget => "integer",
        }
    }

    /// The expression a `typeof` declaration names for this field (sets
    /// with a [`Type::NdTarget`] field have no `type` spelling); the bridge
    /// table's fields only.
    pub fn typeof_name(self) -> &'static str {
        match self {
            Type::Ifname => "iifname",
            Type::Ether => "ether saddr",
            Type::NdTarget => "@th,64,128",
            other => other.nft_name(),
        }
    }
}

impl Verdict {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Verdict::Return => "return",
            Verdict::Deny(crate::Dir::Egress) => "goto egress_denied",
            Verdict::Deny(crate::Dir::Ingress) => "goto ingress_denied",
        }
    }

    fn json(self) -> Json {
        match self {
            Verdict::Return => json!({"return": null}),
            Verdict::Deny(d) => json!({"goto": {"target": crate::chains::denied_chain(d)}}),
        }
    }
}

/// A MAC as nft writes it: `0a:58:0a:4e:01:11`.
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A MAC as nft writes it, read back.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// How values are spelled where nft 1.0.6 needs something other than the
/// table's spelling.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spelling {
    /// `tcp` rather than `6`.
    pub proto_names: bool,
    /// A single value of a range field as `80-80`: nft 1.0.6 deletes a
    /// single value from a concatenated interval set only when so written.
    pub singleton_ranges: bool,
}

impl Spelling {
    /// As in a table and in `add element`.
    pub const TABLE: Spelling = Spelling {
        proto_names: true,
        singleton_ranges: false,
    };
}

/// One value as nft reads it.
pub(crate) fn value_text(v: &Value, sp: Spelling) -> String {
    let single = !sp.singleton_ranges;
    match v {
        Value::Ifname(s) => format!("\"{s}\""),
        Value::Ether(m) => mac_text(m),
        Value::Ipv4(a) => a.to_string(),
        Value::Ipv6(a) => a.to_string(),
        Value::Ipv4Range(a, b) if a == b && single => a.to_string(),
        Value::Ipv4Range(a, b) => format!("{a}-{b}"),
        Value::Ipv6Range(a, b) if a == b && single => a.to_string(),
        Value::Ipv6Range(a, b) => format!("{a}-{b}"),
        Value::Mark(m) => m.to_string(),
        Value::Proto(p) => match proto_name(*p) {
            Some(n) if sp.proto_names => n.to_string(),
            _ => p.to_string(),
        },
        Value::Port(p) => p.to_string(),
        Value::PortRange(a, b) if a == b && single => a.to_string(),
        Value::PortRange(a, b) => format!("{a}-{b}"),
        Value::Verdict(v) => v.name().to_string(),
        Value::NdTarget(a) => format!("0x{:032x}", u128::from(*a)),
    }
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        6 => Some("tcp"),
        17 => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    }
}

impl Value {
    pub(crate) fn text(&self) -> String {
        value_text(self, Spelling::TABLE)
    }

    fn json(&self) -> Json {
        match self {
            Value::Ifname(s) => json!(s),
            Value::Ether(m) => json!(mac_text(m)),
            Value::Ipv4(a) => json!(a.to_string()),
            Value::Ipv6(a) => json!(a.to_string()),
            Value::Ipv4Range(a, b) if a == b => json!(a.to_string()),
            Value::Ipv4Range(a, b) => json!({"range": [a.to_string(), b.to_string()]}),
            Value::Ipv6Range(a, b) if a == b => json!(a.to_string()),
            Value::Ipv6Range(a, b) => json!({"range": [a.to_string(), b.to_string()]}),
            Value::Mark(m) => json!(m),
            Value::Proto(p) => proto_name(*p).map_or_else(|| json!(p), |n| json!(n)),
            Value::Port(p) => json!(p),
            Value::PortRange(a, b) if a == b => json!(a),
            Value::PortRange(a, b) => json!({"range": [a, b]}),
            Value::Verdict(v) => v.json(),
            Value::NdTarget(a) => json!(format!("0x{:032x}", u128::from(*a))),
        }
    }
}

impl MetaKey {
    fn name(self) -> &'static str {
        match self {
            MetaKey::Iifname => "iifname",
            MetaKey::Oifname => "oifname",
            MetaKey::Nfproto => "nfproto",
            MetaKey::L4proto => "l4proto",
            MetaKey::Mark => "mark",
        }
    }
}

impl Expr {
    fn text(&self) -> String {
        match self {
            Expr::Meta(k @ (MetaKey::Iifname | MetaKey::Oifname)) => k.name().to_string(),
            Expr::Meta(k) => format!("meta {}", k.name()),
            Expr::CtState => "ct state".into(),
            Expr::CtMark => "ct mark".into(),
            Expr::Payload { protocol, field } => format!("{protocol} {field}"),
            Expr::Concat(es) => es.iter().map(Expr::text).collect::<Vec<_>>().join(" . "),
            Expr::SetRef(n) => format!("@{n}"),
            Expr::Map { key, map } => format!("{} map @{map}", key.text()),
            Expr::Int(i) => i.to_string(),
            Expr::Symbol(s) => s.to_string(),
            Expr::Flags(f) => f.join(","),
            Expr::Prefix(a, l) => format!("{a}/{l}"),
            Expr::AnonSet(v) => format!("{{ {} }}", v.join(", ")),
            Expr::CtStatus => "ct status".into(),
            Expr::Random(n) => format!("numgen random mod {n}"),
            Expr::Masked(e, m) => format!("{} & ({})", e.text(), m.join("|")),
            Expr::And(e, m) => format!("{} & 0x{m:x}", e.text()),
            Expr::Raw { base, offset, len } => format!("@{base},{offset},{len}"),
        }
    }

    fn json(&self) -> Json {
        match self {
            Expr::Meta(k) => json!({"meta": {"key": k.name()}}),
            Expr::CtState => json!({"ct": {"key": "state"}}),
            Expr::CtMark => json!({"ct": {"key": "mark"}}),
            Expr::Payload { protocol, field } => {
                json!({"payload": {"protocol": protocol, "field": field}})
            }
            Expr::Concat(es) => json!({"concat": es.iter().map(Expr::json).collect::<Vec<_>>()}),
            Expr::SetRef(n) => json!(format!("@{n}")),
            Expr::Map { key, map } => {
                json!({"map": {"key": key.json(), "data": format!("@{map}")}})
            }
            Expr::Int(i) => json!(i),
            Expr::Symbol(s) => json!(s),
            Expr::Flags(f) => json!(f),
            Expr::Prefix(a, l) => json!({"prefix": {"addr": a, "len": l}}),
            Expr::AnonSet(v) => json!({ "set": v }),
            Expr::CtStatus => json!({"ct": {"key": "status"}}),
            Expr::Random(n) => json!({"numgen": {"mode": "random", "mod": n, "offset": 0}}),
            Expr::Masked(e, m) => json!({"&": [e.json(), m]}),
            Expr::And(e, m) => json!({"&": [e.json(), m]}),
            Expr::Raw { base, offset, len } => {
                json!({"payload": {"base": base, "offset": offset, "len": len}})
            }
        }
    }
}

impl Stmt {
    fn text(&self) -> String {
        match self {
            Stmt::Match { left, op, right } => match op {
                // `EXPR & MASK VALUE` would read as one expression.
                Op::Eq if matches!(left, Expr::And(..)) => match right {
                    Expr::Int(v) => format!("{} == 0x{v:x}", left.text()),
                    _ => format!("{} == {}", left.text(), right.text()),
                },
                Op::Eq | Op::In => format!("{} {}", left.text(), right.text()),
                Op::Ne => format!("{} != {}", left.text(), right.text()),
                Op::NotIn => format!("{} & {} == 0", left.text(), right.text()),
                Op::Lt => format!("{} < {}", left.text(), right.text()),
            },
            Stmt::Assign { key, value } => format!("{} set {}", key.text(), value.text()),
            Stmt::Accept => "accept".into(),
            Stmt::Drop => "drop".into(),
            Stmt::Return => "return".into(),
            Stmt::Jump(c) => format!("jump {c}"),
            Stmt::Goto(c) => format!("goto {c}"),
            Stmt::Vmap { key, map } => format!("{} vmap @{map}", key.text()),
            Stmt::Log { prefix, group } => format!("log prefix \"{prefix}\" group {group}"),
            Stmt::Counter => "counter".into(),
        }
    }

    fn json(&self) -> Json {
        match self {
            Stmt::Match {
                left,
                op: Op::NotIn,
                right,
            } => json!({"match": {
                "op": "==",
                "left": {"&": [left.json(), right.json()]},
                "right": 0
            }}),
            Stmt::Match { left, op, right } => {
                let op = match op {
                    Op::Eq => "==",
                    Op::Ne => "!=",
                    Op::In => "in",
                    Op::Lt => "<",
                    Op::NotIn => unreachable!("matched above"),
                };
                json!({"match": {"op": op, "left": left.json(), "right": right.json()}})
            }
            Stmt::Assign { key, value } => {
                json!({"mangle": {"key": key.json(), "value": value.json()}})
            }
            Stmt::Accept => json!({"accept": null}),
            Stmt::Drop => json!({"drop": null}),
            Stmt::Return => json!({"return": null}),
            Stmt::Jump(c) => json!({"jump": {"target": c}}),
            Stmt::Goto(c) => json!({"goto": {"target": c}}),
            Stmt::Vmap { key, map } => {
                json!({"vmap": {"key": key.json(), "data": format!("@{map}")}})
            }
            Stmt::Log { prefix, group } => json!({"log": {"prefix": prefix, "group": group}}),
            Stmt::Counter => json!({"counter": null}),
        }
    }
}

fn priority_text(p: i32) -> String {
    match p {
        0 => "filter".into(),
        p if p > 0 => format!("filter + {p}"),
        p => format!("filter - {}", -p),
    }
}

/// The most elements written in one `elements = { }` block or one `add
/// element` / `delete element` statement. nft 1.0.6 splits a statement's
/// elements into netlink messages of about 64 KiB; in a concatenated
/// interval map, the element that starts each further message (every 963rd
/// of the admin tiers' maps) reached the kernel with its host-endian `mark`
/// fields byte-swapped: another key than the one written, so the intended
/// one was missing and a removal of it failed. Statements small enough for
/// one message avoid it; they stay in the same transaction.
pub const ELEMENT_CHUNK: usize = 200;

/// Elements as the lines of an `elements = { }` block.
pub fn element_lines(elements: &[Element]) -> String {
    let mut s = String::new();
    let n = elements.len();
    for (i, e) in elements.iter().enumerate() {
        let key = e
            .key
            .iter()
            .map(Value::text)
            .collect::<Vec<_>>()
            .join(" . ");
        let data = e
            .data
            .as_ref()
            .map(|d| format!(" : {}", d.text()))
            .unwrap_or_default();
        let sep = if i + 1 < n { "," } else { "" };
        let _ = writeln!(s, "\t\t\t{key}{data}{sep}");
    }
    s
}

impl Ruleset {
    /// The table as `nft -f` input (the table only: no flush or delete).
    pub fn to_nft_text(&self) -> String {
        self.text_in(FAMILY)
    }

    /// The bridge table ([`crate::compile_bridge`]) replaced atomically.
    pub fn to_bridge_replace_text(&self) -> String {
        format!(
            "table {BRIDGE_FAMILY} {TABLE} {{}}\ndelete table {BRIDGE_FAMILY} {TABLE}\n{}",
            self.text_in(BRIDGE_FAMILY)
        )
    }

    fn text_in(&self, family: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "table {family} {TABLE} {{");
        for set in &self.sets {
            let kw = if set.data.is_some() { "map" } else { "set" };
            let _ = writeln!(s, "\t{kw} {} {{", set.name);
            let raw = set.key.contains(&Type::NdTarget);
            let key = set
                .key
                .iter()
                .map(|t| if raw { t.typeof_name() } else { t.nft_name() })
                .collect::<Vec<_>>()
                .join(" . ");
            match set.data {
                None if raw => {
                    let _ = writeln!(s, "\t\ttypeof {key}");
                }
                Some(d) => {
                    let _ = writeln!(s, "\t\ttype {key} : {}", d.nft_name());
                }
                None => {
                    let _ = writeln!(s, "\t\ttype {key}");
                }
            }
            if set.interval {
                let _ = writeln!(s, "\t\tflags interval");
            }
            if !set.comment.is_empty() {
                let _ = writeln!(s, "\t\tcomment \"{}\"", set.comment);
            }
            if !set.elements.is_empty() && set.elements.len() <= ELEMENT_CHUNK {
                let _ = writeln!(s, "\t\telements = {{");
                s.push_str(&element_lines(&set.elements));
                let _ = writeln!(s, "\t\t}}");
            }
            let _ = writeln!(s, "\t}}");
        }
        for c in &self.chains {
            let _ = writeln!(s, "\tchain {} {{", c.name);
            if let Some(h) = &c.hook {
                let _ = writeln!(
                    s,
                    "\t\ttype filter hook {} priority {}; policy accept;",
                    h.hook,
                    // Named priorities mean other numbers in the bridge family.
                    if family == FAMILY {
                        priority_text(h.priority)
                    } else {
                        h.priority.to_string()
                    }
                );
            }
            for r in &c.rules {
                let body = r.stmts.iter().map(Stmt::text).collect::<Vec<_>>().join(" ");
                match &r.comment {
                    Some(cm) => {
                        let _ = writeln!(s, "\t\t{body} comment \"{cm}\"");
                    }
                    None => {
                        let _ = writeln!(s, "\t\t{body}");
                    }
                }
            }
            let _ = writeln!(s, "\t}}");
        }
        s.push_str("}\n");
        // Large sets get their elements in chunks (see ELEMENT_CHUNK).
        for set in self
            .sets
            .iter()
            .filter(|x| x.elements.len() > ELEMENT_CHUNK)
        {
            for chunk in set.elements.chunks(ELEMENT_CHUNK) {
                let _ = write!(
                    s,
                    "add element {family} {TABLE} {} {{\n{}}}\n",
                    set.name,
                    element_lines(chunk)
                );
            }
        }
        s
    }

    /// One `nft -f` transaction that replaces the table atomically: create
    /// it if missing, delete it (old elements included), add the new one.
    pub fn to_nft_replace_text(&self) -> String {
        format!(
            "table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n{}",
            self.to_nft_text()
        )
    }

    /// The table as nftables JSON (`nft -j -f`): table, chains, sets, rules.
    pub fn to_json(&self) -> Json {
        let mut items = vec![
            json!({"metainfo": {"json_schema_version": 1}}),
            json!({"table": {"family": FAMILY, "name": TABLE}}),
        ];
        // Chains first: verdict map elements may name them (`goto
        // egress_denied`).
        for c in &self.chains {
            let mut obj = serde_json::Map::new();
            obj.insert("family".into(), json!(FAMILY));
            obj.insert("table".into(), json!(TABLE));
            obj.insert("name".into(), json!(c.name));
            if let Some(h) = &c.hook {
                obj.insert("type".into(), json!("filter"));
                obj.insert("hook".into(), json!(h.hook));
                obj.insert("prio".into(), json!(h.priority));
                obj.insert("policy".into(), json!("accept"));
            }
            items.push(json!({ "chain": obj }));
        }
        for set in &self.sets {
            let ty: Json = if set.key.len() == 1 {
                json!(set.key[0].nft_name())
            } else {
                json!(set.key.iter().map(|t| t.nft_name()).collect::<Vec<_>>())
            };
            let key_json = |e: &Element| -> Json {
                if e.key.len() == 1 {
                    e.key[0].json()
                } else {
                    json!({"concat": e.key.iter().map(Value::json).collect::<Vec<_>>()})
                }
            };
            let mut obj = serde_json::Map::new();
            obj.insert("family".into(), json!(FAMILY));
            obj.insert("table".into(), json!(TABLE));
            obj.insert("name".into(), json!(set.name));
            obj.insert("type".into(), ty);
            if let Some(d) = set.data {
                obj.insert("map".into(), json!(d.nft_name()));
            }
            if set.interval {
                obj.insert("flags".into(), json!(["interval"]));
            }
            if !set.comment.is_empty() {
                obj.insert("comment".into(), json!(set.comment));
            }
            if !set.elements.is_empty() {
                let elems: Vec<Json> = set
                    .elements
                    .iter()
                    .map(|e| match &e.data {
                        Some(d) => json!([key_json(e), d.json()]),
                        None => key_json(e),
                    })
                    .collect();
                obj.insert("elem".into(), json!(elems));
            }
            let kind = if set.data.is_some() { "map" } else { "set" };
            items.push(json!({ kind: obj }));
        }
        for c in &self.chains {
            for r in &c.rules {
                let mut obj = serde_json::Map::new();
                obj.insert("family".into(), json!(FAMILY));
                obj.insert("table".into(), json!(TABLE));
                obj.insert("chain".into(), json!(c.name));
                obj.insert(
                    "expr".into(),
                    json!(r.stmts.iter().map(Stmt::json).collect::<Vec<_>>()),
                );
                if let Some(cm) = &r.comment {
                    obj.insert("comment".into(), json!(cm));
                }
                items.push(json!({ "rule": obj }));
            }
        }
        json!({ "nftables": items })
    }
}
