//! The CI slice of `ferrite chaos`: 5 real members under every kind of
//! fault for 20 seconds while clients run; the history must be
//! linearizable and no acknowledged write lost; and the same with etcd
//! auth on and permissions changing under the watchers (`--auth`). Longer
//! runs: `ferrite chaos --duration 30m [--auth]`.

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

/// The same slice with etcd auth on (`--auth`): the clients as `root`, the
/// watchers as a limited user whose read permission is revoked and granted
/// back under the faults. No watch may deliver past a revoke; the history
/// stays linearizable and the watchers gap-free across their cancels.
#[test]
fn a_short_chaos_run_with_auth_and_permission_changes_is_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(common::BIN)
        .args(["chaos", "--auth", "--duration", "20s", "--seed", "7"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run ferrite chaos --auth");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "chaos --auth failed:\n{text}");
    assert!(text.contains("violations=0 lost_writes=0"), "{text}");
    assert!(text.contains("coordination violations=0"), "{text}");
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
    // Permissions really changed, and the leak rule judged watches.
    let auth = text
        .lines()
        .find(|l| l.starts_with("chaos: auth:"))
        .expect("an auth summary line");
    let count = |field: &str| -> u64 {
        auth.split(field)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("permission_changes=") >= 2, "{auth}");
    assert!(count("leak_checks=") >= 1, "{auth}");
}
