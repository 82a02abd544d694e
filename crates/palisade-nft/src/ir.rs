//! The ruleset IR: one table of typed sets, maps and chains. Its nft
//! syntax (text and JSON, both ways) is in [`crate::syntax`].

use std::net::{Ipv4Addr, Ipv6Addr};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "palisade";
/// The family of the table that checks bridged pods' frames
/// ([`crate::compile_bridge`]); same table name.
pub const BRIDGE_FAMILY: &str = "bridge";

/// The data type of one field of a set key (or of a map's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Ifname,
    Ether,
    Ipv4,
    Ipv6,
    Mark,
    Proto,
    Port,
    /// The data of a verdict map.
    Verdict,
    /// The target address of a neighbour advertisement, as the raw 128
    /// bits after the ICMPv6 header (`@th,64,128`: this nft has no
    /// expression of its own for it).
    NdTarget,
}

/// One field of a set element: a single value or an inclusive range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Ifname(String),
    Ether([u8; 6]),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Ipv4Range(Ipv4Addr, Ipv4Addr),
    Ipv6Range(Ipv6Addr, Ipv6Addr),
    Mark(u32),
    /// An IANA protocol number (6, 17, 132).
    Proto(u8),
    Port(u16),
    PortRange(u16, u16),
    /// The data of a verdict map element.
    Verdict(Verdict),
    /// An address as [`Type::NdTarget`] holds it.
    NdTarget(Ipv6Addr),
}

/// The verdicts a verdict map element can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Leave the current check: this direction is allowed.
    Return,
    /// `goto {dir}_denied`: the direction's one place that drops, so that
    /// an admin Deny is logged like any other denial.
    Deny(crate::Dir),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Vec<Value>,
    /// For maps: the value the key maps to.
    pub data: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: Vec<Type>,
    /// `Some` for a map.
    pub data: Option<Type>,
    /// Interval set (ranges in some field).
    pub interval: bool,
    pub comment: String,
    pub elements: Vec<Element>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    Iifname,
    Oifname,
    Nfproto,
    L4proto,
    Mark,
}

/// The expressions the compiler uses; a deliberately small subset of nft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Meta(MetaKey),
    CtState,
    CtMark,
    /// `ip saddr`, `ip6 daddr`, `th dport`...
    Payload {
        protocol: &'static str,
        field: &'static str,
    },
    Concat(Vec<Expr>),
    /// `@name`
    SetRef(String),
    /// `KEY map @name`
    Map {
        key: Box<Expr>,
        map: String,
    },
    Int(u32),
    /// A symbolic constant: `ipv4`, `ipv6`.
    Symbol(&'static str),
    /// `established,related`
    Flags(Vec<&'static str>),
    Prefix(String, u8),
    /// An anonymous set of symbols: `{ tcp, udp, sctp }`.
    AnonSet(Vec<&'static str>),
    /// `ct status`.
    CtStatus,
    /// `numgen random mod N`: uniform in `0..N`.
    Random(u32),
    /// `@base,offset,len`: raw header bits.
    Raw {
        base: &'static str,
        offset: u32,
        len: u32,
    },
    /// `EXPR & (a|b|c)`: the bits of `EXPR` among the named flags.
    Masked(Box<Expr>, Vec<&'static str>),
    /// `EXPR & MASK`: compared with `==`.
    And(Box<Expr>, u32),
}

impl Expr {
    pub fn payload(protocol: &'static str, field: &'static str) -> Expr {
        Expr::Payload { protocol, field }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    /// Flag test (`ct state established,related`).
    In,
    /// Negated flag test (`ct status & confirmed == 0`).
    NotIn,
    Lt,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    Match {
        left: Expr,
        op: Op,
        right: Expr,
    },
    /// `KEY set VALUE` (`ct mark set ...`, `meta mark set ...`).
    Assign {
        key: Expr,
        value: Expr,
    },
    Accept,
    Drop,
    Return,
    Jump(String),
    /// Continue in another chain without coming back: its `return` returns
    /// from the chain that made the `goto`.
    Goto(String),
    /// `KEY vmap @name`: the verdict of the matching element, if any.
    Vmap {
        key: Expr,
        map: String,
    },
    /// `counter`: packets and bytes that reached it.
    Counter,
    /// `log prefix "..." group N`: a copy of the packet to the NFLOG group.
    Log {
        prefix: String,
        group: u16,
    },
}

impl Stmt {
    pub fn is(left: Expr, right: Expr) -> Stmt {
        Stmt::Match {
            left,
            op: Op::Eq,
            right,
        }
    }
    pub fn is_not(left: Expr, right: Expr) -> Stmt {
        Stmt::Match {
            left,
            op: Op::Ne,
            right,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `forward`, `input`.
    pub hook: &'static str,
    pub priority: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// Base chains (type filter, policy accept) have a hook.
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// The whole program: one `inet palisade` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Ruleset {
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}
