//! NBD clients under etcd's users and roles: a 3-member cluster with TLS
//! (`--client-cert-auth`) and auth enabled through etcdctl, where the
//! common name of an NBD client's certificate is the user (as for gRPC).
//! Driven by the real tools: `nbdinfo` for connecting, listing and being
//! refused, and libnbd's Python binding for sessions that write, read and
//! outlive a permission change. Certificates are made here with rcgen.
//!
//! Users: root; alice (readwrite on the prefix `/ferrite/volumes/a`); bob
//! (read on it); carol (nothing). Volumes `a1` and `b1`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use ferrite_proto::ferrite::v1 as fv;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// How long one line from a session may take (a request rides out an
/// election within the server's own 20 s patience).
const LINE_WAIT: Duration = Duration::from_secs(40);

const USERS: [&str; 4] = ["root", "alice", "bob", "carol"];

struct Pki {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    member: (PathBuf, PathBuf),
}

impl Pki {
    /// A CA, a member certificate, and per user a certificate with the
    /// user's name as common name, laid out for GnuTLS (`nbd-USER/`); and
    /// `nbd-none/` with the CA only.
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let ca_pem = params.self_signed(&key).expect("CA").pem();
        let issuer = Issuer::new(params, key);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("write CA");
        let leaf = |cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut p =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                    .expect("params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &issuer).expect("sign");
            let cert_path = dir.path().join(format!("{cn}.pem"));
            let key_path = dir.path().join(format!("{cn}-key.pem"));
            std::fs::write(&cert_path, cert.pem()).expect("write cert");
            std::fs::write(&key_path, key.serialize_pem()).expect("write key");
            (cert_path, key_path)
        };
        let member = leaf("member");
        for user in USERS {
            let (cert, key) = leaf(user);
            let nbd = dir.path().join(format!("nbd-{user}"));
            std::fs::create_dir_all(&nbd).expect("mkdir");
            std::fs::copy(&ca_file, nbd.join("ca-cert.pem")).expect("copy CA");
            std::fs::copy(&cert, nbd.join("client-cert.pem")).expect("copy cert");
            std::fs::copy(&key, nbd.join("client-key.pem")).expect("copy key");
        }
        let none = dir.path().join("nbd-none");
        std::fs::create_dir_all(&none).expect("mkdir");
        std::fs::copy(&ca_file, none.join("ca-cert.pem")).expect("copy CA");
        Pki {
            dir,
            ca_file,
            member,
        }
    }

    fn cert(&self, user: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(format!("{user}.pem")),
            self.dir.path().join(format!("{user}-key.pem")),
        )
    }

    fn server_flags(&self) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        vec![
            "--cert-file".into(),
            s(&self.member.0),
            "--key-file".into(),
            s(&self.member.1),
            "--trusted-ca-file".into(),
            s(&self.ca_file),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            s(&self.member.0),
            "--peer-key-file".into(),
            s(&self.member.1),
            "--peer-trusted-ca-file".into(),
            s(&self.ca_file),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// `nbds://` for `export` on `nbd` as `user` ("none": no certificate).
    fn uri(&self, nbd: SocketAddr, export: &str, user: &str) -> String {
        format!(
            "nbds://{nbd}/{export}?tls-certificates={}",
            self.dir.path().join(format!("nbd-{user}")).display()
        )
    }
}

/// etcdctl over TLS as root (its certificate's common name).
fn ctl(pki: &Pki, addr: SocketAddr, args: &[&str]) -> String {
    let (cert, key) = pki.cert("root");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{addr}"))
        .args(["--command-timeout", "10s", "--dial-timeout", "3s"])
        .arg("--cacert")
        .arg(&pki.ca_file)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(args)
        .output()
        .expect("etcdctl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "etcdctl {args:?}: {text}");
    text
}

/// `nbdinfo ARGS URI`: (success, stdout + stderr).
fn nbdinfo(args: &[&str], uri: &str) -> (bool, String) {
    let out = Command::new("nbdinfo")
        .args(args)
        .arg(uri)
        .output()
        .expect("nbdinfo is installed (libnbd-bin)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A libnbd client (Python binding) that stays connected and runs one
/// command per line: `write OFF TEXT`, `trim OFF LEN`, `read OFF LEN`;
/// it answers `ok [DATA]` or `err ERRNO-NAME MESSAGE`. Strict mode is off,
/// so a write to a read-only export reaches the server, which must say
/// EPERM itself.
const SESSION: &str = r#"
import errno, sys, nbd
h = nbd.NBD()
h.set_strict_mode(0)
# The URI names the certificates directory (a local file).
h.set_uri_allow_local_file(True)
try:
    h.connect_uri(sys.argv[1])
except nbd.Error as e:
    print("refused", e.string.replace("\n", " "), flush=True)
    sys.exit(0)
print("connected", "ro" if h.is_read_only() else "rw", flush=True)
for line in sys.stdin:
    cmd, off, arg = line.split()
    try:
        if cmd == "write":
            h.pwrite(arg.encode(), int(off))
            print("ok", flush=True)
        elif cmd == "trim":
            h.trim(int(arg), int(off))
            print("ok", flush=True)
        else:
            print("ok", h.pread(int(arg), int(off)).decode(errors="replace"), flush=True)
    except nbd.Error as e:
        name = errno.errorcode.get(e.errno or 0, str(e.errno))
        print("err", name, e.string.replace("\n", " "), flush=True)
"#;

struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// The first line: `connected ro|rw` or `refused ...`.
    hello: String,
}

impl Session {
    fn open(uri: &str) -> Session {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", SESSION, uri])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with libnbd's binding (python3-libnbd)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Session {
            child,
            stdin,
            lines,
            hello: String::new(),
        };
        s.hello = s.line();
        s
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(LINE_WAIT)
            .expect("the NBD session answers in time")
    }

    fn run(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("session stdin");
        self.stdin.flush().expect("session stdin");
        self.line()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC channel over TLS as `user` (its certificate).
async fn grpc_channel(pki: &Pki, addr: SocketAddr, user: &str) -> tonic::transport::Channel {
    let (cert, key) = pki.cert(user);
    let config: Arc<ferrite_tls::rustls::ClientConfig> =
        ferrite_tls::client_config(&pki.ca_file, Some((&cert, &key)), ferrite_tls::ALPN_GRPC)
            .expect("client TLS config");
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = ferrite_tls::TlsConnector::from(config)
                .connect(ferrite_tls::ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_with_connector(connector)
        .await
        .expect("gRPC over TLS")
}

fn wait_serving(pki: &Pki, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (cert, key) = pki.cert("root");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{addr}"))
            .args(["--command-timeout", "3s", "--dial-timeout", "2s"])
            .arg("--cacert")
            .arg(&pki.ca_file)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["get", "x"])
            .output()
            .expect("etcdctl is installed");
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never served");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nbd_clients_are_their_certificates_users() {
    let pki = Pki::new();
    let flags = pki.server_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with(3, &flags);
    for m in &cluster.members {
        wait_serving(&pki, m.client);
    }
    let m0 = &cluster.members[0];
    let (ep, nbd, nbd1) = (m0.client, m0.nbd, cluster.members[1].nbd);

    // Volumes first (auth still off), then users, roles, auth enable.
    let mut volumes = fv::volumes_client::VolumesClient::new(grpc_channel(&pki, ep, "root").await);
    let mut ids = Vec::new();
    for name in ["a1", "b1"] {
        let v = volumes
            .create(fv::VolumeCreateRequest {
                name: name.into(),
                size: 1 << 20,
            })
            .await
            .expect("create a volume")
            .into_inner()
            .volume
            .expect("the volume");
        ids.push((v.id, v.size));
    }
    for user in USERS {
        ctl(
            &pki,
            ep,
            &[
                "user",
                "add",
                user,
                &format!("--new-user-password={user}pw"),
                "--interactive=false",
            ],
        );
    }
    for (role, kind, user) in [("a-rw", "readwrite", "alice"), ("a-ro", "read", "bob")] {
        ctl(&pki, ep, &["role", "add", role]);
        ctl(
            &pki,
            ep,
            &[
                "role",
                "grant-permission",
                role,
                "--prefix=true",
                kind,
                "/ferrite/volumes/a",
            ],
        );
        ctl(&pki, ep, &["user", "grant-role", user, role]);
    }
    assert!(ctl(&pki, ep, &["auth", "enable"]).contains("Authentication Enabled"));

    // alice reads a1 and is refused b1 (the server's policy refusal).
    let (ok, out) = nbdinfo(&["--size"], &pki.uri(nbd, "a1", "alice"));
    assert!(ok && out.trim() == "1048576", "alice reads a1: {out}");
    let (ok, out) = nbdinfo(&["--size"], &pki.uri(nbd, "b1", "alice"));
    assert!(!ok, "alice was let into b1: {out}");
    // A listing shows alice only what she may read.
    let (ok, out) = nbdinfo(&["--list"], &pki.uri(nbd, "", "alice"));
    assert!(ok, "alice lists: {out}");
    assert!(out.contains("a1") && !out.contains("b1"), "{out}");
    // root sees and reads both.
    let (ok, out) = nbdinfo(&["--list"], &pki.uri(nbd, "", "root"));
    assert!(ok && out.contains("a1") && out.contains("b1"), "{out}");
    // carol may read nothing; without a certificate nothing at all.
    for export in ["a1", "b1"] {
        let (ok, out) = nbdinfo(&["--size"], &pki.uri(nbd, export, "carol"));
        assert!(!ok, "carol was let into {export}: {out}");
        let (ok, out) = nbdinfo(&["--size"], &pki.uri(nbd, export, "none"));
        assert!(!ok, "a client without a certificate got {export}: {out}");
    }
    let carol = Session::open(&pki.uri(nbd, "a1", "carol"));
    assert!(carol.hello.starts_with("refused"), "{}", carol.hello);

    // alice writes a1; bob reads what she wrote, and may not write.
    let mut alice = Session::open(&pki.uri(nbd, "a1", "alice"));
    assert_eq!(alice.hello, "connected rw");
    assert_eq!(alice.run("write 0 hello"), "ok");
    assert_eq!(alice.run("read 0 5"), "ok hello");
    let mut bob = Session::open(&pki.uri(nbd1, "a1", "bob"));
    assert_eq!(bob.hello, "connected ro");
    assert_eq!(bob.run("read 0 5"), "ok hello");
    let out = bob.run("write 0 bobby");
    assert!(out.starts_with("err EPERM"), "bob wrote: {out}");
    let out = bob.run("trim 0 4096");
    assert!(out.starts_with("err EPERM"), "bob trimmed: {out}");
    assert_eq!(alice.run("read 0 5"), "ok hello");

    // Revoke alice's write permission (her role keeps read): her open
    // connection's next write is refused when it applies, with EPERM, and
    // a new connection is read-only.
    ctl(
        &pki,
        ep,
        &[
            "role",
            "grant-permission",
            "a-rw",
            "--prefix=true",
            "read",
            "/ferrite/volumes/a",
        ],
    );
    let out = alice.run("write 0 again");
    assert!(
        out.starts_with("err EPERM"),
        "alice wrote after revoke: {out}"
    );
    assert_eq!(alice.run("read 0 5"), "ok hello");
    let mut again = Session::open(&pki.uri(nbd1, "a1", "alice"));
    assert_eq!(again.hello, "connected ro");
    assert_eq!(again.run("read 0 5"), "ok hello");

    // The volume-file copy stream on the client port is for root only.
    let mut as_alice =
        fv::volumes_client::VolumesClient::new(grpc_channel(&pki, ep, "alice").await);
    let (id, size) = ids[0];
    let copy = fv::VolumeCopyRequest {
        id,
        size,
        min_applied: 0,
    };
    let refused = as_alice
        .copy(copy)
        .await
        .expect_err("alice copied a volume file");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    let mut stream = volumes
        .copy(copy)
        .await
        .expect("root copies a volume file")
        .into_inner();
    let mut copied = Vec::new();
    while let Some(chunk) = stream.message().await.expect("a chunk") {
        if chunk.offset == 0 {
            copied = chunk.data;
        }
    }
    assert!(
        copied.starts_with(b"hello"),
        "copy started {:?}",
        &copied[..copied.len().min(8)]
    );
}
