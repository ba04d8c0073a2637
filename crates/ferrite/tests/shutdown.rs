//! SIGTERM, as an operator or a service manager stops a member: the leader
//! hands leadership over before it goes (no election timeout), writes in
//! flight finish or fail clearly, storage is drained and synced, the process
//! exits 0, nothing acknowledged is lost, and the member restarts cleanly.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use ferrite_client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_under_load_transfers_leadership_and_loses_nothing() {
    let mut c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    let old = ferrite_client::node_status(&c.members[leader].client.to_string())
        .await
        .expect("leader status");

    // Writers on every member (followers forward), each recording what was
    // acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, endpoint) in c.endpoints().into_iter().enumerate() {
        let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut client = Client::new(vec![endpoint]).expect("client");
            for i in 0..100_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let key = format!("w{w}-{i}");
                match client.put(key.as_bytes(), b"v").await {
                    Ok(_) => acked.lock().expect("lock").push(key),
                    Err(e) => failed.lock().expect("lock").push(format!("{key}: {e}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().expect("lock").len();
    assert!(before > 20, "the writers were writing: {before}");

    // SIGTERM the leader; it must exit 0, promptly.
    let mut child = c.members[leader].child.take().expect("running");
    let signalled = Instant::now();
    // SAFETY: plain kill(2) of our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "the member did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped_after = signalled.elapsed();
    let log = c.log(leader);
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        log.contains("shutting down: leadership transferred"),
        "the leader handed over first; log:\n{log}"
    );
    assert!(log.contains("node stopped"), "{log}");

    // A new leader, by the transfer: exactly one term later, and soon.
    let new_leader = c.leader(Duration::from_secs(10)).await;
    let elected_after = signalled.elapsed();
    assert_ne!(new_leader, leader);
    let new = ferrite_client::node_status(&c.members[new_leader].client.to_string())
        .await
        .expect("new leader status");
    assert_eq!(
        new.term,
        old.term + 1,
        "one election (the transfer's) after SIGTERM"
    );
    println!("stopped after {stopped_after:?}, new leader known after {elected_after:?}");

    // Writes go on through the survivors.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    let failed = failed.lock().expect("lock").clone();
    assert!(
        acked.len() > before,
        "writes went on after the leader stopped"
    );
    println!(
        "{} writes acknowledged, {} failed (clients of the stopped member): {:?}",
        acked.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );

    // The member restarts cleanly (no torn tail: its storage was synced)
    // and every acknowledged write is there, read through each member.
    c.spawn(leader);
    c.leader(Duration::from_secs(20)).await;
    let mut client = Client::new(c.endpoints()).expect("client");
    for key in &acked {
        assert!(
            client.get(key.as_bytes()).await.expect("get").is_some(),
            "acknowledged {key} lost"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let restarted = c.members[leader].client.to_string();
    loop {
        let s = ferrite_client::node_status(&restarted).await;
        let leader_status = ferrite_client::node_status(&c.members[new_leader].client.to_string())
            .await
            .expect("leader status");
        if let Ok(s) = s {
            if s.applied_index >= leader_status.commit_index.saturating_sub(5) && s.leader_id != 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the restarted member caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = c.log(leader);
    assert!(
        !log.contains("recovered after a crash"),
        "a clean stop leaves no torn tail; log:\n{log}"
    );
}
