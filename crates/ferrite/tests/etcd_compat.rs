//! Real clients no one here wrote, against real `ferrite server` processes:
//! etcdctl and the etcd-client crate.

mod common;

use std::time::Duration;

use common::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_every_member_of_three() {
    etcdctl_against(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_every_member_of_five() {
    etcdctl_against(5).await;
}

async fn etcdctl_against(n: usize) {
    let c = Cluster::start(n);
    let leader = c.leader(Duration::from_secs(20)).await;
    let eps = c.endpoints();
    let follower = (leader + 1) % n;

    let (ok, out) = c.etcdctl(&eps[0], &["put", "greeting", "hello"]);
    assert!(ok && out.contains("OK"), "{out}");
    for ep in &eps {
        let (ok, out) = c.etcdctl(ep, &["get", "greeting"]);
        assert!(ok && out.contains("greeting\nhello"), "get via {ep}: {out}");
    }
    // A write through a follower is forwarded to the leader.
    let (ok, out) = c.etcdctl(&eps[follower], &["put", "k2", "v2"]);
    assert!(ok, "{out}");
    let (ok, out) = c.etcdctl(&eps[1], &["get", "k", "--prefix"]);
    assert!(ok && out.contains("k2\nv2"), "{out}");

    let (ok, out) = c.etcdctl(&eps[1], &["del", "k2"]);
    assert!(ok && out.trim() == "1", "{out}");

    // A transaction: compare, then the success branch.
    let out = std::process::Command::new("etcdctl")
        .args(["--endpoints", &eps[0], "txn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(
                b"value(\"greeting\") = \"hello\"\n\nput greeting bonjour\n\nput greeting nope\n\n",
            )?;
            child.wait_with_output()
        })
        .expect("etcdctl txn");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("SUCCESS"), "{text}");
    let (_, out) = c.etcdctl(&eps[0], &["get", "greeting", "--print-value-only"]);
    assert_eq!(out.trim(), "bonjour");

    let (ok, out) = c.etcdctl(&eps[0], &["member", "list"]);
    assert!(ok, "{out}");
    for m in &c.members {
        assert!(out.contains(&format!("started, {}", m.name)), "{out}");
    }
    for ep in &eps {
        let (ok, out) = c.etcdctl(ep, &["endpoint", "status"]);
        assert!(ok && out.contains("3.5.0"), "status via {ep}: {out}");
    }
    let (ok, out) = c.etcdctl(&eps[0], &["endpoint", "status", "--cluster", "-w", "table"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches(" true |").count(),
        1,
        "exactly one leader: {out}"
    );
    let (ok, out) = c.etcdctl(&eps[0], &["endpoint", "health"]);
    assert!(ok && out.contains("is healthy"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_works_too() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let mut client = etcd_client::Client::connect(c.endpoints(), None)
        .await
        .expect("connect");
    client.put("a", "1", None).await.expect("put");
    let put = client
        .put(
            "a",
            "2",
            Some(etcd_client::PutOptions::new().with_prev_key()),
        )
        .await
        .expect("put");
    assert_eq!(put.prev_key().map(|kv| kv.value()), Some(&b"1"[..]));
    let got = client.get("a", None).await.expect("get");
    let kv = &got.kvs()[0];
    assert_eq!(kv.value(), b"2");
    assert_eq!(kv.version(), 2);
    assert!(got
        .header()
        .is_some_and(|h| h.revision() >= 3 && h.raft_term() >= 1));
    let old = client
        .get(
            "a",
            Some(etcd_client::GetOptions::new().with_revision(kv.create_revision())),
        )
        .await
        .expect("get at an old revision");
    assert_eq!(old.kvs()[0].value(), b"1");
    client
        .compact(kv.mod_revision(), None)
        .await
        .expect("compact");
    let err = client
        .get(
            "a",
            Some(etcd_client::GetOptions::new().with_revision(kv.create_revision())),
        )
        .await
        .expect_err("compacted");
    assert!(err.to_string().contains("compacted"), "{err}");
    let members = client.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 3);
    let status = client.status().await.expect("status");
    assert!(status.leader() != 0);
}

/// The leader compacts the KV history to the last `--history-revisions`
/// revisions on its own (as etcd's revision-mode auto-compaction), but
/// never history younger than `--history-seconds`; snapshots of the
/// compacted store restore on a restarted member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_old_revisions() {
    let extra = [
        "--history-revisions",
        "10",
        "--history-seconds",
        "5",
        "--snapshot-entries",
        "16",
    ];
    let mut c = Cluster::start_with(3, &extra);
    c.leader(Duration::from_secs(20)).await;
    let mut client = etcd_client::Client::connect(c.endpoints(), None)
        .await
        .expect("connect");
    let first = client.put("h", "v0", None).await.expect("put");
    let first_rev = first.header().map_or(0, |h| h.revision());
    let mut last_rev = first_rev;
    for i in 1..60 {
        let put = client.put("h", format!("v{i}"), None).await.expect("put");
        last_rev = put.header().map_or(0, |h| h.revision());
    }
    let at = |rev: i64| Some(etcd_client::GetOptions::new().with_revision(rev));
    // Younger than the time floor: still readable, though far more than
    // 10 revisions back.
    let young = client.get("h", at(first_rev)).await;
    assert!(young.is_ok(), "compacted within the time floor: {young:?}");
    // The compaction is proposed within a second or two of being due.
    let mut compacted = false;
    for _ in 0..200 {
        match client.get("h", at(first_rev)).await {
            Err(e) if e.to_string().contains("compacted") => {
                compacted = true;
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(compacted, "revision {first_rev} was never compacted");
    // The last 10 revisions stay readable.
    let recent = client.get("h", at(last_rev - 9)).await.expect("recent");
    assert_eq!(recent.kvs()[0].value(), b"v50");
    let status = client.status().await.expect("status");
    assert!(status.leader() != 0);

    // A member restarted from its own snapshot has the same compacted store.
    c.kill(2);
    c.spawn_with(2, &extra);
    let ep = c.endpoints()[2].clone();
    let mut restarted = None;
    for _ in 0..100 {
        if let Ok(client) = etcd_client::Client::connect([ep.clone()], None).await {
            restarted = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut restarted = restarted.expect("the restarted member serves");
    let serializable = etcd_client::GetOptions::new().with_serializable();
    let mut latest = None;
    for _ in 0..100 {
        match restarted.get("h", Some(serializable.clone())).await {
            Ok(r) if r.kvs().first().map(|kv| kv.value()) == Some(&b"v59"[..]) => {
                latest = Some(r);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(latest.is_some(), "the restarted member never caught up");
    let err = restarted
        .get("h", Some(serializable.with_revision(first_rev)))
        .await
        .expect_err("compacted on the restarted member too");
    assert!(err.to_string().contains("compacted"), "{err}");
    let log = c.log(2);
    let started = log
        .lines()
        .rfind(|l| l.contains("node started"))
        .unwrap_or_default();
    assert!(
        !started.contains("snapshot=0"),
        "the restarted member should start from a snapshot: {started}"
    );
}
