//! `palisade report` in a real browser: Debian's headless Chromium loads
//! the page, its script draws the graph and the matrix, and the rendered
//! DOM is compared with the engine's answers computed here. Each case also
//! leaves a screenshot under the target directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_agent::manifests::{self, Found};
use palisade_engine::{Direction, Endpoint, Engine, PodId};
use scraper::{ElementRef, Html, Selector};

const CHROMIUM: &str = "chromium";
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&d).expect("create the report output directory");
    d
}

/// The cluster as the report sees it, built the way the command builds it.
/// A finding as the page shows it: severity, location and message.
type Shown = (String, String, String);

/// The engine of `paths` and the findings the page must show: the load's
/// warnings, then lint's findings in file and line order.
fn engine(paths: &[PathBuf]) -> (Engine, Vec<Shown>) {
    let mut inputs = Vec::new();
    for f in manifests::walk(paths).expect("walk the manifests") {
        if let Found::File { path, .. } = f {
            let bytes = manifests::read(&path).expect("read a manifest");
            inputs.push((path.display().to_string(), bytes));
        }
    }
    let loaded = palisade_k8s::load(&inputs);
    assert!(
        !loaded.diagnostics.iter().any(|d| d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    let mut shown: Vec<Shown> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            (
                "warning".to_string(),
                format!("{}:{}", d.file, d.line.expect("a line")),
                d.message.clone(),
            )
        })
        .collect();
    let engine = Engine::new(loaded.cluster);
    let mut placed: Vec<(Option<String>, Option<usize>, Shown)> =
        palisade_engine::lint::lint(&engine)
            .into_iter()
            .map(|f| {
                let key = palisade_k8s::ObjectKey {
                    kind: f.object.kind.clone(),
                    namespace: f.object.namespace.clone(),
                    name: f.object.name.clone(),
                };
                let o = loaded
                    .origins
                    .get(&key)
                    .expect("every finding's object has an origin");
                let at = match o.line {
                    Some(l) => format!("{}:{l}", o.file),
                    None => o.file.clone(),
                };
                (
                    Some(o.file.clone()),
                    o.line,
                    (f.severity.as_str().to_string(), at, f.message),
                )
            })
            .collect();
    placed.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    shown.extend(placed.into_iter().map(|p| p.2));
    (engine, shown)
}

/// The findings list of the rendered page.
fn shown_findings(dom: &Html) -> Vec<Shown> {
    dom.select(&sel("ol#findings li.finding"))
        .map(|li| {
            let part = |s: &str| {
                li.select(&sel(s))
                    .next()
                    .map(|e| text(&e))
                    .unwrap_or_default()
            };
            (part(".severity"), part(".location"), part(".message"))
        })
        .collect()
}

/// Runs chromium headless with a fresh profile, bounded in time; returns
/// its standard output.
fn chromium(args: &[String], tmp: &Path) -> String {
    let run = tempfile::tempdir_in(tmp).expect("chromium's directory");
    let profile = run.path().join("profile");
    let stdout_path = run.path().join("stdout");
    let stdout_file = File::create(&stdout_path).expect("create chromium output file");
    let mut child = match Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout_file)
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run {CHROMIUM} ({e}): the report test needs Debian's chromium; run scripts/deps to install it"
        ),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for chromium") {
            break s;
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    std::fs::read_to_string(&stdout_path).expect("read chromium output")
}

fn write_report(name: &str, paths: &[PathBuf]) -> PathBuf {
    let out = out_dir().join(format!("{name}.html"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg("report");
    for p in paths {
        cmd.arg("-f").arg(p);
    }
    let o = cmd
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run palisade report");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("valid selector")
}

fn attr<'a>(e: &ElementRef<'a>, name: &str) -> &'a str {
    e.value()
        .attr(name)
        .unwrap_or_else(|| panic!("{} without {name}", e.value().name()))
}

fn text(e: &ElementRef) -> String {
    e.text().collect::<String>()
}

/// What the engine says, in the report's terms: endpoints (pods, by the
/// name `matrix` prints) per namespace, the arrows, and every cell.
struct Expected {
    nodes: BTreeMap<String, String>,
    edges: BTreeSet<(String, String, String)>,
    /// (port, src, dst) → (state class, title).
    cells: BTreeMap<(String, String, String), (String, String)>,
    /// namespace → (endpoints, ingress isolated, egress isolated).
    coverage: BTreeMap<String, (usize, usize, usize)>,
}

fn expected(engine: &Engine) -> Expected {
    let idx = engine.index();
    let ports = engine.default_ports();
    let mut eps: Vec<(String, String, usize)> = Vec::new();
    let mut coverage: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (i, pod) in engine.cluster().pods.iter().enumerate() {
        let Some(id) = idx.identity_of(PodId::new(i)) else {
            continue;
        };
        let ident = idx.identity(id);
        if ident.host_network {
            continue;
        }
        let covered = |dir: Direction| {
            let np = match dir {
                Direction::Ingress => &ident.ingress_policies,
                Direction::Egress => &ident.egress_policies,
            };
            !np.is_empty()
                || ident.admin.iter().chain(&ident.baseline).any(|&a| {
                    let p = &idx.admin()[a];
                    match dir {
                        Direction::Ingress => !p.ingress.is_empty(),
                        Direction::Egress => !p.egress.is_empty(),
                    }
                })
        };
        let c = coverage.entry(pod.namespace.clone()).or_default();
        c.0 += 1;
        c.1 += usize::from(covered(Direction::Ingress));
        c.2 += usize::from(covered(Direction::Egress));
        eps.push((engine.describe(Endpoint::Pod(i)), pod.namespace.clone(), i));
    }
    let mut edges = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for (sn, _, s) in &eps {
        for (dn, _, d) in &eps {
            let mut allowed_on = Vec::new();
            for pp in &ports {
                let (class, word, reasons) =
                    match engine.flow(Endpoint::Pod(*s), Endpoint::Pod(*d), pp.protocol, pp.port) {
                        Ok(f) => {
                            let v = engine.verdict(&f);
                            assert_eq!(v.allowed, engine.allowed(&f));
                            if v.allowed {
                                allowed_on.push(pp.to_string());
                                ("A", "allowed", v.reasons)
                            } else {
                                ("D", "denied", v.reasons)
                            }
                        }
                        Err(e) => ("N", "no common address family", vec![e.to_string()]),
                    };
                let title = format!("{word} {pp}: {sn} \u{2192} {dn}\n{}", reasons.join("\n"));
                cells.insert(
                    (pp.to_string(), sn.clone(), dn.clone()),
                    (class.to_string(), title),
                );
            }
            if s != d && !allowed_on.is_empty() {
                edges.insert((sn.clone(), dn.clone(), allowed_on.join(" ")));
            }
        }
    }
    Expected {
        nodes: eps.into_iter().map(|(n, ns, _)| (n, ns)).collect(),
        edges,
        cells,
        coverage,
    }
}

/// Reads a `translate(x,y)` transform.
fn translate(t: &str) -> (f64, f64) {
    let inner = t
        .strip_prefix("translate(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected transform {t:?}"));
    let (x, y) = inner.split_once(',').expect("x,y");
    (
        x.trim().parse().expect("x number"),
        y.trim().parse().expect("y number"),
    )
}

fn num(e: &ElementRef, name: &str) -> f64 {
    attr(e, name).parse().expect("numeric attribute")
}

/// The static file: self-contained, and the browser told to refuse
/// anything that would leave the page.
fn assert_self_contained(html: &str) {
    let doc = Html::parse_document(html);
    let head = doc.select(&sel("head > *")).next().expect("head content");
    assert_eq!(head.value().name(), "meta", "the first element of head");
    let csp = doc
        .select(&sel("meta[http-equiv=\"Content-Security-Policy\"]"))
        .next()
        .expect("Content-Security-Policy meta");
    assert_eq!(
        attr(&csp, "content"),
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
    );
    let lower = html.to_ascii_lowercase();
    for needle in [
        "://", "@import", "<link", "<img", "<iframe", "<object", "<embed",
    ] {
        assert!(
            !lower.contains(needle),
            "the page refers to something outside it: {needle}"
        );
    }
    assert!(
        lower
            .split("url(")
            .skip(1)
            .all(|rest| rest.starts_with('#')),
        "a url() that is not a fragment of the page"
    );
}

/// After the script ran: nothing in the DOM loads a resource.
fn assert_no_resources(dom: &Html) {
    for e in dom.select(&sel("[src], [href], [srcset], [action], [data]")) {
        for a in ["src", "href", "srcset", "action", "data"] {
            if let Some(v) = e.value().attr(a) {
                assert!(v.starts_with('#'), "{} loads {a}={v:?}", e.value().name());
            }
        }
    }
    for e in dom.select(&sel("[marker-end]")) {
        assert_eq!(attr(&e, "marker-end"), "url(#arrow)");
    }
}

/// Renders `html` in chromium and compares its graph and matrix with the
/// engine; saves a screenshot as `<name>.png`. Returns the rendered DOM.
fn check_in_browser(name: &str, html_path: &Path, engine: &Engine) -> Html {
    let html = std::fs::read_to_string(html_path).expect("read the report");
    assert_self_contained(&html);
    let url = format!("file://{}", html_path.display());
    let tmp = out_dir();
    let dom = Html::parse_document(&chromium(&["--dump-dom".into(), url.clone()], &tmp));
    assert_no_resources(&dom);
    let want = expected(engine);

    // Nodes: exactly the endpoints, each inside its namespace's box.
    let mut boxes = BTreeMap::new();
    for c in dom.select(&sel("svg#graph g.cluster")) {
        let r = c.select(&sel("rect")).next().expect("cluster rect");
        boxes.insert(
            attr(&c, "data-namespace").to_string(),
            (
                num(&r, "x"),
                num(&r, "y"),
                num(&r, "width"),
                num(&r, "height"),
            ),
        );
    }
    let namespaces: BTreeSet<String> = want.nodes.values().cloned().collect();
    assert_eq!(boxes.keys().cloned().collect::<BTreeSet<_>>(), namespaces);
    let mut nodes = BTreeMap::new();
    for n in dom.select(&sel("svg#graph g.node")) {
        let id = attr(&n, "data-id").to_string();
        let ns = attr(&n, "data-namespace").to_string();
        let (x, y) = translate(attr(&n, "transform"));
        let (bx, by, bw, bh) = boxes[&ns];
        assert!(
            x >= bx && y >= by && x <= bx + bw && y <= by + bh,
            "{id} is drawn outside its namespace box"
        );
        assert!(
            n.select(&sel("title"))
                .next()
                .map(|t| text(&t))
                .unwrap_or_default()
                .starts_with(&id),
            "{id} has no hover text naming it"
        );
        assert!(nodes.insert(id, ns).is_none(), "a node drawn twice");
    }
    assert_eq!(nodes, want.nodes);

    // Edges: exactly the allowed ordered pairs, with their ports.
    let edges: BTreeSet<(String, String, String)> = dom
        .select(&sel("svg#graph path.edge"))
        .map(|e| {
            (
                attr(&e, "data-src").to_string(),
                attr(&e, "data-dst").to_string(),
                attr(&e, "data-ports").to_string(),
            )
        })
        .collect();
    assert_eq!(
        edges.len(),
        dom.select(&sel("svg#graph path.edge")).count(),
        "an edge drawn twice"
    );
    assert_eq!(edges, want.edges);

    // Matrix: every cell's verdict and explanation.
    let mut cells = BTreeMap::new();
    for t in dom.select(&sel("table.matrix")) {
        let port = attr(&t, "data-port").to_string();
        for td in t.select(&sel("td.cell")) {
            let class = attr(&td, "class")
                .strip_prefix("cell ")
                .expect("cell class")
                .to_string();
            let mark = match class.as_str() {
                "A" => "\u{2713}",
                "D" => "\u{2717}",
                "N" => "\u{2013}",
                other => panic!("unexpected cell state {other}"),
            };
            assert_eq!(text(&td), mark);
            let key = (
                port.clone(),
                attr(&td, "data-src").to_string(),
                attr(&td, "data-dst").to_string(),
            );
            let v = (class, attr(&td, "title").to_string());
            assert!(cells.insert(key, v).is_none(), "a cell drawn twice");
        }
    }
    assert_eq!(cells, want.cells);

    // Coverage: one row per namespace, counts from the identities.
    let mut coverage = BTreeMap::new();
    for tr in dom.select(&sel("table#coverage tbody tr")) {
        let tds: Vec<String> = tr.select(&sel("td")).map(|t| text(&t)).collect();
        let first = |s: &str| -> usize {
            s.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a count")
        };
        coverage.insert(
            attr(&tr, "data-namespace").to_string(),
            (first(&tds[0]), first(&tds[1]), first(&tds[2])),
        );
    }
    assert_eq!(coverage, want.coverage);

    // Exactly the page's two scripts: the data and the drawing code.
    assert_eq!(dom.select(&sel("script")).count(), 2);

    let png = tmp.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    chromium(
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,1000".into(),
            url,
        ],
        &tmp,
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().expect("width")),
        u32::from_be_bytes(bytes[20..24].try_into().expect("height")),
    );
    assert_eq!((w, h), (1400, 1000));
    // A blank page of that size compresses to a few kilobytes.
    assert!(
        bytes.len() > 20_000,
        "screenshot of {} bytes looks empty",
        bytes.len()
    );
    dom
}

/// The top line, with every count taken from the engine.
fn assert_summary(dom: &Html, engine: &Engine, findings: &[Shown]) {
    let count = |sev: &str| findings.iter().filter(|f| f.0 == sev).count();
    let (errors, warnings) = (count("error"), count("warning"));
    let want = expected(engine);
    let ports: Vec<String> = engine
        .default_ports()
        .iter()
        .map(|p| p.to_string())
        .collect();
    let n = want.nodes.len();
    let ingress: usize = want.coverage.values().map(|c| c.1).sum();
    let egress: usize = want.coverage.values().map(|c| c.2).sum();
    let summary = dom.select(&sel("#summary")).next().expect("summary");
    assert_eq!(
        text(&summary),
        format!(
            "{n} endpoints ({n} pods) in {} namespaces · {} allowed connections on {} probed ports \
             ({}) · ingress isolated: {ingress} of {n} · egress isolated: {egress} of {n} · \
             findings: {errors} errors, {warnings} warnings",
            want.coverage.len(),
            want.edges.len(),
            ports.len(),
            ports.join(", ")
        )
    );
}

#[test]
fn report_of_the_web_app_matches_the_engine_in_chromium() {
    let paths = vec![
        root().join("examples/webapp/cluster.yaml"),
        root().join("examples/webapp/policies-refined"),
    ];
    let html = write_report("report", &paths);
    let (engine, want) = engine(&paths);
    let dom = check_in_browser("report", &html, &engine);
    assert_summary(&dom, &engine, &want);
    // The seed's refined policy isolates the frontend for egress without
    // DNS: lint says so, and the page shows it.
    assert!(want
        .iter()
        .any(|f| f.0 == "error" && f.2.contains("cannot reach DNS")));
    assert_eq!(shown_findings(&dom), want);
}

/// A file name that is markup: a page that parsed it would load an image
/// and run its handler.
const HOSTILE_FILE: &str = "<img src=x onerror=\"document.body.dataset.pwned='2'\">.yaml";

#[test]
fn report_with_admin_policy_and_hostile_names_in_chromium() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report_cases/two-namespaces");
    let dir = tempfile::tempdir().expect("the case's directory");
    let case = dir.path().join("two-namespaces");
    std::fs::create_dir(&case).expect("the case's directory");
    for f in ["cluster.yaml", "policies.yaml"] {
        std::fs::copy(fixture.join(f), case.join(f)).expect("copy the fixture");
    }
    // Not a Kubernetes object: the load warns, naming the file.
    std::fs::write(case.join(HOSTILE_FILE), "replicas: 3\n").expect("the stray file");
    let paths = vec![case.clone()];
    let html = write_report("report-two-namespaces", &paths);
    let (engine, want) = engine(&paths);
    assert!(
        !engine.index().admin().is_empty(),
        "the case has an admin policy"
    );
    let dom = check_in_browser("report-two-namespaces", &html, &engine);
    assert_summary(&dom, &engine, &want);

    // The admin policy's subjects count as isolated for ingress only.
    let shop = dom
        .select(&sel("table#coverage tr[data-namespace=\"shop\"] td"))
        .map(|t| text(&t))
        .collect::<Vec<_>>();
    assert_eq!(
        shop,
        [
            "3",
            "3 of 3 (2 by admin policy only)",
            "0 of 3",
            "",
            "shop/cache, shop/db, shop/web"
        ]
    );

    // The findings are shown as text: the stray file whose name is markup
    // is neither run nor parsed.
    let findings = shown_findings(&dom);
    assert_eq!(findings, want);
    assert!(
        findings.iter().any(|f| f.1.contains(HOSTILE_FILE)),
        "the hostile file name reached the page: {findings:?}"
    );
    let body = dom.select(&sel("body")).next().expect("body");
    assert_eq!(body.value().attr("data-pwned"), None, "injected script ran");
    assert_eq!(dom.select(&sel("img")).count(), 0, "injected markup parsed");
}
