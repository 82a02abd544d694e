//! Running `ip` and `nft`, and code inside a lab namespace.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::state::prefix;
use crate::{io_err, sys, Error, Result};

/// Runs `cmd` with `input` on stdin and collects its output, whatever its
/// exit status (a command that exits without reading its input is no
/// error here: its status and output tell).
pub(crate) fn run_output(cmd: &mut Command, input: Option<&str>) -> std::io::Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(i) = input {
        let mut stdin = child.stdin.take().expect("piped");
        match stdin.write_all(i.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            _ => {}
        }
    }
    child.wait_with_output()
}

pub(crate) fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = run_output(cmd, input).map_err(io_err(what.clone()))?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            input
                .map(|i| format!("\ninput:\n{}", i.chars().take(4000).collect::<String>()))
                .unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ip_batch(netns: Option<&str>, lines: &str) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    c.args(["-batch", "-"]);
    run(&mut c, Some(lines)).map(|_| ())
}

/// Runs `f` on a (new) thread inside the namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let ns = netns.to_string();
    std::thread::spawn(move || {
        sys::enter_netns(&ns)?;
        f()
    })
    .join()
    .map_err(|_| Error::Msg("namespace thread panicked".into()))?
    .map_err(io_err(format!("in namespace {netns}")))
}

pub(crate) const NS_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
];

pub(crate) fn ns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the namespaces of lab `name` that exist now.
pub fn existing_netns(name: &str) -> Vec<String> {
    let p = prefix(name);
    let mut v: Vec<String> = ns_list()
        .into_iter()
        .filter(|n| n.starts_with(&p))
        .collect();
    v.sort();
    v
}
