//! The web dashboard in a real browser: a `ferrite up` cluster on loopback,
//! and headless Chromium driven over WebDriver (chromedriver, spawned here).
//! The tests type and click as a person would and read the page's DOM; each
//! saves screenshots to `target/dashboard-screenshots/`. Every wait is
//! bounded, and the tests run one at a time so that their timings mean
//! something on a small machine.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ferrite");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const NODES: u16 = 3;

/// One test at a time: each runs a cluster and a browser.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
}

// ------------------------------------------------------------------ cluster

/// `ferrite up --nodes 3 --ports-from P`: member k listens on P+10(k-1)
/// (client), +1 (peer), +2 (HTTP), +3 (NBD).
struct Cluster {
    up: Child,
    base: u16,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// With more flags for `up` (`--tls`).
    fn start_with(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = free_base();
        let log = std::fs::File::create(dir.path().join("up.log")).expect("up.log");
        let up = Command::new(BIN)
            .arg("up")
            .args(["--nodes", &NODES.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--ports-from", &base.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("up.log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start ferrite up");
        let cluster = Cluster { up, base, dir };
        for k in 1..=NODES {
            cluster.wait_listening(k, Duration::from_secs(20));
        }
        cluster
    }

    fn http(&self, k: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + 10 * (k - 1) + 2))
    }

    fn url(&self, k: u16) -> String {
        format!("http://{}/", self.http(k))
    }

    fn wait_listening(&self, k: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while TcpStream::connect_timeout(&self.http(k), Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "n{k}'s HTTP port {} not listening within {within:?}\n{}",
                self.http(k),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `up`'s output and the tail of every member's log.
    fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let mut out = format!("---- up\n{}", read(self.dir.path().join("up.log")));
        for k in 1..=NODES {
            let log = read(self.dir.path().join(format!("data/n{k}.log")));
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            out += &format!("---- n{k} (last 30 lines)\n");
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    /// SIGINT to `up`, which stops its members; SIGKILL to the whole process
    /// group if that takes too long (or `up` is already gone).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        signal("INT", &self.up.id().to_string());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.up.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("KILL", &format!("-{}", self.up.id()));
        let _ = self.up.wait();
    }
}

fn signal(name: &str, target: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), "--", target])
        .stderr(Stdio::null())
        .status();
}

/// A base port P such that P..P+30 are free now (below Linux's ephemeral
/// range, so outgoing connections do not take them meanwhile).
fn free_base() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(std::process::id()) * 7919 + u64::from(nanos);
    for attempt in 0..500u64 {
        let base = 20_000 + ((seed + attempt * 131) % 1_000) as u16 * 10;
        let free = (0..10 * NODES).all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if free && !given.contains(&base) {
            given.push(base);
            return base;
        }
    }
    panic!("no 30 free ports in 20000..30000");
}

// ------------------------------------------------------------------ browser

/// chromedriver on a free port, in a process group of its own so that the
/// browsers it starts go with it.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: these tests need headless Chromium (apt-get install {package})"
            );
        }
        let port = ferrite_node::ports::free_loopback_ports(1).expect("a free port")[0];
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver not listening on {addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Driver {
            child,
            url: format!("http://{addr}"),
        }
    }

    async fn session(&self) -> Client {
        self.session_with(&[]).await
    }

    /// A session with more Chromium flags (`--ignore-certificate-errors`).
    async fn session_with(&self, extra: &[&str]) -> Client {
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1400,1000",
            "--hide-scrollbars",
        ];
        args.extend_from_slice(extra);
        let mut caps = fantoccini::wd::Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session from chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        signal("KILL", &format!("-{}", self.child.id()));
        let _ = self.child.wait();
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or(Value::Null)
}

/// Polls `script` until `ok` holds for its value; panics with the last value.
async fn wait_js(
    c: &Client,
    what: &str,
    within: Duration,
    script: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = js(c, script).await;
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last seen {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the cluster view shows: the cards' names and roles, the banner.
const VIEW: &str = r#"
    const q = (s) => document.querySelector(s);
    return {
        members: [...document.querySelectorAll('[data-member]')].map((c) => ({
            name: c.dataset.member, role: c.dataset.role, reachable: c.dataset.reachable })),
        leader: q('#leader-name') ? q('#leader-name').textContent : null,
        me: q('#me') ? q('#me').textContent : null,
        banner: q('#banner').textContent,
        conn: q('#conn').dataset.state,
    };"#;

fn leaders(view: &Value) -> Vec<String> {
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "leader")
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The one leader the page agrees on (cards and banner), if any.
fn agreed_leader(view: &Value) -> Option<String> {
    let leaders = leaders(view);
    match leaders.as_slice() {
        [one] if view["leader"] == one.as_str() => Some(one.clone()),
        _ => None,
    }
}

async fn wait_for_leader(c: &Client, within: Duration) -> (String, Value) {
    let view = wait_js(c, "3 member cards, one leader", within, VIEW, |v| {
        v["members"].as_array().map_or(0, Vec::len) == usize::from(NODES)
            && agreed_leader(v).is_some()
    })
    .await;
    (agreed_leader(&view).expect("a leader"), view)
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear()
        .await
        .unwrap_or_else(|e| panic!("clear {css}: {e}"));
    e.send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The whole page as a PNG (the window grown to the page's height).
async fn screenshot(c: &Client, name: &str) {
    // The window is taller than the page's viewport by the browser's frame.
    let height = js(
        c,
        "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight",
    )
    .await;
    let height = height.as_u64().unwrap_or(1000).clamp(1000, 4000) as u32;
    let _ = c.set_window_size(1400, height).await;
    let png = c.screenshot().await.expect("screenshot");
    let _ = c.set_window_size(1400, 1000).await;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn page_shows_three_members_and_one_leader() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let cluster = Cluster::start();
    let driver = Driver::start();
    let c = driver.session().await;
    c.goto(&cluster.url(1)).await.expect("open n1's dashboard");

    let (leader, view) = wait_for_leader(&c, Duration::from_secs(15)).await;
    println!(
        "leader {leader} shown {:?} after `up` started",
        started.elapsed()
    );
    assert_eq!(
        view["me"], "n1",
        "the banner names the member serving the page: {view}"
    );
    let banner = view["banner"].as_str().unwrap_or_default();
    if leader == "n1" {
        assert_eq!(banner, "You are on the leader n1", "{view}");
    } else {
        let expected =
            format!("You are on n1 (follower) — the leader is {leader}; writes are forwarded");
        assert_eq!(banner, expected, "{view}");
    }
    // Every member reachable, and every card has its log tail drawn.
    let boxes = wait_js(
        &c,
        "every card with log entries",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('[data-member]')]
            .map((c) => [c.dataset.reachable, c.querySelectorAll('.tail i.e').length])",
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|m| m[0] == "true" && m[1].as_u64() > Some(0)))
        },
    )
    .await;
    println!("cards (reachable, boxes): {boxes}");
    // A few seconds of series drawn in the charts.
    wait_js(
        &c,
        "chart points",
        Duration::from_secs(10),
        "return Number(document.querySelector('#chart-ops').dataset.points || 0)",
        |v| v.as_u64() >= Some(5),
    )
    .await;
    screenshot(&c, "overview.png").await;
    c.close().await.expect("close the session");
}

#[tokio::test]
async fn two_browsers_see_each_others_writes() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start();
    let driver = Driver::start();
    let a = driver.session().await;
    let b = driver.session().await;
    a.goto(&cluster.url(1)).await.expect("open n1's dashboard");
    b.goto(&cluster.url(2)).await.expect("open n2's dashboard");
    wait_for_leader(&a, Duration::from_secs(15)).await;
    wait_for_leader(&b, Duration::from_secs(15)).await;

    // A key put through n1's page is listed and read through n2's.
    fill(&a, "#kv-key", "greeting").await;
    fill(&a, "#kv-value", "hello from n1").await;
    click(&a, "#kv-put").await;
    wait_js(
        &a,
        "the put's reply",
        Duration::from_secs(10),
        "return document.querySelector('#kv-status').textContent",
        |v| v.as_str().is_some_and(|s| s.starts_with("put greeting")),
    )
    .await;
    // n2's page is told of the change by its server's event stream, with
    // nobody asking (no listing, no polling).
    wait_js(
        &b,
        "the put among n2's latest changes",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('#changes li .text')].map(e => e.textContent)",
        |v| {
            v.as_array()
                .is_some_and(|l| l.iter().any(|t| t == "greeting = hello from n1"))
        },
    )
    .await;
    fill(&b, "#kv-prefix", "greet").await;
    let listed = r#"const r = document.querySelector('#kv-results tr[data-key="greeting"] .value');
        return r ? r.textContent : null"#;
    // The JSON API's reads are linearizable: one listing after the put's
    // reply must show it.
    click(&b, "#kv-list").await;
    wait_js(
        &b,
        "greeting listed on n2's page",
        Duration::from_secs(5),
        listed,
        |v| v == "hello from n1",
    )
    .await;
    fill(&b, "#kv-key", "greeting").await;
    fill(&b, "#kv-value", "").await;
    click(&b, "#kv-get").await;
    wait_js(
        &b,
        "the get's value",
        Duration::from_secs(5),
        "return document.querySelector('#kv-value').value",
        |v| v == "hello from n1",
    )
    .await;

    // A register set on one page appears on the other; then each add shows
    // on the other page, pushed to it, within the wait's five seconds.
    fill(&a, "#reg-name", "visits").await;
    fill(&a, "#reg-value", "0").await;
    click(&a, "#reg-set").await;
    let shown = r#"const r = document.querySelector('[data-register="visits"] .value');
        return r ? r.textContent : null"#;
    wait_js(
        &b,
        "visits on n2's page",
        Duration::from_secs(5),
        shown,
        |v| v == "0",
    )
    .await;
    fill(&b, "#reg-name", "visits").await;
    let mut value = 0;
    let mut lags = Vec::new();
    for (round, delta) in [5, 7, 11, 13].into_iter().enumerate() {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        value += delta;
        fill(writer, "#reg-value", &delta.to_string()).await;
        click(writer, "#reg-add").await;
        let replied = format!("visits = {value}");
        wait_js(
            writer,
            "the add's reply",
            Duration::from_secs(5),
            "return document.querySelector('#reg-status').textContent",
            |v| v == replied.as_str(),
        )
        .await;
        let t0 = Instant::now();
        let expected = value.to_string();
        wait_js(
            reader,
            "the added value on the other page",
            Duration::from_secs(5),
            shown,
            |v| v == expected.as_str(),
        )
        .await;
        // The reader page does nothing between the two waits: the value can
        // only arrive through its server's event stream. How fast is a
        // benchmark's business (a shared CI machine once took 1.5 s), so
        // the bound is the wait's own, and the lags are printed.
        lags.push((round, t0.elapsed()));
    }
    println!("register add → other page: {lags:?}");
    screenshot(&a, "two-browsers-n1.png").await;
    screenshot(&b, "two-browsers-n2.png").await;
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

#[tokio::test]
async fn killing_the_leader_from_the_page_elects_another() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start();
    let driver = Driver::start();
    let c = driver.session().await;
    c.goto(&cluster.url(1)).await.expect("open n1's dashboard");
    let (old, _) = wait_for_leader(&c, Duration::from_secs(15)).await;
    // Watch from a member that does not lead.
    let k = (1..=NODES)
        .find(|k| format!("n{k}") != old)
        .expect("a follower");
    let me = format!("n{k}");
    c.goto(&cluster.url(k))
        .await
        .expect("open a follower's dashboard");
    wait_js(
        &c,
        "the follower's view",
        Duration::from_secs(10),
        VIEW,
        |v| v["me"] == me.as_str() && agreed_leader(v).as_deref() == Some(old.as_str()),
    )
    .await;

    click(&c, &format!(r#"[data-action="kill"][data-target="{old}"]"#)).await;
    let clicked = Instant::now();
    let result = format!(
        r#"const r = document.querySelector('[data-member="{old}"] .result');
        return [r.dataset.state || '', r.textContent]"#
    );
    let result = wait_js(
        &c,
        "the kill's result",
        Duration::from_secs(10),
        &result,
        |v| v[0] != "",
    )
    .await;
    assert_eq!(result[0], "ok", "the kill failed: {result}");
    // During the failover: the old leader greyed out, maybe no leader yet.
    let during = wait_js(
        &c,
        "the old leader down",
        Duration::from_secs(5),
        VIEW,
        |v| {
            v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == old.as_str() && m["reachable"] == "false")
        },
    )
    .await;
    screenshot(&c, "failover-during.png").await;
    println!("{:?} after the click: {during}", clicked.elapsed());

    let view = wait_js(&c, "another leader", Duration::from_secs(10), VIEW, |v| {
        agreed_leader(v).is_some_and(|l| l != old)
    })
    .await;
    let new = agreed_leader(&view).expect("a leader");
    println!(
        "{new} leads {:?} after the kill of {old}",
        clicked.elapsed()
    );
    screenshot(&c, "failover-after.png").await;

    // Both survivors' pages: the leader's says so, the follower's names it.
    let other_k = (1..=NODES)
        .find(|&j| j != k && format!("n{j}") != old)
        .expect("the other survivor");
    let other = format!("n{other_k}");
    let d = driver.session().await;
    d.goto(&cluster.url(other_k))
        .await
        .expect("open the other survivor's dashboard");
    for (page, name) in [(&c, &me), (&d, &other)] {
        let expected = if *name == new {
            format!("You are on the leader {new}")
        } else {
            format!("You are on {name} (follower) — the leader is {new}; writes are forwarded")
        };
        wait_js(
            page,
            &format!("{name}'s banner"),
            Duration::from_secs(5),
            VIEW,
            |v| {
                v["banner"] == expected.as_str()
                    && agreed_leader(v).as_deref() == Some(new.as_str())
            },
        )
        .await;
    }
    let follower = if new == me { &d } else { &c };
    screenshot(follower, "failover-follower.png").await;
    d.close().await.expect("close the second session");
    c.close().await.expect("close the session");
}

// ------------------------------------------------------------------ auth

/// The certificates `up --tls` made (with rcgen) under its data directory:
/// the CA, and a client certificate whose common name is `root`.
struct UpCerts {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl UpCerts {
    fn of(cluster: &Cluster) -> UpCerts {
        let dir = cluster.dir.path().join("data/tls");
        UpCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("root.pem"),
            key: dir.join("root-key.pem"),
        }
    }
}

/// etcdctl over TLS with `root`'s certificate, against member 1.
fn etcdctl(cluster: &Cluster, certs: &UpCerts, args: &[&str]) -> (bool, String) {
    let endpoint = format!("https://127.0.0.1:{}", cluster.base);
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--cacert")
        .arg(&certs.ca)
        .arg("--cert")
        .arg(&certs.cert)
        .arg("--key")
        .arg(&certs.key)
        .args(["--command-timeout=5s", "--dial-timeout=2s"])
        .args(args)
        .output()
        .expect("run etcdctl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn must(cluster: &Cluster, certs: &UpCerts, args: &[&str]) {
    let (ok, out) = etcdctl(cluster, certs, args);
    assert!(ok, "etcdctl {args:?}: {out}");
}

/// One HTTPS request with curl (trusting the CA; no client certificate
/// unless `cert`): the status, the response headers and the body.
struct Reply {
    code: u16,
    headers: String,
    body: String,
}

fn curl(
    certs: &UpCerts,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
    cert: bool,
) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-X", method])
        .arg("--cacert")
        .arg(&certs.ca)
        .arg("-D")
        .arg(&head)
        .args(["-w", "\n%{http_code}"]);
    if cert {
        cmd.arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Reply {
        code: code.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body: body.to_string(),
    }
}

const ALICE_PASSWORD: &str = "alice-pw";
const ROOT_PASSWORD: &str = "root-pw";

/// `up --tls`, then (over etcdctl with root's certificate) users root and
/// alice, alice reading `app/` only, keys in and out of `app/`, a register,
/// and auth enabled.
fn start_auth_cluster() -> (Cluster, UpCerts) {
    let cluster = Cluster::start_with(&["--tls"]);
    let certs = UpCerts::of(&cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = etcdctl(&cluster, &certs, &["put", "app/one", "first"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no put within 30 s: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    must(&cluster, &certs, &["put", "app/two", "second"]);
    must(&cluster, &certs, &["put", "secret/plans", "hidden-value"]);
    let set = curl(
        &certs,
        cluster.http(1),
        "PUT",
        "/v1/registers/hidden",
        &["Content-Type: application/json"],
        Some(r#"{"value": 7}"#),
        true,
    );
    assert_eq!(set.code, 200, "register set: {}", set.body);
    must(
        &cluster,
        &certs,
        &["user", "add", &format!("root:{ROOT_PASSWORD}")],
    );
    must(&cluster, &certs, &["user", "grant-role", "root", "root"]);
    must(
        &cluster,
        &certs,
        &["user", "add", &format!("alice:{ALICE_PASSWORD}")],
    );
    must(&cluster, &certs, &["role", "add", "app-reader"]);
    must(
        &cluster,
        &certs,
        &[
            "role",
            "grant-permission",
            "app-reader",
            "read",
            "app/",
            "--prefix=true",
        ],
    );
    must(
        &cluster,
        &certs,
        &["user", "grant-role", "alice", "app-reader"],
    );
    must(&cluster, &certs, &["auth", "enable"]);
    (cluster, certs)
}

fn login(certs: &UpCerts, addr: SocketAddr, name: &str, password: &str) -> Reply {
    curl(
        certs,
        addr,
        "POST",
        "/v1/auth/login",
        &["Content-Type: application/json"],
        Some(&json!({ "name": name, "password": password }).to_string()),
        false,
    )
}

fn parse(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

/// The JSON API under auth, over HTTPS without a client certificate:
/// nothing without credentials, etcd's message for a wrong password, the
/// login's token as a bearer header and as a cookie, 403 for what the user
/// may not read, a client certificate naming its user, and the dashboard's
/// stream cut to what the user may read.
#[tokio::test]
async fn http_api_under_auth_over_tls() {
    let _serial = SERIAL.lock().await;
    let (cluster, certs) = start_auth_cluster();
    let addr = cluster.http(2);

    let none = curl(&certs, addr, "GET", "/v1/kv?prefix=app/", &[], None, false);
    assert_eq!(none.code, 401, "no credentials: {}", none.body);
    assert!(
        parse(&none)["error"]
            .as_str()
            .is_some_and(|e| e.contains("authentication required")),
        "{}",
        none.body
    );
    for path in ["/v1/status", "/v1/registers/hidden", "/v1/watch"] {
        let r = curl(&certs, addr, "GET", path, &[], None, false);
        assert_eq!(r.code, 401, "{path} without credentials: {}", r.body);
    }
    // /healthz and /metrics stay open (probes and scrapers).
    let health = curl(&certs, addr, "GET", "/healthz", &[], None, false);
    assert_eq!(health.code, 200, "{}", health.body);

    let wrong = login(&certs, addr, "alice", "not-her-password");
    assert_eq!(wrong.code, 401, "{}", wrong.body);
    assert_eq!(
        parse(&wrong)["error"],
        "etcdserver: authentication failed, invalid user ID or password"
    );
    let bad_token = curl(
        &certs,
        addr,
        "GET",
        "/v1/kv?prefix=app/",
        &["Authorization: Bearer forged.token"],
        None,
        false,
    );
    assert_eq!(bad_token.code, 401, "{}", bad_token.body);

    let ok = login(&certs, addr, "alice", ALICE_PASSWORD);
    assert_eq!(ok.code, 200, "{}", ok.body);
    let token = parse(&ok)["token"].as_str().expect("a token").to_string();
    let set_cookie = ok
        .headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie set: {}", ok.headers))
        .to_string();
    for part in [
        format!("ferrite_token={token}"),
        "HttpOnly".into(),
        "Secure".into(),
        "SameSite=Strict".into(),
    ] {
        assert!(set_cookie.contains(&part), "{part} in {set_cookie}");
    }

    let bearer = format!("Authorization: Bearer {token}");
    let cookie = format!("Cookie: ferrite_token={token}");
    for how in [&bearer, &cookie] {
        let r = curl(
            &certs,
            addr,
            "GET",
            "/v1/kv?prefix=app/",
            &[how],
            None,
            false,
        );
        assert_eq!(r.code, 200, "{how}: {}", r.body);
        let listed = parse(&r);
        let keys: Vec<&str> = listed["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| kv["key"].as_str())
            .collect();
        assert_eq!(keys, ["app/one", "app/two"], "{how}: {}", r.body);
        let who = curl(&certs, addr, "GET", "/v1/auth/whoami", &[how], None, false);
        let who = parse(&who);
        assert_eq!(who["user"], "alice", "{who}");
        assert_eq!(who["roles"], json!(["app-reader"]), "{who}");
        assert_eq!(who["auth_enabled"], true, "{who}");
    }
    // What alice may not read: 403 with etcd's message.
    for path in [
        "/v1/kv/secret/plans",
        "/v1/registers/hidden",
        "/v1/kv?prefix=",
    ] {
        let r = curl(&certs, addr, "GET", path, &[&bearer], None, false);
        assert_eq!(r.code, 403, "{path}: {}", r.body);
        assert_eq!(
            parse(&r)["error"],
            "etcdserver: permission denied",
            "{path}"
        );
    }
    let put = curl(
        &certs,
        addr,
        "PUT",
        "/v1/kv/app/three",
        &[&cookie],
        Some("x"),
        false,
    );
    assert_eq!(put.code, 403, "alice only reads: {}", put.body);
    // The controls are root's.
    let stop = curl(
        &certs,
        addr,
        "POST",
        "/v1/control/n3/stop",
        &[&cookie],
        None,
        false,
    );
    assert_eq!(stop.code, 403, "{}", stop.body);

    // The dashboard's stream, as alice: her keys, not the others, no
    // registers, no controls; health figures are there.
    let stream = Command::new("curl")
        .args(["-sSN", "--max-time", "3", "--cacert"])
        .arg(&certs.ca)
        .args(["-H", &cookie])
        .arg(format!("https://{addr}/v1/watch"))
        .output()
        .expect("run curl");
    let events = String::from_utf8_lossy(&stream.stdout).into_owned();
    let view: Value = events
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|v| v["members"].is_array())
        .unwrap_or_else(|| panic!("no view in the stream: {events}"));
    let changed: Vec<&str> = view["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert!(changed.contains(&"app/one"), "{changed:?}");
    assert!(changed.iter().all(|k| k.starts_with("app/")), "{changed:?}");
    assert!(!events.contains("secret/plans") && !events.contains("hidden-value"));
    assert_eq!(view["registers"], json!([]), "{view}");
    assert_eq!(view["control"], false);
    assert_eq!(view["members"].as_array().map(Vec::len), Some(3));

    // A verified client certificate names its user (root) on the HTTP
    // port, with no token.
    let by_cert = curl(&certs, addr, "GET", "/v1/registers/hidden", &[], None, true);
    assert_eq!(by_cert.code, 200, "{}", by_cert.body);
    assert_eq!(parse(&by_cert)["value"], 7);
    let root = login(&certs, addr, "root", ROOT_PASSWORD);
    assert_eq!(root.code, 200, "{}", root.body);
    let root_token = parse(&root)["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = curl(
        &certs,
        addr,
        "GET",
        "/v1/registers/hidden",
        &[&format!("Authorization: Bearer {root_token}")],
        None,
        false,
    );
    assert_eq!(r.code, 200, "{}", r.body);

    let out = curl(
        &certs,
        addr,
        "POST",
        "/v1/auth/logout",
        &[&cookie],
        None,
        false,
    );
    assert_eq!(out.code, 200, "{}", out.body);
    assert!(
        out.headers.contains("ferrite_token=;") && out.headers.contains("Max-Age=0"),
        "{}",
        out.headers
    );
}

/// What the data views show: the latest changes' texts, the registers'
/// names, the login state and whether any member card has its controls.
const AUTH_VIEW: &str = r#"
    const q = (s) => document.querySelector(s);
    return {
        login: !q('#login').hidden,
        main: !q('#main').hidden,
        user: q('#user').hidden ? null : q('#user-name').textContent,
        error: q('#login-error').textContent,
        changes: [...document.querySelectorAll('#changes li .text')].map((e) => e.textContent),
        registers: [...document.querySelectorAll('#registers tr')].map((e) => e.dataset.register),
        members: document.querySelectorAll('[data-member]').length,
        controls: [...document.querySelectorAll('[data-member] .controls')].some((e) => !e.hidden),
    };"#;

async fn log_in(c: &Client, name: &str, password: &str) {
    fill(c, "#login-name", name).await;
    fill(c, "#login-password", password).await;
    click(c, "#login-submit").await;
}

/// The dashboard of `up --tls` with auth enabled, in a browser without a
/// client certificate (Chromium started with `--ignore-certificate-errors`:
/// it does not know `up`'s local CA): the login form and nothing else, a
/// wrong password's error, a limited user's own view, and root's.
#[tokio::test]
async fn dashboard_login_over_tls_shows_each_user_what_they_may_read() {
    let _serial = SERIAL.lock().await;
    let (cluster, _certs) = start_auth_cluster();
    let driver = Driver::start();
    let c = driver.session_with(&["--ignore-certificate-errors"]).await;
    let url = format!("https://{}/", cluster.http(1));
    c.goto(&url).await.expect("open n1's dashboard over https");

    let seen = wait_js(
        &c,
        "the login form",
        Duration::from_secs(10),
        AUTH_VIEW,
        |v| v["login"] == true,
    )
    .await;
    assert_eq!(seen["main"], false, "no data before logging in: {seen}");
    assert_eq!(seen["members"], 0, "{seen}");
    assert_eq!(seen["changes"], json!([]), "{seen}");
    screenshot(&c, "auth-login.png").await;

    log_in(&c, "alice", "wrong").await;
    wait_js(
        &c,
        "the wrong password's error",
        Duration::from_secs(10),
        AUTH_VIEW,
        |v| {
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("authentication failed"))
        },
    )
    .await;

    log_in(&c, "alice", ALICE_PASSWORD).await;
    let alice = wait_js(
        &c,
        "alice's view",
        Duration::from_secs(15),
        AUTH_VIEW,
        |v| {
            v["user"] == "alice"
                && v["members"] == 3
                && v["changes"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|t| t == "app/one = first"))
        },
    )
    .await;
    println!("alice sees {alice}");
    let changes = alice["changes"].as_array().cloned().unwrap_or_default();
    assert!(
        changes
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.starts_with("app/"))),
        "alice sees only app/: {alice}"
    );
    assert_eq!(alice["registers"], json!([]), "{alice}");
    assert_eq!(alice["controls"], false, "the controls are root's: {alice}");
    let page = js(&c, "return document.body.innerText").await;
    let page = page.as_str().unwrap_or_default();
    assert!(
        !page.contains("secret/plans") && !page.contains("hidden-value"),
        "{page}"
    );
    // The key browser lists her prefix through the JSON API (the cookie).
    fill(&c, "#kv-prefix", "app/").await;
    click(&c, "#kv-list").await;
    wait_js(
        &c,
        "alice's listing",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#kv-results tr[data-key]')].map((r) => r.dataset.key)",
        |v| *v == json!(["app/one", "app/two"]),
    )
    .await;
    screenshot(&c, "auth-alice.png").await;

    click(&c, "#logout").await;
    wait_js(
        &c,
        "the login form again",
        Duration::from_secs(10),
        AUTH_VIEW,
        |v| v["login"] == true && v["main"] == false,
    )
    .await;

    log_in(&c, "root", ROOT_PASSWORD).await;
    let root = wait_js(&c, "root's view", Duration::from_secs(15), AUTH_VIEW, |v| {
        v["user"] == "root"
            && v["controls"] == true
            && v["changes"]
                .as_array()
                .is_some_and(|l| l.iter().any(|t| t == "secret/plans = hidden-value"))
            && v["registers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|r| *r == "hidden"))
    })
    .await;
    println!("root sees {root}");
    screenshot(&c, "auth-root.png").await;
    c.close().await.expect("close the session");
}
