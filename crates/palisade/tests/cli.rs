//! The command line as users and scripts see it: exact forms, output
//! formats and exit codes (0 allowed / 1 denied / 2 error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn palisade(args: &[&str]) -> Output {
    palisade_in(&root(), args)
}

fn palisade_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const REFINED: [&str; 4] = [
    "-f",
    "examples/webapp/cluster.yaml",
    "-f",
    "examples/webapp/policies-refined",
];

fn check(policies: &str, src: &str, dst: &str, port: &str) -> Output {
    palisade(&[
        "check",
        "-f",
        "examples/webapp/cluster.yaml",
        policies,
        src,
        dst,
        port,
    ])
}

#[test]
fn seed_sentences_hold_with_exit_codes() {
    let refined = "examples/webapp/policies-refined";
    // Frontend reachable on 80/TCP only from the ingress-nginx pods.
    let o = check(
        refined,
        "ingress-nginx/controller",
        "default/frontend",
        "80/TCP",
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("allowed\n"));
    assert!(stdout(&o).contains(
        "ingress allowed by default/frontend-allow-refined rule 0 (from peer 0, port 80/TCP)"
    ));
    for (src, port) in [
        ("ingress-nginx/default-backend", "80/TCP"),
        ("monitoring/scraper", "80/TCP"),
        ("default/backend", "80/TCP"),
        ("ingress-nginx/controller", "8080/TCP"),
        ("ingress-nginx/controller", "80/UDP"),
    ] {
        let o = check(refined, src, "default/frontend", port);
        assert_eq!(o.status.code(), Some(1), "{src} {port}: {}", stdout(&o));
        assert!(stdout(&o).starts_with("denied\n"));
    }
    // Frontend may reach the backend on 8080/TCP and nothing else.
    let o = check(refined, "default/frontend", "default/backend", "8080");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    for (dst, port) in [
        ("default/backend", "9090/TCP"),
        ("default/backend", "8080/UDP"),
        ("default/database", "5432/TCP"),
        ("ingress-nginx/controller", "80/TCP"),
        ("203.0.113.1", "443/TCP"),
    ] {
        let o = check(refined, "default/frontend", dst, port);
        assert_eq!(o.status.code(), Some(1), "{dst} {port}: {}", stdout(&o));
    }
    // The first version allowed any pod of the namespace.
    let o = check(
        "examples/webapp/policies-initial",
        "default/backend",
        "default/frontend",
        "80/TCP",
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn flows_file_in_order_text_and_json() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flows = dir.join("flows.txt");
    std::fs::write(
        &flows,
        "# seed flows\n\ningress-nginx/controller default/frontend 80/TCP\ndefault/frontend default/database 5432/TCP  # denied\nfd00:50:1::10 default/frontend 80/tcp\n",
    )
    .unwrap();
    let mut args = REFINED.to_vec();
    args.insert(0, "check");
    let flows_s = flows.to_str().unwrap();
    let o = palisade(&[&args[..], &["--flows", flows_s]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("ingress-nginx/controller default/frontend 80/TCP allowed: "));
    assert!(lines[1].starts_with("default/frontend default/database 5432/TCP denied: "));
    assert!(lines[2].contains(" allowed: "));

    let o = palisade(&[&args[..], &["--flows", flows_s, "-o", "json"]].concat());
    assert_eq!(o.status.code(), Some(0));
    let objs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(objs.len(), 3);
    assert_eq!(objs[0]["src"], "ingress-nginx/controller");
    assert_eq!(objs[0]["dst"], "default/frontend");
    assert_eq!(objs[0]["port"], 80);
    assert_eq!(objs[0]["protocol"], "TCP");
    assert_eq!(objs[0]["allowed"], true);
    assert_eq!(objs[1]["allowed"], false);
    assert!(objs[1]["reasons"].as_array().unwrap().iter().any(|r| r
        .as_str()
        .unwrap()
        .starts_with("egress denied: default/frontend is isolated for egress")));

    // A malformed line is an error naming the file and line.
    std::fs::write(&flows, "default/frontend default/backend\n").unwrap();
    let o = palisade(&[&args[..], &["--flows", flows_s]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("flows.txt:1"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_invalid_manifest_exits_2_without_panic() {
    let dir = root().join("crates/palisade-k8s/tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "only {} invalid fixtures", files.len());
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} has no `# expect:` line"));
        // Relative, as users type it: messages then quote the same path.
        let fs = name.as_str();
        let o = palisade_in(&dir, &["validate", "-f", fs]);
        assert_eq!(o.status.code(), Some(2), "validate {name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&name),
            "validate {name}: message names no file: {err}"
        );
        assert!(
            err.contains(expect),
            "validate {name}: {expect:?} not in {err}"
        );
        let o = palisade_in(&dir, &["check", "-f", fs, "10.0.0.1", "10.0.0.2", "80/TCP"]);
        assert_eq!(o.status.code(), Some(2), "check {name}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "check {name}");
    }
}

/// `port: .inf` once read as no port, that is every port: a policy meant
/// for one port let 22/TCP through.
#[test]
fn a_non_finite_port_is_an_error_not_every_port() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-inf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web}\nspec:\n  podSelector: {matchLabels: {app: frontend}}\n  ingress:\n    - from: [{namespaceSelector: {}}]\n      ports:\n        - port: .inf\n",
    )
    .unwrap();
    let cluster = root().join("examples/webapp/cluster.yaml");
    let cluster = cluster.to_str().unwrap();
    let want = "policy.yaml:9: NetworkPolicy default/web: spec.ingress[0].ports[0].port: .inf is not a finite number";
    for args in [
        &["validate", "-f", cluster, "-f", "policy.yaml"][..],
        &[
            "check",
            "-f",
            cluster,
            "-f",
            "policy.yaml",
            "ingress-nginx/controller",
            "default/frontend",
            "22/TCP",
        ][..],
    ] {
        let o = palisade_in(&dir, args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_reports_counts_and_bad_arguments_exit_2() {
    let refined = "examples/webapp/policies-refined";
    let o = palisade(&["validate", "-f", "examples/webapp"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("6 pods"), "{}", stdout(&o));
    let o = check(refined, "default/nope", "default/frontend", "80");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pod default/nope not found"));
    let o = check(refined, "default/backend", "default/frontend", "80/ICMP");
    assert_eq!(o.status.code(), Some(2));
    let o = check(refined, "default/backend", "default/frontend", "0");
    assert_eq!(o.status.code(), Some(2));
    let o = palisade(&["check", "-f", "no/such/file.yaml", "a/b", "c/d", "80"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn matrix_table_json_csv_and_workloads() {
    let mut args = vec!["matrix"];
    args.extend(REFINED);
    let o = palisade(&[&args[..], &["--ports", "80/TCP"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().nth(1).unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    let fe = cols.iter().position(|c| *c == "default/frontend").unwrap();
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("ingress-nginx/controller")[fe], ".");
    assert_eq!(row("default/backend")[fe], "X");
    assert_eq!(row("monitoring/scraper")[fe], "X");

    let o = palisade(&[&args[..], &["--ports", "80/TCP,8080/TCP", "-o", "json"]].concat());
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let pods: Vec<&str> = j["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let fe = pods.iter().position(|p| *p == "default/frontend").unwrap();
    let be = pods.iter().position(|p| *p == "default/backend").unwrap();
    let db = pods.iter().position(|p| *p == "default/database").unwrap();
    assert_eq!(j["matrix"]["8080/TCP"][fe][be], true);
    assert_eq!(j["matrix"]["8080/TCP"][fe][db], false);
    assert_eq!(j["matrix"]["80/TCP"][be][fe], false);

    let o = palisade(&[&args[..], &["--ports", "80/TCP", "-o", "csv"]].concat());
    let csv = stdout(&o);
    assert!(csv.starts_with("port,from,"));
    assert_eq!(csv.lines().count(), 1 + pods.len());

    let o = palisade(&[&args[..], &["--by", "workload", "--ports", "80/TCP"]].concat());
    assert_eq!(o.status.code(), Some(0));
    // Pods that no workload owns are rows of their own.
    let header: Vec<String> = stdout(&o)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        header,
        [
            "-",
            "default/backend",
            "default/database",
            "default/frontend",
            "ingress-nginx/controller",
            "ingress-nginx/default-backend",
            "monitoring/scraper"
        ]
    );
}

/// Regression: a cluster whose pods declare no UDP port made the spawned
/// listeners exit on an empty `--udp` list, and `lab up` failed.
#[test]
fn lab_up_probe_down_from_the_command_line() {
    if !palisade_lab_is_root() {
        eprintln!("skipped: the lab needs root (network namespaces, nftables)");
        return;
    }
    let name = "clitest";
    let _ = palisade(&["lab", "down", "--name", name]);
    let mut up = vec!["lab", "up", "--name", name];
    up.extend(REFINED);
    let o = palisade(&up);
    assert_eq!(o.status.code(), Some(0), "lab up: {}", stderr(&o));
    let o = palisade(&["lab", "probe", "--name", name, "--ports", "80/TCP,8080/TCP"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "lab probe: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(
        stdout(&o),
        "\
80/TCP (rows: from, columns: to; . allowed, X denied, 4/6 allowed over IPv4/IPv6 only, - not probed)
                                  predicted     observed
                                  1 2 3 4 5 6   1 2 3 4 5 6
1 default/backend                 - . X . . .   - . X . . .
2 default/database                . - X . . .   . - X . . .
3 default/frontend                X X - X X X   X X - X X X
4 ingress-nginx/controller        . . . - . .   . . . - . .
5 ingress-nginx/default-backend   . . X . - .   . . X . - .
6 monitoring/scraper              . . X . . -   . . X . . -

8080/TCP (rows: from, columns: to; . allowed, X denied, 4/6 allowed over IPv4/IPv6 only, - not probed)
                                  predicted     observed
                                  1 2 3 4 5 6   1 2 3 4 5 6
1 default/backend                 - . X . . .   - . X . . .
2 default/database                . - X . . .   . - X . . .
3 default/frontend                . X - X X X   . X - X X X
4 ingress-nginx/controller        . . X - . .   . . X - . .
5 ingress-nginx/default-backend   . . X . - .   . . X . - .
6 monitoring/scraper              . . X . . -   . . X . . -

120/120 probes agree
"
    );
    // The same probes one a line, and as JSON Lines that follow their schema.
    let wide = palisade(&[
        "lab", "probe", "--name", name, "--ports", "80/TCP", "-o", "wide",
    ]);
    let wide_out = stdout(&wide);
    let lines: Vec<&str> = wide_out.lines().collect();
    assert_eq!(lines.len(), 1 + 60 + 1, "{wide_out}");
    assert!(lines[0].starts_with("SRC "), "{wide_out}");
    assert_eq!(lines[61], "60/60 probes agree");
    let json = palisade(&[
        "lab", "probe", "--name", name, "--ports", "80/TCP", "-o", "json",
    ]);
    assert_eq!(stderr(&json), "60/60 probes agree\n");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/schemas/probe.json")).unwrap(),
    )
    .unwrap();
    let schema = jsonschema::validator_for(&schema).unwrap();
    let probes: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(probes.len(), 60);
    for p in &probes {
        assert!(schema.is_valid(p), "{p}");
    }
    assert_eq!(
        stdout(&json).lines().next().unwrap(),
        r#"{"src":"default/backend","dst":"default/database","src_ip":"10.50.2.30","dst_ip":"10.50.2.40","port":80,"protocol":"TCP","predicted":"allowed","observed":"allowed","agree":true}"#
    );
    let down = palisade(&["lab", "down", "--name", name]);
    assert_eq!(down.status.code(), Some(0), "lab down: {}", stderr(&down));
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("pl-clitest-"),
        "lab namespaces left behind"
    );
}

fn palisade_lab_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `palisade` bounded in time: a walk that never ends (exit 124) fails the
/// test instead of hanging it.
fn palisade_bounded(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default}\nstatus: {phase: Running, podIP: 10.9.0.1}\n";

/// Regression: a FIFO named like a manifest blocked `validate` for good.
#[test]
fn a_fifo_in_a_directory_is_skipped_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("pod.yaml"), POD).unwrap();
    let fifo = d.join("x.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let o = palisade_bounded(&["validate", "-f", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let warning = format!(
        "warning: {}: skipped: not a regular file (a FIFO)\n",
        fifo.display()
    );
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));
    assert!(stdout(&o).contains(" 1 pods"), "{}", stdout(&o));
}

/// Regression: `a -> .` and `b -> .` made the walk exponential (it never
/// ended), and a self link read every object many times over.
#[test]
fn link_loops_are_read_once_and_named() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("pod.yaml"), POD).unwrap();
    std::os::unix::fs::symlink(".", d.join("a")).unwrap();
    std::os::unix::fs::symlink(".", d.join("b")).unwrap();
    std::os::unix::fs::symlink("pod.yaml", d.join("same.yaml")).unwrap();
    let o = palisade_bounded(&["validate", "-f", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(" 1 pods"), "{}", stdout(&o));
    let e = stderr(&o);
    for link in ["a", "b"] {
        let w = format!(
            "warning: {}: skipped: a link to a directory already read ({})\n",
            d.join(link).display(),
            d.display()
        );
        assert!(e.contains(&w), "{e}");
    }
    let w = format!(
        "warning: {}: skipped: a link to a file already read ({})\n",
        d.join("same.yaml").display(),
        d.join("pod.yaml").display()
    );
    assert!(e.contains(&w), "{e}");
}

/// Regression: a file of any size was read into memory whole (and its
/// decoding took many times more). A sparse file makes this cheap.
#[test]
fn a_file_over_the_size_limit_is_an_error_naming_it_and_its_size() {
    let t = tempfile::tempdir().unwrap();
    let big = t.path().join("big.yaml");
    let size = palisade_k8s::limits::MAX_FILE_BYTES + (1 << 20);
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    for f in [big.clone(), t.path().to_path_buf()] {
        let o = palisade_bounded(&["validate", "-f", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = format!(
            "{}: file is {size} bytes, over the limit of {} bytes; not read\n",
            big.display(),
            palisade_k8s::limits::MAX_FILE_BYTES
        );
        assert!(stderr(&o).contains(&e), "{}", stderr(&o));
    }
}

/// A file that cannot be read is an error naming it, never an empty file;
/// a file named explicitly is read whatever its name; a missing path is an
/// error.
#[test]
fn unreadable_explicit_and_missing_paths() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::os::unix::fs::symlink("loop.yaml", d.join("loop.yaml")).unwrap();
    let o = palisade_bounded(&["validate", "-f", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = format!("{}: cannot read: ", d.join("loop.yaml").display());
    assert!(stderr(&o).contains(&e), "{}", stderr(&o));

    let txt = d.join("pod.txt");
    std::fs::write(&txt, POD).unwrap();
    let o = palisade_bounded(&["validate", "-f", txt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(" 1 pods"), "{}", stdout(&o));

    let missing = d.join("missing.yaml");
    let o = palisade_bounded(&["validate", "-f", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{}: No such file", missing.display())),
        "{}",
        stderr(&o)
    );
}

/// The transcripts under `tests/cli/<case>/expect.txt`: each `$ palisade
/// ARGS` line runs in the case's directory and is followed by what it
/// prints, whole: stdout as is, stderr lines behind `! `, and `[exit N]`
/// for an exit code other than 0. `UPDATE_EXPECT=1` rewrites the files
/// from what the commands print.
#[test]
fn transcripts_hold_exactly() {
    let dir = root().join("tests/cli");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/cli exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("expect.txt").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "{} transcripts", cases.len());
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failed = Vec::new();
    for case in &cases {
        let path = case.join("expect.txt");
        let want = std::fs::read_to_string(&path).unwrap();
        let got = transcript(case, &want);
        if got != want {
            if update {
                std::fs::write(&path, &got).unwrap();
            } else {
                failed.push(format!(
                    "{}:\n--- expected\n{want}--- got\n{got}",
                    path.display()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Runs every command of a transcript and writes what they print in its
/// form: each command with the comment lines (`#`) right above it, its
/// output, and a blank line.
fn transcript(case: &Path, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(cmd) = line.strip_prefix("$ palisade ") else {
            continue;
        };
        let comments = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .count();
        for c in &lines[i - comments..i] {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
        let args: Vec<&str> = cmd.split_whitespace().collect();
        let o = palisade_in(case, &args);
        out.push_str(&stdout(&o));
        for l in stderr(&o).lines() {
            out.push_str("! ");
            out.push_str(l);
            out.push('\n');
        }
        match o.status.code() {
            Some(0) => {}
            Some(n) => out.push_str(&format!("[exit {n}]\n")),
            None => out.push_str("[killed]\n"),
        }
        out.push('\n');
    }
    out
}
