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
/// came; every other bit leaves at 0. At most [`KeptMark::MAX_BITS`] bits:
/// each doubles the chains that restore them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeptMark(u32);

impl KeptMark {
    pub const MAX_BITS: u32 = 4;
    /// kube-proxy's masquerade bit at its default place
    /// (`--iptables-masquerade-bit 14`).
    pub const KUBE_PROXY: KeptMark = KeptMark(1 << 14);
    /// Nothing kept: both marks leave at 0.
    pub const NONE: KeptMark = KeptMark(0);

    pub fn new(mask: u32) -> Result<KeptMark, CompileError> {
        if mask.count_ones() > Self::MAX_BITS {
            return Err(CompileError::KeptMark(format!(
                "0x{mask:x} has {} bits, at most {} can be kept",
                mask.count_ones(),
                Self::MAX_BITS
            )));
        }
        Ok(KeptMark(mask))
    }

    pub fn mask(self) -> u32 {
        self.0
    }

    /// Every value the kept bits can take, 0 first: the submasks of the
    /// mask in increasing order (adding 1 to `v` with the other bits set
    /// carries into the next kept bit).
    fn values(self) -> Vec<u32> {
        let mut values = vec![0];
        let mut v = 0u32;
        while v != self.0 {
            v = (v | !self.0).wrapping_add(1) & self.0;
            values.push(v);
        }
        values
    }
}

impl Default for KeptMark {
    fn default() -> KeptMark {
        KeptMark::KUBE_PROXY
    }
}

impl std::fmt::Display for KeptMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

/// A mask as `0x4000` or `16384`.
impl std::str::FromStr for KeptMark {
    type Err = CompileError;
    fn from_str(s: &str) -> Result<KeptMark, CompileError> {
        let t = s.trim();
        let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => t.parse(),
        };
        let mask = parsed.map_err(|_| {
            CompileError::KeptMark(format!("{s:?} is not a 32-bit mask (0x4000 or 16384)"))
        })?;
        KeptMark::new(mask)
    }
}

/// Rules that `goto` chain `{entry}_mark_{value}` by the kept bits of the
/// packet's mark (one always matches), and those chains: each jumps to
/// `target` and, when it returns, restores the kept bits and clears the
/// rest of both marks.
pub(crate) fn keeping_marks(entry: &str, target: &str, kept: KeptMark) -> (Vec<Rule>, Vec<Chain>) {
    let mut dispatch = Vec::new();
    let mut chains = Vec::new();
    for v in kept.values() {
        let name = format!("{entry}_mark_{v:x}");
        dispatch.push(rule(vec![
            Stmt::Match {
                left: Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), kept.0),
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
        for mask in [0, 0x4000, 0xc000, 0x8000_0001, 0xf0] {
            let kept = KeptMark::new(mask).unwrap();
            let values = kept.values();
            assert_eq!(values.len(), 1 << mask.count_ones(), "0x{mask:x}");
            assert!(values.iter().all(|v| v & !mask == 0));
            let distinct: BTreeSet<u32> = values.iter().copied().collect();
            assert_eq!(distinct.len(), values.len());
            let (dispatch, chains) = keeping_marks("e", "t", kept);
            assert_eq!((dispatch.len(), chains.len()), (values.len(), values.len()));
        }
    }

    #[test]
    fn masks_are_read_and_bounded() {
        assert_eq!("0x4000".parse::<KeptMark>().unwrap(), KeptMark::KUBE_PROXY);
        assert_eq!("16384".parse::<KeptMark>().unwrap(), KeptMark::KUBE_PROXY);
        assert_eq!("0".parse::<KeptMark>().unwrap(), KeptMark::NONE);
        assert_eq!(KeptMark::default().to_string(), "0x4000");
        let err = |s: &str| s.parse::<KeptMark>().unwrap_err().to_string();
        assert_eq!(
            err("0xff00"),
            "kept mark bits: 0xff00 has 8 bits, at most 4 can be kept"
        );
        assert_eq!(
            err("mark"),
            "kept mark bits: \"mark\" is not a 32-bit mask (0x4000 or 16384)"
        );
        assert!(err("0x1ffffffff").contains("not a 32-bit mask"));
    }
}
