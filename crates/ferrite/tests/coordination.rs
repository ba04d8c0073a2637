//! etcd's coordination services (Watch, Lease, v3lock, v3election) through
//! real clients no one here wrote: etcdctl processes, and the etcd-client
//! crate for a watcher that must survive a member's kill -9.
//!
//! Every expected line was first read off real etcd 3.4's etcdctl. With
//! `FERRITE_TEST_AGAINST_ETCD=1` the same tests start a 3-member real etcd
//! on loopback instead of `ferrite server`, to check that the tests test
//! etcd's behaviour and not ours.
//!
//! Every wait is bounded; spawned clients are killed when their handle drops.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;

/// The longest one expected line may take to show up.
const LINE_WAIT: Duration = Duration::from_secs(20);

// --- the servers under test -------------------------------------------------

/// Three `ferrite server`s, or with FERRITE_TEST_AGAINST_ETCD=1 three real
/// etcd members.
enum Servers {
    Ferrite(Cluster),
    Etcd(EtcdCluster),
}

impl Servers {
    async fn start() -> Servers {
        let against_etcd = std::env::var("FERRITE_TEST_AGAINST_ETCD").is_ok_and(|v| v == "1");
        let s = if against_etcd {
            Servers::Etcd(EtcdCluster::start(3))
        } else {
            Servers::Ferrite(Cluster::start(3))
        };
        s.leader(Duration::from_secs(30)).await;
        s
    }

    fn endpoints(&self) -> Vec<String> {
        match self {
            Servers::Ferrite(c) => c.endpoints(),
            Servers::Etcd(e) => e.endpoints(),
        }
    }

    fn kill(&mut self, i: usize) {
        match self {
            Servers::Ferrite(c) => c.kill(i),
            Servers::Etcd(e) => e.kill(i),
        }
    }

    /// The index of the member that leads.
    async fn leader(&self, within: Duration) -> usize {
        match self {
            Servers::Ferrite(c) => c.leader(within).await,
            Servers::Etcd(e) => e.leader(within).await,
        }
    }

    /// The server logs, for failure messages.
    fn logs(&self) -> String {
        match self {
            Servers::Ferrite(c) => (0..c.members.len())
                .map(|i| c.log(i))
                .collect::<Vec<_>>()
                .join("\n----\n"),
            Servers::Etcd(_) => String::from("(real etcd: logs in its temp dir)"),
        }
    }
}

/// Real etcd members on free loopback ports, each in a temp data dir.
struct EtcdCluster {
    dir: tempfile::TempDir,
    clients: Vec<String>,
    children: Vec<Option<Child>>,
}

impl EtcdCluster {
    fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let peers: Vec<u16> = (0..n).map(|_| common::free_port()).collect();
        let clients: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", common::free_port()))
            .collect();
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let children = (0..n)
            .map(|i| {
                let log = std::fs::File::create(dir.path().join(format!("e{i}.log"))).expect("log");
                let peer = format!("http://127.0.0.1:{}", peers[i]);
                let client = format!("http://{}", clients[i]);
                Command::new("etcd")
                    .args(["--name", &format!("e{i}")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("e{i}")))
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &initial])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .spawn()
                    .map(Some)
                    .expect("etcd is installed (apt-get install etcd-server)")
            })
            .collect();
        EtcdCluster {
            dir,
            clients,
            children,
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.clients.clone()
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for (i, ep) in self.clients.iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else {
                    continue;
                };
                if let Ok(s) = c.status().await {
                    let me = s.header().map_or(0, |h| h.member_id());
                    if s.leader() != 0 && s.leader() == me {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no etcd leader within {within:?} (logs in {:?})",
            self.dir.path()
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

// --- etcdctl ------------------------------------------------------------------

/// Runs etcdctl to completion against `endpoint`: (success, stdout + stderr).
fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "10s"])
        .args(args)
        .output()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Like `etcdctl`, but the command must succeed.
fn ctl(endpoint: &str, args: &[&str]) -> String {
    let (ok, out) = etcdctl(endpoint, args);
    assert!(ok, "etcdctl {args:?} failed: {out}");
    out
}

/// The store's revision after a put of `key`, from `put -w json`.
fn put_revision(endpoint: &str, key: &str, value: &str) -> i64 {
    let out = ctl(endpoint, &["put", key, value, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("put -w json is JSON");
    v["header"]["revision"].as_i64().expect("a header revision")
}

/// A long-running etcdctl (watch, lock, elect): its stdout arrives line by
/// line on a channel; stderr is kept for failure messages.
struct Etcdctl {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    seen: Vec<String>,
}

impl Etcdctl {
    fn spawn(endpoint: &str, args: &[&str]) -> Etcdctl {
        Etcdctl::spawn_in(endpoint, args, None)
    }

    fn spawn_in(endpoint: &str, args: &[&str], cwd: Option<&std::path::Path>) -> Etcdctl {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().expect("etcdctl is installed");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err2 = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut e = err2.lock().unwrap_or_else(|e| e.into_inner());
                e.push_str(&line);
                e.push('\n');
            }
        });
        Etcdctl {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: err,
            seen: Vec::new(),
        }
    }

    fn context(&self) -> String {
        let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        format!("stdout so far: {:?}\nstderr: {err}", self.seen)
    }

    /// The next stdout line, if one comes within `within`.
    fn line(&mut self, within: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(within).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The next `want.len()` lines must be exactly `want`.
    fn expect_lines(&mut self, want: &[&str]) {
        for (i, w) in want.iter().enumerate() {
            let got = self.line(LINE_WAIT);
            assert_eq!(
                got.as_deref(),
                Some(*w),
                "line {i} of {want:?}; {}",
                self.context()
            );
        }
    }

    /// No stdout line within `within`.
    fn expect_quiet(&mut self, within: Duration) {
        if let Some(line) = self.line(within) {
            panic!("unexpected line {line:?}; {}", self.context());
        }
    }

    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(text.as_bytes())
            .expect("write etcdctl stdin");
        stdin.flush().expect("flush etcdctl stdin");
    }

    /// Sends a signal (`INT`, `KILL`) to the process.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit; None if it is still running.
    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts `key` = `probe-N` through `writer` until the watcher `w` prints one
/// of those events, then reads every later probe event, so that the watch is
/// known to be live and nothing of the probe is left to read. etcdctl prints
/// nothing when its watch is created, so this is how to know it is.
fn wait_until_watching(w: &mut Etcdctl, writer: &str, key: &str) {
    let mut put = 0;
    let mut seen = None;
    while put < 40 && seen.is_none() {
        ctl(writer, &["put", key, &format!("probe-{put}")]);
        put += 1;
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Some(line) = w.line(deadline.saturating_duration_since(Instant::now())) {
            if let Some(n) = line.strip_prefix("probe-") {
                seen = n.parse::<u32>().ok();
                break;
            }
        }
    }
    let mut last = seen.unwrap_or_else(|| panic!("the watch never saw {key}; {}", w.context()));
    while last + 1 < put {
        let line = w
            .line(LINE_WAIT)
            .unwrap_or_else(|| panic!("probe events stopped; {}", w.context()));
        if let Some(n) = line.strip_prefix("probe-") {
            last = n.parse().expect("probe number");
        }
    }
}

// --- watch ------------------------------------------------------------------

/// `etcdctl watch KEY` and `watch --prefix P` on one member print exactly
/// the puts and deletes made through another, in order; a put outside the
/// prefix is not printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_prints_puts_and_deletes() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let mut key = Etcdctl::spawn(&eps[0], &["watch", "wk"]);
    let mut prefix = Etcdctl::spawn(&eps[0], &["watch", "wp/", "--prefix"]);
    wait_until_watching(&mut key, &eps[1], "wk");
    wait_until_watching(&mut prefix, &eps[1], "wp/probe");

    ctl(&eps[1], &["put", "wk", "v1"]);
    ctl(&eps[1], &["put", "wp/a", "1"]);
    ctl(&eps[2], &["put", "wq/outside", "x"]);
    ctl(&eps[1], &["put", "wk", "v2"]);
    ctl(&eps[2], &["put", "wp/b", "2"]);
    assert_eq!(ctl(&eps[1], &["del", "wk"]).trim(), "1");
    assert_eq!(ctl(&eps[1], &["del", "wp/a"]).trim(), "1");

    // A delete prints the key and an empty value line.
    key.expect_lines(&["PUT", "wk", "v1", "PUT", "wk", "v2", "DELETE", "wk", ""]);
    prefix.expect_lines(&["PUT", "wp/a", "1", "PUT", "wp/b", "2", "DELETE", "wp/a", ""]);
    key.expect_quiet(Duration::from_millis(500));
    prefix.expect_quiet(Duration::from_millis(500));
    drop(s);
}

/// `watch --rev N` replays history from revision N, then goes on live;
/// with `--prev-kv` each event is followed by the key-value it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_replays_from_a_past_revision_with_prev_kv() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let first = put_revision(&eps[0], "rk", "r1");
    ctl(&eps[0], &["put", "rk", "r2"]);
    ctl(&eps[0], &["del", "rk"]);
    ctl(&eps[0], &["put", "other", "x"]);
    let rev = first.to_string();

    let mut replay = Etcdctl::spawn(&eps[1], &["watch", "rk", "--rev", &rev]);
    replay.expect_lines(&["PUT", "rk", "r1", "PUT", "rk", "r2", "DELETE", "rk", ""]);
    let mut prev = Etcdctl::spawn(&eps[2], &["watch", "rk", "--rev", &rev, "--prev-kv"]);
    // PUT, [prev key, prev value,] key, value: r1 replaced nothing.
    prev.expect_lines(&[
        "PUT", "rk", "r1", "PUT", "rk", "r1", "rk", "r2", "DELETE", "rk", "r2", "rk", "",
    ]);

    // Both go on live after the replay.
    ctl(&eps[0], &["put", "rk", "r3"]);
    replay.expect_lines(&["PUT", "rk", "r3"]);
    prev.expect_lines(&["PUT", "rk", "r3"]);
    replay.expect_quiet(Duration::from_millis(500));
    drop(s);
}

/// `etcdctl watch -i` reads `watch KEY [flags]` lines from stdin and prints
/// the events of every watch it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_interactive_watch() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let mut w = Etcdctl::spawn(&eps[0], &["watch", "-i"]);
    w.write("watch ia\n");
    wait_until_watching(&mut w, &eps[1], "ia");
    ctl(&eps[1], &["put", "ib", "b0"]);
    w.write("watch ib --prev-kv\n");
    wait_until_watching(&mut w, &eps[1], "ib");

    ctl(&eps[1], &["put", "ia", "x"]);
    ctl(&eps[2], &["put", "ib", "y"]);
    ctl(&eps[1], &["del", "ia"]);
    // The probe left `ib` at its last probe value; --prev-kv shows it.
    w.expect_lines(&["PUT", "ia", "x", "PUT", "ib"]);
    let prev_value = w.line(LINE_WAIT).expect("the prev value of ib");
    assert!(
        prev_value.starts_with("probe-"),
        "prev value of ib: {prev_value}; {}",
        w.context()
    );
    w.expect_lines(&["ib", "y", "DELETE", "ia", ""]);
    w.expect_quiet(Duration::from_millis(500));
    drop(s);
}

// --- leases -----------------------------------------------------------------

/// The hex lease ID out of `lease <ID> granted with TTL(5s)`.
fn granted_lease(out: &str, ttl: u32) -> String {
    let mut words = out.split_whitespace();
    assert_eq!(words.next(), Some("lease"), "{out}");
    let id = words.next().expect("a lease ID").to_string();
    assert!(
        out.trim_end()
            .ends_with(&format!("granted with TTL({ttl}s)")),
        "{out}"
    );
    assert!(i64::from_str_radix(&id, 16).is_ok(), "hex lease ID: {out}");
    id
}

/// grant, put --lease, timetolive --keys, keep-alive --once, list, revoke:
/// etcdctl's exact words, and a revoke deletes the lease's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_lifecycle() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let id = granted_lease(&ctl(&eps[0], &["lease", "grant", "5"]), 5);
    let out = ctl(&eps[1], &["lease", "keep-alive", "--once", &id]);
    assert_eq!(out.trim(), format!("lease {id} keepalived with TTL(5)"));
    assert_eq!(
        ctl(&eps[1], &["put", "--lease", &id, "lk", "lv"]).trim(),
        "OK"
    );

    let out = ctl(&eps[2], &["lease", "timetolive", &id, "--keys"]);
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(5s), remaining(")),
        "{out}"
    );
    assert!(out.trim_end().ends_with("s), attached keys([lk])"), "{out}");
    let out = ctl(&eps[0], &["lease", "timetolive", &id]);
    assert!(!out.contains("attached keys"), "{out}");

    let out = ctl(&eps[0], &["lease", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("found ") && l.ends_with(" leases")),
        "{out}"
    );
    assert!(lines.contains(&id.as_str()), "lease list lacks {id}: {out}");

    let out = ctl(&eps[1], &["get", "lk", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        v["kvs"][0]["lease"].as_i64(),
        i64::from_str_radix(&id, 16).ok(),
        "{out}"
    );

    let out = ctl(&eps[0], &["lease", "revoke", &id]);
    assert_eq!(out.trim(), format!("lease {id} revoked"));
    for ep in &eps {
        let out = ctl(ep, &["get", "lk"]);
        assert_eq!(out, "", "lk after the revoke, via {ep}");
    }
    let out = ctl(&eps[1], &["lease", "timetolive", &id]);
    assert_eq!(out.trim(), format!("lease {id} already expired"));
    let (ok, out) = etcdctl(&eps[1], &["lease", "keep-alive", "--once", &id]);
    assert!(!ok, "keep-alive of a revoked lease succeeded: {out}");
    assert!(out.contains("requested lease not found"), "{out}");
    let out = ctl(&eps[0], &["lease", "list"]);
    assert!(!out.lines().any(|l| l == id), "{out}");
    drop(s);
}

/// A lease of TTL 2 that no one keeps alive expires: its key goes, not
/// before 2 s and well within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_alone_expires_with_its_key() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let before_grant = Instant::now();
    let id = granted_lease(&ctl(&eps[0], &["lease", "grant", "2"]), 2);
    let granted = Instant::now();
    assert_eq!(
        ctl(&eps[0], &["put", "--lease", &id, "short", "v"]).trim(),
        "OK"
    );
    let mut gone = None;
    while granted.elapsed() < Duration::from_secs(15) {
        if ctl(&eps[1], &["get", "short", "--print-value-only"]).is_empty() {
            gone = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = gone.expect("the key of a 2 s lease was still there after 15 s");
    let lived = gone - before_grant;
    assert!(lived >= Duration::from_secs(2), "gone after {lived:?}");
    let since_grant = gone - granted;
    assert!(
        since_grant <= Duration::from_secs(10),
        "gone after {since_grant:?}"
    );
    let out = ctl(&eps[2], &["lease", "timetolive", &id]);
    assert_eq!(out.trim(), format!("lease {id} already expired"));
    drop(s);
}

// --- locks ------------------------------------------------------------------

/// `start|end TAG SECONDS.NANOS` lines out of the shared file.
fn markers(path: &std::path::Path) -> Vec<(String, String, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "marker line {l:?}");
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().expect("time"),
            )
        })
        .collect()
}

/// Two `etcdctl lock L -- CMD` at once: the commands run one after the
/// other, never interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_locks_serialize() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("markers");
    let script = |tag: &str| {
        format!(
            "echo start {tag} $(date +%s.%N) >> {f}; sleep 1; echo end {tag} $(date +%s.%N) >> {f}",
            f = file.display()
        )
    };
    let mut procs: Vec<Etcdctl> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            Etcdctl::spawn(
                &eps[i % eps.len()],
                &["lock", "L", "--", "sh", "-c", &script(tag)],
            )
        })
        .collect();
    for p in &mut procs {
        let status = p.wait(Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "lock command: {status:?}; {}",
            p.context()
        );
    }
    let m = markers(&file);
    assert_eq!(m.len(), 6, "{m:?}");
    for pair in m.chunks(2) {
        assert_eq!(pair[0].0, "start", "{m:?}");
        assert_eq!(pair[1].0, "end", "{m:?}");
        assert_eq!(pair[0].1, pair[1].1, "interleaved: {m:?}");
    }
    for w in m.windows(2) {
        assert!(w[0].2 <= w[1].2, "markers out of time order: {m:?}");
    }
    let mut tags: Vec<&str> = m.iter().map(|x| x.1.as_str()).collect();
    tags.dedup();
    tags.sort_unstable();
    assert_eq!(tags, ["a", "b", "c"], "{m:?}");
    drop(s);
}

/// A lock holder killed with -9 (`lock --ttl 3`, so its session lease
/// expires in 3 s): a waiter gets the lock once the lease has expired, and
/// not while the holder lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_holder_loses_the_lock_when_its_lease_expires() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let mut holder = Etcdctl::spawn(&eps[0], &["lock", "--ttl", "3", "L2"]);
    let key = holder
        .line(LINE_WAIT)
        .expect("the holder prints its lock key");
    assert!(key.starts_with("L2/"), "{key}");
    let mut waiter = Etcdctl::spawn(&eps[1], &["lock", "L2", "--", "echo", "got it"]);
    waiter.expect_quiet(Duration::from_secs(2));
    assert!(waiter.wait(Duration::ZERO).is_none(), "the waiter exited");

    holder.signal("KILL");
    let killed = Instant::now();
    waiter.expect_lines(&["got it"]);
    let waited = killed.elapsed();
    assert!(
        waited <= Duration::from_secs(15),
        "lock free after {waited:?}"
    );
    let status = waiter.wait(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    drop(s);
}

// --- elections --------------------------------------------------------------

/// `etcdctl elect E p1` leads and stays; `elect E p2` waits; `elect -l E`
/// sees p1; SIGINT makes p1 resign and p2 leads, as the listener sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_election_hands_over_on_resign() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let mut p1 = Etcdctl::spawn(&eps[0], &["elect", "E", "p1"]);
    let key1 = p1.line(LINE_WAIT).expect("p1 prints its election key");
    assert!(key1.starts_with("E/"), "{key1}");
    p1.expect_lines(&["p1"]);

    let mut p2 = Etcdctl::spawn(&eps[1], &["elect", "E", "p2"]);
    let mut listen = Etcdctl::spawn(&eps[2], &["elect", "-l", "E"]);
    listen.expect_lines(&[&key1, "p1"]);
    p2.expect_quiet(Duration::from_secs(2));

    p1.signal("INT");
    let key2 = p2.line(LINE_WAIT).expect("p2 leads after p1 resigned");
    assert!(key2.starts_with("E/") && key2 != key1, "{key2}");
    p2.expect_lines(&["p2"]);
    listen.expect_lines(&[&key2, "p2"]);
    let status = p1.wait(Duration::from_secs(10));
    assert!(status.is_some(), "p1 did not exit on SIGINT");
    let out = ctl(&eps[0], &["get", "E", "--prefix", "--print-value-only"]);
    assert_eq!(out.trim(), "p2", "only p2 campaigns now");
    drop(s);
}

/// A leader that dies without resigning (its keep-alives stop; etcdctl elect
/// has no flag for a short session TTL, so this leader is the etcd-client
/// crate on a 3 s lease): the waiting `etcdctl elect` takes over once the
/// lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_leader_that_dies_is_replaced_after_its_lease() {
    let s = Servers::start().await;
    let eps = s.endpoints();
    let mut c = etcd_client::Client::connect([eps[0].as_str()], None)
        .await
        .expect("connect");
    let lease = c.lease_grant(3, None).await.expect("lease grant").id();
    let won = c.campaign("E2", "dead", lease).await.expect("campaign");
    let key1 = won.leader().map(|l| l.key().to_vec()).unwrap_or_default();
    assert!(key1.starts_with(b"E2/"), "{key1:?}");
    let granted = Instant::now();

    let mut p2 = Etcdctl::spawn(&eps[1], &["elect", "E2", "p2"]);
    drop(c); // no keep-alive: the "dead" leader's lease runs out
    let key2 = p2.line(Duration::from_secs(20)).expect("p2 leads");
    let waited = granted.elapsed();
    assert!(key2.starts_with("E2/"), "{key2}");
    assert_ne!(key2.as_bytes(), key1.as_slice());
    p2.expect_lines(&["p2"]);
    assert!(
        waited >= Duration::from_millis(2500),
        "p2 led {waited:?} after a 3 s lease was granted"
    );
    drop(s);
}

// --- a watcher across a member's kill -9 --------------------------------------

/// A watcher on a member that is killed (-9) reconnects to another member
/// from its last revision + 1 and sees every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_member_without_a_gap() {
    use etcd_client::{Client, EventType, WatchOptions};
    const PUTS: usize = 60;

    let mut s = Servers::start().await;
    let eps = s.endpoints();
    let leader = s.leader(Duration::from_secs(20)).await;
    // A follower: the writes keep going while it dies.
    let victim = (leader + 1) % eps.len();
    let survivors: Vec<String> = (0..eps.len())
        .filter(|&i| i != victim)
        .map(|i| eps[i].clone())
        .collect();

    let mut writer = Client::connect(survivors.clone(), None)
        .await
        .expect("connect");
    let start = writer
        .put("fo/start", "x", None)
        .await
        .expect("put")
        .header()
        .map_or(0, |h| h.revision());
    let puts = tokio::spawn(async move {
        let mut revisions = Vec::new();
        for i in 0..PUTS {
            let r = writer
                .put("fo/k", format!("v{i}"), None)
                .await
                .unwrap_or_else(|e| panic!("put v{i}: {e}"));
            revisions.push(r.header().map_or(0, |h| h.revision()));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        revisions
    });

    let mut events: Vec<(i64, String)> = Vec::new();
    let mut endpoint = eps[victim].clone();
    let mut killed = false;
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    'connect: while events.len() < PUTS {
        assert!(Instant::now() < deadline, "gave up; events: {events:?}");
        let from = events.last().map_or(start + 1, |e| e.0 + 1);
        let opts = WatchOptions::new().with_start_revision(from);
        let stream = match Client::connect([endpoint.as_str()], None).await {
            Ok(mut c) => c.watch("fo/k", Some(opts)).await.map(|w| (c, w)),
            Err(e) => Err(e),
        };
        let (_client, mut stream) = match stream {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
            let resp = match msg {
                Ok(Ok(Some(resp))) => resp,
                // An error, the end of the stream, or silence: resume
                // elsewhere from the last revision seen.
                _ => {
                    endpoint = survivors[reconnects % survivors.len()].clone();
                    reconnects += 1;
                    continue 'connect;
                }
            };
            assert!(!resp.canceled(), "watch cancelled: {resp:?}");
            for ev in resp.events() {
                assert_eq!(ev.event_type(), EventType::Put);
                let kv = ev.kv().expect("a put has a kv");
                events.push((
                    kv.mod_revision(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                ));
            }
            if !killed && events.len() >= PUTS / 3 {
                s.kill(victim);
                killed = true;
            }
            if events.len() >= PUTS {
                break 'connect;
            }
        }
    }
    let revisions = tokio::time::timeout(Duration::from_secs(60), puts)
        .await
        .expect("the writer finished")
        .expect("the writer did not panic");
    assert!(killed, "the member was never killed");
    assert!(reconnects >= 1, "the watcher never had to reconnect");
    let values: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    let want: Vec<String> = (0..PUTS).map(|i| format!("v{i}")).collect();
    assert_eq!(
        values,
        want,
        "events (rev, value): {events:?}\n{}",
        s.logs()
    );
    let seen: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seen, revisions, "event revisions vs put revisions");
}
