//! Details of etcd's behaviour that clients notice, checked with etcdctl 3.4
//! (unchanged) and the `etcd-client` crate against real clusters:
//! endpoints written as `http://` URLs (etcdctl sends them as the HTTP/2
//! `:authority`), `Status.raft_index` as the commit index, the `hasleader`
//! metadata, MemberUpdate/MemberAdd/MemberList, the revision in every
//! response header, and the version claimed.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, Cluster};
use serde_json::Value;

fn url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

/// `etcdctl ... -w json` as JSON; panics with the output when it fails.
fn etcdctl_json(c: &Cluster, endpoint: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    let (ok, out) = c.etcdctl(endpoint, &all);
    assert!(ok, "etcdctl {args:?}: {out}");
    let start = out.find(['{', '[']).unwrap_or(0);
    serde_json::from_str(out[start..].trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The `Status` of `endpoint`, as `etcdctl endpoint status -w json` shows it.
fn endpoint_status(c: &Cluster, endpoint: &str) -> Value {
    etcdctl_json(c, endpoint, &["endpoint", "status"])[0]["Status"].clone()
}

fn member_id_hex(id: &Value) -> String {
    format!("{:x}", id.as_u64().expect("a member ID"))
}

/// The member list's entry whose peer URLs include `peer`.
fn member_by_peer(c: &Cluster, endpoint: &str, peer: &str) -> Value {
    let list = etcdctl_json(c, endpoint, &["member", "list"]);
    list["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| {
            m["peerURLs"]
                .as_array()
                .is_some_and(|urls| urls.iter().any(|u| u == peer))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no member with peer URL {peer}: {list}"))
}

/// etcdctl 3.4 given `http://` endpoints puts the URL into the HTTP/2
/// `:authority`; every per-endpoint command works as against etcd, also
/// with `--cluster` (client URLs from the member list, which carry the
/// scheme as etcd's do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_with_http_urls_reaches_every_member() {
    let c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let urls: Vec<String> = c.members.iter().map(|m| url(m.client)).collect();
    let all = urls.join(",");

    let statuses = etcdctl_json(&c, &all, &["endpoint", "status"]);
    let statuses = statuses.as_array().expect("one status per endpoint");
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    for s in statuses {
        assert_eq!(s["Status"]["version"], "3.5.0", "{s}");
    }

    let (ok, out) = c.etcdctl(&urls[0], &["endpoint", "status", "--cluster"]);
    assert!(ok, "endpoint status --cluster: {out}");
    for m in &c.members {
        assert!(out.contains(&url(m.client)), "{} missing: {out}", m.client);
    }
    let (ok, out) = c.etcdctl(&urls[1], &["endpoint", "health", "--cluster"]);
    assert!(ok, "endpoint health --cluster: {out}");
    assert_eq!(out.matches("is healthy").count(), 3, "{out}");

    // Client URLs in the member list carry the scheme, as etcd's.
    let (ok, out) = c.etcdctl(&urls[2], &["member", "list"]);
    assert!(ok, "member list: {out}");
    for m in &c.members {
        assert!(
            out.contains(&format!(", {}, false", url(m.client))),
            "{out}"
        );
    }

    // move-leader asks every endpoint for its status, then the leader.
    let target = (leader + 1) % 3;
    let target_id = member_id_hex(&endpoint_status(&c, &urls[target])["header"]["member_id"]);
    let (ok, out) = c.etcdctl(&all, &["move-leader", &target_id]);
    assert!(ok, "move-leader: {out}");
    assert!(out.contains("Leadership transferred"), "{out}");
    assert_eq!(c.leader(Duration::from_secs(20)).await, target);
}

/// `Status.raft_index` is the commit index, as in etcd: a leader cut off from
/// its followers appends the proposals it is given, but its raft_index stays
/// where the last commit left it (with the last log index it would look as
/// if it were committing them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_index_is_the_commit_index() {
    let mut c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let ep = url(c.members[leader].client);
    let (ok, out) = c.etcdctl(&ep, &["put", "k", "v"]);
    assert!(ok, "{out}");
    let healthy = endpoint_status(&c, &ep);
    let index = healthy["raftIndex"].as_u64().expect("raft_index");
    let applied = healthy["raftAppliedIndex"].as_u64().expect("applied");
    assert!(index > 0 && applied <= index, "{healthy}");

    let client = etcd_client::Client::connect([ep.clone()], None)
        .await
        .expect("connect to the leader");
    for i in 0..3 {
        if i != leader {
            c.kill(i);
        }
    }
    // Proposals the isolated leader appends but cannot commit.
    let mut kv = client.kv_client();
    let proposing = tokio::spawn(async move {
        for i in 0..20 {
            let put = kv.put(format!("lost{i}"), "x", None);
            let _ = tokio::time::timeout(Duration::from_millis(100), put).await;
        }
    });
    let member = c.members[leader].client.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        let node = ferrite_client::node_status(&member)
            .await
            .expect("node status");
        if node.last_index > node.commit_index || Instant::now() > deadline {
            break node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        node.last_index > node.commit_index,
        "the isolated leader appended nothing: {node:?}"
    );
    proposing.abort();
    for _ in 0..3 {
        let s = endpoint_status(&c, &ep);
        let raft_index = s["raftIndex"].as_u64().expect("raft_index");
        let node = ferrite_client::node_status(&member)
            .await
            .expect("node status");
        assert_eq!(raft_index, node.commit_index, "{s} {node:?}");
        assert!(raft_index < node.last_index, "{s} {node:?}");
        assert!(
            s["raftAppliedIndex"].as_u64().expect("applied") <= raft_index,
            "{s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Reads a child's pipe on a thread, into a buffer the test can look at
/// while the child runs.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    text
}

fn text(buf: &Arc<Mutex<String>>) -> String {
    buf.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The `hasleader` metadata: a member without a leader refuses at once
/// (etcd's "no leader") instead of waiting for an election, and a watch
/// opened with it (etcdctl's) is canceled once the member lost its leader,
/// as etcd does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_fails_fast_and_ends_watches() {
    let mut c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let survivor = (leader + 1) % 3;
    let ep = url(c.members[survivor].client);
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &ep, "watch", "w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    let stdout = collect(watch.stdout.take().expect("stdout"));
    let stderr = collect(watch.stderr.take().expect("stderr"));
    // The watch is open once it has printed a put (bounded retries).
    let mut seen = false;
    for i in 0..50 {
        let (ok, out) = c.etcdctl(&ep, &["put", "w", &format!("v{i}")]);
        assert!(ok, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if text(&stdout).contains("PUT") {
            seen = true;
            break;
        }
    }
    assert!(seen, "the watch printed nothing: {}", text(&stderr));

    for i in 0..3 {
        if i != survivor {
            c.kill(i);
        }
    }
    let member = c.members[survivor].client.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let node = ferrite_client::node_status(&member)
            .await
            .expect("node status");
        if node.leader_id == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still a leader: {node:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Fail fast with the metadata...
    let options = etcd_client::ConnectOptions::new().with_require_leader(true);
    let mut required = etcd_client::Client::connect([ep.clone()], Some(options))
        .await
        .expect("connect");
    let started = Instant::now();
    let err = required.get("w", None).await.expect_err("no leader");
    // Fast means "without waiting for a leader": the plain read below waits
    // at least 2 s, so anything under that is the metadata's doing.
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    let err = required.member_list().await.expect_err("no leader");
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    // ...and without it, a linearizable read waits for a leader first.
    let mut plain = etcd_client::Client::connect([ep.clone()], None)
        .await
        .expect("connect");
    let started = Instant::now();
    let err = plain.get("w", None).await.expect_err("no leader");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("no leader"), "{err}");
    // A member list that is not linearizable answers from this member, as
    // etcd's; a linearizable one needs the leader.
    let members = plain.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 3);
    let channel = tonic::transport::Endpoint::from_shared(ep.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut cluster = ferrite_proto::etcdserverpb::cluster_client::ClusterClient::new(channel);
    let mut linearizable =
        tonic::Request::new(ferrite_proto::etcdserverpb::MemberListRequest { linearizable: true });
    linearizable
        .metadata_mut()
        .insert("hasleader", "true".parse().expect("metadata"));
    let err = cluster
        .member_list(linearizable)
        .await
        .expect_err("needs a leader");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    // etcdctl's watch is canceled: three election timeouts (0.5 s here)
    // without a leader, then the stream ends with "no leader".
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = watch.try_wait().expect("wait for etcdctl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!("the watch was not canceled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (out, err) = (text(&stdout), text(&stderr));
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains("watch was canceled (etcdserver: no leader)"),
        "{out}{err}"
    );
}

/// `member update` changes a member's peer URLs in the member table and in
/// every member's transport (the leader stops reaching a member moved to a
/// dead address, and reaches it again once moved back), forwarded from a
/// follower; etcd's errors for an unknown member and a URL in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_changes_where_a_member_is_reached() {
    let c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let moved = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let via = url(c.members[other].client);
    let at_leader = url(c.members[leader].client);
    let at_moved = url(c.members[moved].client);
    let peer = url(c.members[moved].peer);
    let id = member_id_hex(&member_by_peer(&c, &via, &peer)["ID"]);

    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, out) = c.etcdctl(&via, &["member", "update", &id, "--peer-urls", &dead]);
    assert!(ok, "member update: {out}");
    assert!(
        // etcdctl prints the ID as `%16x`.
        out.contains(&format!("Member {id:>16} updated in cluster")),
        "{out}"
    );
    let entry = member_by_peer(&c, &at_leader, &dead);
    assert_eq!(member_id_hex(&entry["ID"]), id);
    assert_eq!(entry["peerURLs"].as_array().map(Vec::len), Some(1));
    assert!(entry["name"].as_str().is_some_and(|n| !n.is_empty()));

    // The moved member no longer hears from the leader: the cluster goes
    // on with two, and it does not see the write.
    let (ok, out) = c.etcdctl(&at_leader, &["put", "while-away", "1"]);
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, out) = c.etcdctl(
        &at_moved,
        &["get", "while-away", "--consistency=s", "--print-value-only"],
    );
    assert!(ok, "{out}");
    assert!(out.trim().is_empty(), "the moved member saw it: {out}");

    // Back to its real address: it catches up.
    let (ok, out) = c.etcdctl(&via, &["member", "update", &id, "--peer-urls", &peer]);
    assert!(ok, "member update back: {out}");
    let mut caught_up = false;
    for _ in 0..100 {
        let (_, out) = c.etcdctl(
            &at_moved,
            &["get", "while-away", "--consistency=s", "--print-value-only"],
        );
        if out.trim() == "1" {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(caught_up, "the member did not catch up");

    let (ok, out) = c.etcdctl(&via, &["member", "update", "1234", "--peer-urls", &dead]);
    assert!(!ok && out.contains("etcdserver: member not found"), "{out}");
    let taken = url(c.members[other].peer);
    let (ok, out) = c.etcdctl(&via, &["member", "update", &id, "--peer-urls", &taken]);
    assert!(
        !ok && out.contains("etcdserver: Peer URLs already exists"),
        "{out}"
    );
}

/// `member add` keeps every peer URL; the member is "unstarted" with no name
/// until it starts and publishes it, and its peer URLs stay as added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_keeps_every_peer_url() {
    let mut c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let ep = c
        .endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect::<Vec<_>>()
        .join(",");
    let n4 = c.add_joiner("n4");
    let first = url(c.members[n4].peer);
    let second = format!("http://127.0.0.1:{}", free_port());
    let urls = format!("{first},{second}");
    let (ok, out) = c.etcdctl(
        &ep,
        &["member", "add", "n4", "--learner", "--peer-urls", &urls],
    );
    assert!(ok, "member add: {out}");
    assert!(out.contains(&format!("n4={first}")), "{out}");
    assert!(out.contains(&format!("n4={second}")), "{out}");
    assert!(
        out.contains(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{urls}\"")),
        "{out}"
    );
    let (ok, out) = c.etcdctl(&ep, &["member", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("unstarted, , {urls}, , true")),
        "{out}"
    );

    c.spawn_with(n4, &["--join"]);
    let client = url(c.members[n4].client);
    let want = format!("started, n4, {urls}, {client}, true");
    let mut listed = String::new();
    for _ in 0..150 {
        let (_, out) = c.etcdctl(&ep, &["member", "list"]);
        listed = out;
        if listed.contains(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(listed.contains(&want), "{want:?} not in {listed}");
}

/// Every response header carries the member's current revision (etcd's
/// Maintenance does; its Cluster service leaves 0, which no client can rely
/// on), and the version claimed is etcd 3.5's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_carry_the_current_revision() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let ep = url(c.members[0].client);
    let mut revision = 0;
    for i in 0..3 {
        let put = etcdctl_json(&c, &ep, &["put", "k", &i.to_string()]);
        revision = put["header"]["revision"].as_i64().expect("revision");
    }
    assert!(revision >= 4, "{revision}");
    let list = etcdctl_json(&c, &ep, &["member", "list"]);
    assert_eq!(
        list["header"]["revision"].as_i64(),
        Some(revision),
        "{list}"
    );
    let status = endpoint_status(&c, &ep);
    assert_eq!(
        status["header"]["revision"].as_i64(),
        Some(revision),
        "{status}"
    );
    assert_eq!(status["version"], "3.5.0");
    // etcdctl prints an empty alarm list as `{}`: the header is checked
    // through the etcd-client crate.
    let mut client = etcd_client::Client::connect([ep.clone()], None)
        .await
        .expect("connect");
    let alarm = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .expect("alarm list");
    assert_eq!(alarm.header().map(|h| h.revision()), Some(revision));
    let status = client.status().await.expect("status");
    assert_eq!(status.header().map(|h| h.revision()), Some(revision));
}
