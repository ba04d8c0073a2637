//! Backups and disaster recovery through real processes and etcdctl 3.4:
//! `etcdctl snapshot save` from a cluster with keys, a lease, users and
//! roles (auth on) and a register; `ferrite snapshot status`; `ferrite
//! snapshot restore` into the data directories of a new 3-member cluster on
//! new ports, which serves all of it and takes writes. A damaged or
//! truncated file is refused and creates nothing. A cluster that lost two
//! of three members for good goes on from the survivor with
//! `--force-new-cluster`, and a new member joins it and catches up.
//! `ferrite snapshot save --with-volumes` keeps volume contents (written
//! with `nbdcopy`) beside the file, and a restored 3-member cluster serves
//! them on every member over NBD; a damaged image is refused.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, BIN};

const ROOT: &str = "root:rootpw";

fn ok(c: &Cluster, endpoint: &str, args: &[&str]) -> String {
    let (ok, out) = c.etcdctl(endpoint, args);
    assert!(ok, "etcdctl {args:?} failed: {out}");
    out
}

/// Runs `ferrite ARGS` (no endpoints added).
fn ferrite(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run ferrite");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A cluster of `n` members on fresh ports, not started.
fn unstarted(n: usize) -> Cluster {
    let mut c = Cluster::start(0);
    for k in 1..=n {
        c.add_joiner(&format!("n{k}"));
    }
    c
}

async fn retry_ok(c: &Cluster, endpoint: &str, args: &[&str]) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let (ok, out) = c.etcdctl(endpoint, args);
        if ok {
            return out;
        }
        last = out;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcdctl {args:?} kept failing: {last}");
}

/// Retries until the output contains `want`.
async fn retry_until(c: &Cluster, endpoint: &str, args: &[&str], want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let (ok, out) = c.etcdctl(endpoint, args);
        if ok && out.contains(want) {
            return out;
        }
        last = out;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcdctl {args:?} never said {want:?}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_then_ferrite_restore_into_a_new_cluster() {
    let old = Cluster::start(3);
    old.leader(Duration::from_secs(20)).await;
    let ep = old.endpoints().join(",");
    for i in 0..20 {
        ok(
            &old,
            &ep,
            &["put", &format!("app/k{i:02}"), &format!("v{i}")],
        );
    }
    let grant = ok(&old, &ep, &["lease", "grant", "600"]);
    let lease = grant
        .split_whitespace()
        .nth(1)
        .expect("lease grant prints the id")
        .to_string();
    ok(&old, &ep, &["put", "leased", "yes", "--lease", &lease]);
    ok(&old, &ep, &["user", "add", ROOT]);
    ok(&old, &ep, &["user", "add", "alice:alicepw"]);
    ok(&old, &ep, &["role", "add", "reader"]);
    ok(
        &old,
        &ep,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "app/",
            "--prefix",
        ],
    );
    ok(&old, &ep, &["user", "grant-role", "alice", "reader"]);
    ok(&old, &ep, &["auth", "enable"]);
    let (set, out) = old.ferrite(&["register", "set", "visits", "42", "--user", ROOT]);
    assert!(set, "register set: {out}");
    let get = ok(&old, &ep, &["--user", ROOT, "get", "app/k00", "-w", "json"]);
    let doc: serde_json::Value = serde_json::from_str(get.trim()).expect("json");
    let revision = doc["header"]["revision"].as_i64().expect("a revision");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.db");
    let file_s = file.to_string_lossy().to_string();
    // etcd: Snapshot is for root alone when auth is on.
    // etcdctl takes a snapshot from one member.
    let first = old.members[0].client.to_string();
    let (saved, out) = old.etcdctl(
        &first,
        &["--user", "alice:alicepw", "snapshot", "save", &file_s],
    );
    assert!(!saved, "alice may not take a snapshot: {out}");
    assert!(out.contains("permission denied"), "{out}");
    assert!(!file.exists(), "nothing saved");
    let out = ok(&old, &first, &["--user", ROOT, "snapshot", "save", &file_s]);
    assert!(out.contains("Snapshot saved at"), "{out}");
    let size = std::fs::metadata(&file).expect("saved").len();
    assert_eq!(size % 512, 32, "etcd's hashed snapshot size");
    drop(old);

    let (good, status) = ferrite(&["snapshot", "status", &file_s, "-w", "json"]);
    assert!(good, "status: {status}");
    let doc: serde_json::Value = serde_json::from_str(status.trim()).expect("json");
    assert_eq!(doc["revision"].as_i64(), Some(revision), "{status}");
    assert_eq!(doc["totalKey"].as_u64(), Some(21), "{status}");
    assert_eq!(doc["totalSize"].as_u64(), Some(size), "{status}");
    let (good, table) = ferrite(&["snapshot", "status", &file_s]);
    assert!(
        good && table.contains("TOTAL KEYS") && table.contains(&revision.to_string()),
        "{table}"
    );

    let mut new = unstarted(3);
    let cluster = new
        .members
        .iter()
        .map(|m| format!("{}=http://{}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..3 {
        let data = new.data_dir(i);
        let (good, out) = ferrite(&[
            "snapshot",
            "restore",
            &file_s,
            "--name",
            &new.members[i].name,
            "--initial-cluster",
            &cluster,
            "--initial-advertise-peer-urls",
            &format!("http://{}", new.members[i].peer),
            "--data-dir",
            &data.to_string_lossy(),
        ]);
        assert!(good, "restore n{}: {out}", i + 1);
        assert!(out.contains("restored"), "{out}");
    }
    // A second restore into a directory that has data is refused.
    let (again, out) = ferrite(&[
        "snapshot",
        "restore",
        &file_s,
        "--name",
        "n1",
        "--initial-cluster",
        &cluster,
        "--data-dir",
        &new.data_dir(0).to_string_lossy(),
    ]);
    assert!(!again && out.contains("not empty"), "{out}");

    for i in 0..3 {
        new.spawn(i);
    }
    new.leader(Duration::from_secs(30)).await;
    let ep = new.endpoints().join(",");
    let keys = retry_ok(
        &new,
        &ep,
        &["--user", ROOT, "get", "app/", "--prefix", "--keys-only"],
    )
    .await;
    assert_eq!(keys.split_whitespace().count(), 20, "{keys}");
    let v = ok(
        &new,
        &ep,
        &["--user", ROOT, "get", "app/k07", "--print-value-only"],
    );
    assert_eq!(v.trim(), "v7");
    // The revision goes on from the old cluster's.
    let out = ok(
        &new,
        &ep,
        &["--user", ROOT, "put", "after", "restore", "-w", "json"],
    );
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        doc["header"]["revision"].as_i64(),
        Some(revision + 1),
        "{out}"
    );
    let leases = ok(&new, &ep, &["--user", ROOT, "lease", "list"]);
    assert!(leases.contains(&lease), "lease {lease} in {leases}");
    let ttl = ok(
        &new,
        &ep,
        &["--user", ROOT, "lease", "timetolive", &lease, "--keys"],
    );
    assert!(
        ttl.contains("granted with TTL(600s)") && ttl.contains("leased"),
        "{ttl}"
    );
    let users = ok(&new, &ep, &["--user", ROOT, "user", "list"]);
    assert!(users.contains("alice") && users.contains("root"), "{users}");
    // Auth is on, and alice has her role.
    let v = ok(
        &new,
        &ep,
        &[
            "--user",
            "alice:alicepw",
            "get",
            "app/k01",
            "--print-value-only",
        ],
    );
    assert_eq!(v.trim(), "v1");
    let (denied, out) = new.etcdctl(&ep, &["--user", "alice:alicepw", "put", "app/x", "y"]);
    assert!(!denied && out.contains("permission denied"), "{out}");
    let (unauth, out) = new.etcdctl(&ep, &["get", "app/k01"]);
    assert!(!unauth, "auth stays enabled: {out}");
    let (got, out) = new.ferrite(&["register", "get", "visits", "--user", ROOT]);
    assert!(got && out.trim() == "42", "register: {out}");
    // The member list is the new cluster's.
    let list = retry_ok(&new, &ep, &["--user", ROOT, "member", "list"]).await;
    for m in &new.members {
        assert!(list.contains(&m.peer.to_string()), "{} in {list}", m.name);
    }
    assert_eq!(list.lines().count(), 3, "{list}");
    // Every member serves the data.
    for m in &new.members {
        let v = retry_ok(
            &new,
            &m.client.to_string(),
            &[
                "--user",
                ROOT,
                "get",
                "after",
                "--print-value-only",
                "--consistency",
                "s",
            ],
        )
        .await;
        assert_eq!(v.trim(), "restore", "{}", m.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_truncated_snapshots_are_refused_and_create_nothing() {
    let c = Cluster::start(1);
    c.leader(Duration::from_secs(20)).await;
    let ep = c.endpoints().join(",");
    for i in 0..50 {
        ok(&c, &ep, &["put", &format!("k{i}"), &"x".repeat(1000)]);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("good.snap");
    let file_s = file.to_string_lossy().to_string();
    // Ferrite's own client saves the same file etcdctl does.
    let (saved, out) = c.ferrite(&["snapshot", "save", &file_s]);
    assert!(saved, "{out}");
    assert!(
        out.contains("Snapshot saved at") && out.contains("revision 51"),
        "{out}"
    );
    assert!(!dir.path().join("good.snap.part").exists());
    let good = std::fs::read(&file).expect("saved");
    let (ok_status, out) = ferrite(&["snapshot", "status", &file_s, "-w", "simple"]);
    assert!(ok_status && out.contains(", 51, 50, "), "{out}");

    let cluster = format!("n1=http://{}", c.members[0].peer);
    let restore = |path: &Path, data: &Path| {
        ferrite(&[
            "snapshot",
            "restore",
            &path.to_string_lossy(),
            "--name",
            "n1",
            "--initial-cluster",
            &cluster,
            "--data-dir",
            &data.to_string_lossy(),
        ])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "flipped",
            {
                let mut b = good.clone();
                b[good.len() / 2] ^= 0x20;
                b
            },
            "sha256 mismatch",
        ),
        (
            "flipped-hash",
            {
                let mut b = good.clone();
                let last = b.len() - 1;
                b[last] ^= 1;
                b
            },
            "sha256 mismatch",
        ),
        ("truncated", good[..good.len() - 700].to_vec(), "truncated"),
        ("short", good[..40].to_vec(), "too short"),
        (
            "garbage",
            vec![0x5a; 4096 + 32],
            "not a Ferrite snapshot file",
        ),
        ("empty", Vec::new(), "too short"),
    ];
    for (name, bytes, error) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let (good_status, out) = ferrite(&["snapshot", "status", &path.to_string_lossy()]);
        assert!(!good_status && out.contains(error), "status {name}: {out}");
        let data = dir.path().join(format!("{name}-data"));
        let (restored, out) = restore(&path, &data);
        assert!(!restored && out.contains(error), "restore {name}: {out}");
        assert!(!data.exists(), "{name}: nothing created");
    }
    // A missing file, too.
    let (restored, out) = restore(&dir.path().join("missing"), &dir.path().join("m"));
    assert!(!restored && out.contains("cannot open"), "{out}");
    // The good file restores.
    let (restored, out) = restore(&file, &dir.path().join("good-data"));
    assert!(restored, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_recovers_from_one_survivor() {
    let mut c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let ep = c.endpoints().join(",");
    for i in 0..10 {
        ok(&c, &ep, &["put", &format!("k{i}"), &format!("v{i}")]);
    }
    let (set, out) = c.ferrite(&["register", "set", "r", "7"]);
    assert!(set, "{out}");
    ok(&c, &ep, &["put", "last", "write"]);
    // As etcd, the survivor keeps what it knows to be committed: wait
    // until it has applied the last write (and, a moment later, written
    // its commit index).
    let survivor = c.members[0].client.to_string();
    let v = retry_until(
        &c,
        &survivor,
        &["get", "last", "--print-value-only", "--consistency", "s"],
        "write",
    )
    .await;
    assert_eq!(v.trim(), "write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two members are lost for good; the survivor alone has no quorum.
    c.kill(1);
    c.kill(2);
    let (wrote, out) = c.etcdctl(
        &survivor,
        &["--command-timeout", "2s", "put", "lost", "quorum"],
    );
    assert!(!wrote, "no quorum: {out}");
    c.kill(0);
    c.spawn_with(0, &["--force-new-cluster"]);
    assert_eq!(c.leader(Duration::from_secs(20)).await, 0);
    let v = retry_ok(&c, &survivor, &["get", "k9", "--print-value-only"]).await;
    assert_eq!(v.trim(), "v9");
    ok(&c, &survivor, &["put", "after", "force"]);
    let (got, out) = c.ferrite(&["register", "get", "r"]);
    assert!(got && out.trim().ends_with('7'), "{out}");
    let list = ok(&c, &survivor, &["member", "list"]);
    assert_eq!(list.lines().count(), 1, "a cluster of one: {list}");

    // A new member joins (as a learner, then promoted) and catches up.
    let n4 = c.add_joiner("n4");
    let peer_url = format!("http://{}", c.members[n4].peer);
    let out = ok(
        &c,
        &survivor,
        &["member", "add", "n4", "--learner", "--peer-urls", &peer_url],
    );
    let id = out
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .expect("member add prints the id")
        .to_string();
    c.spawn_with(n4, &["--join"]);
    retry_ok(&c, &survivor, &["member", "promote", &id]).await;
    let n4_ep = c.members[n4].client.to_string();
    let v = retry_ok(&c, &n4_ep, &["get", "after", "--print-value-only"]).await;
    assert_eq!(v.trim(), "force");
    let v = ok(
        &c,
        &n4_ep,
        &["get", "k3", "--print-value-only", "--consistency", "s"],
    );
    assert_eq!(v.trim(), "v3");
    ok(&c, &n4_ep, &["put", "two", "members"]);
    let list = ok(&c, &survivor, &["member", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
}

/// Deterministic pseudo-random bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

fn same_bytes(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

fn nbdcopy(from: &str, to: &str) {
    let out = Command::new("nbdcopy")
        .args([from, to])
        .output()
        .expect("nbdcopy (apt-get install libnbd-bin)");
    assert!(
        out.status.success(),
        "nbdcopy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_volumes_restores_volume_contents_on_every_member() {
    let old = Cluster::start(3);
    let leader = old.leader(Duration::from_secs(20)).await;
    let (made, out) = old.ferrite(&["volume", "create", "disk0", "--size", "8MiB"]);
    assert!(made, "volume create: {out}");
    let (made, out) = old.ferrite(&["volume", "create", "blank", "--size", "1MiB"]);
    assert!(made, "volume create: {out}");
    // Random bytes with a zero MiB in the middle (kept as a hole).
    let mut data = pattern(8 << 20, 17);
    data[3 << 20..4 << 20].fill(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.img");
    std::fs::write(&input, &data).expect("write input");
    let follower = (leader + 1) % 3;
    nbdcopy(&input.to_string_lossy(), &old.nbd_uri(follower, "disk0"));
    ok(&old, &old.endpoints().join(","), &["put", "k", "v"]);

    let file = dir.path().join("backup.db");
    let file_s = file.to_string_lossy().to_string();
    let (saved, out) = old.ferrite(&["snapshot", "save", &file_s, "--with-volumes"]);
    assert!(saved, "save: {out}");
    assert!(
        out.contains("Volumes saved") && out.contains("2 volumes"),
        "{out}"
    );
    let companion = dir.path().join("backup.db.volumes");
    let manifest = std::fs::read_to_string(companion.join("manifest.json")).expect("manifest");
    assert!(
        manifest.contains("disk0") && manifest.contains("8388608"),
        "{manifest}"
    );
    // FILE is the same kind of file etcdctl reads.
    let size = std::fs::metadata(&file).expect("saved").len();
    assert_eq!(size % 512, 32, "etcd's hashed snapshot size");
    // A second save next to an existing companion is refused.
    let again = dir.path().join("backup2.db");
    std::fs::create_dir(dir.path().join("backup2.db.volumes")).expect("mkdir");
    let (saved, out) = old.ferrite(&[
        "snapshot",
        "save",
        &again.to_string_lossy(),
        "--with-volumes",
    ]);
    assert!(!saved && out.contains("exists"), "{out}");
    drop(old);

    let mut new = unstarted(3);
    let cluster = new
        .members
        .iter()
        .map(|m| format!("{}=http://{}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",");
    let restore = |data: &Path, name: &str, extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            &file_s,
            "--name",
            name,
            "--initial-cluster",
            &cluster,
        ];
        let data = data.to_string_lossy().to_string();
        args.extend(["--data-dir", &data]);
        args.extend(extra);
        ferrite(&args)
    };

    // A damaged image is refused, and nothing is left behind.
    let manifest_doc: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    let disk0 = manifest_doc["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "disk0")
        .expect("disk0 in the manifest");
    let image = companion.join(disk0["file"].as_str().expect("file of disk0"));
    let good = std::fs::read(&image).expect("image");
    same_bytes(&good, &data, "the saved image");
    let mut bad = good.clone();
    bad[5 << 20] ^= 1;
    std::fs::write(&image, &bad).expect("damage");
    let scratch = dir.path().join("scratch");
    let (restored, out) = restore(&scratch, "n1", &[]);
    assert!(
        !restored && out.contains("differs from the manifest"),
        "{out}"
    );
    assert!(!scratch.exists(), "nothing left in {}", scratch.display());
    // --skip-volumes ignores the images, and says so.
    let (restored, out) = restore(&scratch, "n1", &["--skip-volumes"]);
    assert!(
        restored && out.contains("zero contents (--skip-volumes)"),
        "{out}"
    );
    std::fs::remove_dir_all(&scratch).expect("clean");
    std::fs::write(&image, &good).expect("repair");
    drop(good);
    drop(bad);

    for i in 0..3 {
        let name = new.members[i].name.clone();
        let (restored, out) = restore(&new.data_dir(i), &name, &[]);
        assert!(restored, "restore {name}: {out}");
        assert!(
            out.contains("2 volumes restored from") && out.contains("hashes verified"),
            "{out}"
        );
    }
    for i in 0..3 {
        new.spawn(i);
    }
    new.leader(Duration::from_secs(30)).await;
    let v = retry_ok(
        &new,
        &new.endpoints().join(","),
        &["get", "k", "--print-value-only"],
    )
    .await;
    assert_eq!(v.trim(), "v");
    for i in 0..3 {
        let out = dir.path().join(format!("out{i}.img"));
        nbdcopy(&new.nbd_uri(i, "disk0"), &out.to_string_lossy());
        let back = std::fs::read(&out).expect("read back");
        same_bytes(&back, &data, &format!("disk0 on {}", new.members[i].name));
        std::fs::remove_file(&out).expect("clean");
        nbdcopy(&new.nbd_uri(i, "blank"), &out.to_string_lossy());
        let back = std::fs::read(&out).expect("read back");
        assert!(
            back.len() == 1 << 20 && back.iter().all(|b| *b == 0),
            "blank"
        );
        std::fs::remove_file(&out).expect("clean");
        // Served from the restored files, not copied from a peer.
        assert!(
            !new.log(i).contains("copied volume files"),
            "{} copied its volumes: {}",
            new.members[i].name,
            new.log(i)
        );
    }
}
