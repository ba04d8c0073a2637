//! The `ferrite-wal` binary, run as a separate process: the directory lock
//! holds across processes, `verify` exits 0/1 with the file and offset, and
//! bad arguments print usage and exit 2.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::*;
use ferrite_wal::{FileDisk, Wal, WalOptions};

/// The tests of this file run one at a time: a child process forked by one
/// test inherits, until its exec, every descriptor open at the fork, the
/// directory lock of another test's `Wal` included, so that test's own
/// child could find its directory still locked after the `Wal` was dropped.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite-wal"))
        .args(args)
        .output()
        .expect("run ferrite-wal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn small_log(dir: &str) -> Wal<FileDisk> {
    let (mut wal, _) = Wal::open(
        FileDisk::new(),
        dir,
        WalOptions {
            segment_bytes_max: 400,
        },
    )
    .unwrap();
    wal.save_snapshot(&snapshot(0, 0)).unwrap();
    for i in (1..=40).step_by(4) {
        wal.write(&persist(entries(i, i + 3, 2), Some(hs(2, i))))
            .unwrap();
        wal.sync().unwrap();
    }
    wal
}

#[test]
fn another_process_cannot_open_a_locked_directory() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let dir = dir.to_str().unwrap();
    let wal = small_log(dir);

    let held = run(&["verify", dir]);
    assert_eq!(held.status.code(), Some(1), "{held:?}");
    let stderr = text(&held.stderr);
    assert!(
        stderr.contains("locked by another process") && stderr.contains(dir),
        "{stderr}"
    );

    drop(wal);
    let free = run(&["verify", dir]);
    assert_eq!(free.status.code(), Some(0), "{}", text(&free.stderr));
    let stdout = text(&free.stdout);
    assert!(
        stdout.contains("ok") && stdout.contains("entries: 1..=40"),
        "{stdout}"
    );
    assert!(stdout.contains("term=2 vote=n1 commit=37"), "{stdout}");
}

#[test]
fn inspect_prints_records_and_snapshot_files() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let dir = dir.to_str().unwrap();
    drop(small_log(dir));
    let out = run(&["inspect", dir]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for needle in [
        "segment 0000000000000001.wal",
        "header ok",
        "entries     1..=4 terms 2..=2 (4 records",
        "hard-state  term=2 vote=n1 commit=37  [batch end]",
        "snapshot    carried index=0 term=0",
        "snapshot file snap-0000000000000000-0000000000000000.snap: index=0 term=0 voters=[n1,n2,n3]",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
}

#[test]
fn verify_reports_corruption_with_file_and_offset() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let dir_str = dir.to_str().unwrap();
    drop(small_log(dir_str));
    let victim = dir.join(ferrite_wal::segment_name(1));
    let mut bytes = fs::read(&victim).unwrap();
    bytes[100] ^= 0x20;
    fs::write(&victim, &bytes).unwrap();

    let out = run(&["verify", dir_str]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(victim.to_str().unwrap()) && stderr.contains("offset"),
        "{stderr}"
    );
    // verify is read-only: the damaged file is untouched.
    assert_eq!(fs::read(&victim).unwrap(), bytes);
    // inspect still shows where the damage is.
    let out = run(&["inspect", dir_str]);
    assert!(
        text(&out.stdout).contains("DAMAGE"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn verify_reports_a_torn_tail_without_cutting_it() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let dir_str = dir.to_str().unwrap();
    let wal = small_log(dir_str);
    let segments = wal.segment_count() as u64;
    drop(wal);
    let last = dir.join(ferrite_wal::segment_name(segments));
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let out = run(&["verify", dir_str]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("torn tail"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fs::metadata(&last).unwrap().len(), len - 3);
}

#[test]
fn bad_arguments_print_usage_and_exit_2() {
    let _serial = serial();
    for args in [
        &[][..],
        &["frob"][..],
        &["verify"][..],
        &["inspect", "a", "b"][..],
        &["bench", "d", "--seconds"][..],
        &["bench", "d", "--seconds", "x"][..],
        &["bench", "d", "--second", "1"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("usage:"), "{args:?}");
    }
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("ferrite-wal verify DIR"));
}
