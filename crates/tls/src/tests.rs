//! Loading, reloading and verification, over in-memory handshakes on
//! loopback sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

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

/// A leaf certificate for 127.0.0.1/localhost, usable both ways.
fn leaf(ca: &Ca, cn: &str, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn write_ca(ca: &Ca, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &ca.pem).unwrap();
    path
}

fn peer_options(ca: &Ca, cn: &str, dir: &Path, stem: &str, ca_file: &Path) -> PeerTlsOptions {
    let (cert_file, key_file) = leaf(ca, cn, dir, stem);
    PeerTlsOptions {
        cert_file,
        key_file,
        trusted_ca_file: ca_file.to_path_buf(),
        client_cert_auth: true,
        allowed_cn: None,
        allowed_hostname: None,
    }
}

/// Dials `server` with `client` and returns whether both ends completed
/// the handshake and exchanged a byte.
async fn connects(server: &PeerTls, client: &PeerTls) -> bool {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server.server_config());
    let accept = tokio::spawn(async move {
        let (stream, remote) = listener.accept().await.unwrap();
        let mut tls = handshake(&acceptor, stream, remote, "test").await.ok()?;
        let mut b = [0u8; 1];
        tls.stream.read_exact(&mut b).await.ok()?;
        Some(tls.common_name)
    });
    let connector = TlsConnector::from(client.client_config(&[]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let dialed = match connector.connect(name, tcp).await {
        Ok(mut tls) => tls.write_all(b"x").await.is_ok() && tls.flush().await.is_ok(),
        Err(_) => false,
    };
    let accepted = accept.await.unwrap().is_some();
    dialed && accepted
}

#[test]
fn missing_and_garbage_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca("ca");
    let (cert_file, key_file) = leaf(&authority, "n1", dir.path(), "n1");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"not a certificate").unwrap();
    let missing = ClientTlsOptions {
        cert_file: dir.path().join("nope.pem"),
        key_file: key_file.clone(),
        trusted_ca_file: None,
        client_cert_auth: false,
    };
    let e = missing.load().unwrap_err().to_string();
    assert!(e.contains("nope.pem"), "{e}");
    let bad_cert = ClientTlsOptions {
        cert_file: garbage.clone(),
        ..missing.clone()
    };
    let e = bad_cert.load().unwrap_err().to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let bad_key = ClientTlsOptions {
        cert_file: cert_file.clone(),
        key_file: garbage.clone(),
        trusted_ca_file: None,
        client_cert_auth: false,
    };
    let e = bad_key.load().unwrap_err().to_string();
    assert!(e.contains("no PEM private key"), "{e}");
    let (_, other_key) = leaf(&authority, "n2", dir.path(), "n2");
    let mismatched = ClientTlsOptions {
        cert_file: cert_file.clone(),
        key_file: other_key,
        trusted_ca_file: None,
        client_cert_auth: false,
    };
    let e = mismatched.load().unwrap_err().to_string();
    assert!(e.contains("does not go with"), "{e}");
    let no_ca = ClientTlsOptions {
        cert_file,
        key_file,
        trusted_ca_file: None,
        client_cert_auth: true,
    };
    let e = no_ca.load().unwrap_err().to_string();
    assert!(e.contains("--trusted-ca-file"), "{e}");
}

#[tokio::test]
async fn peers_are_mutual_and_foreign_cas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca("ours");
    let theirs = ca("theirs");
    let ca_file = write_ca(&ours, dir.path(), "ca.pem");
    let foreign_ca_file = write_ca(&theirs, dir.path(), "foreign-ca.pem");
    let a = peer_options(&ours, "n1", dir.path(), "a", &ca_file)
        .load()
        .unwrap();
    let b = peer_options(&ours, "n2", dir.path(), "b", &ca_file)
        .load()
        .unwrap();
    let intruder = peer_options(&theirs, "n9", dir.path(), "x", &foreign_ca_file)
        .load()
        .unwrap();
    // The intruder trusts our CA but its own certificate is foreign.
    let sneaky = PeerTlsOptions {
        trusted_ca_file: ca_file.clone(),
        ..peer_options(&theirs, "n8", dir.path(), "y", &ca_file)
    }
    .load()
    .unwrap();
    assert!(connects(&a, &b).await);
    assert!(!connects(&a, &intruder).await);
    assert!(!connects(&a, &sneaky).await);
    assert!(!connects(&intruder, &a).await);

    let mut only_n2 = peer_options(&ours, "n1", dir.path(), "c", &ca_file);
    only_n2.allowed_cn = Some("n2".into());
    let only_n2 = only_n2.load().unwrap();
    assert!(connects(&only_n2, &b).await);
    assert!(!connects(&only_n2, &a).await);

    let mut elsewhere = peer_options(&ours, "n1", dir.path(), "d", &ca_file);
    elsewhere.allowed_hostname = Some("member.example".into());
    let elsewhere = elsewhere.load().unwrap();
    assert!(!connects(&elsewhere, &b).await);
    let mut local = peer_options(&ours, "n1", dir.path(), "e", &ca_file);
    local.allowed_hostname = Some("localhost".into());
    assert!(connects(&local.load().unwrap(), &b).await);
}

#[tokio::test]
async fn replaced_files_are_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca("ca");
    let (cert_file, key_file) = leaf(&authority, "first", dir.path(), "server");
    let tls = ClientTlsOptions {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        trusted_ca_file: None,
        client_cert_auth: false,
    }
    .load()
    .unwrap();
    let served = || {
        let key = tls.source.current().key;
        common_name(key.end_entity_cert().unwrap())
    };
    assert_eq!(served().as_deref(), Some("first"));
    leaf(&authority, "second", dir.path(), "server");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(served().as_deref(), Some("second"));
    // A broken replacement keeps the last good one.
    std::fs::write(&cert_file, b"half written").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(served().as_deref(), Some("second"));
}

#[tokio::test]
async fn stalled_and_garbage_handshakes_end_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca("ca");
    let (cert_file, key_file) = leaf(&authority, "n1", dir.path(), "server");
    let tls = ClientTlsOptions {
        cert_file,
        key_file,
        trusted_ca_file: None,
        client_cert_auth: false,
    }
    .load()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(tls.server_config(ALPN_GRPC));
    let server = tokio::spawn(async move {
        let (stream, remote) = listener.accept().await.unwrap();
        handshake(&acceptor, stream, remote, "test").await.is_err()
    });
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    garbage.write_all(&vec![0xAB; 70_000]).await.ok();
    let failed = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(failed, Ok(Ok(true))), "{failed:?}");
}
