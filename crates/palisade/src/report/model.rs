//! The report's data: what the page shows, computed only from the engine's
//! answers (identities and what selects them, the reachability matrix,
//! verdicts with their reasons). Serialized as the JSON the page draws from.

use std::collections::{BTreeMap, HashMap};

use palisade_engine::matrix::Cell;
use palisade_engine::{
    Direction, Endpoint, Engine, Identity, IdentityId, Matrix, PodId, PortProto,
};
use serde::Serialize;

/// Above this many endpoints the graph and the matrix show namespaces:
/// beyond it a page neither lays out legibly nor stays small (the matrix
/// grows with the square of the count).
pub const ENDPOINT_LIMIT: usize = 200;

/// One finding of the findings section: the lint findings' shape, all
/// strings so that any producer can fill it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportFinding {
    pub id: String,
    /// `error`, `warning` or `info`.
    pub severity: String,
    /// `file:line`, or the file alone when the line is unknown.
    pub location: String,
    pub object: String,
    pub field: String,
    pub message: String,
    /// One line saying how to fix it; empty when there is nothing to say.
    pub fix: String,
}

/// The name an endpoint has everywhere in the report: the name `matrix`
/// prints for it, from the engine. Pods that share a name (the replicas of
/// one workload, once the engine names pods by workload) are one endpoint.
pub fn endpoint_name(engine: &Engine, pod: PodId) -> String {
    engine.describe(Endpoint::Pod(pod.index()))
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub sources: Vec<String>,
    pub summary: Summary,
    pub ports: Vec<String>,
    /// What a graph node and a matrix row stand for: `endpoint`, or
    /// `namespace` when there are more than [`ENDPOINT_LIMIT`] endpoints.
    pub level: &'static str,
    pub limit: usize,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// The explanations, each once; cells refer to them by position.
    pub reasons: Vec<String>,
    /// `cells[port][row][column]`, rows and columns indexing `nodes`.
    pub cells: Vec<Vec<Vec<CellData>>>,
    pub coverage: Vec<NamespaceCoverage>,
    pub findings: Vec<ReportFinding>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub namespaces: usize,
    pub endpoints: usize,
    pub pods: usize,
    pub edges: usize,
    pub ports: usize,
    pub ingress_isolated: usize,
    pub egress_isolated: usize,
    pub errors: usize,
    pub warnings: usize,
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub id: String,
    pub namespace: String,
    /// Shown on the node; the namespace is the box around it.
    pub label: String,
    /// Shown on hover: labels, pods, what isolates it.
    pub detail: Vec<String>,
    /// `both`, `ingress`, `egress` or `none`: the directions it is isolated in.
    pub isolation: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub src: String,
    pub dst: String,
    /// The probed ports on which the connection is allowed.
    pub ports: Vec<String>,
}

/// A cell as `[state, reason, ...]`: `A` allowed, `D` denied, `N` no
/// common address family, `P` allowed for some of the pods only.
#[derive(Debug, Serialize)]
pub struct CellData(pub &'static str, pub Vec<u32>);

#[derive(Debug, Default, Serialize)]
pub struct NamespaceCoverage {
    pub namespace: String,
    pub endpoints: usize,
    pub ingress_policy: usize,
    /// Isolated only because an admin policy's subject includes them.
    pub ingress_admin: usize,
    pub egress_policy: usize,
    pub egress_admin: usize,
    pub ingress_open: Vec<String>,
    pub egress_open: Vec<String>,
}

/// Pods that share a name.
struct Group {
    name: String,
    namespace: String,
    pods: Vec<PodId>,
    /// Matrix rows of the pods' identities, each once.
    rows: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    Policy,
    Admin,
    Open,
}

impl Report {
    pub fn build(
        engine: &Engine,
        ports: &[PortProto],
        sources: Vec<String>,
        findings: Vec<ReportFinding>,
    ) -> Report {
        let m = engine.matrix(ports);
        let groups = groups(engine, &m);
        let coverage = coverage(engine, &m, &groups);
        let mut reasons = Reasons::default();
        let (level, nodes, edges, cells) = if groups.len() <= ENDPOINT_LIMIT {
            let nodes = groups
                .iter()
                .map(|g| endpoint_node(engine, &m, g))
                .collect();
            let cells = endpoint_cells(engine, &m, &groups, &mut reasons);
            let ids: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            ("endpoint", nodes, edges(&m.ports, &ids, &cells), cells)
        } else {
            let (nodes, cells) = namespace_cells(engine, &m, &coverage, &mut reasons);
            let ids: Vec<&str> = nodes.iter().map(|n: &Node| n.id.as_str()).collect();
            let edges = edges(&m.ports, &ids, &cells);
            ("namespace", nodes, edges, cells)
        };
        let summary = Summary {
            namespaces: coverage.len(),
            endpoints: groups.len(),
            pods: groups.iter().map(|g| g.pods.len()).sum(),
            edges: edges.len(),
            ports: m.ports.len(),
            ingress_isolated: coverage
                .iter()
                .map(|c| c.ingress_policy + c.ingress_admin)
                .sum(),
            egress_isolated: coverage
                .iter()
                .map(|c| c.egress_policy + c.egress_admin)
                .sum(),
            errors: findings.iter().filter(|f| f.severity == "error").count(),
            warnings: findings.iter().filter(|f| f.severity == "warning").count(),
        };
        Report {
            sources,
            summary,
            ports: m.ports.iter().map(|p| p.to_string()).collect(),
            level,
            limit: ENDPOINT_LIMIT,
            nodes,
            edges,
            reasons: reasons.list,
            cells,
            coverage,
            findings,
        }
    }
}

#[derive(Default)]
struct Reasons {
    list: Vec<String>,
    index: HashMap<String, u32>,
}

impl Reasons {
    fn intern(&mut self, s: String) -> u32 {
        if let Some(&i) = self.index.get(&s) {
            return i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s.clone());
        self.index.insert(s, i);
        i
    }
}

/// The matrix's pods (endpoints, host network left out) grouped by name,
/// in namespace then name order.
fn groups(engine: &Engine, m: &Matrix) -> Vec<Group> {
    let idx = engine.index();
    let row_of: HashMap<IdentityId, usize> = m
        .identities
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r))
        .collect();
    let mut by_name: BTreeMap<(String, String), Group> = BTreeMap::new();
    for (i, pod) in engine.cluster().pods.iter().enumerate() {
        let pid = PodId::new(i);
        let Some(&row) = idx.identity_of(pid).and_then(|id| row_of.get(&id)) else {
            continue;
        };
        let name = endpoint_name(engine, pid);
        let g = by_name
            .entry((pod.namespace.clone(), name.clone()))
            .or_insert_with(|| Group {
                name,
                namespace: pod.namespace.clone(),
                pods: Vec::new(),
                rows: Vec::new(),
            });
        g.pods.push(pid);
        if !g.rows.contains(&row) {
            g.rows.push(row);
        }
    }
    by_name.into_values().collect()
}

fn isolation(engine: &Engine, id: &Identity, dir: Direction) -> Isolation {
    let by_policy = match dir {
        Direction::Ingress => !id.ingress_policies.is_empty(),
        Direction::Egress => !id.egress_policies.is_empty(),
    };
    let admin = engine.index().admin();
    let by_admin = id.admin.iter().chain(&id.baseline).any(|&a| match dir {
        Direction::Ingress => !admin[a].ingress.is_empty(),
        Direction::Egress => !admin[a].egress.is_empty(),
    });
    if by_policy {
        Isolation::Policy
    } else if by_admin {
        Isolation::Admin
    } else {
        Isolation::Open
    }
}

/// A group is only as isolated as the least isolated of its identities.
fn group_isolation(engine: &Engine, m: &Matrix, g: &Group, dir: Direction) -> Isolation {
    let idx = engine.index();
    let mut worst = Isolation::Policy;
    for &r in &g.rows {
        match isolation(engine, idx.identity(m.identities[r]), dir) {
            Isolation::Open => return Isolation::Open,
            Isolation::Admin => worst = Isolation::Admin,
            Isolation::Policy => {}
        }
    }
    worst
}

fn coverage(engine: &Engine, m: &Matrix, groups: &[Group]) -> Vec<NamespaceCoverage> {
    let mut by_ns: BTreeMap<&str, NamespaceCoverage> = BTreeMap::new();
    for g in groups {
        let c = by_ns
            .entry(g.namespace.as_str())
            .or_insert_with(|| NamespaceCoverage {
                namespace: g.namespace.clone(),
                ..Default::default()
            });
        c.endpoints += 1;
        match group_isolation(engine, m, g, Direction::Ingress) {
            Isolation::Policy => c.ingress_policy += 1,
            Isolation::Admin => c.ingress_admin += 1,
            Isolation::Open => c.ingress_open.push(g.name.clone()),
        }
        match group_isolation(engine, m, g, Direction::Egress) {
            Isolation::Policy => c.egress_policy += 1,
            Isolation::Admin => c.egress_admin += 1,
            Isolation::Open => c.egress_open.push(g.name.clone()),
        }
    }
    by_ns.into_values().collect()
}

fn isolation_word(ingress: bool, egress: bool) -> &'static str {
    match (ingress, egress) {
        (true, true) => "both",
        (true, false) => "ingress",
        (false, true) => "egress",
        (false, false) => "none",
    }
}

fn endpoint_node(engine: &Engine, m: &Matrix, g: &Group) -> Node {
    let idx = engine.index();
    let mut detail = vec![g.name.clone()];
    if g.pods.len() > 1 {
        detail.push(format!("{} pods", g.pods.len()));
    }
    let first = idx.identity(m.identities[g.rows[0]]);
    let labels: Vec<String> = first
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    detail.push(format!("labels: {}", labels.join(", ")));
    let mut isolated = [false; 2];
    for (n, dir) in [Direction::Ingress, Direction::Egress]
        .into_iter()
        .enumerate()
    {
        let iso = group_isolation(engine, m, g, dir);
        isolated[n] = iso != Isolation::Open;
        detail.push(match iso {
            Isolation::Policy => format!(
                "{}: isolated by {}",
                dir.as_str(),
                first.plan(dir).isolated_by
            ),
            Isolation::Admin => format!("{}: governed by admin policy only", dir.as_str()),
            Isolation::Open => format!("{}: not isolated", dir.as_str()),
        });
    }
    let label = g
        .name
        .strip_prefix(&format!("{}/", g.namespace))
        .unwrap_or(&g.name)
        .to_string();
    Node {
        id: g.name.clone(),
        namespace: g.namespace.clone(),
        label,
        detail,
        isolation: isolation_word(isolated[0], isolated[1]),
    }
}

fn code(c: Cell) -> &'static str {
    match c {
        Cell::Allowed => "A",
        Cell::Denied => "D",
        Cell::NoFamily => "N",
    }
}

/// One cell per ordered pair of endpoints and port: the state the matrix
/// gives for their identities, and the verdict's reasons for the first pod
/// of each.
fn endpoint_cells(
    engine: &Engine,
    m: &Matrix,
    groups: &[Group],
    reasons: &mut Reasons,
) -> Vec<Vec<Vec<CellData>>> {
    let pods = &engine.cluster().pods;
    m.ports
        .iter()
        .enumerate()
        .map(|(pi, pp)| {
            groups
                .iter()
                .map(|s| {
                    groups
                        .iter()
                        .map(|d| {
                            let mut state = None;
                            for &rs in &s.rows {
                                for &rd in &d.rows {
                                    let c = code(m.cell(pi, rs, rd));
                                    state = match state {
                                        None => Some(c),
                                        Some(prev) if prev == c => Some(c),
                                        Some(_) => Some("P"),
                                    };
                                }
                            }
                            let state = state.unwrap_or("N");
                            let (sp, dp) = (s.pods[0].index(), d.pods[0].index());
                            let mut why = Vec::with_capacity(3);
                            if state == "P" {
                                why.push(reasons.intern(format!(
                                    "not every pod pair agrees; reasons for {} → {}:",
                                    pods[sp].key(),
                                    pods[dp].key()
                                )));
                            }
                            match engine.flow(
                                Endpoint::Pod(sp),
                                Endpoint::Pod(dp),
                                pp.protocol,
                                pp.port,
                            ) {
                                Ok(f) => {
                                    for r in engine.verdict(&f).reasons {
                                        why.push(reasons.intern(r));
                                    }
                                }
                                Err(e) => why.push(reasons.intern(e.to_string())),
                            }
                            CellData(state, why)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The namespace view of a large cluster: one node per namespace, and per
/// pair of namespaces how many of their pod pairs are allowed.
fn namespace_cells(
    engine: &Engine,
    m: &Matrix,
    coverage: &[NamespaceCoverage],
    reasons: &mut Reasons,
) -> (Vec<Node>, Vec<Vec<Vec<CellData>>>) {
    let idx = engine.index();
    let ns_pos: HashMap<&str, usize> = coverage
        .iter()
        .enumerate()
        .map(|(i, c)| (c.namespace.as_str(), i))
        .collect();
    let row_ns: Vec<usize> = m
        .identities
        .iter()
        .map(|&id| {
            ns_pos
                .get(idx.identity(id).namespace.as_str())
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let weight: Vec<u64> = m
        .identities
        .iter()
        .map(|&id| idx.identity(id).members.len() as u64)
        .collect();
    let n = coverage.len();
    let nodes = coverage
        .iter()
        .map(|c| Node {
            id: c.namespace.clone(),
            namespace: c.namespace.clone(),
            label: format!("{} endpoints", c.endpoints),
            detail: vec![
                format!("namespace {}", c.namespace),
                format!("{} endpoints", c.endpoints),
                format!(
                    "ingress isolated: {} of {}",
                    c.ingress_policy + c.ingress_admin,
                    c.endpoints
                ),
                format!(
                    "egress isolated: {} of {}",
                    c.egress_policy + c.egress_admin,
                    c.endpoints
                ),
            ],
            isolation: isolation_word(c.ingress_open.is_empty(), c.egress_open.is_empty()),
        })
        .collect();
    let cells = (0..m.ports.len())
        .map(|pi| {
            // (allowed, with a common family) pod pairs per namespace pair.
            let mut counts = vec![(0u64, 0u64); n * n];
            for r in 0..m.identities.len() {
                for c in 0..m.identities.len() {
                    let w = weight[r] * weight[c];
                    let e = &mut counts[row_ns[r] * n + row_ns[c]];
                    match m.cell(pi, r, c) {
                        Cell::Allowed => {
                            e.0 += w;
                            e.1 += w;
                        }
                        Cell::Denied => e.1 += w,
                        Cell::NoFamily => {}
                    }
                }
            }
            (0..n)
                .map(|a| {
                    (0..n)
                        .map(|b| {
                            let (allowed, total) = counts[a * n + b];
                            let state = match (allowed, total) {
                                (_, 0) => "N",
                                (0, _) => "D",
                                (x, t) if x == t => "A",
                                _ => "P",
                            };
                            let why =
                                reasons.intern(format!("{allowed} of {total} pod pairs allowed"));
                            CellData(state, vec![why])
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    (nodes, cells)
}

/// The graph's arrows: ordered pairs of distinct nodes with the ports on
/// which some connection is allowed. A node to itself is left out (pod
/// loopback is not defined by the API; the matrix still shows it).
fn edges(ports: &[PortProto], ids: &[&str], cells: &[Vec<Vec<CellData>>]) -> Vec<Edge> {
    let mut out = Vec::new();
    for (s, src) in ids.iter().enumerate() {
        for (d, dst) in ids.iter().enumerate() {
            if s == d {
                continue;
            }
            let allowed: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(pi, _)| matches!(cells[pi][s][d].0, "A" | "P"))
                .map(|(_, p)| p.to_string())
                .collect();
            if !allowed.is_empty() {
                out.push(Edge {
                    src: src.to_string(),
                    dst: dst.to_string(),
                    ports: allowed,
                });
            }
        }
    }
    out
}
