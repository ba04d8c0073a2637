//! etcd's JSON gateway, `/version`, `/health`, `/metrics`, the gRPC health
//! service and reflection, all on the client port (the gRPC port), driven
//! by clients no one here wrote: curl (HTTP/1.1, and HTTP/2 once), Debian's
//! `python3-etcd3gw`, and gRPC health and reflection clients. The JSON
//! shapes are compared with a real etcd 3.4 started beside the cluster and
//! asked the same questions.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Cluster};
use serde_json::{json, Value};

/// `curl -X POST URL -d BODY` with extra arguments; (HTTP status, body).
fn curl(url: &str, body: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .args(["-X", "POST", url, "-d", body])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn curl_get(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn post_json(base: &str, path: &str, body: Value) -> Value {
    let (code, text) = curl(&format!("{base}{path}"), &body.to_string(), &[]);
    assert_eq!(code, 200, "{path} {body}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// The shape of a JSON document: every leaf replaced by its JSON type, so
/// that two servers' answers compare by field names and types, not values.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

fn b64(s: &str) -> String {
    use std::fmt::Write;
    // A small standard base64 encoder (the tests' own; no dependency).
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                let _ = out.write_char(T[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A real single-member etcd 3.4 on loopback, for side-by-side answers.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    base: String,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("e1={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (apt-get install etcd-server)");
        let etcd = Etcd {
            child,
            _dir: dir,
            base: client,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while curl_get(&format!("{}/health", etcd.base), &[]).0 != 200 {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same sequence of gateway calls, answered by `base`; returns every
/// answer by name.
fn kv_and_lease_answers(base: &str) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let (key, bar) = (b64("gw/foo"), b64("bar"));
    out.push((
        "put",
        post_json(base, "/v3/kv/put", json!({"key": key, "value": bar})),
    ));
    out.push((
        "range",
        post_json(base, "/v3/kv/range", json!({"key": key})),
    ));
    // camelCase accepted in, int64 as a number or a string, unknown fields ignored.
    out.push((
        "range prefix",
        post_json(
            base,
            "/v3/kv/range",
            json!({"key": b64("gw/"), "rangeEnd": b64("gw0"), "limit": "5", "bogus": 1}),
        ),
    ));
    out.push((
        "txn",
        post_json(
            base,
            "/v3/kv/txn",
            json!({
                "compare": [{"target": "VALUE", "key": key, "value": bar}],
                "success": [{"request_put": {"key": key, "value": b64("baz")}}],
                "failure": [{"request_range": {"key": key}}],
            }),
        ),
    ));
    out.push((
        "txn failing",
        post_json(
            base,
            "/v3/kv/txn",
            json!({
                "compare": [{"target": "VERSION", "key": key, "result": "EQUAL", "version": "7"}],
                "failure": [{"request_range": {"key": key}}],
            }),
        ),
    ));
    out.push((
        "deleterange",
        post_json(
            base,
            "/v3/kv/deleterange",
            json!({"key": key, "prev_kv": true}),
        ),
    ));
    let grant = post_json(base, "/v3/lease/grant", json!({"TTL": 60, "ID": 0}));
    let id = grant["ID"]
        .as_str()
        .expect("lease ID as a string")
        .to_string();
    out.push(("lease grant", grant));
    post_json(
        base,
        "/v3/kv/put",
        json!({"key": b64("gw/leased"), "value": bar, "lease": id}),
    );
    // One keepalive request: one result line, then the stream ends.
    let (code, text) = curl(
        &format!("{base}/v3/lease/keepalive"),
        &json!({ "ID": id }).to_string(),
        &[],
    );
    assert_eq!(code, 200, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    out.push(("lease keepalive", serde_json::from_str(lines[0]).unwrap()));
    out.push((
        "lease timetolive",
        post_json(
            base,
            "/v3/kv/lease/timetolive",
            json!({"ID": id, "keys": true}),
        ),
    ));
    out.push((
        "lease revoke",
        post_json(base, "/v3/lease/revoke", json!({ "ID": id })),
    ));
    let (code, text) = curl(
        &format!("{base}/v3/lease/revoke"),
        &json!({ "ID": id }).to_string(),
        &[],
    );
    out.push((
        "revoke unknown",
        json!({"status": code, "body": serde_json::from_str::<Value>(&text).unwrap_or(json!(text))}),
    ));
    let (code, text) = curl(&format!("{base}/v3/kv/range"), "{\"key\":", &[]);
    out.push((
        "bad json",
        json!({"status": code, "code": serde_json::from_str::<Value>(&text).ok().map(|v| v["code"].clone())}),
    ));
    out.push((
        "v3beta",
        post_json(base, "/v3beta/kv/range", json!({"key": key})),
    ));
    out
}

/// A `/v3/watch` stream read line by line from `curl -N`.
struct WatchStream {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl WatchStream {
    fn open(base: &str, request: Value, extra: &[&str]) -> WatchStream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "30"])
            .args(extra)
            .args(["-X", "POST", &format!("{base}/v3/watch"), "-d"])
            .arg(request.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        WatchStream { child, lines }
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a watch line within 10 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch_answers(base: &str) -> Vec<(&'static str, Value)> {
    let key = b64("gw/watched");
    let stream = WatchStream::open(
        base,
        json!({"create_request": {"key": key, "prev_kv": true}}),
        &[],
    );
    let created = stream.next();
    assert_eq!(created["result"]["created"], json!(true), "{created}");
    post_json(base, "/v3/kv/put", json!({"key": key, "value": b64("1")}));
    let put = stream.next();
    post_json(base, "/v3/kv/put", json!({"key": key, "value": b64("2")}));
    let put_prev = stream.next();
    post_json(base, "/v3/kv/deleterange", json!({ "key": key }));
    let deleted = stream.next();
    assert_eq!(
        deleted["result"]["events"][0]["type"],
        json!("DELETE"),
        "{deleted}"
    );
    vec![
        ("watch created", created),
        ("watch put", put),
        ("watch put with prev", put_prev),
        ("watch delete", deleted),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_etcds_json_shapes_from_the_client_port() {
    let c = Cluster::start(1);
    c.leader(Duration::from_secs(20)).await;
    let etcd = Etcd::start();
    let ours = format!("http://{}", c.members[0].client);

    let theirs_kv = kv_and_lease_answers(&etcd.base);
    let ours_kv = kv_and_lease_answers(&ours);
    let theirs_watch = watch_answers(&etcd.base);
    let ours_watch = watch_answers(&ours);
    for ((name, theirs), (_, mine)) in theirs_kv
        .iter()
        .chain(&theirs_watch)
        .zip(ours_kv.iter().chain(&ours_watch))
    {
        println!("{name}:\n  etcd:    {theirs}\n  ferrite: {mine}");
        assert_eq!(shape(mine), shape(theirs), "{name}: shapes differ");
    }
    // Values too, where they do not depend on the server.
    let range = &ours_kv[1].1;
    assert_eq!(range["kvs"][0]["key"], json!(b64("gw/foo")));
    assert_eq!(range["kvs"][0]["value"], json!(b64("bar")));
    assert_eq!(range["count"], json!("1"));
    let revoke_unknown = &ours_kv
        .iter()
        .find(|(n, _)| *n == "revoke unknown")
        .unwrap()
        .1;
    assert_eq!(revoke_unknown["status"], json!(404));
    assert_eq!(revoke_unknown["body"]["code"], json!(5));
    assert_eq!(
        revoke_unknown["body"]["error"],
        json!("etcdserver: requested lease not found")
    );
    let bad = &ours_kv.iter().find(|(n, _)| *n == "bad json").unwrap().1;
    assert_eq!(bad, &json!({"status": 400, "code": 3}));

    // Cluster and maintenance: the fields etcd's clients read.
    let members = post_json(&ours, "/v3/cluster/member/list", json!({}));
    let m = &members["members"][0];
    assert_eq!(m["name"], json!("n1"), "{members}");
    assert!(m["ID"].is_string(), "{members}");
    assert!(m["peerURLs"][0].is_string(), "{members}");
    assert!(
        m["clientURLs"][0]
            .as_str()
            .is_some_and(|u| u.ends_with(&c.members[0].client.port().to_string())),
        "{members}"
    );
    let status = post_json(&ours, "/v3/maintenance/status", json!({}));
    assert!(status["version"].is_string(), "{status}");
    assert_eq!(status["leader"], m["ID"], "{status}");
    assert!(
        status["raftIndex"].is_string() && status["raftTerm"].is_string(),
        "{status}"
    );
    assert!(status["header"]["member_id"].is_string(), "{status}");

    // /version, /health and /metrics beside the gateway.
    let (code, version) = curl_get(&format!("{ours}/version"), &[]);
    assert_eq!(code, 200);
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["etcdserver"], json!(ferrite_api::ETCD_VERSION));
    assert!(version["etcdcluster"]
        .as_str()
        .is_some_and(|v| v.ends_with(".0")));
    let (code, health) = curl_get(&format!("{ours}/health"), &[]);
    assert_eq!(
        (code, health.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let (code, metrics) = curl_get(&format!("{ours}/metrics"), &[]);
    assert_eq!(code, 200);
    assert!(metrics.contains("ferrite_raft_term"), "{metrics}");
    // go-grpc-prometheus's counters; gateway calls count, as in etcd.
    assert!(metrics.contains(
        r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#
    ), "{metrics}");
    assert!(metrics.contains(
        r#"grpc_server_handled_total{grpc_code="NotFound",grpc_method="LeaseRevoke",grpc_service="etcdserverpb.Lease",grpc_type="unary"} 1"#
    ), "{metrics}");
    assert!(metrics.contains(
        r#"grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 1"#
    ), "{metrics}");

    // HTTP/2 without TLS (prior knowledge), as gRPC clients speak it.
    let (code, text) = curl(
        &format!("{ours}/v3/kv/put"),
        &json!({"key": b64("gw/leased"), "value": b64("h2")}).to_string(),
        &["--http2-prior-knowledge"],
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = curl(
        &format!("{ours}/v3/kv/range"),
        &json!({"key": b64("gw/leased")}).to_string(),
        &["--http2-prior-knowledge"],
    );
    assert_eq!(code, 200, "{text}");
    let range: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(range["count"], json!("1"), "{range}");

    // etcdctl (gRPC) on the same port still works.
    let endpoint = c.members[0].client.to_string();
    let (ok, out) = c.etcdctl(&endpoint, &["get", "gw/leased", "--print-value-only"]);
    assert!(ok && out.trim() == "h2", "{out}");
    let (ok, out) = c.etcdctl(&endpoint, &["put", "gw/ctl", "v"]);
    assert!(ok, "{out}");
    let range = post_json(&ours, "/v3/kv/range", json!({"key": b64("gw/ctl")}));
    assert_eq!(range["kvs"][0]["value"], json!(b64("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_header_carries_the_gateway_token() {
    let c = Cluster::start(1);
    c.leader(Duration::from_secs(20)).await;
    let base = format!("http://{}", c.members[0].client);
    post_json(
        &base,
        "/v3/auth/user/add",
        json!({"name": "root", "password": "secret"}),
    );
    post_json(&base, "/v3/auth/role/add", json!({"name": "root"}));
    post_json(
        &base,
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
    );
    post_json(&base, "/v3/auth/enable", json!({}));

    // Without a token: refused, as grpc-gateway renders a gRPC error.
    let (code, text) = curl(
        &format!("{base}/v3/kv/put"),
        &json!({"key": b64("a"), "value": b64("1")}).to_string(),
        &[],
    );
    assert!(code == 400 || code == 401 || code == 403, "{code} {text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"], err["message"], "{text}");
    assert!(err["code"].as_i64().is_some_and(|c| c > 0), "{text}");

    let (code, text) = curl(
        &format!("{base}/v3/auth/authenticate"),
        &json!({"name": "root", "password": "wrong"}).to_string(),
        &[],
    );
    assert_ne!(code, 200, "{text}");
    let auth = post_json(
        &base,
        "/v3/auth/authenticate",
        json!({"name": "root", "password": "secret"}),
    );
    let token = auth["token"].as_str().expect("a token").to_string();
    let header = format!("Authorization: {token}");
    let (code, text) = curl(
        &format!("{base}/v3/kv/put"),
        &json!({"key": b64("a"), "value": b64("1")}).to_string(),
        &["-H", &header],
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = curl(
        &format!("{base}/v3/kv/range"),
        &json!({ "key": b64("a") }).to_string(),
        &["-H", &header],
    );
    assert_eq!(code, 200, "{text}");
    let range: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(range["kvs"][0]["value"], json!(b64("1")));
    // A watch stream with the token too.
    let stream = WatchStream::open(
        &base,
        json!({"create_request": {"key": b64("a")}}),
        &["-H", &header],
    );
    assert_eq!(stream.next()["result"]["created"], json!(true));
    let (code, _) = curl(&format!("{base}/v3/auth/disable"), "{}", &["-H", &header]);
    assert_eq!(code, 200);
}

const ETCD3GW_SCRIPT: &str = r#"
import sys, threading, time
import etcd3gw
from etcd3gw.client import Etcd3Client

host, port = sys.argv[1], int(sys.argv[2])
c = Etcd3Client(host=host, port=port, api_path="/v3/")
checks = 0
def check(name, cond):
    global checks
    if not cond:
        print("FAILED:", name); sys.exit(1)
    checks += 1
    print("ok:", name)

check("put", c.put("gw3/a", "1") is True)
check("get", c.get("gw3/a") == [b"1"])
c.put("gw3/b", "2")
check("get_prefix", sorted(v for v, _ in c.get_prefix("gw3/")) == [b"1", b"2"])
check("status", "leader" in c.status())
check("members", len(c.members()) == 1)

got = {}
def watcher():
    got["event"] = c.watch_once("gw3/w", timeout=10)
t = threading.Thread(target=watcher); t.start()
time.sleep(1.0)
c.put("gw3/w", "seen")
t.join(15)
ev = got.get("event") or {}
check("watch_once", ev.get("kv", {}).get("value") == b"seen")

events, cancel = c.watch_prefix("gw3/p/")
c.put("gw3/p/x", "1")
first = next(events)
check("watch_prefix", first["kv"]["key"] == b"gw3/p/x")
cancel()

lease = c.lease(ttl=30)
check("lease put", c.put("gw3/leased", "v", lease=lease) is True)
check("lease ttl", 0 < lease.ttl() <= 30)
check("lease refresh", lease.refresh() == 30)
check("lease keys", lease.keys() == [b"gw3/leased"])
check("lease revoke", lease.revoke() is True)
check("leased key gone", c.get("gw3/leased") == [])

lock = c.lock("gw3-lock", ttl=30)
check("lock acquire", lock.acquire() is True)
other = c.lock("gw3-lock", ttl=30)
check("lock held", other.acquire() is False)
check("lock release", lock.release() is True)
check("lock again", other.acquire() is True)
other.release()
check("delete", c.delete("gw3/a") is True)
print("etcd3gw check: %d passed, 0 failed" % checks)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3gw_puts_gets_watches_leases_and_locks() {
    let c = Cluster::start(1);
    c.leader(Duration::from_secs(20)).await;
    let addr = c.members[0].client;
    // Debian's python, where python3-etcd3gw is installed.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", ETCD3GW_SCRIPT])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "etcd3gw checks failed:\n{text}");
    assert!(
        text.contains("etcd3gw check: 18 passed, 0 failed"),
        "{text}"
    );
}

async fn health_status(addr: SocketAddr) -> Option<i32> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().status)
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_leader_and_reflection_lists_services() {
    let mut c = Cluster::start(3);
    let leader = c.leader(Duration::from_secs(20)).await;
    // Every member SERVING once it has heard from the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in &c.members {
        while health_status(m.client).await != Some(SERVING) {
            assert!(Instant::now() < deadline, "{} not SERVING", m.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Reflection: the services a tool such as grpcurl would list.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.members[0].client))
            .expect("an endpoint")
            .connect()
            .await
            .expect("connect for reflection");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection stream")
        .into_inner();
    let reply = replies
        .message()
        .await
        .expect("a reflection reply")
        .expect("a reflection reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    println!("reflection: {names:?}");
    for want in [
        "etcdserverpb.KV",
        "etcdserverpb.Watch",
        "etcdserverpb.Lease",
        "v3lockpb.Lock",
        "ferrite.v1.Registers",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }

    // Two of three gone: the survivor has no leader, and says so.
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            c.kill(i);
        }
    }
    let addr = c.members[survivor].client;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if health_status(addr).await == Some(NOT_SERVING) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor still SERVING after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = curl_get(&format!("http://{addr}/health"), &[]);
    assert_eq!(
        (code, body.as_str()),
        (503, r#"{"health":"false","reason":"RAFT NO LEADER"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_over_tls_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let args = [
        "--cert-file",
        cert.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ];
    let c = Cluster::start_with(1, &args);
    let addr = c.members[0].client;
    let base = format!("https://{addr}");
    let cacert = ["--cacert", ca.to_str().unwrap()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_get(&format!("{base}/health"), &cacert).0 != 200 {
        assert!(Instant::now() < deadline, "no healthy member over TLS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for http in [&["--http1.1"][..], &["--http2"][..]] {
        let extra: Vec<&str> = cacert.iter().chain(http).copied().collect();
        let (code, text) = curl(
            &format!("{base}/v3/kv/put"),
            &json!({"key": b64("tls"), "value": b64("yes")}).to_string(),
            &extra,
        );
        assert_eq!(code, 200, "{http:?}: {text}");
        let (code, text) = curl(
            &format!("{base}/v3/kv/range"),
            &json!({ "key": b64("tls") }).to_string(),
            &extra,
        );
        assert_eq!(code, 200, "{http:?}: {text}");
        let range: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(range["kvs"][0]["value"], json!(b64("yes")));
    }
    // Without the CA: curl refuses the server, nothing served in clear.
    let (code, _) = curl_get(&format!("{base}/health"), &[]);
    assert_eq!(code, 0);
    // gRPC over TLS on the same port.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{addr}"))
        .args([
            "--cacert",
            ca.to_str().unwrap(),
            "get",
            "tls",
            "--print-value-only",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
}

/// A CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem).
fn make_certs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gateway test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "member");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("member.pem"),
        dir.join("member-key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
