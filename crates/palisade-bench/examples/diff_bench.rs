//! `palisade diff` end to end on the synthetic 10,000-pod / 1,000-policy
//! cluster with one policy changed, against `palisade validate` on the same
//! files in the same run:
//!
//!     cargo build --release -p palisade
//!     cargo run --release -p palisade-bench --example diff_bench [-- PALISADE_BINARY]
//!
//! Writes BASE and HEAD as JSON manifests (`palisade_bench::manifests`) under a temporary directory
//! (HEAD = BASE with one rule of one policy edited), runs each command
//! five times alternately and prints the medians and their ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_bench::manifests;
use palisade_bench::synth::{self, Params};
use palisade_model::{Cluster, PortSpec};

/// The cluster as manifests, written as every CLI benchmark writes it.
fn write(c: &Cluster, dir: &Path) {
    std::fs::create_dir_all(dir).expect("the version's directory");
    manifests::write(dir, c, 1_000).expect("write the manifests");
}

/// HEAD: the first policy with an ingress rule that names ports gets a
/// different port on that rule, the edit a pull request usually makes.
fn edit(mut c: Cluster) -> (Cluster, String) {
    let p = c
        .policies
        .iter_mut()
        .find(|p| {
            p.ingress
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r.ports.is_some()))
        })
        .expect("the synthetic cluster has a policy with ingress ports");
    let rule = p
        .ingress
        .as_mut()
        .and_then(|r| r.iter_mut().find(|r| r.ports.is_some()))
        .expect("found above");
    let before: Vec<String> = rule.ports.iter().flatten().map(|p| p.to_string()).collect();
    rule.ports = Some(vec![PortSpec::Range {
        protocol: palisade_model::Protocol::Tcp,
        start: 8443,
        end: 8443,
    }]);
    let what = format!(
        "{}: ingress rule ports [{}] -> [8443/TCP]",
        p.key(),
        before.join(", ")
    );
    (c, what)
}

fn run(bin: &Path, args: &[&str], out: &Path) -> Duration {
    let file = std::fs::File::create(out).expect("create output file");
    let t = Instant::now();
    let st = Command::new(bin)
        .args(args)
        .stdout(file)
        .status()
        .expect("run palisade");
    let d = t.elapsed();
    assert!(st.success(), "palisade {args:?}: {st}");
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("own path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/PROFILE/examples")
                .join("palisade")
        });
    let root = std::env::temp_dir().join(format!("palisade-diff-bench-{}", std::process::id()));
    let base = synth::cluster(&Params::large());
    let (head, what) = edit(base.clone());
    write(&base, &root.join("base"));
    write(&head, &root.join("head"));
    let (b, h) = (root.join("base"), root.join("head"));
    let (b, h) = (
        b.to_str().expect("utf-8 path"),
        h.to_str().expect("utf-8 path"),
    );
    println!(
        "{} pods, {} policies; HEAD edits {what}",
        base.pods.len(),
        base.policies.len()
    );
    let out = root.join("out");
    let (mut validate, mut json, mut text) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        validate.push(run(&bin, &["validate", "-f", b], &out));
        json.push(run(&bin, &["diff", "-f", b, "--to", h, "-o", "json"], &out));
        text.push(run(
            &bin,
            &["diff", "-f", b, "--to", h],
            &root.join("out.txt"),
        ));
    }
    let changes = std::fs::read_to_string(root.join("out.txt"))
        .expect("read the diff")
        .lines()
        .count();
    let (v, j, t) = (median(validate), median(json), median(text));
    println!("changed connections (pod pairs x port ranges): {changes}");
    println!("validate (BASE):        {:7.3} s", v.as_secs_f64());
    println!(
        "diff -o json:           {:7.3} s  ({:.2} x validate)",
        j.as_secs_f64(),
        j.as_secs_f64() / v.as_secs_f64()
    );
    println!(
        "diff (text):            {:7.3} s  ({:.2} x validate)",
        t.as_secs_f64(),
        t.as_secs_f64() / v.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
}
