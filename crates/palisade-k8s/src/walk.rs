//! Strict and lenient walking of decoded JSON values, with located
//! diagnostics, plus the Kubernetes syntax checks shared by every kind.

use std::sync::LazyLock;

use palisade_model::{IpNet, LabelSelector, Labels, Protocol, Requirement};
use serde_json::{Map, Value};

use crate::limits::Q;
use crate::{address, Diagnostic, Severity};

/// Where the object being decoded lives, and the diagnostics found so far.
pub(crate) struct Cx<'a> {
    pub file: &'a str,
    pub line: Option<usize>,
    pub object: Option<String>,
    pub diags: &'a mut Vec<Diagnostic>,
    pub errors: usize,
}

impl<'a> Cx<'a> {
    pub fn new(file: &'a str, line: Option<usize>, diags: &'a mut Vec<Diagnostic>) -> Self {
        Cx {
            file,
            line,
            object: None,
            diags,
            errors: 0,
        }
    }

    fn push(&mut self, severity: Severity, field: &str, message: String) {
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_string(),
            line: self.line,
            object: self.object.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            message,
        });
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors += 1;
        self.push(Severity::Error, field, message.into());
    }

    pub fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.push(Severity::Warning, field, message.into());
    }
}

/// A field path one key deeper; a key longer than any real field's is cut
/// (`limits::short`), since paths are printed whole.
pub(crate) fn join(path: &str, key: &str) -> String {
    let key = crate::limits::short(key);
    if path.is_empty() {
        key.into_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A short description of a value for "expected X, found Y" messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}", s = Q(s)),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// A field's value; an explicit `null` is the same as an absent field.
pub(crate) fn field<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// Whether the field is present and not `null`.
pub(crate) fn has(m: &Map<String, Value>, key: &str) -> bool {
    field(m, key).is_some()
}

/// A mapping (`null` reads as the empty mapping). With `allowed`, every other
/// key is reported as an unknown field, as strict validation does.
pub(crate) fn as_map<'v>(
    cx: &mut Cx,
    v: &'v Value,
    path: &str,
    allowed: Option<&[&str]>,
) -> Option<&'v Map<String, Value>> {
    let m = match v {
        Value::Null => return Some(&EMPTY),
        Value::Object(m) => m,
        other => {
            cx.error(
                path,
                format!("expected a mapping, found {}", describe(other)),
            );
            return None;
        }
    };
    if let Some(allowed) = allowed {
        for key in m.keys() {
            if !allowed.contains(&key.as_str()) {
                cx.error(&join(path, key), unknown_field(key, allowed));
            }
        }
    }
    Some(m)
}

fn unknown_field(key: &str, allowed: &[&str]) -> String {
    let best = allowed
        .iter()
        .map(|a| {
            (
                edit_distance(&key.to_ascii_lowercase(), &a.to_ascii_lowercase()),
                a,
            )
        })
        .min();
    match best {
        Some((d, a)) if d <= 2 && d < key.len() => {
            format!(
                "unknown field {key:?} (did you mean {a:?}?)",
                key = Q(key),
                a = Q(a)
            )
        }
        _ if allowed.is_empty() => format!("unknown field {key:?}", key = Q(key)),
        _ => format!(
            "unknown field {key:?} (expected one of: {})",
            allowed.join(", "),
            key = Q(key)
        ),
    }
}

/// The name among `names` that `s` is probably a misspelling of (two
/// edits or fewer, case aside), if any.
pub(crate) fn near_miss<'n>(s: &str, names: &[&'n str]) -> Option<&'n str> {
    names
        .iter()
        .map(|n| {
            (
                edit_distance(&s.to_ascii_lowercase(), &n.to_ascii_lowercase()),
                *n,
            )
        })
        .filter(|&(d, n)| d <= 2 && d < n.len() / 2)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(crate) fn as_str<'v>(cx: &mut Cx, v: &'v Value, path: &str) -> Option<&'v str> {
    match v {
        Value::String(s) => Some(s),
        other => {
            cx.error(
                path,
                format!("expected a string, found {}", describe(other)),
            );
            None
        }
    }
}

pub(crate) fn as_list<'v>(cx: &mut Cx, v: &'v Value, path: &str) -> Option<&'v Vec<Value>> {
    match v {
        Value::Array(l) => Some(l),
        other => {
            cx.error(path, format!("expected a list, found {}", describe(other)));
            None
        }
    }
}

pub(crate) fn as_bool(cx: &mut Cx, v: &Value, path: &str) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            cx.error(
                path,
                format!("expected true or false, found {}", describe(other)),
            );
            None
        }
    }
}

pub(crate) fn as_int(cx: &mut Cx, v: &Value, path: &str) -> Option<i64> {
    if let Value::Number(n) = v {
        if let Some(i) = n.as_i64() {
            return Some(i);
        }
        if n.as_u64().is_some() {
            cx.error(path, format!("{n} is too large"));
            return None;
        }
    }
    cx.error(path, format!("expected an integer, found {}", describe(v)));
    None
}

pub(crate) fn get_str<'v>(
    cx: &mut Cx,
    m: &'v Map<String, Value>,
    path: &str,
    key: &str,
) -> Option<&'v str> {
    let v = field(m, key)?;
    as_str(cx, v, &join(path, key))
}

pub(crate) fn get_list<'v>(
    cx: &mut Cx,
    m: &'v Map<String, Value>,
    path: &str,
    key: &str,
) -> Option<&'v Vec<Value>> {
    let v = field(m, key)?;
    as_list(cx, v, &join(path, key))
}

pub(crate) fn get_map<'v>(
    cx: &mut Cx,
    m: &'v Map<String, Value>,
    path: &str,
    key: &str,
    allowed: Option<&[&str]>,
) -> Option<&'v Map<String, Value>> {
    let v = field(m, key)?;
    as_map(cx, v, &join(path, key), allowed)
}

pub(crate) fn get_int(cx: &mut Cx, m: &Map<String, Value>, path: &str, key: &str) -> Option<i64> {
    let v = field(m, key)?;
    as_int(cx, v, &join(path, key))
}

pub(crate) fn get_bool(cx: &mut Cx, m: &Map<String, Value>, path: &str, key: &str) -> Option<bool> {
    let v = field(m, key)?;
    as_bool(cx, v, &join(path, key))
}

/// A port number in 1..=65535.
pub(crate) fn port_number(cx: &mut Cx, v: &Value, path: &str) -> Option<u16> {
    let n = as_int(cx, v, path)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            cx.error(path, format!("{n} is not a valid port (must be 1-65535)"));
            None
        }
    }
}

/// `protocol`, strictly `TCP`, `UDP` or `SCTP`, defaulting to TCP.
pub(crate) fn protocol(cx: &mut Cx, m: &Map<String, Value>, path: &str) -> Protocol {
    let p = join(path, "protocol");
    match get_str(cx, m, path, "protocol") {
        None => Protocol::Tcp,
        Some(s) => parse_protocol(s).unwrap_or_else(|| {
            cx.error(
                &p,
                format!(
                    "unknown protocol {s:?} (expected TCP, UDP or SCTP)",
                    s = Q(s)
                ),
            );
            Protocol::Tcp
        }),
    }
}

pub(crate) fn parse_protocol(s: &str) -> Option<Protocol> {
    Protocol::ALL.into_iter().find(|p| p.as_str() == s)
}

// ---------------------------------------------------------------------------
// Kubernetes name syntax

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: what namespace names and label-key prefixes' parts are.
pub(crate) fn dns1123_label_error(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > 63 {
        return Some(format!(
            "must be no more than 63 characters (is {})",
            s.len()
        ));
    }
    let ok = s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    (!ok).then(|| {
        "must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into()
    })
}

/// RFC 1123 subdomain: what most object names are.
pub(crate) fn dns1123_subdomain_error(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > 253 {
        return Some(format!(
            "must be no more than 253 characters (is {})",
            s.len()
        ));
    }
    let ok = s.split('.').all(|part| {
        !part.is_empty()
            && part.chars().all(|c| is_alnum_lower(c) || c == '-')
            && part.starts_with(is_alnum_lower)
            && part.ends_with(is_alnum_lower)
    });
    (!ok).then(|| {
        "must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into()
    })
}

fn label_name_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

const NAME_CHARSET: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// A label key (qualified name): optional DNS-subdomain prefix and '/', then
/// a name of at most 63 characters.
pub(crate) fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must not be empty".into());
        }
        if let Some(e) = dns1123_subdomain_error(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        return Some("name part must not be empty".into());
    }
    if name.len() > 63 {
        return Some(format!(
            "name part must be no more than 63 characters (is {})",
            name.len()
        ));
    }
    if !label_name_ok(name) {
        return Some(format!("name part {NAME_CHARSET}"));
    }
    None
}

pub(crate) fn label_value_error(v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    if v.len() > 63 {
        return Some(format!(
            "must be no more than 63 characters (is {})",
            v.len()
        ));
    }
    (!label_name_ok(v)).then(|| NAME_CHARSET.to_string())
}

/// IANA_SVC_NAME: a container port name or a named port in a policy.
pub(crate) fn port_name_error(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > 15 {
        return Some(format!(
            "must be no more than 15 characters (is {})",
            s.len()
        ));
    }
    if !s.chars().all(|c| is_alnum_lower(c) || c == '-') {
        return Some("must contain only lower case alphanumeric characters and '-'".into());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Some(if s.chars().all(|c| c.is_ascii_digit()) {
            "must contain at least one letter (write a port number without quotes)".into()
        } else {
            "must contain at least one letter".into()
        });
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must not begin or end with '-'".into());
    }
    if s.contains("--") {
        return Some("must not contain consecutive '-'".into());
    }
    None
}

/// A port name as a `ContainerPort.name` or a named port.
pub(crate) fn port_name(cx: &mut Cx, s: &str, path: &str) -> Option<String> {
    match port_name_error(s) {
        None => Some(s.to_string()),
        Some(e) => {
            cx.error(
                path,
                format!("{s:?} is not a valid port name: {e}", s = Q(s)),
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Labels and selectors

/// A `labels` mapping, every key and value checked.
pub(crate) fn labels(cx: &mut Cx, v: &Value, path: &str) -> Labels {
    let mut out = Labels::new();
    let Some(m) = as_map(cx, v, path, None) else {
        return out;
    };
    for (k, v) in m {
        if let Some(e) = label_key_error(k) {
            cx.error(path, format!("invalid label key {k:?}: {e}", k = Q(k)));
        }
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Bool(_) | Value::Number(_) => {
                cx.error(
                    &join(path, k),
                    format!("label values must be strings: quote {v}"),
                );
                continue;
            }
            other => {
                cx.error(
                    &join(path, k),
                    format!("expected a string, found {}", describe(other)),
                );
                continue;
            }
        };
        if let Some(e) = label_value_error(&value) {
            cx.error(
                &join(path, k),
                format!("invalid label value {value:?}: {e}", value = Q(&value)),
            );
        }
        out.insert(k.clone(), value);
    }
    out
}

/// A `metav1.LabelSelector`, strictly.
pub(crate) fn selector(cx: &mut Cx, v: &Value, path: &str) -> LabelSelector {
    let mut reqs = Vec::new();
    let Some(m) = as_map(cx, v, path, Some(&["matchLabels", "matchExpressions"])) else {
        return LabelSelector::everything();
    };
    if let Some(ml) = field(m, "matchLabels") {
        let p = join(path, "matchLabels");
        for (k, v) in labels(cx, ml, &p) {
            reqs.push(Requirement::In {
                key: k,
                values: vec![v],
            });
        }
    }
    if let Some(list) = get_list(cx, m, path, "matchExpressions") {
        for (i, e) in list.iter().enumerate() {
            let p = index(&join(path, "matchExpressions"), i);
            if let Some(r) = requirement(cx, e, &p) {
                reqs.push(r);
            }
        }
    }
    LabelSelector::new(reqs)
}

fn requirement(cx: &mut Cx, v: &Value, path: &str) -> Option<Requirement> {
    let m = as_map(cx, v, path, Some(&["key", "operator", "values"]))?;
    let key = get_str(cx, m, path, "key");
    match key {
        None if !has(m, "key") => cx.error(&join(path, "key"), "missing key"),
        Some(k) => {
            if let Some(e) = label_key_error(k) {
                cx.error(
                    &join(path, "key"),
                    format!("invalid label key {k:?}: {e}", k = Q(k)),
                );
            }
        }
        None => {}
    }
    let op = get_str(cx, m, path, "operator");
    if op.is_none() && !has(m, "operator") {
        cx.error(&join(path, "operator"), "missing operator");
    }
    let mut values = Vec::new();
    let values_given = has(m, "values");
    if let Some(list) = get_list(cx, m, path, "values") {
        for (i, v) in list.iter().enumerate() {
            let p = index(&join(path, "values"), i);
            if let Some(s) = as_str(cx, v, &p) {
                if let Some(e) = label_value_error(s) {
                    cx.error(&p, format!("invalid label value {s:?}: {e}", s = Q(s)));
                }
                values.push(s.to_string());
            }
        }
    }
    let key = key?.to_string();
    let op = op?;
    let vpath = join(path, "values");
    match op {
        "In" | "NotIn" => {
            if values.is_empty() {
                cx.error(&vpath, format!("operator {op} requires at least one value"));
                return None;
            }
            Some(if op == "In" {
                Requirement::In { key, values }
            } else {
                Requirement::NotIn { key, values }
            })
        }
        "Exists" | "DoesNotExist" => {
            if values_given && !values.is_empty() {
                cx.error(&vpath, format!("operator {op} takes no values"));
                return None;
            }
            Some(if op == "Exists" {
                Requirement::Exists { key }
            } else {
                Requirement::DoesNotExist { key }
            })
        }
        other => {
            cx.error(
                &join(path, "operator"),
                format!(
                    "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)",
                    other = Q(other)
                ),
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Addresses

/// A CIDR, read as Kubernetes' strict validation does (`address.rs`). Host
/// bits are cleared with a warning; a bare address is an error.
pub(crate) fn cidr(cx: &mut Cx, s: &str, path: &str) -> Option<IpNet> {
    let t = s.trim();
    match address::cidr(t) {
        Ok(Some(net)) => {
            let trunc = net.trunc();
            if trunc != net {
                cx.warn(
                    path,
                    format!("{t} has host bits set; it is read as {trunc}"),
                );
            }
            Some(trunc)
        }
        Ok(None) => {
            match address::ip(t) {
                Ok(ip) => {
                    let len = if ip.is_ipv4() { 32 } else { 128 };
                    cx.error(
                        path,
                        format!(
                            "{s:?} is an address, not a CIDR (write {ip}/{len} for a single address)",
                            s = Q(s)
                        ),
                    );
                }
                Err(bad) => cx.error(
                    path,
                    format!("{s:?} is not a valid CIDR{}", bad.reason(), s = Q(s)),
                ),
            }
            None
        }
        Err(bad) => {
            cx.error(
                path,
                format!("{s:?} is not a valid CIDR{}", bad.reason(), s = Q(s)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_kubernetes_syntax() {
        assert_eq!(label_key_error("app"), None);
        assert_eq!(label_key_error("app.kubernetes.io/name"), None);
        assert_eq!(label_key_error("A_b.c-D"), None);
        assert!(label_key_error("").is_some());
        assert!(label_key_error("/app").is_some());
        assert!(label_key_error("Example.com/app").is_some());
        assert!(label_key_error("a/b/c").is_some());
        assert!(label_key_error("-app").is_some());
        assert!(label_key_error(&"a".repeat(64)).is_some());
        assert_eq!(label_key_error(&"a".repeat(63)), None);
    }

    #[test]
    fn label_values_may_be_empty() {
        assert_eq!(label_value_error(""), None);
        assert_eq!(label_value_error("v1.2_3-x"), None);
        assert!(label_value_error("a b").is_some());
        assert!(label_value_error("x-").is_some());
    }

    #[test]
    fn port_names_are_iana_service_names() {
        assert_eq!(port_name_error("http"), None);
        assert_eq!(port_name_error("dns-tcp"), None);
        assert!(port_name_error("80").is_some());
        assert!(port_name_error("HTTP").is_some());
        assert!(port_name_error("a--b").is_some());
        assert!(port_name_error("-a").is_some());
        assert!(port_name_error("abcdefghijklmnop").is_some());
    }

    #[test]
    fn dns_names() {
        assert_eq!(dns1123_label_error("kube-system"), None);
        assert!(dns1123_label_error("a.b").is_some());
        assert_eq!(dns1123_subdomain_error("a.b-c"), None);
        assert!(dns1123_subdomain_error("a..b").is_some());
    }

    #[test]
    fn typos_get_suggestions() {
        assert_eq!(
            unknown_field("ingres", &["ingress", "egress"]),
            "unknown field \"ingres\" (did you mean \"ingress\"?)"
        );
        assert_eq!(
            unknown_field("podSelector", &["from", "ports"]),
            "unknown field \"podSelector\" (expected one of: from, ports)"
        );
    }
}
