//! Hostile but legal input is answered in time and memory proportional to
//! its size: one rule with 50,000 distinct ipBlocks once took a minute and
//! 2.4 GB to decide a flow (every address interval asked every block), and
//! over half a minute to compile (every cut of the address axis asked every
//! block). Neither test times itself: quadratic again, each would take most
//! of an hour unoptimised, which the suite's own time limit catches.

use std::path::Path;
use std::process::Command;

/// A namespace, a pod and one ingress rule with 50,000 `ipBlock`s of the
/// given prefix length, each starting a /24 apart.
fn fifty_thousand_blocks(dir: &Path, len: u8) {
    let blocks: String = (0..50_000u32)
        .map(|i| {
            format!(
                "    - ipBlock: {{cidr: 10.{}.{}.0/{len}}}\n",
                i >> 8,
                i & 255
            )
        })
        .collect();
    std::fs::write(
        dir.join("blocks.yaml"),
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns}}\nstatus: {{podIP: 192.168.0.1}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: many, namespace: ns}}\n\
             spec:\n  podSelector: {{}}\n  ingress:\n  - from:\n{blocks}"
        ),
    )
    .unwrap();
}

#[test]
fn fifty_thousand_ip_blocks_in_one_rule_are_decided_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    fifty_thousand_blocks(dir.path(), 24);
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(dir.path())
        .args([
            "check",
            "-f",
            "blocks.yaml",
            "10.195.79.1",
            "ns/p",
            "80/TCP",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "allowed\n  egress not restricted: 10.195.79.1 is not a pod\n  ingress allowed by ns/many rule 0 (from peer 49999, any port, 80/TCP)\n"
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn fifty_thousand_ip_blocks_in_one_rule_compile_to_one_element_each() {
    let dir = tempfile::tempdir().unwrap();
    // /25: no two blocks touch, so none may be joined.
    fifty_thousand_blocks(dir.path(), 25);
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(dir.path())
        .args(["compile", "-f", "blocks.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    for proto in ["tcp", "udp", "sctp"] {
        let lines: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("1 . 10.") && l.contains(&format!(". {proto} . 0-65535")))
            .collect();
        assert_eq!(lines.len(), 50_000, "{proto}");
        assert_eq!(
            lines[0].trim_end_matches(','),
            format!("1 . 10.0.0.0-10.0.0.127 . {proto} . 0-65535")
        );
        assert_eq!(
            lines[49_999].trim_end_matches(','),
            format!("1 . 10.195.79.0-10.195.79.127 . {proto} . 0-65535")
        );
    }
}
