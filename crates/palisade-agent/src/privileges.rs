//! The agent's privileges after start: only the capabilities it needs,
//! in every set, and no way to gain more.
//!
//! What the agent does with privilege, and what it takes:
//!
//! | work | capability |
//! |---|---|
//! | `nft` (a child) writes the node's tables | `CAP_NET_ADMIN` |
//! | NFLOG group binding (the flow log) | `CAP_NET_ADMIN` |
//! | deleting stale neighbour entries (bridged pods) | `CAP_NET_ADMIN` |
//! | reading links, routes, neighbours; their multicast groups | none |
//! | `--netns`: entering the namespace (each netlink read, `ip netns exec`) | `CAP_SYS_ADMIN` |
//! | the HTTP port (bound before the drop) | none after the bind |
//! | files, inotify, etcd, the Kubernetes API | none (file permissions as they are) |
//!
//! `nft` gets its capability the way every program a root process runs
//! does: as uid 0 the kernel grants a new program the bounding set,
//! limited to the parent's permitted set under `no_new_privs`. So the kept
//! capabilities stay in the bounding and permitted sets; inheritable and
//! ambient are emptied, and nothing the agent runs can get more.
//!
//! Capabilities belong to each thread, so [`restrict`] must run before the
//! process starts its first thread (it refuses otherwise): a thread
//! started earlier would keep everything.

use caps::{CapSet, Capability, CapsHashSet};

use crate::Error;

/// The capabilities the agent needs: `CAP_NET_ADMIN`, and `CAP_SYS_ADMIN`
/// too when it enforces in another network namespace (`--netns`), which
/// it enters again for every read of the node's links.
pub fn needed(netns: bool) -> CapsHashSet {
    let mut keep = CapsHashSet::from([Capability::CAP_NET_ADMIN]);
    if netns {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    keep
}

/// What [`restrict`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    /// Kept in the effective and permitted sets (all three lists in the
    /// kernel's order).
    pub kept: Vec<Capability>,
    /// Needed but not held at start: the work that needs them fails with
    /// the kernel's own error (e.g. `--dry-run` as an ordinary user).
    pub missing: Vec<Capability>,
    /// Left in the bounding set beyond `kept` because the process could
    /// not drop them (no `CAP_SETPCAP`); `no_new_privs` still keeps every
    /// program the agent runs from gaining them.
    pub bounding_left: Vec<Capability>,
}

impl Restricted {
    /// One line for the log.
    pub fn summary(&self) -> String {
        let names = |s: &[Capability]| {
            if s.is_empty() {
                "none".to_string()
            } else {
                s.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let mut line = format!("capabilities kept: {}", names(&self.kept));
        if !self.missing.is_empty() {
            line.push_str(&format!("; needed but not held: {}", names(&self.missing)));
        }
        if !self.bounding_left.is_empty() {
            line.push_str(&format!(
                "; left in the bounding set without CAP_SETPCAP: {}",
                names(&self.bounding_left)
            ));
        }
        line
    }
}

fn failed(doing: &str) -> impl FnOnce(caps::errors::CapsError) -> Error + '_ {
    move |e| Error::Privileges(format!("cannot {doing}: {e}"))
}

fn read(set: CapSet) -> Result<CapsHashSet, Error> {
    caps::read(None, set).map_err(failed("read the capability sets"))
}

/// `set` in the kernel's order.
pub fn sorted(set: &CapsHashSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = set.iter().copied().collect();
    v.sort_by_key(|c| c.index());
    v
}

/// Threads of this process (`/proc/self/task`).
fn threads() -> Result<usize, Error> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .map_err(|e| Error::Privileges(format!("cannot count this process's threads: {e}")))
}

/// Keeps `keep` (as far as held) in the effective, permitted and bounding
/// sets, empties the inheritable and ambient sets and sets
/// `no_new_privs`. Reads every set back and fails unless it is as asked.
pub fn restrict(keep: &CapsHashSet) -> Result<Restricted, Error> {
    let n = threads()?;
    if n != 1 {
        return Err(Error::Privileges(format!(
            "capabilities must be dropped before the first thread starts ({n} threads run)"
        )));
    }
    let permitted = read(CapSet::Permitted)?;
    let kept: CapsHashSet = keep.intersection(&permitted).copied().collect();
    let missing: CapsHashSet = keep.difference(&permitted).copied().collect();

    let can_narrow = permitted.contains(&Capability::CAP_SETPCAP);
    if can_narrow {
        caps::raise(None, CapSet::Effective, Capability::CAP_SETPCAP)
            .map_err(failed("raise CAP_SETPCAP"))?;
        for cap in read(CapSet::Bounding)?.difference(keep) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(failed("drop from the bounding set"))?;
        }
    }
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(failed("clear the ambient set"))?;
    }
    let set = |which: CapSet, to: &CapsHashSet, doing: &'static str| {
        caps::set(None, which, to).map_err(failed(doing))
    };
    // Effective first: it must stay within the permitted set at every step.
    set(CapSet::Effective, &kept, "set the effective set")?;
    set(
        CapSet::Inheritable,
        &CapsHashSet::new(),
        "empty the inheritable set",
    )?;
    set(CapSet::Permitted, &kept, "set the permitted set")?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Privileges(format!(
            "cannot set no_new_privs: {}",
            std::io::Error::last_os_error()
        )));
    }

    let bounding_left: CapsHashSet = read(CapSet::Bounding)?.difference(keep).copied().collect();
    let check = |which: CapSet, want: &CapsHashSet| -> Result<(), Error> {
        let got = read(which)?;
        if &got != want {
            return Err(Error::Privileges(format!(
                "the {which:?} set is {:?} after the drop, not {:?}",
                sorted(&got),
                sorted(want)
            )));
        }
        Ok(())
    };
    check(CapSet::Effective, &kept)?;
    check(CapSet::Permitted, &kept)?;
    check(CapSet::Inheritable, &CapsHashSet::new())?;
    if caps::runtime::ambient_set_supported().is_ok() {
        check(CapSet::Ambient, &CapsHashSet::new())?;
    }
    if can_narrow && !bounding_left.is_empty() {
        return Err(Error::Privileges(format!(
            "the bounding set still holds {:?} after the drop",
            sorted(&bounding_left)
        )));
    }
    Ok(Restricted {
        kept: sorted(&kept),
        missing: sorted(&missing),
        bounding_left: sorted(&bounding_left),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_netns_mode_alone_adds_sys_admin() {
        assert_eq!(sorted(&needed(false)), [Capability::CAP_NET_ADMIN]);
        assert_eq!(
            sorted(&needed(true)),
            [Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN]
        );
    }

    #[test]
    fn a_process_with_threads_is_refused() {
        // The test harness runs this on a thread of its own.
        let e = restrict(&needed(false)).unwrap_err().to_string();
        assert!(
            e.starts_with("capabilities must be dropped before the first thread starts ("),
            "{e}"
        );
    }

    #[test]
    fn the_summary_names_what_was_kept_and_what_was_not() {
        let r = Restricted {
            kept: vec![Capability::CAP_NET_ADMIN],
            missing: vec![Capability::CAP_SYS_ADMIN],
            bounding_left: vec![Capability::CAP_CHOWN],
        };
        assert_eq!(
            r.summary(),
            "capabilities kept: CAP_NET_ADMIN; needed but not held: CAP_SYS_ADMIN; \
             left in the bounding set without CAP_SETPCAP: CAP_CHOWN"
        );
    }
}
