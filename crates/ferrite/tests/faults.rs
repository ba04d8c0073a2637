//! Kill -9 the leader, repeatedly, while clients write; acknowledged writes
//! survive, register adds apply exactly once, killed members catch up. And
//! bad input of every kind gets a clear error while the cluster serves on.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Cluster, BIN};
use ferrite_client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_lose_nothing_and_adds_apply_exactly_once() {
    let mut c = Cluster::start(5);
    c.leader(Duration::from_secs(20)).await;
    let mut client = Client::new(c.endpoints()).expect("client");
    let mut acked_adds = 0i64;
    let mut acked_keys = Vec::new();
    let mut killed = Vec::new();
    // Two rounds: kill the leader, keep writing through the election.
    for round in 0..2 {
        for i in 0..20 {
            if client.register_add("counter", 1).await.is_ok() {
                acked_adds += 1;
            }
            let key = format!("k{round}-{i}");
            if client.put(key.as_bytes(), b"v").await.is_ok() {
                acked_keys.push(key);
            }
        }
        let leader = c.leader(Duration::from_secs(20)).await;
        c.kill(leader);
        killed.push(leader);
        for _ in 0..5 {
            if client.register_add("counter", 1).await.is_ok() {
                acked_adds += 1;
            }
        }
    }
    // A bare majority of 5 remains and serves.
    c.leader(Duration::from_secs(20)).await;
    assert_eq!(
        client.register_get("counter").await.expect("read"),
        acked_adds
    );
    for key in &acked_keys {
        assert!(
            client.get(key.as_bytes()).await.expect("get").is_some(),
            "{key} lost"
        );
    }
    // The killed members restart and catch up.
    for i in &killed {
        c.spawn(*i);
    }
    let leader = c.leader(Duration::from_secs(20)).await;
    let target = ferrite_client::node_status(&c.members[leader].client.to_string())
        .await
        .expect("leader status")
        .commit_index;
    for i in killed {
        let ep = c.members[i].client.to_string();
        let mut caught_up = false;
        for _ in 0..200 {
            if ferrite_client::node_status(&ep)
                .await
                .is_ok_and(|s| s.applied_index >= target)
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(caught_up, "{} caught up to {target}", c.members[i].name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_port_and_bad_flags_get_clear_errors() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let mut client = Client::new(c.endpoints()).expect("client");
    client.put(b"before", b"1").await.expect("put");

    // Garbage on the peer, client and HTTP ports of every member.
    for m in &c.members {
        for addr in [m.peer, m.client, m.http] {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.write_all(&[0xff; 4096]);
                let _ = s.write_all(b"\x00\x00\x00\x10garbage-garbage!");
            }
        }
    }
    // An oversized request is refused, not applied.
    let big = vec![b'x'; 3 << 20];
    assert!(
        client.put(b"big", &big).await.is_err(),
        "a 3 MiB put is refused"
    );
    // The cluster still serves, and nothing was lost.
    client.put(b"after", b"2").await.expect("put after garbage");
    assert!(client.get(b"before").await.expect("get").is_some());
    assert!(client.get(b"big").await.expect("get").is_none());

    // Wrong flags: a usage error, exit code 2.
    let out = std::process::Command::new(BIN)
        .args(["server", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--name",
            "n9",
            "--initial-cluster",
            "n1=127.0.0.1:1",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in --initial-cluster"));
    // A busy port names the port.
    let m = &c.members[0];
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--name",
            "x",
            "--initial-cluster",
            &format!("x=127.0.0.1:{}", common::free_port()),
        ])
        .args(["--listen-client", &m.client.to_string()])
        .args([
            "--listen-http",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .arg("--data-dir")
        .arg(c.dir.path().join("x"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&m.client.to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_wal_stops_that_member_with_the_file_and_offset() {
    let mut c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    let mut client = Client::new(c.endpoints()).expect("client");
    for i in 0..50 {
        client
            .put(format!("k{i}").as_bytes(), &[b'v'; 200])
            .await
            .expect("put");
    }
    c.kill(2);
    // Flip bytes in the middle of the member's first segment.
    let dir = c.data_dir(2);
    let segment = std::fs::read_dir(&dir)
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // Segments are preallocated with zeros: damage the records, not the
    // unused tail.
    let used = bytes.iter().rposition(|b| *b != 0).expect("records") + 1;
    let at = used / 3;
    for b in &mut bytes[at..at + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&segment, &bytes).expect("write segment");
    let mut child = std::process::Command::new(BIN)
        .args([
            "server",
            "--name",
            &c.members[2].name,
            "--initial-cluster",
            &c.initial_cluster(),
        ])
        .args(["--listen-client", &c.members[2].client.to_string()])
        .args(["--listen-http", &c.members[2].http.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut exited = false;
    for _ in 0..100 {
        if child.try_wait().expect("wait").is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupt WAL must not start: {err}");
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains(&name) && err.contains("offset"),
        "names the file and offset: {err}"
    );
    // The other two serve on; nothing acknowledged is lost.
    client.put(b"still", b"serving").await.expect("put");
    assert!(client.get(b"k49").await.expect("get").is_some());
}
