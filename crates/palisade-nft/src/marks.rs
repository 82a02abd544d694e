//! The packet mark of a new connection, kept for whoever reads it after
//! this table.
//!
//! The policy chains use `meta mark` (a peer's identity) and `ct mark` (the
//! local pod's group) as scratch registers on a new connection's first
//! packet: nftables has no other register that lives from one rule to the
//! next. Left as they are, those values would reach the hooks after ours.
//! kube-proxy sets bit 0x4000 of the packet mark in nat prerouting (before
//! `forward`) to ask for masquerading, and reads it in nat postrouting
//! (after): cleared, a Service's hairpin or external traffic would not be
//! masqueraded; set by chance in an identity number, a pod-to-pod
//! connection would be, and its destination would see the node instead of
//! the pod.
//!
//! So the checks are entered through one chain per value of the kept bits,
//! chosen before any scratch is written: it jumps to the check and, if the
//! check comes back (allowed; a denial drops), writes that value back to
//! the mark and 0 to `ct mark`. Established packets never meet the checks,
//! so their marks are untouched. nftables cannot OR a register into the
//! mark (only constants), hence a chain per value rather than one restore.

use super::*;

/// The bits of the packet mark an allowed new connection leaves with as it
/// came: kube-proxy's masquerade bit. Every other bit leaves at 0.
pub const KEPT_MARK: u32 = 0x4000;

/// Every value the kept bits can take, 0 first.
fn kept_values() -> Vec<u32> {
    let bits: Vec<u32> = (0..32)
        .map(|b| 1 << b)
        .filter(|b| KEPT_MARK & b != 0)
        .collect();
    (0..1u32 << bits.len())
        .map(|subset| {
            bits.iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .fold(0, |v, (_, b)| v | b)
        })
        .collect()
}

/// Rules that `goto` chain `{entry}_mark_{value}` by the kept bits of the
/// packet's mark (one always matches), and those chains: each jumps to
/// `target` and, when it returns, restores the kept bits and clears the
/// rest of both marks.
pub(crate) fn keeping_marks(entry: &str, target: &str) -> (Vec<Rule>, Vec<Chain>) {
    let mut dispatch = Vec::new();
    let mut chains = Vec::new();
    for v in kept_values() {
        let name = format!("{entry}_mark_{v:x}");
        dispatch.push(rule(vec![
            Stmt::Match {
                left: Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), KEPT_MARK),
                op: Op::Eq,
                right: Expr::Int(v),
            },
            Stmt::Goto(name.clone()),
        ]));
        chains.push(Chain {
            name,
            hook: None,
            rules: vec![
                rule(vec![Stmt::Jump(target.into())]),
                commented(
                    vec![
                        Stmt::Assign {
                            key: Expr::Meta(MetaKey::Mark),
                            value: Expr::Int(v),
                        },
                        Stmt::Assign {
                            key: Expr::CtMark,
                            value: Expr::Int(0),
                        },
                    ],
                    "allowed: the mark as it came",
                ),
            ],
        });
    }
    (dispatch, chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_the_kept_bits_has_a_chain() {
        let values = kept_values();
        assert_eq!(values.len(), 1 << KEPT_MARK.count_ones());
        assert!(values.iter().all(|v| v & !KEPT_MARK == 0));
        let distinct: BTreeSet<u32> = values.iter().copied().collect();
        assert_eq!(distinct.len(), values.len());
        let (dispatch, chains) = keeping_marks("e", "t");
        assert_eq!(dispatch.len(), values.len());
        assert_eq!(chains.len(), values.len());
    }
}
