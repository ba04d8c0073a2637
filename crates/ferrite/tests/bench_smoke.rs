//! `ferrite bench scale` at CI size: a 3-member Ferrite, 2,000 small keys,
//! a follower killed and restarted; the table must print, within a minute.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferrite");
const WITHIN: Duration = Duration::from_secs(180);

#[test]
fn bench_scale_prints_its_table() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(BIN)
        .args(["bench", "scale", "--keys", "2000", "--value-bytes", "100"])
        .args(["--clients", "16", "--ferrite-only"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrite bench scale");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ferrite bench scale") {
            break status;
        }
        if started.elapsed() > WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferrite bench scale took more than {WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).expect("read stdout");
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err).expect("read stderr");
    }
    assert!(
        status.success(),
        "status {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for row in [
        "load keys/s",
        "largest member RSS MB after rest",
        "disk MB, leader",
        "restart after kill -9 until serving, s",
    ] {
        assert!(out.contains(row), "no row {row:?} in:\n{out}");
    }
    assert!(out.contains("failed put attempts (retried)"), "{out}");
}
