//! Partitions of ordered key spaces (addresses, ports) into the intervals
//! between rule edges.

use std::net::IpAddr;

use palisade_model::Protocol;

/// Sorted boundaries over an ordered key space; interval `i` covers
/// `[bounds[i], bounds[i + 1])` and has mask row `i`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partition {
    pub(crate) bounds: Vec<u128>,
    /// The same bounds as u32 when they all fit (IPv4 addresses, ports):
    /// half the compares' cost on the hot path.
    narrow: Option<Vec<u32>>,
}

impl Partition {
    pub(crate) fn new(mut bounds: Vec<u128>) -> Partition {
        bounds.push(0);
        bounds.sort_unstable();
        bounds.dedup();
        let narrow = bounds
            .iter()
            .map(|&b| u32::try_from(b).ok())
            .collect::<Option<Vec<u32>>>();
        Partition { bounds, narrow }
    }

    /// For a partition of the port space: per port, `width` times its
    /// interval (the offset of its mask row).
    pub(super) fn port_table(&self, width: usize) -> Box<[u32]> {
        // Bounds are sorted and start at 0: interval `i` runs up to the
        // next bound.
        let b = &self.bounds;
        let mut row = Vec::with_capacity(1 << 16);
        for (i, &start) in b.iter().enumerate() {
            let end = b.get(i + 1).map_or(1 << 16, |&e| e.min(1 << 16));
            row.extend((start..end).map(|_| (i * width) as u32));
        }
        row.into_boxed_slice()
    }

    #[inline]
    pub(crate) fn find(&self, x: u128) -> usize {
        match (&self.narrow, u32::try_from(x)) {
            (Some(n), Ok(x)) => n.partition_point(|&b| b <= x) - 1,
            _ => self.bounds.partition_point(|&b| b <= x) - 1,
        }
    }
}

pub(crate) fn key(ip: &IpAddr) -> (usize, u128) {
    match ip {
        IpAddr::V4(a) => (0, u32::from(*a) as u128),
        IpAddr::V6(a) => (1, u128::from(*a)),
    }
}

pub(crate) fn proto_index(p: Protocol) -> usize {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

pub(crate) fn net_bounds(n: &ipnet::IpNet, out: &mut [Vec<u128>; 2]) {
    let (fam, start) = key(&n.network());
    let (_, end) = key(&n.broadcast());
    out[fam].push(start);
    if end
        < if fam == 0 {
            u32::MAX as u128
        } else {
            u128::MAX
        }
    {
        out[fam].push(end + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_table_agrees_with_the_partition() {
        for bounds in [
            vec![],
            vec![80, 81],
            vec![1, 1000, 65535],
            vec![0, 443, 444, 65536],
        ] {
            let part = Partition::new(bounds);
            let row = part.port_table(3);
            assert_eq!(row.len(), 1 << 16);
            for p in 0..=u16::MAX {
                assert_eq!(
                    row[p as usize] as usize,
                    3 * part.find(p as u128),
                    "port {p}"
                );
            }
        }
    }
}
