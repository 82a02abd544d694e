//! The matrix row by row: `matrix_rows` yields every (port, source) once,
//! ports outermost, and each cell is what `allowed` says of every pod pair
//! of those two identities (the matrix is computed over identities, one
//! representative each).

use palisade_bench::synth::{self, Params};
use palisade_engine::matrix::Cell;
use palisade_engine::{Endpoint, Engine, PodId, PortProto};

#[test]
fn rows_in_order_agree_with_every_pod_pair_and_with_the_whole_matrix() {
    for seed in 0..12 {
        let engine = Engine::new(synth::cluster(&Params::small(seed)));
        let mut ports = engine.default_ports();
        ports.push("9/SCTP".parse::<PortProto>().unwrap());
        let whole = engine.matrix(&ports);
        let rows = engine.matrix_rows(&ports);
        let n = rows.identities.len();
        assert_eq!(rows.identities, whole.identities, "seed {seed}");
        assert_eq!(rows.size_hint(), (ports.len() * n, Some(ports.len() * n)));
        let row_of = |pod: usize| {
            let id = engine.index().identity_of(PodId::new(pod))?;
            rows.identities.iter().position(|&i| i == id)
        };
        let pods: Vec<(usize, usize)> = (0..engine.cluster().pods.len())
            .filter_map(|p| Some((p, row_of(p)?)))
            .collect();
        let mut seen = 0;
        for (k, row) in engine.matrix_rows(&ports).enumerate() {
            assert_eq!((row.port, row.source), (k / n, k % n), "seed {seed}: order");
            assert_eq!(row.cells.len(), n);
            assert_eq!(row.cells, rows.row(row.port, row.source));
            let pp = ports[row.port];
            for &(s, _) in pods.iter().filter(|&&(_, sr)| sr == row.source) {
                for &(d, dr) in &pods {
                    let want =
                        match engine.flow(Endpoint::Pod(s), Endpoint::Pod(d), pp.protocol, pp.port)
                        {
                            Ok(f) if engine.allowed(&f) => Cell::Allowed,
                            Ok(_) => Cell::Denied,
                            Err(_) => Cell::NoFamily,
                        };
                    assert_eq!(row.cells[dr], want, "seed {seed}: pods {s} -> {d} on {pp}");
                }
            }
            for (d, &c) in row.cells.iter().enumerate() {
                assert_eq!(whole.cell(row.port, row.source, d), c);
            }
            seen += 1;
        }
        assert_eq!(seen, ports.len() * n, "seed {seed}: every row once");
    }
}

#[test]
fn no_endpoint_no_rows() {
    let engine = Engine::new(palisade_model::Cluster::default());
    let ports = engine.default_ports();
    assert_eq!(engine.matrix_rows(&ports).count(), 0);
    assert!(engine.matrix(&ports).cells.iter().all(Vec::is_empty));
}
