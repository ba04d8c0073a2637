//! Block volumes through real block clients that no one here wrote:
//! `nbdinfo`, `nbdcopy` and `nbdsh` (libnbd), `qemu-img`, `fio`, and a real
//! ext4 file system on `nbdfuse` + `losetup`; with the leader killed in the
//! middle of writes, and a killed member that catches up by snapshot.
//! The test script installs the tools (libnbd-bin, python3-libnbd,
//! qemu-utils, fio, fuse3); a missing one fails the test with its name.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;

/// Runs a tool to completion; panics with its output if it cannot start.
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        // nbdsh is a Python program for the system's python3, whatever
        // python3 comes first on PATH.
        .env(
            "PATH",
            format!(
                "/usr/bin:/usr/sbin:/bin:/sbin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); the test script installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, out) = run(program, args);
    assert!(ok, "{program} {args:?} failed:\n{out}");
    out
}

/// Deterministic pseudo-random bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write test file");
    path
}

fn same_bytes(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// A member that is not the leader (block clients attach there, so that a
/// leader kill does not take their server away).
fn follower(leader: usize, n: usize) -> usize {
    (leader + 1) % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_block_clients_read_back_what_they_wrote() {
    let c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let f = follower(leader, 3);
    let tmp = tempfile::tempdir().expect("tmp");

    let (ok, out) = c.ferrite(&["volume", "create", "disk0", "--size", "64MiB"]);
    assert!(ok, "{out}");
    let (ok, out) = c.ferrite(&["volume", "create", "disk0", "--size", "1MiB"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = c.ferrite(&["volume", "list"]);
    assert!(ok && out.contains("disk0\t67108864"), "{out}");
    for i in 0..3 {
        let size = must("nbdinfo", &["--size", &c.nbd_uri(i, "disk0")]);
        assert_eq!(size.trim(), "67108864", "nbdinfo on member {i}");
    }
    let listed = must(
        "nbdinfo",
        &["--list", &format!("nbd://{}", c.members[f].nbd)],
    );
    assert!(listed.contains("disk0"), "{listed}");

    // nbdcopy 64 MiB in through a follower, out through another member.
    let data = random_bytes(64 << 20, 1);
    let input = write_file(tmp.path(), "in.raw", &data);
    let output = tmp.path().join("out.raw");
    let started = Instant::now();
    must(
        "nbdcopy",
        &[input.to_str().unwrap(), &c.nbd_uri(f, "disk0")],
    );
    let took = started.elapsed();
    must(
        "nbdcopy",
        &[&c.nbd_uri(leader, "disk0"), output.to_str().unwrap()],
    );
    same_bytes(
        &std::fs::read(&output).expect("read back"),
        &data,
        "nbdcopy round trip",
    );
    eprintln!("nbdcopy of 64 MiB into a follower took {took:?}");

    // qemu-img: a qcow2 image into a volume and back out.
    let (ok, out) = c.ferrite(&["volume", "create", "img", "--size", "32MiB"]);
    assert!(ok, "{out}");
    let raw = write_file(tmp.path(), "img.raw", &random_bytes(20 << 20, 2));
    let qcow = tmp.path().join("img.qcow2");
    let back = tmp.path().join("back.qcow2");
    must(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    let img_uri = c.nbd_uri(f, "img");
    must(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qcow.to_str().unwrap(),
            &img_uri,
        ],
    );
    must(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            qcow.to_str().unwrap(),
            &img_uri,
        ],
    );
    must(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &c.nbd_uri(leader, "img"),
            back.to_str().unwrap(),
        ],
    );
    must(
        "qemu-img",
        &["compare", qcow.to_str().unwrap(), back.to_str().unwrap()],
    );

    // nbdsh: unaligned writes at odd offsets and lengths, read back byte
    // for byte, through the same and another member; then out-of-range
    // requests are errors and the connection still serves.
    let (ok, out) = c.ferrite(&["volume", "create", "small", "--size", "1MiB"]);
    assert!(ok, "{out}");
    let model = tmp.path().join("model.bin");
    let script = format!(
        r#"
import random, errno
random.seed(7)
size = h.get_size()
model = bytearray(size)
for i in range(300):
    off = random.randrange(size - 1)
    n = random.randint(1, min(9000, size - off))
    data = bytes(random.getrandbits(8) for _ in range(n))
    h.pwrite(data, off)
    model[off:off + n] = data
assert h.pread(size, 0) == bytes(model), "read back differs"
# Let the requests reach the server instead of libnbd refusing them.
h.set_strict_mode(0)
for (what, call) in [("write", lambda: h.pwrite(b"x" * 10, size - 5)),
                     ("read", lambda: h.pread(10, size - 5)),
                     ("zero", lambda: h.zero(4096, size))]:
    try:
        call()
        raise SystemExit("out-of-range " + what + " succeeded")
    except nbd.Error as e:
        assert e.errnum in (errno.ENOSPC, errno.EINVAL), (what, str(e))
        assert "out of bounds" not in str(e), (what, str(e))
h.zero(8192, 4096)
model[4096:12288] = bytes(8192)
h.trim(4096, 65536)
model[65536:69632] = bytes(4096)
assert h.pread(size, 0) == bytes(model), "after zero and trim"
open("{model}", "wb").write(model)
"#,
        model = model.display()
    );
    must("nbdsh", &["-u", &c.nbd_uri(f, "small"), "-c", &script]);
    let model_bytes = std::fs::read(&model).expect("model");
    let other = tmp.path().join("small.raw");
    must(
        "nbdcopy",
        &[&c.nbd_uri(leader, "small"), other.to_str().unwrap()],
    );
    same_bytes(
        &std::fs::read(&other).expect("copy"),
        &model_bytes,
        "nbdsh writes seen by another member",
    );

    // The command line: write a file at an odd offset, read it back.
    let piece = random_bytes(1_500_001, 3);
    let piece_path = write_file(tmp.path(), "piece", &piece);
    let (ok, out) = c.ferrite(&[
        "volume",
        "write",
        "disk0",
        "--offset",
        "12345",
        piece_path.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let read = Command::new(common::BIN)
        .args([
            "volume", "read", "disk0", "--offset", "12345", "--length", "1500001",
        ])
        .args(["--endpoints", &c.endpoints().join(",")])
        .output()
        .expect("ferrite volume read");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    same_bytes(&read.stdout, &piece, "ferrite volume write/read");
    let (ok, out) = c.ferrite(&[
        "volume", "read", "disk0", "--offset", "67108860", "--length", "5",
    ]);
    assert!(!ok && out.contains("outside the volume"), "{out}");

    // Resize and delete.
    let (ok, out) = c.ferrite(&["volume", "resize", "small", "--size", "3MiB"]);
    assert!(ok, "{out}");
    assert_eq!(
        must("nbdinfo", &["--size", &c.nbd_uri(f, "small")]).trim(),
        "3145728"
    );
    let (ok, out) = c.ferrite(&["volume", "delete", "small"]);
    assert!(ok, "{out}");
    let (ok, out) = run("nbdinfo", &[&c.nbd_uri(f, "small")]);
    assert!(!ok, "a deleted volume is still exported: {out}");
    // The server still serves after all that.
    assert_eq!(
        must("nbdinfo", &["--size", &c.nbd_uri(f, "disk0")]).trim(),
        "67108864"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fio_verifies_random_and_sequential_writes_at_qd_1_and_32() {
    let c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let (ok, out) = c.ferrite(&["volume", "create", "fio", "--size", "64MiB"]);
    assert!(ok, "{out}");
    let uri = c.nbd_uri(follower(leader, 3), "fio");
    for (rw, bs, depth) in [
        ("randwrite", "4k", "1"),
        ("randwrite", "4k", "32"),
        ("write", "64k", "1"),
        ("write", "64k", "32"),
    ] {
        let out = must(
            "fio",
            &[
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                &format!("--rw={rw}"),
                &format!("--bs={bs}"),
                &format!("--iodepth={depth}"),
                "--size=8M",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--randrepeat=1",
                "--verify_state_save=0",
            ],
        );
        assert!(!out.contains("verify: bad"), "fio {rw} qd {depth}:\n{out}");
        assert!(out.contains("err= 0"), "fio {rw} qd {depth}:\n{out}");
    }
}

/// Waits until member `i` has applied everything the leader had committed
/// when asked.
async fn caught_up(c: &Cluster, i: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let leader = c.leader(within).await;
    let target = ferrite_client::node_status(&c.members[leader].client.to_string())
        .await
        .expect("leader status")
        .commit_index;
    while Instant::now() < deadline {
        if let Ok(s) = ferrite_client::node_status(&c.members[i].client.to_string()).await {
            if s.applied_index >= target {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("member {i} did not catch up to {target}:\n{}", c.log(i));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_during_nbdcopy_loses_no_byte_and_the_member_catches_up_by_snapshot() {
    let mut c = Cluster::start(3);
    // Snapshot (and compact) often, so that the killed member must be sent
    // a snapshot, and with it a copy of the volume files.
    for i in 0..3 {
        c.kill(i);
        c.spawn_with(i, &["--snapshot-entries", "32"]);
    }
    let leader = c.leader(Duration::from_secs(20)).await;
    let f = follower(leader, 3);
    let (ok, out) = c.ferrite(&["volume", "create", "disk0", "--size", "48MiB"]);
    assert!(ok, "{out}");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = random_bytes(48 << 20, 4);
    let input = write_file(tmp.path(), "in.raw", &data);
    let copy = Command::new("nbdcopy")
        .args([input.to_str().unwrap(), &c.nbd_uri(f, "disk0")])
        .args(["--request-size=262144", "--requests=16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nbdcopy (apt-get install libnbd-bin)");
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.kill(leader);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || copy.wait_with_output())
        .await
        .expect("join")
        .expect("nbdcopy output");
    assert!(
        out.status.success(),
        "nbdcopy failed across the failover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "nbdcopy finished {:?} after the leader kill",
        started.elapsed()
    );
    let output = tmp.path().join("out.raw");
    let survivor = (0..3)
        .find(|&i| i != leader && i != f)
        .expect("third member");
    must(
        "nbdcopy",
        &[&c.nbd_uri(survivor, "disk0"), output.to_str().unwrap()],
    );
    same_bytes(
        &std::fs::read(&output).expect("read back"),
        &data,
        "after the failover",
    );

    // The killed member restarts, is sent a snapshot (its log is long
    // compacted on the others) and copies the volume files; then it serves
    // the same bytes from its own files.
    c.spawn_with(leader, &["--snapshot-entries", "32"]);
    caught_up(&c, leader, Duration::from_secs(60)).await;
    let again = tmp.path().join("again.raw");
    must(
        "nbdcopy",
        &[&c.nbd_uri(leader, "disk0"), again.to_str().unwrap()],
    );
    same_bytes(
        &std::fs::read(&again).expect("read back"),
        &data,
        "the restarted member",
    );
    assert!(
        c.log(leader).contains("copied volume files"),
        "the restarted member did not catch up by snapshot:\n{}",
        c.log(leader)
    );
}

/// A real file system on a volume: `nbdfuse` exposes the export as a file,
/// `losetup` makes it a block device, and ext4 lives on it, across a leader
/// kill in the middle of the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext4_on_a_volume_survives_a_leader_kill() {
    assert!(
        Path::new("/dev/fuse").exists() && Path::new("/dev/loop-control").exists(),
        "this test needs /dev/fuse and loop devices (root on a Linux machine)"
    );
    let mut c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let f = follower(leader, 3);
    let (ok, out) = c.ferrite(&["volume", "create", "fs", "--size", "96MiB"]);
    assert!(ok, "{out}");
    let tmp = tempfile::tempdir().expect("tmp");
    let fuse_dir = tmp.path().join("fuse");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&fuse_dir).expect("mkdir");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mut fuse = Command::new("nbdfuse")
        .arg(&fuse_dir)
        .arg(c.nbd_uri(f, "fs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nbdfuse (apt-get install libnbd-bin fuse3)");
    let dev_file = fuse_dir.join("nbd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dev_file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let guard = Cleanup {
        loop_dev: None,
        mnt: mnt.clone(),
        fuse_dir: fuse_dir.clone(),
    };
    let mut guard = guard;
    let loop_dev = must("losetup", &["-f", "--show", dev_file.to_str().unwrap()])
        .trim()
        .to_string();
    guard.loop_dev = Some(loop_dev.clone());
    must("mkfs.ext4", &["-q", "-F", &loop_dev]);
    must("mount", &[&loop_dev, mnt.to_str().unwrap()]);
    let mut files = Vec::new();
    for i in 0..24u64 {
        if i == 12 {
            must("sync", &[]);
            c.kill(leader);
        }
        let data = random_bytes(1 << 20, 100 + i);
        std::fs::write(mnt.join(format!("f{i}")), &data).expect("write into ext4");
        files.push(data);
    }
    must("sync", &[]);
    must("umount", &[mnt.to_str().unwrap()]);
    let fsck = must("e2fsck", &["-f", "-n", &loop_dev]);
    assert!(!fsck.contains("UNEXPECTED"), "{fsck}");
    must("mount", &[&loop_dev, mnt.to_str().unwrap()]);
    for (i, data) in files.iter().enumerate() {
        let back = std::fs::read(mnt.join(format!("f{i}"))).expect("read back from ext4");
        same_bytes(&back, data, &format!("file f{i}"));
    }
    drop(guard);
    let _ = fuse.kill();
    let _ = fuse.wait();
}

/// Unmounts, detaches and unmounts FUSE whatever happened in the test.
struct Cleanup {
    loop_dev: Option<String>,
    mnt: PathBuf,
    fuse_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("umount", &[self.mnt.to_str().unwrap_or("")]);
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
        let _ = run("fusermount3", &["-u", self.fuse_dir.to_str().unwrap_or("")]);
    }
}
