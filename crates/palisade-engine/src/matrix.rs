//! The reachability matrix, computed over identities: every pod of an
//! identity has the same row and column, so a 10,000-pod cluster costs what
//! its few hundred identities cost.

use std::fmt;

use palisade_model::Protocol;

use crate::{Endpoint, Engine, IdentityId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortProto {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Allowed,
    Denied,
    /// The two endpoints share no address family: no flow is possible.
    NoFamily,
}

/// Reachability between identities for a list of ports. Host-network pods
/// are left out: their traffic is node traffic, not a pod's.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub ports: Vec<PortProto>,
    /// Identities in display order (namespace, then labels).
    pub identities: Vec<IdentityId>,
    /// `cells[port][row * n + col]`, rows sources and columns destinations,
    /// both indexing `identities`.
    pub cells: Vec<Vec<Cell>>,
}

impl Matrix {
    pub fn cell(&self, port: usize, row: usize, col: usize) -> Cell {
        self.cells[port][row * self.identities.len() + col]
    }
}

impl Engine {
    /// The numeric container ports that endpoint pods declare, or 80/TCP
    /// when none does: what a matrix probes by default.
    pub fn default_ports(&self) -> Vec<PortProto> {
        let mut ports: Vec<PortProto> = self
            .index()
            .identities()
            .iter()
            .filter(|i| !i.host_network)
            .flat_map(|i| i.ports.iter())
            .map(|c| PortProto {
                port: c.port,
                protocol: c.protocol,
            })
            .collect();
        ports.sort();
        ports.dedup();
        if ports.is_empty() {
            ports.push(PortProto {
                port: 80,
                protocol: Protocol::Tcp,
            });
        }
        ports
    }

    pub fn matrix(&self, ports: &[PortProto]) -> Matrix {
        let idx = self.index();
        let mut identities: Vec<IdentityId> = (0..idx.identities().len())
            .map(IdentityId::new)
            .filter(|&i| !idx.identity(i).host_network)
            .collect();
        identities.sort_by(|&a, &b| {
            let (a, b) = (idx.identity(a), idx.identity(b));
            (&a.namespace, &a.labels, a.members[0]).cmp(&(&b.namespace, &b.labels, b.members[0]))
        });
        let reps: Vec<Endpoint> = identities
            .iter()
            .map(|&i| Endpoint::Pod(idx.identity(i).members[0].index()))
            .collect();
        let n = reps.len();
        let cells = ports
            .iter()
            .map(|pp| {
                let mut cells = Vec::with_capacity(n * n);
                for &s in &reps {
                    for &d in &reps {
                        cells.push(match self.flow(s, d, pp.protocol, pp.port) {
                            Ok(f) if self.allowed(&f) => Cell::Allowed,
                            Ok(_) => Cell::Denied,
                            Err(_) => Cell::NoFamily,
                        });
                    }
                }
                cells
            })
            .collect();
        Matrix {
            ports: ports.to_vec(),
            identities,
            cells,
        }
    }
}
