//! A ruleset's *structure*: everything but the elements (chains, and each
//! set's name, key and data types, flags and comment). Two rulesets of one
//! structure differ by element changes only; the hash of the structure is
//! recorded in the kernel's table so that an agent starting against it can
//! tell (see [`crate::syntax::replace_text`]).

use std::hash::Hasher;

use crate::encode::{Encode, Encoder};
use crate::ir::{Chain, Expr, Hook, MetaKey, Op, Rule, Ruleset, Set, Stmt, Type};
use crate::numbering::Fnv;

/// The hash of `rs`'s structure, as 16 hex digits: FNV-1a over the
/// explicit encoding of its sets' definitions and its chains, in order.
pub fn structure_hash(rs: &Ruleset) -> String {
    let mut e = Encoder::new();
    e.len(rs.sets.len());
    for s in &rs.sets {
        SetShape(s).encode(&mut e);
    }
    rs.chains.encode(&mut e);
    let mut h = Fnv::new();
    h.write(&e.into_bytes());
    format!("{:016x}", h.finish())
}

/// Whether two rulesets differ in elements only.
pub fn same_structure(a: &Ruleset, b: &Ruleset) -> bool {
    a.chains == b.chains
        && a.sets.len() == b.sets.len()
        && a.sets.iter().zip(&b.sets).all(|(x, y)| {
            x.name == y.name
                && x.key == y.key
                && x.data == y.data
                && x.interval == y.interval
                && x.comment == y.comment
        })
}

/// A set without its elements.
struct SetShape<'a>(&'a Set);

impl Encode for SetShape<'_> {
    fn encode(&self, e: &mut Encoder) {
        let s = self.0;
        e.str(&s.name);
        s.key.encode(e);
        s.data.encode(e);
        e.bool(s.interval);
        e.str(&s.comment);
    }
}

/// The tag of each variant is its position in the declaration.
impl Encode for Type {
    fn encode(&self, e: &mut Encoder) {
        e.u8(match self {
            Type::Ifname => 0,
            Type::Ether => 1,
            Type::Ipv4 => 2,
            Type::Ipv6 => 3,
            Type::Mark => 4,
            Type::Proto => 5,
            Type::Port => 6,
            Type::Verdict => 7,
            Type::NdTarget => 8,
        });
    }
}

impl Encode for MetaKey {
    fn encode(&self, e: &mut Encoder) {
        e.u8(match self {
            MetaKey::Iifname => 0,
            MetaKey::Oifname => 1,
            MetaKey::Nfproto => 2,
            MetaKey::L4proto => 3,
            MetaKey::Mark => 4,
        });
    }
}

impl Encode for Op {
    fn encode(&self, e: &mut Encoder) {
        e.u8(match self {
            Op::Eq => 0,
            Op::Ne => 1,
            Op::In => 2,
            Op::NotIn => 3,
            Op::Lt => 4,
        });
    }
}

impl Encode for Expr {
    fn encode(&self, e: &mut Encoder) {
        match self {
            Expr::Meta(k) => {
                e.u8(0);
                k.encode(e);
            }
            Expr::CtState => e.u8(1),
            Expr::CtMark => e.u8(2),
            Expr::Payload { protocol, field } => {
                e.u8(3);
                e.str(protocol);
                e.str(field);
            }
            Expr::Concat(es) => {
                e.u8(4);
                es.encode(e);
            }
            Expr::SetRef(n) => {
                e.u8(5);
                e.str(n);
            }
            Expr::Map { key, map } => {
                e.u8(6);
                key.encode(e);
                e.str(map);
            }
            Expr::Int(i) => {
                e.u8(7);
                e.u32(*i);
            }
            Expr::Symbol(s) => {
                e.u8(8);
                e.str(s);
            }
            Expr::Flags(f) => {
                e.u8(9);
                f.encode(e);
            }
            Expr::Prefix(a, l) => {
                e.u8(10);
                e.str(a);
                e.u8(*l);
            }
            Expr::AnonSet(v) => {
                e.u8(11);
                v.encode(e);
            }
            Expr::CtStatus => e.u8(12),
            Expr::Random(n) => {
                e.u8(13);
                e.u32(*n);
            }
            Expr::Raw { base, offset, len } => {
                e.u8(15);
                e.str(base);
                e.u32(*offset);
                e.u32(*len);
            }
            Expr::Masked(x, m) => {
                e.u8(14);
                x.encode(e);
                m.encode(e);
            }
            Expr::And(x, m) => {
                e.u8(16);
                x.encode(e);
                e.u32(*m);
            }
        }
    }
}

impl Encode for Stmt {
    fn encode(&self, e: &mut Encoder) {
        match self {
            Stmt::Match { left, op, right } => {
                e.u8(0);
                left.encode(e);
                op.encode(e);
                right.encode(e);
            }
            Stmt::Assign { key, value } => {
                e.u8(1);
                key.encode(e);
                value.encode(e);
            }
            Stmt::Accept => e.u8(2),
            Stmt::Drop => e.u8(3),
            Stmt::Return => e.u8(4),
            Stmt::Jump(c) => {
                e.u8(5);
                e.str(c);
            }
            Stmt::Goto(c) => {
                e.u8(6);
                e.str(c);
            }
            Stmt::Vmap { key, map } => {
                e.u8(7);
                key.encode(e);
                e.str(map);
            }
            Stmt::Counter => e.u8(9),
            Stmt::Log { prefix, group } => {
                e.u8(8);
                e.str(prefix);
                e.u32(u32::from(*group));
            }
        }
    }
}

impl Encode for Rule {
    fn encode(&self, e: &mut Encoder) {
        self.stmts.encode(e);
        self.comment.encode(e);
    }
}

impl Encode for Hook {
    fn encode(&self, e: &mut Encoder) {
        e.str(self.hook);
        e.u32(self.priority as u32);
    }
}

impl Encode for Chain {
    fn encode(&self, e: &mut Encoder) {
        e.str(&self.name);
        self.hook.encode(e);
        self.rules.encode(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Element, Value};

    fn table() -> Ruleset {
        Ruleset {
            sets: vec![Set {
                name: "identity4".into(),
                key: vec![Type::Ipv4],
                data: Some(Type::Mark),
                interval: false,
                comment: String::new(),
                elements: vec![Element {
                    key: vec![Value::Ipv4("10.0.0.1".parse().unwrap())],
                    data: Some(Value::Mark(7)),
                }],
            }],
            chains: vec![Chain {
                name: "forward".into(),
                hook: Some(Hook {
                    hook: "forward",
                    priority: -5,
                }),
                rules: vec![Rule {
                    stmts: vec![
                        Stmt::is(Expr::CtState, Expr::Flags(vec!["established", "related"])),
                        Stmt::Accept,
                    ],
                    comment: Some("conntrack".into()),
                }],
            }],
        }
    }

    /// The hash the kernel's table records: fixed structure, fixed value
    /// (a change of the encoding must be deliberate, see
    /// [`crate::encode::FORMAT_VERSION`]). Elements do not count.
    #[test]
    fn structure_hash_is_golden() {
        let mut rs = table();
        assert_eq!(structure_hash(&rs), "9d68002a999121ff");
        rs.sets[0].elements.clear();
        assert_eq!(structure_hash(&rs), "9d68002a999121ff");
        let mut other = rs.clone();
        other.sets[0].interval = true;
        assert_ne!(structure_hash(&other), structure_hash(&rs));
        assert!(!same_structure(&other, &rs));
        assert!(same_structure(&table(), &rs));
    }
}
