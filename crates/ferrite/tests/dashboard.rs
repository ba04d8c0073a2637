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
        let dir = tempfile::tempdir().expect("temp dir");
        let base = free_base();
        let log = std::fs::File::create(dir.path().join("up.log")).expect("up.log");
        let up = Command::new(BIN)
            .arg("up")
            .args(["--nodes", &NODES.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--ports-from", &base.to_string()])
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
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
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
        let mut caps = fantoccini::wd::Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1400,1000", "--hide-scrollbars"],
            }),
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
    // on the other page within a second and a half of its reply.
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
        let lag = t0.elapsed();
        lags.push(lag);
        assert!(
            lag < Duration::from_millis(1500),
            "round {round}: the other page showed {value} after {lag:?}"
        );
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
