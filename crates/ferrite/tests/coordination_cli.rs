//! Ferrite's own command line for etcd's coordination services, against
//! real `ferrite server` processes: `ferrite kv watch`, `ferrite lease`,
//! `ferrite lock -- CMD`, `ferrite elect`, and the watch and lease figures
//! on `/metrics`. Writes come from etcdctl and from `ferrite kv put`.
//!
//! Every wait is bounded; spawned processes are killed when dropped.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Cluster, BIN};

/// The longest one expected line may take to show up.
const LINE_WAIT: Duration = Duration::from_secs(20);

async fn cluster() -> Cluster {
    let c = Cluster::start(3);
    c.leader(Duration::from_secs(30)).await;
    c
}

/// Runs `ferrite SUB... --endpoints EPS REST...` to completion.
fn ferrite(sub: &[&str], endpoints: &str, rest: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(sub)
        .args(["--endpoints", endpoints])
        .args(rest)
        .output()
        .expect("run ferrite");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Like `ferrite`, but it must succeed; returns stdout + stderr.
fn ok(sub: &[&str], endpoints: &str, rest: &[&str]) -> String {
    let (code, out) = ferrite(sub, endpoints, rest);
    assert_eq!(code, Some(0), "ferrite {sub:?} {rest:?}: {out}");
    out
}

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "10s"])
        .args(args)
        .output()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A long-running `ferrite` (watch, keep-alive, lock, elect): stdout lines
/// arrive on one channel, stderr lines on another.
struct Running {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    fn spawn(sub: &[&str], endpoints: &str, rest: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(sub)
            .args(["--endpoints", endpoints])
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferrite");
        let out = lines_of(child.stdout.take().expect("stdout"));
        let err = lines_of(child.stderr.take().expect("stderr"));
        Running {
            child,
            out,
            err,
            seen: Vec::new(),
        }
    }

    fn context(&self) -> String {
        let err: Vec<String> = self.err.try_iter().collect();
        format!("stdout so far: {:?}\nstderr: {err:?}", self.seen)
    }

    fn line(&mut self, within: Duration) -> Option<String> {
        let line = self.out.recv_timeout(within).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The next stdout line must start with `want`.
    fn expect(&mut self, want: &str) -> String {
        match self.line(LINE_WAIT) {
            Some(l) if l.starts_with(want) => l,
            other => panic!(
                "wanted a line starting {want:?}, got {other:?}; {}",
                self.context()
            ),
        }
    }

    fn expect_quiet(&mut self, within: Duration) {
        if let Some(l) = self.line(within) {
            panic!("unexpected line {l:?}; {}", self.context());
        }
    }

    /// Waits for a stderr line starting with `want` (skipping others).
    fn expect_err(&mut self, want: &str) {
        let deadline = Instant::now() + LINE_WAIT;
        while let Ok(l) = self
            .err
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if l.starts_with(want) {
                return;
            }
        }
        panic!("no stderr line starting {want:?}; {}", self.context());
    }

    fn interrupt(&self) {
        // SAFETY: signals our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "still running; {}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `OK (revision N)` from `ferrite kv put`: N.
fn put_revision(out: &str) -> i64 {
    out.trim()
        .strip_prefix("OK (revision ")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("not a put answer: {out:?}"))
}

// --- watch ------------------------------------------------------------------

/// `ferrite kv watch` prints puts and deletes made by etcdctl and by
/// `ferrite kv put` with their revisions; `--prefix` leaves out other
/// keys; `--rev --prev-kv` replays history with the replaced values; Ctrl-C
/// ends it with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_watch_prints_puts_and_deletes() {
    let c = cluster().await;
    let eps = c.endpoints();
    let all = eps.join(",");
    let mut key = Running::spawn(&["kv", "watch"], &eps[0], &["wk"]);
    let mut prefix = Running::spawn(&["kv", "watch"], &eps[1], &["wp/", "--prefix"]);
    key.expect_err("watching wk from revision");
    prefix.expect_err("watching wp/* from revision");

    etcdctl(&eps[1], &["put", "wk", "v1"]);
    let r2 = put_revision(&ok(&["kv", "put"], &all, &["wk", "v2"]));
    ok(&["kv", "put"], &all, &["wp/a", "1"]);
    etcdctl(&eps[2], &["put", "wq/outside", "x"]);
    etcdctl(&eps[2], &["del", "wk"]);
    etcdctl(&eps[2], &["del", "wp/a"]);

    let first = key.expect("PUT wk = v1 (revision ");
    key.expect(&format!("PUT wk = v2 (revision {r2})"));
    key.expect(&format!("DELETE wk (revision {})", r2 + 3));
    prefix.expect(&format!("PUT wp/a = 1 (revision {})", r2 + 1));
    prefix.expect(&format!("DELETE wp/a (revision {})", r2 + 4));
    key.expect_quiet(Duration::from_millis(300));
    prefix.expect_quiet(Duration::from_millis(300));

    let r1: i64 = first
        .trim_start_matches("PUT wk = v1 (revision ")
        .trim_end_matches(')')
        .parse()
        .expect("a revision");
    let mut replay = Running::spawn(
        &["kv", "watch"],
        &eps[2],
        &["wk", "--rev", &r1.to_string(), "--prev-kv"],
    );
    replay.expect(&format!("PUT wk = v1 (revision {r1})"));
    replay.expect(&format!("PUT wk = v2 (revision {r2}, was v1)"));
    replay.expect(&format!("DELETE wk (revision {}, was v2)", r2 + 3));

    for w in [&mut key, &mut prefix, &mut replay] {
        w.interrupt();
        let status = w.wait(Duration::from_secs(5));
        assert!(status.success(), "Ctrl-C ends a watch cleanly: {status:?}");
    }
}

/// A watch whose member is killed (-9) goes on on another member: every
/// put made before, during and after is printed exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_watch_goes_on_when_its_member_dies() {
    let mut c = cluster().await;
    let eps = c.endpoints();
    // The watcher starts on member 0, and knows the others.
    let mut w = Running::spawn(&["kv", "watch"], &eps.join(","), &["rk"]);
    w.expect_err("watching rk from revision");
    let writers = eps[1..].join(",");
    for i in 0..5 {
        ok(&["kv", "put"], &writers, &["rk", &format!("v{i}")]);
    }
    for i in 0..5 {
        w.expect(&format!("PUT rk = v{i} "));
    }
    c.kill(0);
    for i in 5..15 {
        ok(&["kv", "put"], &writers, &["rk", &format!("v{i}")]);
    }
    for i in 5..15 {
        w.expect(&format!("PUT rk = v{i} "));
    }
    w.expect_quiet(Duration::from_millis(500));
    w.expect_err("(watch resumed on ");
}

// --- leases -----------------------------------------------------------------

/// The id in `lease 694d… granted with TTL(30s)`.
fn granted_id(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("lease "))
        .unwrap_or_else(|| panic!("no lease line in {out:?}"));
    let id = line["lease ".len()..].split(' ').next().unwrap_or_default();
    assert_eq!(
        id.len(),
        16,
        "a 16-digit hex id as etcdctl prints: {line:?}"
    );
    id.to_string()
}

/// grant, ttl (--keys), put --lease, keep-alive (--once, and until
/// Ctrl-C), list, revoke: etcdctl's lines, hex ids in and out; a revoked
/// lease's keys are gone, and its ttl says so with status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_ttl_keep_alive_list_revoke() {
    let c = cluster().await;
    let eps = c.endpoints().join(",");
    let out = ok(&["lease", "grant"], &eps, &["30"]);
    let id = granted_id(&out);
    assert_eq!(out.trim(), format!("lease {id} granted with TTL(30s)"));

    ok(&["kv", "put"], &eps, &["lk", "held", "--lease", &id]);
    let ttl = ok(&["lease", "ttl"], &eps, &[&id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.trim_end().ends_with("s), attached keys([lk])"), "{ttl}");
    // etcdctl reads the same id.
    let ctl = etcdctl(&c.endpoints()[1], &["lease", "timetolive", &id]);
    assert!(
        ctl.starts_with(&format!("lease {id} granted with TTL(30s)")),
        "{ctl}"
    );

    let once = ok(&["lease", "keep-alive"], &eps, &[&id, "--once"]);
    assert_eq!(once.trim(), format!("lease {id} keepalived with TTL(30)"));
    let mut keeper = Running::spawn(&["lease", "keep-alive"], &eps, &[&id]);
    keeper.expect(&format!("lease {id} keepalived with TTL(30)"));
    keeper.interrupt();
    assert!(keeper.wait(Duration::from_secs(5)).success());

    let list = ok(&["lease", "list"], &eps, &[]);
    assert!(list.starts_with("found 1 leases\n"), "{list}");
    assert!(list.lines().any(|l| l == id), "{list}");
    // With 0x too.
    let revoked = ok(&["lease", "revoke"], &eps, &[&format!("0x{id}")]);
    assert_eq!(revoked.trim(), format!("lease {id} revoked"));

    let (code, gone) = ferrite(&["lease", "ttl"], &eps, &[&id]);
    assert_eq!(
        (code, gone.trim()),
        (Some(1), format!("lease {id} already expired").as_str())
    );
    let (code, _) = ferrite(&["kv", "get"], &eps, &["lk"]);
    assert_eq!(code, Some(1), "the lease's key went with it");
    let (code, again) = ferrite(&["lease", "revoke"], &eps, &[&id]);
    assert_eq!(code, Some(1), "{again}");
    assert!(again.contains("lease not found"), "{again}");
    let (code, bad) = ferrite(&["lease", "revoke"], &eps, &["xyz"]);
    assert_eq!(code, Some(1), "{bad}");
    assert!(ok(&["lease", "list"], &eps, &[]).starts_with("found 0 leases"));
}

/// A lease revoked under a running `ferrite lease keep-alive`: it says
/// "expired or revoked." and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_ends_when_the_lease_is_revoked() {
    let c = cluster().await;
    let eps = c.endpoints().join(",");
    let id = granted_id(&ok(&["lease", "grant"], &eps, &["3"]));
    let mut keeper = Running::spawn(&["lease", "keep-alive"], &eps, &[&id]);
    keeper.expect(&format!("lease {id} keepalived with TTL(3)"));
    ok(&["lease", "revoke"], &eps, &[&id]);
    let deadline = Instant::now() + LINE_WAIT;
    loop {
        let l = keeper.expect(&format!("lease {id} "));
        if l == format!("lease {id} expired or revoked.") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", keeper.context());
    }
    assert_eq!(keeper.wait(Duration::from_secs(5)).code(), Some(1));
}

// --- lock -------------------------------------------------------------------

/// Two `ferrite lock L -- sh -c ...` started together run one after the
/// other (their start/end markers never interleave), each sees the lock's
/// key and a fencing revision higher than the one before, and `lock` exits
/// with its command's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_serializes_commands_and_passes_a_fencing_revision() {
    let c = cluster().await;
    let eps = c.endpoints().join(",");
    let marks = c.dir.path().join("marks");
    let script = format!(
        "echo \"start $FERRITE_LOCK_REVISION $FERRITE_LOCK_KEY\" >> {m}; sleep 1; echo \"end $FERRITE_LOCK_REVISION\" >> {m}",
        m = marks.display()
    );
    let mut holders: Vec<Running> = (0..3)
        .map(|_| Running::spawn(&["lock"], &eps, &["L", "--", "sh", "-c", &script]))
        .collect();
    for h in &mut holders {
        let status = h.wait(Duration::from_secs(60));
        assert!(status.success(), "{status:?}; {}", h.context());
    }
    let text = std::fs::read_to_string(&marks).expect("markers");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let mut last = 0;
    for pair in lines.chunks(2) {
        let start: Vec<&str> = pair[0].split(' ').collect();
        assert_eq!(start[0], "start", "{text}");
        assert!(start[2].starts_with("L/"), "the lock key: {text}");
        let rev: i64 = start[1].parse().expect("a revision");
        assert_eq!(pair[1], format!("end {rev}"), "no interleaving: {text}");
        assert!(rev > last, "fencing revisions increase: {text}");
        last = rev;
    }
    let (code, _) = ferrite(&["lock"], &eps, &["L", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, Some(3));
    // Released every time: nothing is left under L/, and no lease.
    assert_eq!(
        etcdctl(&c.endpoints()[0], &["get", "L/", "--prefix", "--keys-only"]).trim(),
        ""
    );
    assert!(ok(&["lease", "list"], &eps, &[]).starts_with("found 0 leases"));
}

// --- elect ------------------------------------------------------------------

/// `ferrite elect E one` leads; `ferrite elect E two` waits; an observer
/// (`ferrite elect E`) prints the leader. SIGINT to the first makes it
/// resign, and the second takes over at once (not after a lease TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_hands_over_when_the_leader_is_interrupted() {
    let c = cluster().await;
    let eps = c.endpoints().join(",");
    let mut one = Running::spawn(&["elect"], &eps, &["E", "one", "--ttl", "60"]);
    let line = one.expect("leader E/");
    assert!(line.contains(" = one (revision "), "{line}");
    let mut observer = Running::spawn(&["elect"], &eps, &["E"]);
    observer.expect("leader E/");
    let mut two = Running::spawn(&["elect"], &eps, &["E", "two", "--ttl", "60"]);
    two.expect_err("campaigning for E");
    two.expect_quiet(Duration::from_secs(1));

    let handed = Instant::now();
    one.interrupt();
    assert!(
        one.wait(Duration::from_secs(10)).success(),
        "{}",
        one.context()
    );
    let line = two.expect("leader E/");
    assert!(line.contains(" = two (revision "), "{line}");
    assert!(
        handed.elapsed() < Duration::from_secs(20),
        "handed over by resigning, not by the 60 s lease's expiry"
    );
    let seen = observer.expect("leader E/");
    assert!(seen.contains(" = two "), "{seen}");
    two.interrupt();
    assert!(two.wait(Duration::from_secs(10)).success());
}

// --- metrics ----------------------------------------------------------------

fn metric(c: &Cluster, i: usize, name: &str) -> u64 {
    let (status, body) = common::http(c.members[i].http, "GET", "/metrics", "");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Polls until `check` holds of metric `name` on member `i`.
async fn metric_reaches(c: &Cluster, i: usize, name: &str, check: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + LINE_WAIT;
    loop {
        let v = metric(c, i, name);
        if check(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/metrics` counts watch streams, watchers and events sent on the
/// member serving the watch, and leases, renewals and expiries on the
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_watch_and_lease_figures() {
    let c = cluster().await;
    let leader = c.leader(Duration::from_secs(30)).await;
    let eps = c.endpoints();
    let all = eps.join(",");
    let sent = metric(&c, 0, "ferrite_watch_events_sent_total");
    assert_eq!(metric(&c, 0, "ferrite_watch_streams"), 0);
    let mut w = Running::spawn(&["kv", "watch"], &eps[0], &["mk", "--prefix"]);
    w.expect_err("watching mk* from revision");
    assert_eq!(metric(&c, 0, "ferrite_watch_streams"), 1);
    assert_eq!(metric(&c, 0, "ferrite_watchers"), 1);
    ok(&["kv", "put"], &all, &["mk1", "a"]);
    ok(&["kv", "put"], &all, &["mk2", "b"]);
    w.expect("PUT mk1 = a");
    w.expect("PUT mk2 = b");
    metric_reaches(&c, 0, "ferrite_watch_events_sent_total", |v| v >= sent + 2).await;
    metric(&c, 0, "ferrite_watch_slow_catchups_total");
    w.interrupt();
    w.wait(Duration::from_secs(5));
    metric_reaches(&c, 0, "ferrite_watch_streams", |v| v == 0).await;
    assert_eq!(metric(&c, 0, "ferrite_watchers"), 0);

    let expiries = metric(&c, leader, "ferrite_lease_expiries_total");
    let renewals = metric(&c, leader, "ferrite_lease_renewals_total");
    metric(&c, leader, "ferrite_lease_checkpoints_total");
    let id = granted_id(&ok(&["lease", "grant"], &all, &["1"]));
    metric_reaches(&c, leader, "ferrite_leases", |v| v == 1).await;
    ok(&["lease", "keep-alive"], &all, &[&id, "--once"]);
    metric_reaches(&c, leader, "ferrite_lease_renewals_total", |v| v > renewals).await;
    // Left alone, the 1 s lease expires: the leader's lessor revokes it.
    metric_reaches(&c, leader, "ferrite_lease_expiries_total", |v| v > expiries).await;
    metric_reaches(&c, leader, "ferrite_leases", |v| v == 0).await;
}
