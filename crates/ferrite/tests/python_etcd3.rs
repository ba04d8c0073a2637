//! A client no one here wrote, in another language: the PyPI `etcd3`
//! package (python-etcd3) drives watches, leases and locks against a real
//! cluster (scripts/python-etcd3-check installs it into a venv under
//! target/ and holds the checks).

mod common;

use std::time::Duration;

use common::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_watches_leases_and_locks() {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(20)).await;
    // A follower: writes are forwarded, and reads and watches there must
    // still see them.
    let leader = c.leader(Duration::from_secs(20)).await;
    let endpoint = c.endpoints()[(leader + 1) % 3].clone();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/python-etcd3-check"
    );
    let out = std::process::Command::new(script)
        .arg(&endpoint)
        .output()
        .expect("run scripts/python-etcd3-check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "python-etcd3 checks failed:\n{text}");
    assert!(
        text.contains("python-etcd3 check: 10 passed, 0 failed"),
        "{text}"
    );
}
