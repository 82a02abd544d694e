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

    /// The whole matrix in memory: `ports × identities²` cells. Callers
    /// that print it row by row use [`Engine::matrix_rows`] instead.
    pub fn matrix(&self, ports: &[PortProto]) -> Matrix {
        let mut rows = self.matrix_rows(ports);
        let n = rows.identities.len();
        let mut cells: Vec<Vec<Cell>> = (0..ports.len())
            .map(|_| Vec::with_capacity(n * n))
            .collect();
        for row in rows.by_ref() {
            cells[row.port].extend(row.cells);
        }
        Matrix {
            ports: rows.ports,
            identities: rows.identities,
            cells,
        }
    }

    /// The matrix one source row at a time, ports outermost: what a writer
    /// that streams its output needs, holding one row (`identities` cells)
    /// instead of all of them.
    pub fn matrix_rows(&self, ports: &[PortProto]) -> MatrixRows<'_> {
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
        MatrixRows {
            engine: self,
            ports: ports.to_vec(),
            identities,
            reps,
            next: 0,
        }
    }
}

/// One source row of the matrix for one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixRow {
    /// Index into [`MatrixRows::ports`].
    pub port: usize,
    /// Index into [`MatrixRows::identities`].
    pub source: usize,
    /// One cell per destination, in the order of `identities`.
    pub cells: Vec<Cell>,
}

/// The rows of a matrix, computed when asked for: an iterator over every
/// (port, source) in order, and random access through [`MatrixRows::row`].
pub struct MatrixRows<'e> {
    engine: &'e Engine,
    pub ports: Vec<PortProto>,
    /// Identities in display order (namespace, then labels).
    pub identities: Vec<IdentityId>,
    reps: Vec<Endpoint>,
    /// The next (port × identities + source) the iterator yields.
    next: usize,
}

impl MatrixRows<'_> {
    /// The cells of source `source` (an index into `identities`) for
    /// `ports[port]`, computed now.
    pub fn row(&self, port: usize, source: usize) -> Vec<Cell> {
        let pp = self.ports[port];
        let s = self.reps[source];
        self.reps
            .iter()
            .map(|&d| match self.engine.flow(s, d, pp.protocol, pp.port) {
                Ok(f) if self.engine.allowed(&f) => Cell::Allowed,
                Ok(_) => Cell::Denied,
                Err(_) => Cell::NoFamily,
            })
            .collect()
    }

    /// How many rows the iterator yields in all.
    pub fn total(&self) -> usize {
        self.ports.len() * self.identities.len()
    }
}

impl Iterator for MatrixRows<'_> {
    type Item = MatrixRow;

    fn next(&mut self) -> Option<MatrixRow> {
        let n = self.identities.len();
        if n == 0 || self.next >= self.total() {
            return None;
        }
        let (port, source) = (self.next / n, self.next % n);
        self.next += 1;
        Some(MatrixRow {
            port,
            source,
            cells: self.row(port, source),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total().saturating_sub(self.next);
        (left, Some(left))
    }
}
