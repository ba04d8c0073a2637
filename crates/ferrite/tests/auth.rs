//! etcd's authentication and role-based access through real clients:
//! etcdctl 3.4 for users, roles, permissions and `auth enable`, then as
//! root and as a limited user; raw gRPC (Ferrite's generated etcd and
//! ferrite.v1 clients over tonic) where etcdctl's own re-authentication
//! would hide what the server says to a stale token, and for registers and
//! volumes, whose names map to the keys `/ferrite/registers/NAME` and
//! `/ferrite/volumes/NAME`.
//!
//! The etcdctl lines expected were read off real etcd 3.4 first; with
//! `FERRITE_TEST_AGAINST_ETCD=1` the etcdctl part runs against a real etcd
//! member instead (the cancellation of a live watch on a revoke is
//! Ferrite's: etcd checks a watch only when it is created).
//!
//! Every wait is bounded; spawned etcdctl processes are killed on drop.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::auth_client::AuthClient;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use ferrite_proto::ferrite::v1 as fv;
use tonic::transport::Channel;
use tonic::{Code, Request};

const LINE_WAIT: Duration = Duration::from_secs(20);

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

fn ctl(endpoint: &str, args: &[&str]) -> String {
    let (ok, out) = etcdctl(endpoint, args);
    assert!(ok, "etcdctl {args:?} failed: {out}");
    out
}

/// etcdctl must fail, saying `error` (etcd's message).
fn refused(endpoint: &str, args: &[&str], error: &str) {
    let (ok, out) = etcdctl(endpoint, args);
    assert!(!ok, "etcdctl {args:?} should fail: {out}");
    assert!(
        out.contains(&format!("Error: {error}")),
        "etcdctl {args:?}: expected {error:?}, got: {out}"
    );
}

/// A long-running etcdctl (watch): stdout line by line, killed on drop.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Spawned {
    fn etcdctl(endpoint: &str, args: &[&str]) -> Spawned {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl is installed");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Spawned {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + LINE_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {text:?}; saw {:?}", self.seen);
    }

    /// Every line that arrives within `wait`.
    fn drain(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.seen.extend(got.clone());
        got
    }

    /// Waits for the process to end by itself.
    fn exits(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real etcd member, for `FERRITE_TEST_AGAINST_ETCD=1`.
struct Etcd {
    _dir: tempfile::TempDir,
    child: Child,
    client: String,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = format!("127.0.0.1:{}", common::free_port());
        let peer = format!("http://127.0.0.1:{}", common::free_port());
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("e"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (apt-get install etcd-server)");
        let e = Etcd {
            _dir: dir,
            child,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcdctl(&e.client, &["endpoint", "health"]).0 {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

async fn token(ch: &Channel, name: &str, password: &str) -> String {
    AuthClient::new(ch.clone())
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("authenticate {name}: {e}"))
        .into_inner()
        .token
}

/// `msg` with etcd's `token` metadata.
fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("token", token.parse().expect("a token is ASCII"));
    req
}

fn put(key: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

/// root (rootpw) and alice (alicepw, role app: readwrite on the prefix
/// app/), then `auth enable`: etcdctl adds the root role itself when the
/// server says root lacks it.
fn set_up_users(ep: &str) {
    assert_eq!(
        ctl(
            ep,
            &[
                "user",
                "add",
                "root",
                "--new-user-password=rootpw",
                "--interactive=false"
            ]
        )
        .trim(),
        "User root created"
    );
    assert_eq!(ctl(ep, &["role", "add", "app"]).trim(), "Role app created");
    assert_eq!(
        ctl(
            ep,
            &[
                "role",
                "grant-permission",
                "app",
                "--prefix=true",
                "readwrite",
                "app/"
            ]
        )
        .trim(),
        "Role app updated"
    );
    ctl(
        ep,
        &[
            "user",
            "add",
            "alice",
            "--new-user-password=alicepw",
            "--interactive=false",
        ],
    );
    assert_eq!(
        ctl(ep, &["user", "grant-role", "alice", "app"]).trim(),
        "Role app is granted to user alice"
    );
    assert!(ctl(ep, &["auth", "enable"]).contains("Authentication Enabled"));
}

/// What etcdctl shows of users, roles and refusals once auth is enabled.
fn etcdctl_as_users(ep: &str) {
    refused(ep, &["put", "x", "y"], "etcdserver: user name is empty");
    refused(
        ep,
        &["--user", "alice:wrong", "put", "app/a", "1"],
        "etcdserver: authentication failed, invalid user ID or password",
    );
    assert_eq!(
        ctl(ep, &["--user", "alice:alicepw", "put", "app/a", "1"]).trim(),
        "OK"
    );
    refused(
        ep,
        &["--user", "alice:alicepw", "put", "other", "1"],
        "etcdserver: permission denied",
    );
    refused(
        ep,
        &["--user", "alice:alicepw", "get", "", "--from-key"],
        "etcdserver: permission denied",
    );
    assert_eq!(
        ctl(ep, &["--user", "alice:alicepw", "get", "app/a"]),
        "app/a\n1\n"
    );
    assert_eq!(
        ctl(ep, &["--user", "root:rootpw", "put", "other", "1"]).trim(),
        "OK"
    );
    assert_eq!(
        ctl(ep, &["--user", "root:rootpw", "role", "get", "app"]),
        "Role app\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n\t[app/, app0) (prefix app/)\n"
    );
    assert_eq!(
        ctl(ep, &["--user", "root:rootpw", "user", "get", "alice"]),
        "User: alice\nRoles: app\n"
    );
    assert_eq!(
        ctl(ep, &["--user", "root:rootpw", "user", "list"]),
        "alice\nroot\n"
    );
    refused(
        ep,
        &["--user", "alice:alicepw", "user", "list"],
        "etcdserver: permission denied",
    );
    // A watch on a range the user may not read is canceled at once.
    let mut w = Spawned::etcdctl(ep, &["--user", "alice:alicepw", "watch", "other"]);
    w.expect("watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)");
    assert!(w.exits(LINE_WAIT), "etcdctl watch should give up");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_users_roles_and_refusals() {
    if std::env::var("FERRITE_TEST_AGAINST_ETCD").is_ok_and(|v| v == "1") {
        let etcd = Etcd::start();
        set_up_users(&etcd.client);
        etcdctl_as_users(&etcd.client);
        return;
    }
    let cluster = Cluster::start(3);
    cluster.leader(Duration::from_secs(30)).await;
    let eps = cluster.endpoints();
    let all = eps.join(",");
    set_up_users(&eps[0]);
    // Through another member than the one that made the users.
    etcdctl_as_users(&eps[1]);

    // A watch whose permission is revoked is canceled and sees no later
    // event.
    let mut w = Spawned::etcdctl(
        &eps[2],
        &["--user", "alice:alicepw", "watch", "--prefix", "app/"],
    );
    // The watch is created before the first put below is made (etcdctl
    // prints nothing at create: wait until a put shows).
    let deadline = Instant::now() + LINE_WAIT;
    loop {
        ctl(&all, &["--user", "root:rootpw", "put", "app/seen", "1"]);
        if w.drain(Duration::from_millis(300))
            .iter()
            .any(|l| l == "app/seen")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never saw a put");
    }
    ctl(
        &all,
        &[
            "--user",
            "root:rootpw",
            "role",
            "revoke-permission",
            "app",
            "--prefix=true",
            "app/",
        ],
    );
    ctl(&all, &["--user", "root:rootpw", "put", "app/after", "2"]);
    // etcd's clientv3 closes a created watch the server cancels without
    // passing the reason on; etcdctl then says this.
    w.expect("Error: watch is canceled by the server");
    assert!(w.exits(LINE_WAIT), "etcdctl watch should give up");
    assert!(
        !w.seen.iter().any(|l| l.contains("app/after")),
        "an event after the revoke reached the watcher: {:?}",
        w.seen
    );
    // And alice can do nothing there now.
    refused(
        &all,
        &["--user", "alice:alicepw", "get", "app/seen"],
        "etcdserver: permission denied",
    );

    // Raw gRPC: what the server answers a stale, forged or missing token
    // (etcdctl would authenticate again and hide it).
    ctl(
        &all,
        &[
            "--user",
            "root:rootpw",
            "role",
            "grant-permission",
            "app",
            "--prefix=true",
            "readwrite",
            "app/",
        ],
    );
    let ch = channel(&eps[1]).await;
    let alice = token(&ch, "alice", "alicepw").await;
    let mut kv = KvClient::new(ch.clone());
    kv.put(with_token(put("app/raw"), &alice))
        .await
        .expect("a fresh token puts");
    // Any auth change makes older tokens stale ...
    ctl(
        &all,
        &[
            "--user",
            "root:rootpw",
            "role",
            "revoke-permission",
            "app",
            "--prefix=true",
            "app/",
        ],
    );
    let e = kv
        .put(with_token(put("app/raw"), &alice))
        .await
        .expect_err("a stale token");
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old"
        )
    );
    // ... and a fresh one is refused on the permission it lost.
    let alice = token(&ch, "alice", "alicepw").await;
    let e = kv
        .put(with_token(put("app/raw"), &alice))
        .await
        .expect_err("permission revoked");
    assert_eq!(
        (e.code(), e.message()),
        (Code::PermissionDenied, "etcdserver: permission denied")
    );
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    let e = kv
        .put(with_token(put("app/raw"), &forged))
        .await
        .expect_err("a forged token");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );
    let e = kv.put(put("app/raw")).await.expect_err("no token");
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: user name is empty")
    );
    let e = AuthClient::new(ch.clone())
        .authenticate(pb::AuthenticateRequest {
            name: "alice".into(),
            password: "nope".into(),
        })
        .await
        .expect_err("a wrong password");
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password"
        )
    );
    let status = AuthClient::new(ch.clone())
        .auth_status(pb::AuthStatusRequest {})
        .await
        .expect("status is open")
        .into_inner();
    assert!(status.enabled);

    // Disabling auth lets everyone in again, and voids the tokens issued.
    assert!(ctl(&all, &["--user", "root:rootpw", "auth", "disable"])
        .contains("Authentication Disabled"));
    assert_eq!(ctl(&all, &["put", "x", "y"]).trim(), "OK");
    ctl(&all, &["auth", "enable"]);
    let e = kv
        .put(with_token(put("app/raw"), &alice))
        .await
        .expect_err("a token from before the disable");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    ctl(&all, &["--user", "root:rootpw", "auth", "disable"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_and_volumes_follow_their_keys() {
    let cluster = Cluster::start(3);
    cluster.leader(Duration::from_secs(30)).await;
    let eps = cluster.endpoints();
    let all = eps.join(",");
    ctl(
        &all,
        &[
            "user",
            "add",
            "root",
            "--new-user-password=rootpw",
            "--interactive=false",
        ],
    );
    ctl(
        &all,
        &[
            "user",
            "add",
            "bob",
            "--new-user-password=bobpw",
            "--interactive=false",
        ],
    );
    ctl(&all, &["role", "add", "blocks"]);
    for (kind, key, prefix) in [
        ("readwrite", "/ferrite/registers/ok", false),
        ("read", "/ferrite/registers/ro", false),
        ("readwrite", "/ferrite/volumes/bob-", true),
    ] {
        let mut args = vec!["role", "grant-permission", "blocks"];
        if prefix {
            args.push("--prefix=true");
        }
        args.extend([kind, key]);
        ctl(&all, &args);
    }
    ctl(&all, &["user", "grant-role", "bob", "blocks"]);
    ctl(&all, &["auth", "enable"]);

    let ch = channel(&eps[2]).await;
    let root = token(&ch, "root", "rootpw").await;
    let bob = token(&ch, "bob", "bobpw").await;
    let mut regs = fv::registers_client::RegistersClient::new(ch.clone());
    let add = |name: &str| fv::AddRequest {
        name: name.into(),
        delta: 1,
        ..Default::default()
    };
    let get = |name: &str| fv::GetRequest {
        name: name.into(),
        ..Default::default()
    };
    assert_eq!(
        regs.add(with_token(add("ok"), &bob))
            .await
            .expect("bob may add to ok")
            .into_inner()
            .value,
        1
    );
    regs.add(with_token(add("ro"), &root))
        .await
        .expect("root may add anywhere");
    assert_eq!(
        regs.get(with_token(get("ro"), &bob))
            .await
            .expect("bob may read ro")
            .into_inner()
            .value,
        1
    );
    for (what, result) in [
        (
            "add ro",
            regs.add(with_token(add("ro"), &bob)).await.map(|_| ()),
        ),
        (
            "add other",
            regs.add(with_token(add("other"), &bob)).await.map(|_| ()),
        ),
        (
            "get other",
            regs.get(with_token(get("other"), &bob)).await.map(|_| ()),
        ),
        ("add anonymous", regs.add(add("ok")).await.map(|_| ())),
    ] {
        let e = result.expect_err(what);
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::InvalidArgument),
            "{what}: {e}"
        );
    }

    let mut vols = fv::volumes_client::VolumesClient::new(ch.clone());
    let create = |name: &str| fv::VolumeCreateRequest {
        name: name.into(),
        size: 1 << 20,
    };
    vols.create(with_token(create("bob-disk"), &bob))
        .await
        .expect("bob may create bob-disk");
    vols.create(with_token(create("root-disk"), &root))
        .await
        .expect("root may create anything");
    let e = vols
        .create(with_token(create("other"), &bob))
        .await
        .expect_err("outside bob's prefix");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    vols.write(with_token(
        fv::VolumeWriteRequest {
            name: "bob-disk".into(),
            offset: 0,
            data: b"hello".to_vec(),
        },
        &bob,
    ))
    .await
    .expect("bob writes his volume");
    let data = vols
        .read(with_token(
            fv::VolumeReadRequest {
                name: "bob-disk".into(),
                offset: 0,
                length: 5,
            },
            &bob,
        ))
        .await
        .expect("bob reads his volume")
        .into_inner()
        .data;
    assert_eq!(data, b"hello");
    let e = vols
        .read(with_token(
            fv::VolumeReadRequest {
                name: "root-disk".into(),
                offset: 0,
                length: 5,
            },
            &bob,
        ))
        .await
        .expect_err("not bob's volume");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let names = |l: fv::VolumeListResponse| {
        l.volumes
            .into_iter()
            .map(|v| v.name)
            .collect::<Vec<String>>()
    };
    let listed = vols
        .list(with_token(fv::VolumeListRequest {}, &bob))
        .await
        .expect("bob lists")
        .into_inner();
    assert_eq!(names(listed), vec!["bob-disk".to_string()]);
    let listed = vols
        .list(with_token(fv::VolumeListRequest {}, &root))
        .await
        .expect("root lists")
        .into_inner();
    assert_eq!(
        names(listed),
        vec!["bob-disk".to_string(), "root-disk".to_string()]
    );
    let e = vols
        .delete(with_token(
            fv::VolumeDeleteRequest {
                name: "root-disk".into(),
            },
            &bob,
        ))
        .await
        .expect_err("not bob's to delete");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
}
