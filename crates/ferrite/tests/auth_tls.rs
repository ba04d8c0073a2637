//! The client side of TLS and etcd authentication, through the real
//! interfaces: `ferrite user|role|auth`, `ferrite kv ...` and `ferrite
//! shell` with `--user/--cacert/--cert/--key`, and the `ferrite-client`
//! crate, against a real server on loopback with mutual TLS (certificates
//! made here with rcgen: a CA, a server certificate for 127.0.0.1, client
//! certificates with CN=root and CN=nobody, and a CA nobody trusts).
//!
//! Every scenario takes a `Target` and runs twice: against a real etcd
//! 3.4 with the same flags (the reference), and against Ferrite.
//!
//! Every wait is bounded; servers are killed when dropped.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, BIN};
use ferrite_client::{
    AuthError, Client, ClientError, ClientOptions, Credentials, KeyRange, Notice, Permission,
    PermissionType, TlsOptions, WatchOptions,
};

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// etcd 3.4 (Debian's etcd-server), with JWT tokens: a token carries
    /// the auth store's revision, so a permission change makes it stale
    /// ("revision of auth store is old") and the client must authenticate
    /// again.
    Etcd,
    /// `ferrite server` with TLS (one member).
    Ferrite,
}

// --- certificates -------------------------------------------------------------

/// PEM files of a test PKI, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write a PEM file")
        };
        let ca_params = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            p
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let params = ca_params("ferrite test CA");
        write("ca.pem", params.self_signed(&ca_key).expect("CA").pem());
        let issuer = Issuer::new(params, ca_key);

        let rogue_key = KeyPair::generate().expect("rogue CA key");
        let rogue_params = ca_params("a CA nobody trusts");
        let rogue = rogue_params.self_signed(&rogue_key).expect("rogue CA");
        write("rogue-ca.pem", rogue.pem());
        let rogue = Issuer::new(rogue_params, rogue_key);

        let leaf = |name: &str, cn: &str, server: bool, issuer: &Issuer<'_, KeyPair>| {
            let sans = if server {
                vec!["localhost".to_string()]
            } else {
                Vec::new()
            };
            let mut p = CertificateParams::new(sans).expect("params");
            if server {
                p.subject_alt_names
                    .push(SanType::IpAddress([127, 0, 0, 1].into()));
            }
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = p.signed_by(&key, issuer).expect("sign");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        };
        leaf("server", "127.0.0.1", true, &issuer);
        leaf("root", "root", false, &issuer);
        leaf("nobody", "nobody", false, &issuer);
        // A forged "root" from a CA the server does not trust.
        leaf("intruder", "root", false, &rogue);
        // For etcd's JWT tokens (HS256): any bytes are a key.
        write("jwt.key", "ferrite-test-jwt-signing-key".to_string());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// TLS options with the client certificate `who` ("root", "nobody").
    fn tls(&self, who: &str) -> TlsOptions {
        TlsOptions {
            ca: Some(self.path("ca.pem")),
            cert: Some(self.path(&format!("{who}.pem"))),
            key: Some(self.path(&format!("{who}-key.pem"))),
        }
    }
}

// --- servers --------------------------------------------------------------------

/// One member with TLS on its client port, in its own temp dir.
struct Server {
    target: Target,
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(target: Target, pki: &Pki) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = free_port();
        let peer = free_port();
        let endpoint = format!("https://127.0.0.1:{client}");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let tls = [
            "--cert-file".to_string(),
            pki.arg("server.pem"),
            "--key-file".to_string(),
            pki.arg("server-key.pem"),
            "--trusted-ca-file".to_string(),
            pki.arg("ca.pem"),
            "--client-cert-auth".to_string(),
        ];
        let mut cmd = match target {
            Target::Etcd => {
                let peer_url = format!("http://127.0.0.1:{peer}");
                let mut c = Command::new("etcd");
                c.args(["--name", "e0"])
                    .arg("--data-dir")
                    .arg(dir.path().join("data"))
                    .args(["--listen-client-urls", &endpoint])
                    .args(["--advertise-client-urls", &endpoint])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &format!("e0={peer_url}")])
                    .arg("--auth-token")
                    .arg(format!(
                        "jwt,priv-key={},sign-method=HS256",
                        pki.arg("jwt.key")
                    ));
                c
            }
            Target::Ferrite => {
                let mut c = Command::new(BIN);
                c.arg("server")
                    .args(["--name", "n1"])
                    .arg("--data-dir")
                    .arg(dir.path().join("data"))
                    .args(["--initial-cluster", &format!("n1=127.0.0.1:{peer}")])
                    .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
                    .args(["--listen-client", &format!("127.0.0.1:{client}")])
                    .args(["--listen-http", &format!("127.0.0.1:{}", free_port())])
                    .args(["--listen-nbd", &format!("127.0.0.1:{}", free_port())]);
                c
            }
        };
        let child = cmd
            .args(tls)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the server (etcd: apt-get install etcd-server)");
        let server = Server {
            target,
            child: Some(child),
            endpoint,
            dir,
        };
        server.wait_ready(pki).await;
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Until a read as CN=root succeeds (auth is off at first).
    async fn wait_ready(&self, pki: &Pki) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.client(pki, "root", None) {
                if c.get(b"ready?").await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{:?} not ready in 30 s; log:\n{}", self.target, self.log());
    }

    /// A client with the certificate of `who` and maybe a user.
    fn client(
        &self,
        pki: &Pki,
        who: &str,
        user: Option<(&str, &str)>,
    ) -> Result<Client, ClientError> {
        Client::with_options(
            vec![self.endpoint.clone()],
            ClientOptions {
                tls: Some(pki.tls(who)),
                credentials: user.map(|(u, p)| Credentials {
                    user: u.to_string(),
                    password: p.to_string(),
                }),
            },
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// --- the command line -------------------------------------------------------------

/// `ferrite ARGS --endpoints EP` with `flags` (TLS, user), the FERRITE_*
/// environment cleared, no terminal; returns (success, stdout, stderr).
fn ferrite_with(
    server: &Server,
    flags: &[String],
    env: &[(&str, &str)],
    stdin: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--endpoints", &server.endpoint])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "FERRITE_USER",
        "FERRITE_PASSWORD",
        "FERRITE_CACERT",
        "FERRITE_CERT",
        "FERRITE_KEY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run ferrite");
    if let Some(mut input) = child.stdin.take() {
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("ferrite output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The TLS flags for the client certificate `who`, plus `--user` if given.
fn flags(pki: &Pki, who: &str, user: Option<&str>) -> Vec<String> {
    let mut f = vec![
        "--cacert".to_string(),
        pki.arg("ca.pem"),
        "--cert".to_string(),
        pki.arg(&format!("{who}.pem")),
        "--key".to_string(),
        pki.arg(&format!("{who}-key.pem")),
    ];
    if let Some(u) = user {
        f.extend(["--user".to_string(), u.to_string()]);
    }
    f
}

/// Must succeed; returns stdout.
fn ok(server: &Server, flags: &[String], args: &[&str]) -> String {
    let (success, out, err) = ferrite_with(server, flags, &[], None, args);
    assert!(
        success,
        "ferrite {args:?} failed: {out}{err}\nserver log:\n{}",
        server.log()
    );
    out
}

/// Must fail; returns stderr.
fn fails(server: &Server, flags: &[String], args: &[&str]) -> String {
    let (success, out, err) = ferrite_with(server, flags, &[], None, args);
    assert!(!success, "ferrite {args:?} should have failed: {out}");
    err
}

// --- scenarios ----------------------------------------------------------------------

/// The etcdctl workflow through `ferrite`: users, a role with a prefix
/// permission, auth enable (which makes root's role), then reads and
/// writes as root, as a limited user, with a wrong password, with no user;
/// revocations; auth disable.
async fn cli_auth_workflow(target: Target) {
    let pki = Pki::new();
    let s = Server::start(target, &pki).await;
    // CN=root: the certificate alone makes this client root.
    let admin = flags(&pki, "root", None);
    let as_root = flags(&pki, "nobody", Some("root:rootpw"));
    let as_alice = flags(&pki, "nobody", Some("alice:alicepw"));
    let nobody = flags(&pki, "nobody", None);

    assert_eq!(
        ok(
            &s,
            &admin,
            &["user", "add", "root", "--new-user-password", "rootpw"]
        ),
        "User root created\n"
    );
    assert_eq!(
        ok(&s, &admin, &["user", "add", "alice:alicepw"]),
        "User alice created\n"
    );
    assert_eq!(
        ok(&s, &admin, &["role", "add", "app"]),
        "Role app created\n"
    );
    assert_eq!(
        ok(
            &s,
            &admin,
            &[
                "role",
                "grant-permission",
                "app",
                "readwrite",
                "app/",
                "--prefix"
            ]
        ),
        "Role app updated\n"
    );
    ok(
        &s,
        &admin,
        &["role", "grant-permission", "app", "read", "shared"],
    );
    assert_eq!(
        ok(&s, &admin, &["user", "grant-role", "alice", "app"]),
        "Role app is granted to user alice\n"
    );
    assert_eq!(
        ok(&s, &admin, &["role", "get", "app"]),
        "Role app\nKV Read:\n\t[app/, app0) (prefix app/)\n\tshared\nKV Write:\n\t[app/, app0) (prefix app/)\n"
    );
    // Bad input is refused before anything is sent.
    let err = fails(&s, &admin, &["role", "grant-permission", "app", "rw", "x"]);
    assert!(err.contains("invalid permission type"), "{err}");
    let err = fails(
        &s,
        &admin,
        &[
            "role",
            "grant-permission",
            "app",
            "read",
            "x",
            "--prefix",
            "--from-key",
        ],
    );
    assert!(err.contains("mutually exclusive"), "{err}");

    // root has no root role yet: `auth enable` makes and grants it.
    assert_eq!(
        ok(&s, &admin, &["auth", "enable"]),
        "Authentication Enabled\n"
    );
    assert_eq!(
        ok(&s, &as_root, &["user", "get", "root"]),
        "User: root\nRoles: root\n"
    );
    assert_eq!(ok(&s, &as_root, &["user", "list"]), "alice\nroot\n");
    assert_eq!(ok(&s, &as_root, &["role", "list"]), "app\nroot\n");

    // root reads and writes anything; alice only under app/.
    ok(&s, &as_root, &["kv", "put", "other/k", "root-only"]);
    ok(&s, &as_root, &["kv", "put", "shared", "s"]);
    assert_eq!(ok(&s, &as_root, &["kv", "get", "other/k"]), "root-only\n");
    assert!(ok(&s, &as_alice, &["kv", "put", "app/a", "1"]).starts_with("OK"));
    assert_eq!(ok(&s, &as_alice, &["kv", "get", "app/a"]), "1\n");
    assert_eq!(ok(&s, &as_alice, &["kv", "get", "shared"]), "s\n");
    let err = fails(&s, &as_alice, &["kv", "get", "other/k"]);
    assert!(err.contains("permission denied"), "{err}");
    let err = fails(&s, &as_alice, &["kv", "put", "shared", "x"]);
    assert!(err.contains("permission denied"), "{err}");
    // The environment works as the flags do.
    let env = [("FERRITE_USER", "alice"), ("FERRITE_PASSWORD", "alicepw")];
    let (success, out, err) = ferrite_with(&s, &nobody, &env, None, &["kv", "get", "app/a"]);
    assert!(success && out == "1\n", "{out}{err}");
    // Other client commands carry the token too.
    let out = ok(&s, &as_alice, &["lease", "grant", "30"]);
    assert!(out.contains("granted with TTL(30s)"), "{out}");

    // A wrong password, no password and no terminal, no user at all.
    let err = fails(
        &s,
        &flags(&pki, "nobody", Some("alice:wrong")),
        &["kv", "get", "app/a"],
    );
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "a password is never echoed: {err}");
    let err = fails(
        &s,
        &flags(&pki, "nobody", Some("alice")),
        &["kv", "get", "app/a"],
    );
    assert!(err.contains("no terminal to ask for the password"), "{err}");
    let err = fails(&s, &nobody, &["kv", "get", "app/a"]);
    assert!(
        err.contains("permission denied") || err.contains("user name is empty"),
        "{err}"
    );

    // Revocations take effect at once.
    assert_eq!(
        ok(
            &s,
            &as_root,
            &["role", "revoke-permission", "app", "shared"]
        ),
        "Permission of key shared is revoked from role app\n"
    );
    let err = fails(&s, &as_alice, &["kv", "get", "shared"]);
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(
        ok(&s, &as_root, &["user", "revoke-role", "alice", "app"]),
        "Role app is revoked from user alice\n"
    );
    let err = fails(&s, &as_alice, &["kv", "get", "app/a"]);
    assert!(err.contains("permission denied"), "{err}");

    // A password changed from standard input (etcdctl's --interactive=false).
    let (success, out, err) = ferrite_with(
        &s,
        &as_root,
        &[],
        Some("newpw\n"),
        &["user", "passwd", "alice", "--interactive=false"],
    );
    assert!(success && out == "Password updated\n", "{out}{err}");
    let err = fails(&s, &as_alice, &["kv", "get", "app/a"]);
    assert!(err.contains("authentication failed"), "{err}");

    assert_eq!(
        ok(&s, &as_root, &["auth", "disable"]),
        "Authentication Disabled\n"
    );
    assert_eq!(ok(&s, &nobody, &["kv", "get", "app/a"]), "1\n");
    assert_eq!(
        ok(&s, &admin, &["user", "delete", "alice"]),
        "User alice deleted\n"
    );
    assert_eq!(
        ok(&s, &admin, &["role", "delete", "app"]),
        "Role app deleted\n"
    );
}

/// TLS failures are named in one line, and fail at once rather than after
/// the client's patience.
async fn cli_tls_failures(target: Target) {
    let pki = Pki::new();
    let s = Server::start(target, &pki).await;
    let started = Instant::now();
    let mut errors = Vec::new();

    // No --cacert: the system's roots do not know the test CA.
    let err = fails(&s, &[], &["kv", "get", "k"]);
    assert!(err.contains("TLS handshake failed: unknown CA"), "{err}");
    errors.push(err);
    // A CA that did not sign the server's certificate.
    let rogue = vec!["--cacert".to_string(), pki.arg("rogue-ca.pem")];
    let err = fails(&s, &rogue, &["kv", "get", "k"]);
    assert!(err.contains("TLS handshake failed: unknown CA"), "{err}");
    errors.push(err);
    // The server requires a client certificate.
    let no_cert = vec!["--cacert".to_string(), pki.arg("ca.pem")];
    let err = fails(&s, &no_cert, &["kv", "get", "k"]);
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(err.contains("client certificate"), "{err}");
    errors.push(err);
    // A client certificate (CN=root!) that the server's CA did not sign.
    let err = fails(&s, &flags(&pki, "intruder", None), &["kv", "get", "k"]);
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(err.contains("client certificate"), "{err}");
    errors.push(err);
    // Files that are not there.
    let missing = vec!["--cacert".to_string(), "/nonexistent/ca.pem".to_string()];
    let err = fails(&s, &missing, &["kv", "get", "k"]);
    assert!(err.contains("--cacert /nonexistent/ca.pem"), "{err}");
    let err = fails(
        &s,
        &["--cert".to_string(), pki.arg("root.pem")],
        &["kv", "get", "k"],
    );
    assert!(err.contains("--cert needs --key"), "{err}");
    for err in &errors {
        assert!(!err.contains("transport error"), "a raw error chain: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "TLS failures should not be retried: {:?}",
        started.elapsed()
    );
    // And with everything right, it works; the bare address means TLS
    // because TLS flags are given.
    let bare = s.endpoint.trim_start_matches("https://").to_string();
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args(["kv", "put", "k", "v", "--endpoints", &bare])
        .args(flags(&pki, "root", None))
        .output()
        .expect("run ferrite");
    assert!(out.status.success(), "{out:?}");
}

/// The crate: a long-lived client as a limited user keeps working when
/// its permissions change (with etcd's JWT tokens the change makes its
/// token stale, and it authenticates again by itself); a watch carries the
/// token; a wrong password is a typed error; auth disable.
async fn client_reauthenticates(target: Target) {
    let pki = Pki::new();
    let s = Server::start(target, &pki).await;
    let mut admin = s.client(&pki, "root", None).expect("admin client");
    admin
        .user_add("root", Some("rootpw"))
        .await
        .expect("add root");
    admin
        .user_add("alice", Some("alicepw"))
        .await
        .expect("add alice");
    admin.role_add("app").await.expect("add role");
    let grant = |key: &str, kind| {
        let (key, range_end) =
            ferrite_client::permission_range(key.as_bytes(), KeyRange::Prefix).expect("range");
        Permission {
            kind,
            key,
            range_end,
        }
    };
    admin
        .role_grant_permission("app", &grant("app/", PermissionType::ReadWrite))
        .await
        .expect("grant app/");
    admin
        .user_grant_role("alice", "app")
        .await
        .expect("grant role");
    admin.role_add("root").await.expect("root role");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("root's role");
    admin.auth_enable().await.expect("auth enable");

    let mut alice = s
        .client(&pki, "nobody", Some(("alice", "alicepw")))
        .expect("alice's client");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = notices.clone();
    alice.on_notice(move |n| seen.lock().unwrap_or_else(|e| e.into_inner()).push(n));
    alice
        .put(b"app/1", b"one")
        .await
        .expect("alice writes app/");
    match alice.get(b"other/1").await {
        Err(ClientError::Auth(AuthError::PermissionDenied)) => {}
        other => panic!("expected permission denied, got {other:?}"),
    }

    // A watch opens with the token and sees alice's next write.
    let mut watch = alice
        .watch(
            b"app/",
            WatchOptions {
                prefix: true,
                ..Default::default()
            },
        )
        .await
        .expect("alice watches app/");
    alice.put(b"app/2", b"two").await.expect("put app/2");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event within 10 s")
        .expect("event");
    assert_eq!(event.kv.key.as_ref(), b"app/2");

    // A watch out of alice's range is refused with a typed error.
    match alice.watch(b"other/", WatchOptions::default()).await {
        Err(ClientError::Auth(AuthError::PermissionDenied)) => {}
        Err(e) => panic!("expected permission denied, got {e}"),
        Ok(_) => panic!("expected permission denied, got a watch"),
    }

    // root widens alice's role; the same client reads other/ now.
    admin
        .role_grant_permission("app", &grant("other/", PermissionType::Read))
        .await
        .expect("grant other/");
    admin
        .put(b"other/1", b"o")
        .await
        .expect("root writes other/");
    let kv = alice.get(b"other/1").await.expect("alice reads other/ now");
    assert_eq!(kv.map(|kv| kv.value.to_vec()), Some(b"o".to_vec()));
    let reauthenticated = notices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|n| matches!(n, Notice::Reauthenticated { .. }))
        .count();
    if target == Target::Etcd {
        // JWT tokens name the auth revision: the grant made alice's stale.
        assert!(reauthenticated >= 1, "no re-authentication seen");
    }

    let mut wrong = s
        .client(&pki, "nobody", Some(("alice", "nope")))
        .expect("client");
    match wrong.get(b"app/1").await {
        Err(ClientError::Auth(AuthError::AuthFailed)) => {}
        other => panic!("expected authentication failed, got {other:?}"),
    }

    admin.auth_disable().await.expect("auth disable");
    let mut anyone = s.client(&pki, "nobody", None).expect("client");
    assert!(anyone.get(b"other/1").await.expect("read").is_some());
    // alice's client goes on, token or not.
    alice
        .put(b"app/3", b"three")
        .await
        .expect("alice after disable");
}

/// `ferrite shell` with the same flags: auth commands, a password asked
/// for (here from the next input line: no terminal), kv as the user.
async fn shell_auth(target: Target) {
    let pki = Pki::new();
    let s = Server::start(target, &pki).await;
    let admin = flags(&pki, "root", None);
    ok(&s, &admin, &["user", "add", "root:rootpw"]);
    ok(&s, &admin, &["auth", "enable"]);

    let script = "USER ADD bob\nbobpw\nROLE ADD r1\nROLE GRANT-PERMISSION r1 readwrite b/ PREFIX\n\
                  ROLE GET r1\nUSER GRANT-ROLE bob r1\nUSER GET bob\nUSER LIST\nROLE LIST\n\
                  PUT b/x 7\nGET b/x\nQUIT\n";
    let (success, out, err) = ferrite_with(
        &s,
        &flags(&pki, "nobody", Some("root:rootpw")),
        &[],
        Some(script),
        &["shell"],
    );
    assert!(success, "{out}{err}");
    for expected in [
        "User bob created",
        "Role r1 created",
        "Role r1 updated",
        "Role r1\nKV Read:\n\t[b/, b0) (prefix b/)\nKV Write:\n\t[b/, b0) (prefix b/)",
        "Role r1 is granted to user bob",
        "User: bob\nRoles: r1",
        "bob\nroot",
        "r1\nroot",
        "OK (revision",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("error"), "{out}");

    // bob, in a shell of his own: his prefix only.
    let (success, out, err) = ferrite_with(
        &s,
        &flags(&pki, "nobody", Some("bob:bobpw")),
        &[],
        Some("GET b/x\nGET other\nUSER LIST\nQUIT\n"),
        &["shell"],
    );
    assert!(success, "{out}{err}");
    assert!(out.contains("ferrite> 7\n"), "{out}");
    assert_eq!(out.matches("error: permission denied").count(), 2, "{out}");
}

// --- against etcd 3.4 -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cli_users_roles_permissions_over_mutual_tls() {
    cli_auth_workflow(Target::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cli_names_tls_failures() {
    cli_tls_failures(Target::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_reauthenticates_after_a_permission_change() {
    client_reauthenticates(Target::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_shell_has_the_credentials_and_auth_commands() {
    shell_auth(Target::Etcd).await;
}

// --- against Ferrite: ignored until its Auth service and TLS land ------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrite_cli_users_roles_permissions_over_mutual_tls() {
    cli_auth_workflow(Target::Ferrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrite_cli_names_tls_failures() {
    cli_tls_failures(Target::Ferrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrite_client_reauthenticates_after_a_permission_change() {
    client_reauthenticates(Target::Ferrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrite_shell_has_the_credentials_and_auth_commands() {
    shell_auth(Target::Ferrite).await;
}
