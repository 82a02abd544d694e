//! Lint: policies that are valid but probably not what their authors
//! meant. Every finding is decided on the engine's index (identities,
//! shared selector sets, address classes, plans) or by the verdict
//! function itself, never by a second reading of the API; `docs/lint.md`
//! defines each one.

mod admin;
mod atoms;
mod dns;
mod ports;
mod selection;
mod shadow;

use std::fmt;

use serde::Serialize;

use crate::Engine;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object a finding is about: kind, namespace (for namespaced kinds)
/// and name, as manifests spell them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `NetworkPolicy shop/web`, `AdminNetworkPolicy deny-imds`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable, kebab-case: one of [`CHECKS`].
    pub id: &'static str,
    pub severity: Severity,
    pub object: ObjectRef,
    /// Path in the object, as in `spec.ingress[0].from[1]`.
    pub field: String,
    /// One sentence naming what is wrong.
    pub message: String,
    /// One line saying what to change.
    pub fix: String,
}

/// A kind of finding, for catalogues (SARIF rules, documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub severity: Severity,
    pub summary: &'static str,
}

pub const POLICY_SELECTS_NOTHING: &str = "policy-selects-nothing";
pub const PEER_MATCHES_NOTHING: &str = "peer-matches-nothing";
pub const NAMED_PORT_UNDEFINED: &str = "named-port-undefined";
pub const RULE_SHADOWED: &str = "rule-shadowed";
pub const ALLOW_ALL_IN_DISGUISE: &str = "allow-all-in-disguise";
pub const IPBLOCK_CONTAINS_PODS: &str = "ipblock-contains-pods";
pub const COVERAGE_GAP: &str = "coverage-gap";
pub const DNS_BLOCKED: &str = "dns-blocked";
pub const PASS_RULE_NO_EFFECT: &str = "pass-rule-no-effect";
pub const ADMIN_PRIORITY_OVERLAP: &str = "admin-priority-overlap";

/// Every check, in documentation order.
pub const CHECKS: &[Check] = &[
    Check {
        id: POLICY_SELECTS_NOTHING,
        severity: Severity::Warning,
        summary:
            "A NetworkPolicy's podSelector, or an admin policy's subject, selects no endpoint.",
    },
    Check {
        id: PEER_MATCHES_NOTHING,
        severity: Severity::Warning,
        summary: "A rule's pod or namespace peer matches no endpoint.",
    },
    Check {
        id: NAMED_PORT_UNDEFINED,
        severity: Severity::Warning,
        summary: "A named port that no endpoint it would resolve on defines.",
    },
    Check {
        id: RULE_SHADOWED,
        severity: Severity::Info,
        summary: "A rule allows nothing that other rules do not already allow.",
    },
    Check {
        id: ALLOW_ALL_IN_DISGUISE,
        severity: Severity::Error,
        summary: "A peer that means every pod or every address, on a sensitive port or all ports.",
    },
    Check {
        id: IPBLOCK_CONTAINS_PODS,
        severity: Severity::Warning,
        summary: "An ipBlock contains endpoint addresses it does not except.",
    },
    Check {
        id: COVERAGE_GAP,
        severity: Severity::Info,
        summary: "Endpoints left unisolated in a namespace where others are isolated.",
    },
    Check {
        id: DNS_BLOCKED,
        severity: Severity::Error,
        summary: "Egress isolation that blocks DNS (UDP and TCP 53 of kube-system's DNS).",
    },
    Check {
        id: PASS_RULE_NO_EFFECT,
        severity: Severity::Warning,
        summary: "An admin Pass rule whose removal changes no verdict.",
    },
    Check {
        id: ADMIN_PRIORITY_OVERLAP,
        severity: Severity::Error,
        summary: "Two admin policies of one priority decide some flow differently.",
    },
];

/// The check with this id.
pub fn check(id: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.id == id)
}

fn severity_of(id: &str) -> Severity {
    check(id).map_or(Severity::Warning, |c| c.severity)
}

/// Builds findings with the severity of their check.
pub(crate) fn finding(
    id: &'static str,
    object: ObjectRef,
    field: String,
    message: String,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        id,
        severity: severity_of(id),
        object,
        field,
        message,
        fix: fix.into(),
    }
}

/// Every finding about the engine's cluster, sorted by object, field and
/// id.
pub fn lint(engine: &Engine) -> Vec<Finding> {
    let atoms = atoms::Atoms::build(engine);
    let mut out = Vec::new();
    selection::run(engine, &atoms, &mut out);
    shadow::run(engine, &atoms, &mut out);
    dns::run(engine, &atoms, &mut out);
    admin::run(engine, &atoms, &mut out);
    out.sort_by(|a, b| {
        (&a.object, &a.field, a.id, &a.message).cmp(&(&b.object, &b.field, b.id, &b.message))
    });
    out
}

/// How findings name a list of endpoints: the first few and a count.
pub(crate) fn some_names(mut names: Vec<String>, max: usize) -> String {
    names.sort();
    names.dedup();
    let n = names.len();
    if n <= max {
        return names.join(", ");
    }
    names.truncate(max);
    format!("{} and {} more", names.join(", "), n - max)
}

/// Field paths as the decoder names them.
pub(crate) mod path {
    use crate::Direction;

    pub fn dir(d: Direction) -> &'static str {
        d.as_str()
    }

    pub fn peers_key(d: Direction) -> &'static str {
        match d {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }

    pub fn rule(d: Direction, rule: usize) -> String {
        format!("spec.{}[{rule}]", dir(d))
    }

    pub fn peer(d: Direction, rule: usize, peer: usize) -> String {
        format!("spec.{}[{rule}].{}[{peer}]", dir(d), peers_key(d))
    }
}

#[cfg(test)]
mod tests;
