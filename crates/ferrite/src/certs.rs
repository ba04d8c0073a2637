//! Certificates for `ferrite up --tls`, made with rcgen under the data
//! directory (`tls/`) and reused on restart: a local CA, one certificate
//! per member (for 127.0.0.1 and localhost; used as the server certificate
//! on the client side and, both ways, between members), and a client
//! certificate for the user `root`. `tls/nbd/` holds the same CA and client
//! certificate under the names GnuTLS tools (nbdinfo, qemu-img) look for.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files `up --tls` made (or found).
#[derive(Clone, Debug)]
pub struct LocalCerts {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// ca-cert.pem, client-cert.pem, client-key.pem (GnuTLS's names).
    pub nbd_dir: PathBuf,
}

impl LocalCerts {
    pub fn member(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }
}

/// Makes the certificates under `data_dir/tls`, unless all are there.
pub fn ensure(data_dir: &Path, members: &[String]) -> anyhow::Result<LocalCerts> {
    let dir = data_dir.join("tls");
    let certs = LocalCerts {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("root.pem"),
        client_key: dir.join("root-key.pem"),
        nbd_dir: dir.join("nbd"),
        dir,
    };
    let mut wanted = vec![
        certs.ca.clone(),
        certs.client_cert.clone(),
        certs.client_key.clone(),
        certs.nbd_dir.join("ca-cert.pem"),
        certs.nbd_dir.join("client-cert.pem"),
        certs.nbd_dir.join("client-key.pem"),
    ];
    for m in members {
        let (cert, key) = certs.member(m);
        wanted.extend([cert, key]);
    }
    if wanted.iter().all(|p| p.exists()) {
        return Ok(certs);
    }
    make(&certs, members).context("cannot make the TLS certificates")?;
    Ok(certs)
}

fn make(certs: &LocalCerts, members: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&certs.nbd_dir)
        .with_context(|| format!("cannot create {}", certs.nbd_dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferrite up local CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    write(&certs.ca, &ca_pem)?;
    write(&certs.dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    for m in members {
        let (cert, key) = certs.member(m);
        let (cert_pem, key_pem) = leaf(&issuer, m, true)?;
        write(&cert, &cert_pem)?;
        write(&key, &key_pem)?;
    }
    let (client_pem, client_key_pem) = leaf(&issuer, "root", false)?;
    write(&certs.client_cert, &client_pem)?;
    write(&certs.client_key, &client_key_pem)?;
    write(&certs.nbd_dir.join("ca-cert.pem"), &ca_pem)?;
    write(&certs.nbd_dir.join("client-cert.pem"), &client_pem)?;
    write(&certs.nbd_dir.join("client-key.pem"), &client_key_pem)?;
    Ok(())
}

/// A certificate signed by `issuer` with common name `cn`: for a member,
/// valid for 127.0.0.1 and localhost as a server and as a client; for a
/// user, a client certificate.
fn leaf(issuer: &Issuer<'_, KeyPair>, cn: &str, member: bool) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let names = if member {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if member {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // Keys are private to the user; certificates may be read by anyone.
    let mode = if path.to_string_lossy().ends_with("key.pem") {
        0o600
    } else {
        0o644
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
