//! Membership changes through etcdctl (add a learner, start it, promote it,
//! remove a founder) and the HTTP front end (JSON API, /healthz, /metrics).

mod common;

use std::time::Duration;

use common::{http, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_members() {
    let mut c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let ep = c.endpoints().join(",");
    let (ok, out) = c.etcdctl(&ep, &["put", "before", "join"]);
    assert!(ok, "{out}");

    // Add n4 as a learner, by its peer URL, through a follower or the leader.
    let n4 = c.add_joiner("n4");
    let peer_url = format!("http://{}", c.members[n4].peer);
    let (ok, out) = c.etcdctl(
        &ep,
        &["member", "add", "n4", "--learner", "--peer-urls", &peer_url],
    );
    assert!(ok, "member add: {out}");
    let id = out
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .expect("member add prints the id")
        .to_string();
    // Start it, joining the cluster the others founded.
    c.spawn_with(n4, &["--join"]);
    let n4_ep = c.members[n4].client.to_string();
    // It catches up as a learner, then is promoted.
    let mut promoted = false;
    for _ in 0..200 {
        let (ok, _) = c.etcdctl(&ep, &["member", "promote", &id]);
        if ok {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(promoted, "n4 promoted once caught up; log:\n{}", c.log(n4));
    let (ok, out) = c.etcdctl(&n4_ep, &["get", "before", "--print-value-only"]);
    assert!(ok && out.trim() == "join", "n4 serves the data: {out}");
    // Once started, n4 publishes its name and client address.
    let mut out = String::new();
    for _ in 0..100 {
        out = c.etcdctl(&ep, &["member", "list"]).1;
        if out.contains("started, n4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        out.contains("started, n4") && !out.contains("true"),
        "n4 is a started voter: {out}"
    );

    // Remove founder n1; the other three serve on.
    let (_, list) = c.etcdctl(&ep, &["member", "list"]);
    let n1_id = list
        .lines()
        .find(|l| l.contains(", n1,"))
        .and_then(|l| l.split(',').next())
        .expect("n1 in the list")
        .to_string();
    let (ok, out) = c.etcdctl(&ep, &["member", "remove", &n1_id]);
    assert!(ok, "member remove: {out}");
    c.kill(0);
    let rest = c.members[1..]
        .iter()
        .map(|m| m.client.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut wrote = false;
    for _ in 0..100 {
        if c.etcdctl(&rest, &["put", "after", "remove"]).0 {
            wrote = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wrote, "the remaining members serve writes");
    let (_, out) = c.etcdctl(&rest, &["member", "list"]);
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_api_health_and_metrics() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let (a, b) = (c.members[0].http, c.members[1].http);
    let (code, body) = http(a, "PUT", "/v1/kv/colour", "blue");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(b, "GET", "/v1/kv/colour", "");
    assert!(
        code == 200 && body.contains("\"value\":\"blue\""),
        "{code} {body}"
    );
    let (code, _) = http(b, "GET", "/v1/kv/missing", "");
    assert_eq!(code, 404);
    let (code, body) = http(a, "GET", "/v1/kv?prefix=col", "");
    assert!(code == 200 && body.contains("\"count\":1"), "{body}");
    let (code, body) = http(b, "POST", "/v1/registers/visits/add", "{\"delta\":5}");
    assert!(code == 200 && body.contains("\"value\":5"), "{body}");
    let (code, body) = http(
        a,
        "POST",
        "/v1/registers/visits/cas",
        "{\"expected\":5,\"new\":9}",
    );
    assert!(code == 200 && body.contains("\"succeeded\":true"), "{body}");
    let (code, body) = http(a, "POST", "/v1/registers/visits/add", "not json");
    assert!(
        (400..500).contains(&code),
        "bad JSON is a client error: {code} {body}"
    );
    let (code, body) = http(a, "DELETE", "/v1/kv/colour", "");
    assert!(code == 200 && body.contains("\"deleted\":1"), "{body}");
    assert_eq!(http(a, "GET", "/healthz", "").0, 200);
    let (code, body) = http(a, "GET", "/v1/status", "");
    assert!(code == 200 && body.contains("\"voters\""), "{body}");
    // Metrics, from the leader (which counts heartbeat round trips).
    let leader = c.leader(Duration::from_secs(5)).await;
    let (code, body) = http(c.members[leader].http, "GET", "/metrics", "");
    assert_eq!(code, 200);
    for name in [
        "ferrite_raft_term",
        "ferrite_raft_is_leader 1",
        "ferrite_raft_commit_index",
        "ferrite_proposals_total",
        "ferrite_leader_changes_total",
        "ferrite_wal_fsync_seconds_count",
        "ferrite_peer_round_trip_seconds_count",
    ] {
        assert!(body.contains(name), "{name} missing from\n{body}");
    }
}

/// The dashboard's live stream and fault injection over HTTP: cutting the
/// leader off elects another, the timeline says so, healing brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_the_leader_over_http_elects_another_and_healing_rejoins() {
    let mut c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    // Without --fault-injection the switch is refused; outside `ferrite up`
    // there are no process controls.
    let (code, body) = http(c.members[leader].http, "POST", "/v1/fault/isolate", "");
    assert_eq!(code, 403, "{body}");
    let (code, body) = http(c.members[leader].http, "POST", "/v1/control/n1/kill", "");
    assert_eq!(code, 404, "{body}");
    let (code, page) = http(c.members[0].http, "GET", "/", "");
    assert!(code == 200 && page.contains("<html"), "{code} {page}");
    let (code, _) = http(c.members[0].http, "GET", "/app.js", "");
    assert_eq!(code, 200);

    for i in 0..3 {
        c.kill(i);
        c.spawn_with(i, &["--fault-injection"]);
    }
    let leader = c.leader(Duration::from_secs(20)).await;
    let other = (leader + 1) % 3;
    // The dashboard has sampled every member at least twice (its timeline
    // tells changes between samples), all reachable, before the cut.
    let mut full_views = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while full_views < 2 {
        let view = common::watch_once(c.members[other].http);
        assert_eq!(view["me"], c.members[other].name.as_str());
        let members = view["members"].as_array().cloned().unwrap_or_default();
        if members.len() == 3 && members.iter().all(|m| m["reachable"] == true) {
            full_views += 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard never saw all three members: {view}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let old = c.members[leader].name.clone();
    let (code, body) = http(c.members[leader].http, "POST", "/v1/fault/isolate", "");
    assert_eq!(code, 200, "{body}");
    // Another member leads, the stream shows the cut-off member and the
    // timeline tells the story.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view = common::watch_once(c.members[other].http);
        let leads = view["leader"].as_str().unwrap_or("");
        let isolated = view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == old.as_str()))
            .map(|m| m["isolated"].clone());
        let events = view["events"].to_string();
        if !leads.is_empty()
            && leads != old
            && isolated == Some(serde_json::Value::Bool(true))
            && events.contains("cut off")
            && events.contains(&format!("{leads} leads term"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new leader, isolation or timeline entry: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Writes go on without it; healed, it catches up.
    let mut client = ferrite_client::Client::new(c.endpoints()).expect("client");
    assert_eq!(client.register_add("r", 5).await.expect("add"), 5);
    let (code, body) = http(c.members[leader].http, "POST", "/v1/fault/heal", "");
    assert_eq!(code, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view = common::watch_once(c.members[leader].http);
        let regs = view["registers"].to_string();
        if regs.contains("\"r\"") && regs.contains('5') {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the healed member did not catch up: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
