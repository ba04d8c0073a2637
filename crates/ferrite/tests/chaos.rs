//! The CI slice of `ferrite chaos`: 5 real members under every kind of
//! fault for 20 seconds while clients run; the history must be
//! linearizable and no acknowledged write lost. Longer runs:
//! `ferrite chaos --duration 30m`.

mod common;

use std::process::Command;

#[test]
fn a_short_chaos_run_is_linearizable_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(common::BIN)
        .args(["chaos", "--duration", "20s", "--seed", "7"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run ferrite chaos");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "chaos failed:\n{text}");
    assert!(text.contains("violations=0 lost_writes=0"), "{text}");
    // Faults were really injected and operations really ran.
    let summary = text
        .lines()
        .find(|l| l.starts_with("chaos: operations="))
        .expect("a summary line");
    let ops: u64 = summary
        .trim_start_matches("chaos: operations=")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an operation count");
    assert!(ops > 500, "{summary}");
    assert!(!summary.contains("faults=0"), "{summary}");
    // Block clients wrote and read over NBD through the faults too.
    for kind in ["block-write=", "block-read="] {
        let n: u64 = summary
            .split(kind)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n > 20, "{kind} too few: {summary}");
    }
}
