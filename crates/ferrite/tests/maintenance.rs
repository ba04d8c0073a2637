//! etcd's maintenance surface through etcdctl 3.4, unchanged, against real
//! `ferrite server` processes: the space quota and its NOSPACE alarm,
//! `alarm list` / `alarm disarm`, `compaction` and `defrag`, `endpoint
//! hashkv` on every member, `endpoint status` sizes, and the periodic
//! corruption check raising CORRUPT for the member whose state diverged.

mod common;

use std::time::{Duration, Instant};

use common::{http, Cluster};

/// This member's id, as `endpoint status` reports it.
fn member_id(c: &Cluster, ep: &str) -> u64 {
    let status = endpoint_status(c, ep);
    status["Status"]["header"]["member_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no member id in {status}"))
}

fn endpoint_status(c: &Cluster, ep: &str) -> serde_json::Value {
    let (ok, out) = c.etcdctl(ep, &["endpoint", "status", "-w", "json"]);
    assert!(ok, "endpoint status {ep}: {out}");
    let list: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    list[0].clone()
}

/// `(hash, revision)` of one member, from `endpoint hashkv -w json`.
fn hashkv(c: &Cluster, ep: &str) -> (u64, i64) {
    let (ok, out) = c.etcdctl(ep, &["endpoint", "hashkv", "-w", "json"]);
    assert!(ok, "endpoint hashkv {ep}: {out}");
    let list: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let h = &list[0]["HashKV"];
    (
        h["hash"].as_u64().unwrap_or(0),
        h["header"]["revision"].as_i64().unwrap_or(0),
    )
}

/// Every member's HashKV once all members report the same revision (they
/// have applied the same writes): the hashes then must agree.
fn hashes_at_one_revision(c: &Cluster) -> Vec<(u64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all: Vec<(u64, i64)> = c.endpoints().iter().map(|ep| hashkv(c, ep)).collect();
        if all.iter().all(|h| h.1 == all[0].1) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "members never at one revision: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn revision(c: &Cluster, ep: &str) -> i64 {
    let (ok, out) = c.etcdctl(ep, &["get", "nothing-here", "-w", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    v["header"]["revision"].as_i64().expect("revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_raises_nospace_and_disarm_after_compaction_and_defrag_restores_writes() {
    let c = Cluster::start_with(3, &["--quota-backend-bytes", "20000"]);
    c.leader(Duration::from_secs(20)).await;
    let eps = c.endpoints();
    let ep = eps[0].clone();
    let me = member_id(&c, &ep);
    let value = "x".repeat(200);

    // Fill the quota: each put costs about 270 accounted bytes.
    let mut refused = None;
    for k in 0..200 {
        let (ok, out) = c.etcdctl(&ep, &["put", &format!("key{k:03}"), &value]);
        if !ok {
            refused = Some((k, out));
            break;
        }
    }
    let (k, out) = refused.expect("the quota was never reached");
    assert!(k > 10, "refused too early, at put {k}: {out}");
    assert!(
        out.contains("Error: etcdserver: mvcc: database space exceeded"),
        "{out}"
    );
    assert!(out.contains("code = ResourceExhausted"), "{out}");

    // The alarm names the member that took the write, on every member.
    for e in &eps {
        let (ok, out) = c.etcdctl(e, &["alarm", "list"]);
        assert!(ok, "{out}");
        assert_eq!(
            out.trim(),
            format!("memberID:{me} alarm:NOSPACE"),
            "via {e}"
        );
    }
    // etcd reports raised alarms in `endpoint status` too.
    let status = endpoint_status(&c, &eps[1]);
    assert!(
        status["Status"]["errors"]
            .to_string()
            .contains("alarm:NOSPACE"),
        "{status}"
    );
    let db_size = status["Status"]["dbSize"].as_i64().unwrap_or(0);
    assert!(db_size >= 19_000, "db size near the quota: {status}");

    // Writes that grow the state are refused through every member (each
    // is over the quota too, and raises its own alarm, as etcd's members do).
    for e in &eps {
        let (ok, out) = c.etcdctl(e, &["put", "small", "v"]);
        assert!(
            !ok && out.contains("database space exceeded"),
            "via {e}: {out}"
        );
    }
    let (ok, out) = c.etcdctl(&eps[2], &["lease", "grant", "60"]);
    assert!(!ok && out.contains("database space exceeded"), "{out}");
    // Deletes and reads still work.
    let (ok, out) = c.etcdctl(&ep, &["del", "key", "--prefix"]);
    assert!(ok && out.trim().parse::<u64>().unwrap_or(0) >= 10, "{out}");
    let (ok, out) = c.etcdctl(&eps[1], &["get", "key", "--prefix", "--keys-only"]);
    assert!(ok, "{out}");

    // Compaction, then defragmentation of every member, then disarm.
    let rev = revision(&c, &ep);
    let (ok, out) = c.etcdctl(&ep, &["compaction", &rev.to_string()]);
    assert!(
        ok && out.contains(&format!("compacted revision {rev}")),
        "{out}"
    );
    for e in &eps {
        let (ok, out) = c.etcdctl(e, &["defrag"]);
        assert!(ok, "{out}");
        assert_eq!(
            out.trim(),
            format!("Finished defragmenting etcd member[{e}]")
        );
    }
    let after = endpoint_status(&c, &ep)["Status"]["dbSize"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        after > 0 && after < db_size / 4,
        "defrag brought the db size from {db_size} down to {after}"
    );
    let (ok, out) = c.etcdctl(&ep, &["put", "small", "v"]);
    assert!(!ok, "still refused before the disarm: {out}");
    let (ok, out) = c.etcdctl(&eps[1], &["alarm", "disarm"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("memberID:{me} alarm:NOSPACE")),
        "{out}"
    );
    assert!(out.lines().all(|l| l.ends_with("alarm:NOSPACE ")), "{out}");
    let (ok, out) = c.etcdctl(&ep, &["alarm", "list"]);
    assert!(ok && out.trim().is_empty(), "{out}");
    for e in &eps {
        let (ok, out) = c.etcdctl(e, &["put", "small", "v"]);
        assert!(ok && out.contains("OK"), "via {e}: {out}");
    }
    let (ok, out) = c.etcdctl(&eps[2], &["lease", "grant", "60"]);
    assert!(ok && out.contains("granted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashkv_is_equal_on_every_member_and_defrag_answers_on_each() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let eps = c.endpoints();
    for k in 0..20 {
        let (ok, out) = c.etcdctl(&eps[k % 3], &["put", &format!("k{k}"), &format!("v{k}")]);
        assert!(ok, "{out}");
    }
    let (ok, out) = c.etcdctl(&eps[1], &["del", "k1"]);
    assert!(ok, "{out}");
    let before = hashes_at_one_revision(&c);
    assert!(before[0].0 != 0, "{before:?}");
    assert!(before.iter().all(|h| h == &before[0]), "{before:?}");

    // A compaction keeps them equal; a write changes the hash.
    let rev = revision(&c, &eps[0]);
    let (ok, out) = c.etcdctl(&eps[2], &["compaction", &(rev - 5).to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = c.etcdctl(&eps[2], &["put", "k0", "changed"]);
    assert!(ok, "{out}");
    let after = hashes_at_one_revision(&c);
    assert!(after.iter().all(|h| h == &after[0]), "{after:?}");
    assert_ne!(after[0].0, before[0].0, "a write changes the hash");

    // HashKV at an older revision is the hash the members had then.
    let (ok, out) = c.etcdctl(&eps[1], &["endpoint", "hashkv", "--rev", &rev.to_string()]);
    assert!(
        ok && out.contains(&before[0].0.to_string()),
        "{out} vs {before:?}"
    );
    let (ok, out) = c.etcdctl(&eps[1], &["endpoint", "hashkv", "--rev", "2"]);
    assert!(
        !ok && out.contains("required revision has been compacted"),
        "{out}"
    );

    // Every member defragments and says so as etcd does; sizes are real.
    let all = eps.join(",");
    let (ok, out) = c.etcdctl(&all, &["defrag"]);
    assert!(ok, "{out}");
    for e in &eps {
        assert!(
            out.contains(&format!("Finished defragmenting etcd member[{e}]")),
            "{out}"
        );
        let s = endpoint_status(&c, e);
        assert!(s["Status"]["dbSize"].as_i64().unwrap_or(0) > 0, "{s}");
        assert!(s["Status"]["dbSizeInUse"].as_i64().unwrap_or(0) > 0, "{s}");
    }
    let logs = (0..3).map(|i| c.log(i)).collect::<String>();
    assert!(
        logs.contains("defragmented"),
        "defrag logs what it reclaimed"
    );

    // The same through the member list, as operators run them.
    let (ok, out) = c.etcdctl(&eps[0], &["endpoint", "hashkv", "--cluster"]);
    assert!(ok, "{out}");
    let hashes: Vec<&str> = out.lines().filter_map(|l| l.split(", ").nth(1)).collect();
    assert_eq!(hashes.len(), 3, "{out}");
    assert!(hashes.iter().all(|h| *h == after[0].0.to_string()), "{out}");
    let (ok, out) = c.etcdctl(&eps[1], &["defrag", "--cluster"]);
    assert!(
        ok && out.matches("Finished defragmenting etcd member[").count() == 3,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corruption_check_raises_corrupt_naming_the_diverged_member() {
    let c = Cluster::start_with(3, &["--corrupt-check-time", "300ms", "--fault-injection"]);
    c.leader(Duration::from_secs(20)).await;
    let eps = c.endpoints();
    for k in 0..5 {
        let (ok, out) = c.etcdctl(&eps[0], &["put", &format!("k{k}"), "v"]);
        assert!(ok, "{out}");
    }
    let equal = hashes_at_one_revision(&c);
    assert!(equal.iter().all(|h| h == &equal[0]), "{equal:?}");
    // No alarm while the members agree (several checks have run).
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out) = c.etcdctl(&eps[0], &["alarm", "list"]);
    assert!(ok && out.trim().is_empty(), "{out}");

    // One member's copy of k3 changes, on that member only.
    let bad = 2;
    let bad_id = member_id(&c, &eps[bad]);
    let (code, body) = http(c.members[bad].http, "POST", "/v1/fault/corrupt?key=k3", "");
    assert_eq!(code, 200, "{body}");
    let hashes: Vec<(u64, i64)> = eps.iter().map(|e| hashkv(&c, e)).collect();
    assert_ne!(hashes[bad].0, hashes[0].0, "{hashes:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (ok, out) = c.etcdctl(&eps[0], &["alarm", "list"]);
        assert!(ok, "{out}");
        if !out.trim().is_empty() {
            break out;
        }
        assert!(Instant::now() < deadline, "no alarm raised");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed.trim(), format!("memberID:{bad_id} alarm:CORRUPT"));
    let (ok, out) = c.etcdctl(&eps[1], &["put", "k9", "v"]);
    assert!(!ok && out.contains("etcdserver: corrupt cluster"), "{out}");
    let logs = (0..3).map(|i| c.log(i)).collect::<String>();
    assert!(
        logs.lines()
            .any(|l| l.contains("raising CORRUPT") && l.contains(&format!("{bad_id:x}"))),
        "the check logs the member it names"
    );
}
