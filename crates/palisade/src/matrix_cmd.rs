//! `palisade matrix`: the reachability matrix, written row by row. The
//! engine computes each row when it is written, so memory is the axis and
//! the rows still to be repeated (one row when every row of the axis is a
//! different identity, as with `--by workload`), never the whole matrix or
//! a JSON value of it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use palisade_engine::matrix::Cell;
use palisade_engine::{MatrixRows, PortProto};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::output::{axis, mark, Axis};
use crate::{input, progress, MatrixFormat};

pub fn matrix(
    files: &[PathBuf],
    ports: Vec<PortProto>,
    format: MatrixFormat,
    by_workload: bool,
) -> Result<ExitCode> {
    let engine = input::engine(files)?;
    let ports = if ports.is_empty() {
        engine.default_ports()
    } else {
        ports
    };
    let rows = engine.matrix_rows(&ports);
    let ax = axis(&engine, &rows, by_workload);
    let bar = progress::bar("matrix rows", (ax.names.len() * ports.len()) as u64);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut src = RowSource::new(&rows, &ax, &bar);
    match format {
        MatrixFormat::Table => write_table(&mut out, &mut src, by_workload)?,
        MatrixFormat::Csv => write_csv(&mut out, &mut src)?,
        MatrixFormat::Json => {
            let doc = JsonMatrix {
                by_workload,
                src: RefCell::new(src),
            };
            serde_json::to_writer(&mut out, &doc)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    bar.finish();
    Ok(ExitCode::SUCCESS)
}

/// Hands out the cells behind each printed row. A printed row stands for
/// one or more identity rows (a workload's pods may fall in several); an
/// identity row that later printed rows repeat (pods of one identity) is
/// kept until its last use, then dropped; with distinct identities per
/// printed row nothing is kept.
pub struct RowSource<'a, 'e> {
    rows: &'a MatrixRows<'e>,
    pub ax: &'a Axis,
    bar: &'a progress::Progress,
    /// For each identity row, the last printed row that shows it.
    last_use: Vec<usize>,
    kept: HashMap<usize, Vec<Cell>>,
    kept_port: usize,
}

impl<'a, 'e> RowSource<'a, 'e> {
    pub fn new(rows: &'a MatrixRows<'e>, ax: &'a Axis, bar: &'a progress::Progress) -> Self {
        let mut last_use = vec![0; rows.identities.len()];
        for (printed, id_rows) in ax.rows.iter().enumerate() {
            for &id_row in id_rows {
                last_use[id_row] = printed;
            }
        }
        RowSource {
            rows,
            ax,
            bar,
            last_use,
            kept: HashMap::new(),
            kept_port: 0,
        }
    }

    pub fn ports(&self) -> &[PortProto] {
        &self.rows.ports
    }

    /// Calls `f` with the cells of printed row `printed` for port `port`,
    /// one per printed column: `None` where the pods behind the row and
    /// the column do not all get the same answer.
    pub fn with_row<R>(
        &mut self,
        port: usize,
        printed: usize,
        f: impl FnOnce(&mut dyn Iterator<Item = Option<Cell>>) -> R,
    ) -> R {
        if port != self.kept_port {
            self.kept.clear();
            self.kept_port = port;
        }
        let id_rows = &self.ax.rows[printed];
        let cells: Vec<Vec<Cell>> = id_rows
            .iter()
            .map(|&r| {
                self.kept
                    .remove(&r)
                    .unwrap_or_else(|| self.rows.row(port, r))
            })
            .collect();
        let mut columns = self.ax.rows.iter().map(|cols| {
            let mut all = cells
                .iter()
                .flat_map(|row| cols.iter().map(move |&c| row[c]));
            let first = all.next()?;
            all.all(|c| c == first).then_some(first)
        });
        let r = f(&mut columns);
        for (&id_row, row) in id_rows.iter().zip(cells) {
            if printed < self.last_use[id_row] {
                self.kept.insert(id_row, row);
            }
        }
        self.bar.inc(1);
        r
    }
}

fn write_table(out: &mut impl Write, src: &mut RowSource, by_workload: bool) -> Result<()> {
    let ax = src.ax;
    let w = ax.names.iter().map(|n| n.len()).max().unwrap_or(1).max(1);
    for pi in 0..src.ports().len() {
        if pi > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "reachability {} (rows: from, columns: to; . allowed, X denied, - no common IP family{})",
            src.ports()[pi],
            if by_workload {
                ", ~ not the same for all the workload's pods"
            } else {
                ""
            }
        )?;
        write!(out, "{:w$}", "-")?;
        for n in &ax.names {
            write!(out, " {n}")?;
        }
        writeln!(out)?;
        for (ri, rn) in ax.names.iter().enumerate() {
            write!(out, "{rn:w$}")?;
            src.with_row(pi, ri, |cells| -> std::io::Result<()> {
                for (c, cn) in cells.zip(&ax.names) {
                    write!(out, " {:>width$}", mark(c), width = cn.len())?;
                }
                Ok(())
            })?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, src: &mut RowSource) -> Result<()> {
    let ax = src.ax;
    write!(out, "port,from")?;
    for n in &ax.names {
        write!(out, ",{n}")?;
    }
    writeln!(out)?;
    for pi in 0..src.ports().len() {
        let pp = src.ports()[pi];
        for (ri, rn) in ax.names.iter().enumerate() {
            write!(out, "{pp},{rn}")?;
            src.with_row(pi, ri, |cells| -> std::io::Result<()> {
                for c in cells {
                    match c {
                        Some(c) => write!(out, ",{}", u8::from(c == Cell::Allowed))?,
                        None => write!(out, ",~")?,
                    }
                }
                Ok(())
            })?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `{"ports": [...], "pods"|"workloads": [...], "matrix": {"80/TCP":
/// [[bool]]}}`, serialized as the rows are computed (docs/formats.md).
struct JsonMatrix<'a, 'e> {
    by_workload: bool,
    /// `Serialize` takes `&self`; the rows are produced while it runs.
    src: RefCell<RowSource<'a, 'e>>,
}

impl Serialize for JsonMatrix<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ax: &Axis = self.src.borrow().ax;
        let ports: Vec<String> = self
            .src
            .borrow()
            .ports()
            .iter()
            .map(|p| p.to_string())
            .collect();
        let names = &ax.names;
        let mut st = s.serialize_struct("Matrix", 3)?;
        st.serialize_field("ports", &ports)?;
        if self.by_workload {
            st.serialize_field("workloads", names)?;
        } else {
            st.serialize_field("pods", names)?;
        }
        st.serialize_field("matrix", &PortMap(&self.src, &ports))?;
        st.end()
    }
}

struct PortMap<'r, 'a, 'e>(&'r RefCell<RowSource<'a, 'e>>, &'r [String]);

impl Serialize for PortMap<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.1.len()))?;
        for (pi, key) in self.1.iter().enumerate() {
            map.serialize_entry(key, &PortRows(self.0, pi))?;
        }
        map.end()
    }
}

struct PortRows<'r, 'a, 'e>(&'r RefCell<RowSource<'a, 'e>>, usize);

impl Serialize for PortRows<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut src = self.0.borrow_mut();
        let n = src.ax.names.len();
        let mut seq = s.serialize_seq(Some(n))?;
        for ri in 0..n {
            src.with_row(self.1, ri, |cells| {
                seq.serialize_element(&Row(RefCell::new(cells)))
            })?;
        }
        seq.end()
    }
}

/// One row as `[true, false, ...]`, read from the cells while written;
/// `null` where a workload's pods do not all get the same answer.
struct Row<'c>(RefCell<&'c mut dyn Iterator<Item = Option<Cell>>>);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut cells = self.0.borrow_mut();
        let mut seq = s.serialize_seq(None)?;
        for c in &mut **cells {
            seq.serialize_element(&c.map(|c| c == Cell::Allowed))?;
        }
        seq.end()
    }
}
