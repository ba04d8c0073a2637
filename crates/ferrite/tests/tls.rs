//! TLS on every port, through real tools: a 3-member cluster with client
//! TLS (`--client-cert-auth`) and mutual peer TLS, driven by etcdctl,
//! openssl s_client, curl, nbdinfo and qemu-img; certificates made here with
//! rcgen (including a foreign CA and an expired certificate).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes `stem.pem` and `stem-key.pem`: a certificate for 127.0.0.1 and
/// localhost, server and client; `expired` makes it a year 2000 one.
fn leaf(ca: &Ca, cn: &str, dir: &Path, stem: &str, expired: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

struct Pki {
    dir: tempfile::TempDir,
    ours: Ca,
    ca_file: PathBuf,
    member: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ours = ca("test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ours.pem).unwrap();
        let member = leaf(&ours, "member", dir.path(), "member", false);
        let client = leaf(&ours, "root", dir.path(), "root", false);
        // GnuTLS tools' directory layout.
        let nbd = dir.path().join("nbd");
        std::fs::create_dir_all(&nbd).unwrap();
        std::fs::copy(&ca_file, nbd.join("ca-cert.pem")).unwrap();
        std::fs::copy(&client.0, nbd.join("client-cert.pem")).unwrap();
        std::fs::copy(&client.1, nbd.join("client-key.pem")).unwrap();
        Pki {
            dir,
            ours,
            ca_file,
            member,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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
}

fn start_tls_cluster(pki: &Pki) -> Cluster {
    let flags = pki.server_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::start_with(3, &flags)
}

/// etcdctl over TLS with the given client certificate (None: no --cert).
fn etcdctl(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    args: &[&str],
) -> (bool, String) {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{addr}"))
        .args(["--command-timeout", "5s", "--dial-timeout", "3s"])
        .arg("--cacert")
        .arg(ca);
    if let Some((cert, key)) = cert {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = c.args(args).output().expect("etcdctl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Waits until etcdctl with the good client certificate answers on `addr`.
fn wait_serving(pki: &Pki, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = etcdctl(addr, &pki.ca_file, Some(&pki.client), &["get", "x"]);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never served: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `openssl s_client` output for a handshake with `addr`.
fn s_client(pki: &Pki, addr: SocketAddr) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-showcerts"])
        .arg("-CAfile")
        .arg(&pki.ca_file)
        .arg("-cert")
        .arg(&pki.client.0)
        .arg("-key")
        .arg(&pki.client.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The served certificate's subject CN, per openssl.
fn served_cn(pki: &Pki, addr: SocketAddr) -> String {
    let out = s_client(pki, addr);
    out.lines()
        .find(|l| l.trim_start().starts_with("0 s:"))
        .unwrap_or_default()
        .to_string()
}

/// Bad clients on a TLS port: random bytes, a partial ClientHello then
/// silence (dropped by the handshake deadline), an oversized client hello.
/// Each ends within `bound`; the port must keep serving afterwards.
fn abuse(addr: SocketAddr, bound: Duration) {
    let started = Instant::now();
    let mut garbage = TcpStream::connect(addr).unwrap();
    let _ = garbage.write_all(&[0x5a; 4096]);
    // A record header claiming a handshake, then a fragment of it.
    let mut partial = TcpStream::connect(addr).unwrap();
    let _ = partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03]);
    // Records of a handshake message that claims 16 MiB.
    let mut oversized = TcpStream::connect(addr).unwrap();
    let mut hello = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
    hello.resize(5 + 0x4000, 0x41);
    for _ in 0..8 {
        if oversized.write_all(&hello).is_err() {
            break;
        }
    }
    for mut s in [garbage, partial, oversized] {
        s.set_read_timeout(Some(bound)).unwrap();
        let mut buf = [0u8; 1024];
        // The server answers with an alert or closes: either way it ends.
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    assert!(
                        !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                        "{addr}: a bad client was not dropped within {bound:?}"
                    );
                    break;
                }
            }
        }
    }
    assert!(
        started.elapsed() < bound * 3,
        "{addr}: took {:?}",
        started.elapsed()
    );
}

/// A gRPC channel over TLS with root's certificate (for Ferrite's own
/// services, e.g. creating a volume).
async fn grpc_channel(pki: &Pki, addr: SocketAddr) -> tonic::transport::Channel {
    let config: Arc<ferrite_tls::rustls::ClientConfig> = ferrite_tls::client_config(
        &pki.ca_file,
        Some((&pki.client.0, &pki.client.1)),
        ferrite_tls::ALPN_GRPC,
    )
    .unwrap();
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
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap()
}

fn raft_term(pki: &Pki, addr: SocketAddr) -> u64 {
    let (ok, out) = etcdctl(
        addr,
        &pki.ca_file,
        Some(&pki.client),
        &["endpoint", "status", "-w", "json"],
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v[0]["Status"]["raftTerm"]
        .as_u64()
        .or_else(|| v[0]["Status"]["header"]["raft_term"].as_u64())
        .unwrap_or_else(|| panic!("no raft term in {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_over_tls_with_client_certificates_and_reload() {
    let pki = Pki::new();
    let cluster = start_tls_cluster(&pki);
    for m in &cluster.members {
        wait_serving(&pki, m.client);
    }
    // Put on one member, read on every member.
    let (ok, out) = etcdctl(
        cluster.members[0].client,
        &pki.ca_file,
        Some(&pki.client),
        &["put", "k", "v1"],
    );
    assert!(ok, "{out}");
    for (i, m) in cluster.members.iter().enumerate() {
        let (ok, out) = etcdctl(
            m.client,
            &pki.ca_file,
            Some(&pki.client),
            &["put", &format!("k{i}"), "v"],
        );
        assert!(ok, "{out}");
        let (ok, out) = etcdctl(m.client, &pki.ca_file, Some(&pki.client), &["get", "k"]);
        assert!(ok && out.contains("v1"), "{out}");
    }
    // member list advertises https client URLs.
    let (ok, out) = etcdctl(
        cluster.members[1].client,
        &pki.ca_file,
        Some(&pki.client),
        &["member", "list"],
    );
    assert!(
        ok && out.contains(&format!("https://{}", cluster.members[1].client)),
        "{out}"
    );

    let addr = cluster.members[0].client;
    // No client certificate, a foreign CA's, an expired one: refused.
    let (ok, out) = etcdctl(addr, &pki.ca_file, None, &["get", "k"]);
    assert!(!ok, "no client certificate accepted: {out}");
    let foreign = ca("foreign CA");
    let intruder = leaf(&foreign, "root", pki.dir.path(), "foreign-root", false);
    let (ok, out) = etcdctl(addr, &pki.ca_file, Some(&intruder), &["get", "k"]);
    assert!(!ok, "foreign client certificate accepted: {out}");
    let expired = leaf(&pki.ours, "root", pki.dir.path(), "expired-root", true);
    let (ok, out) = etcdctl(addr, &pki.ca_file, Some(&expired), &["get", "k"]);
    assert!(!ok, "expired client certificate accepted: {out}");
    // A plaintext client gets a clean failure; the member keeps serving.
    let (ok, _) = cluster.etcdctl(&addr.to_string(), &["--dial-timeout", "2s", "get", "k"]);
    assert!(!ok);
    wait_serving(&pki, addr);

    // TLS 1.3 by default.
    let out = s_client(&pki, addr);
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(
        served_cn(&pki, addr).contains("CN=member")
            || served_cn(&pki, addr).contains("CN = member")
    );

    // Replace the certificate files on disk: the new one is served, no restart.
    let renewed = leaf(&pki.ours, "renewed", pki.dir.path(), "renewed", false);
    std::fs::copy(&renewed.1, &pki.member.1).unwrap();
    std::fs::copy(&renewed.0, &pki.member.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cn = served_cn(&pki, addr);
        if cn.contains("renewed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still serving the old certificate: {cn}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, out) = etcdctl(addr, &pki.ca_file, Some(&pki.client), &["get", "k"]);
    assert!(ok && out.contains("v1"), "{out}");

    // The HTTP port: https with the same certificate rules.
    let curl = |cert: Option<&(PathBuf, PathBuf)>| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(&pki.ca_file);
        if let Some((cert, key)) = cert {
            c.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let out = c
            .arg(format!("https://{}/healthz", cluster.members[0].http))
            .output()
            .expect("curl is installed");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // The HTTP port only requests a client certificate (browsers have
    // none and log in instead): without one, it serves what needs no user
    // (and answers 401 for data once auth is enabled; see dashboard.rs).
    // A certificate it cannot verify is still refused.
    assert_eq!(curl(Some(&pki.client)), "200");
    assert_eq!(curl(None), "200");
    assert_ne!(curl(Some(&intruder)), "200");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_handshakes_on_every_port_are_dropped_and_nbd_needs_tls() {
    let pki = Pki::new();
    let cluster = start_tls_cluster(&pki);
    for m in &cluster.members {
        wait_serving(&pki, m.client);
    }
    let m = &cluster.members[0];
    // The NBD port speaks NBD first (STARTTLS); a client that never sends
    // NBD_OPT_STARTTLS is dropped by the same deadline.
    let bound = Duration::from_secs(12);
    let ports = [m.client, m.http, m.peer, m.nbd];
    std::thread::scope(|s| {
        for port in ports {
            s.spawn(move || abuse(port, bound));
        }
    });
    // Every port still serves a real client.
    wait_serving(&pki, m.client);
    let out = s_client(&pki, m.http);
    assert!(out.contains("Verify return code: 0"), "{out}");
    let leader_term = raft_term(&pki, m.client);
    assert!(leader_term > 0);

    // NBD: create a volume over TLS gRPC, then read it with nbdinfo over TLS.
    let channel = grpc_channel(&pki, m.client).await;
    let mut volumes = ferrite_proto::ferrite::v1::volumes_client::VolumesClient::new(channel);
    volumes
        .create(ferrite_proto::ferrite::v1::VolumeCreateRequest {
            name: "disk0".into(),
            size: 1 << 20,
        })
        .await
        .unwrap();
    let nbd_dir = pki.path("nbd");
    let uri = format!(
        "nbds://{}/disk0?tls-certificates={}",
        m.nbd,
        nbd_dir.display()
    );
    let out = Command::new("nbdinfo")
        .arg("--size")
        .arg(&uri)
        .output()
        .expect("nbdinfo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");
    // Plaintext NBD on a TLS-required server: refused cleanly.
    let out = Command::new("nbdinfo")
        .arg(format!("nbd://{}/disk0", m.nbd))
        .output()
        .unwrap();
    assert!(!out.status.success());
    // qemu-img over TLS.
    let out = Command::new("qemu-img")
        .args(["info", "--image-opts"])
        .arg(format!(
            "driver=nbd,host=127.0.0.1,port={},export=disk0,tls-creds=tls0",
            m.nbd.port()
        ))
        .arg("--object")
        .arg(format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=client",
            nbd_dir.display()
        ))
        .output()
        .expect("qemu-img");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 MiB"), "{text}");
    // The NBD port still serves after all that.
    let out = Command::new("nbdinfo")
        .arg("--size")
        .arg(&uri)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_from_another_ca_or_in_plaintext_cannot_disturb_the_cluster() {
    let pki = Pki::new();
    let mut cluster = start_tls_cluster(&pki);
    for m in &cluster.members {
        wait_serving(&pki, m.client);
    }
    let terms: Vec<u64> = cluster
        .members
        .iter()
        .map(|m| raft_term(&pki, m.client))
        .collect();

    // A fourth process with a peer certificate from another CA, which claims
    // to be a member (it is in its own initial cluster with the three), and
    // a fifth in plaintext: both campaign against the cluster.
    let foreign = ca("foreign CA");
    let foreign_ca = pki.path("foreign-ca.pem");
    std::fs::write(&foreign_ca, &foreign.pem).unwrap();
    let (fcert, fkey) = leaf(&foreign, "member", pki.dir.path(), "foreign-member", false);
    let intruder = cluster.add_joiner("n4");
    let plain = cluster.add_joiner("n5");
    let s = |p: &Path| p.display().to_string();
    let intruder_flags = [
        "--peer-cert-file".to_string(),
        s(&fcert),
        "--peer-key-file".into(),
        s(&fkey),
        "--peer-trusted-ca-file".into(),
        s(&foreign_ca),
    ];
    let intruder_flags: Vec<&str> = intruder_flags.iter().map(String::as_str).collect();
    cluster.spawn_with(intruder, &intruder_flags);
    cluster.spawn_with(plain, &[]);
    tokio::time::sleep(Duration::from_secs(6)).await;

    let after: Vec<u64> = cluster.members[..3]
        .iter()
        .map(|m| raft_term(&pki, m.client))
        .collect();
    assert_eq!(terms, after, "terms moved");
    let (ok, out) = etcdctl(
        cluster.members[0].client,
        &pki.ca_file,
        Some(&pki.client),
        &["member", "list"],
    );
    assert!(ok && !out.contains("n4") && !out.contains("n5"), "{out}");
    let logs: String = (0..3).map(|i| cluster.log(i)).collect();
    assert!(
        logs.contains("peer connection refused"),
        "no refusal logged:\n{logs}"
    );
    let refused_from = |who: SocketAddr| {
        logs.lines()
            .any(|l| l.contains("peer connection refused") && l.contains(&who.ip().to_string()))
    };
    assert!(refused_from(cluster.members[intruder].peer));
    // The cluster still serves writes.
    let (ok, out) = etcdctl(
        cluster.members[0].client,
        &pki.ca_file,
        Some(&pki.client),
        &["put", "after", "intruders"],
    );
    assert!(ok, "{out}");
}

/// Runs the printed line (`etcdctl ...`, `curl ...`) and returns its output.
fn run_printed(line: &str, extra: &[&str]) -> (bool, String) {
    let mut words = line.split_whitespace();
    let program = words.next().unwrap_or_default();
    let out = Command::new(program)
        .args(words)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn ferrite_up_tls_end_to_end() {
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    // Thirty consecutive ports: try bases until one is free.
    let base = (0..40u32)
        .map(|i| (43_000 + (std::process::id() * 50 + i * 350) % 20_000) as u16)
        .find(|b| (0..30).all(|o| std::net::TcpListener::bind(("127.0.0.1", b + o)).is_ok()))
        .expect("30 free consecutive ports");
    let mut up = Command::new(common::BIN)
        .args(["up", "--tls", "--ports-from", &base.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => panic!("up --tls did not start: {printed:?}"),
        }
    }
    let find = |prefix: &str| {
        printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix} line in {printed:?}"))
    };
    let etcdctl_line = find("etcdctl: ");
    let put = etcdctl_line.replace(" put greeting hello", "");
    let (ok, out) = run_printed(&put, &["put", "greeting", "hello"]);
    assert!(ok, "{etcdctl_line}: {out}");
    let (ok, out) = run_printed(&put, &["get", "greeting"]);
    assert!(ok && out.contains("hello"), "{out}");
    let curl = find("curl: ");
    let (ok, out) = run_printed(&curl, &["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    assert!(ok && out == "200", "{curl}: {out}");
    // The printed ferrite line creates the volume the printed nbdinfo line
    // then reads over TLS.
    let ferrite_line = find("ferrite: ferrite ");
    let ferrite_line = format!("{} {ferrite_line}", common::BIN);
    let (ok, out) = run_printed(&ferrite_line, &[]);
    assert!(ok, "{ferrite_line}: {out}");
    let nbdinfo_line = find("nbdinfo: ").replace('\'', "");
    let (ok, out) = run_printed(&nbdinfo_line, &["--size"]);
    assert!(ok && out.trim() == "1073741824", "{nbdinfo_line}: {out}");

    // SIGTERM: up stops its members.
    let _ = Command::new("kill").arg(up.id().to_string()).status();
    let _ = up.wait();
}
