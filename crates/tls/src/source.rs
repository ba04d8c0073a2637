//! A certificate, its key and (optionally) a CA, read from PEM files and
//! re-read when the files change.
//!
//! Every handshake asks for the current material; at most once a second that
//! costs a `stat` of each file (modification time and size), and only a
//! change re-reads and re-parses them. A change that does not load (a file
//! half written, a key that does not match the certificate yet) keeps the
//! material in use and is logged; the next check tries again, so replacing
//! the certificate and then the key works whatever the order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// How often the files are looked at, at most.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// PEM files larger than this are refused (a certificate chain is a few KiB).
const PEM_BYTES_MAX: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct Source {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    stamps: Vec<Stamp>,
    checked: Instant,
    material: Material,
}

/// What identifies a file's version without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// What one load produced; handed out as a whole so that a handshake never
/// mixes an old certificate with a new key.
#[derive(Clone, Debug)]
pub(crate) struct Material {
    pub key: Arc<CertifiedKey>,
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    pub server_verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Source {
    pub fn open(
        cert_file: PathBuf,
        key_file: PathBuf,
        ca_file: Option<PathBuf>,
    ) -> Result<Source, TlsError> {
        let files = files(&cert_file, &key_file, ca_file.as_deref());
        let stamps = stamps(&files)?;
        let material = load(&cert_file, &key_file, ca_file.as_deref())?;
        Ok(Source {
            cert_file,
            key_file,
            ca_file,
            state: Mutex::new(State {
                stamps,
                checked: Instant::now(),
                material,
            }),
        })
    }

    pub fn has_ca(&self) -> bool {
        self.ca_file.is_some()
    }

    /// The material to use now, re-read first if a file changed.
    pub fn current(&self) -> Material {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            self.maybe_reload(&mut state);
        }
        state.material.clone()
    }

    fn maybe_reload(&self, state: &mut State) {
        let files = files(&self.cert_file, &self.key_file, self.ca_file.as_deref());
        let Ok(now) = stamps(&files) else {
            // A file is missing for a moment (replaced by rename): keep going.
            return;
        };
        if now == state.stamps {
            return;
        }
        match load(&self.cert_file, &self.key_file, self.ca_file.as_deref()) {
            Ok(material) => {
                tracing::info!(cert = %self.cert_file.display(), "tls: certificate files changed; reloaded");
                state.material = material;
                state.stamps = now;
            }
            Err(e) => {
                tracing::warn!("tls: certificate files changed but do not load (keeping the previous ones): {e}");
            }
        }
    }
}

fn files<'a>(cert: &'a Path, key: &'a Path, ca: Option<&'a Path>) -> Vec<&'a Path> {
    let mut files = vec![cert, key];
    files.extend(ca);
    files
}

fn stamps(files: &[&Path]) -> Result<Vec<Stamp>, TlsError> {
    files
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
            })
        })
        .collect()
}

fn load(cert_file: &Path, key_file: &Path, ca_file: Option<&Path>) -> Result<Material, TlsError> {
    let chain = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let provider = crate::provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Invalid {
        path: key_file.to_path_buf(),
        what: format!("does not go with {}: {e}", cert_file.display()),
    })?;
    let (client_verifier, server_verifier) = match ca_file {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let invalid = |e: rustls::server::VerifierBuilderError| TlsError::Invalid {
                path: ca.to_path_buf(),
                what: e.to_string(),
            };
            let client =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(invalid)?;
            let server = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(invalid)?;
            (Some(client), Some(server))
        }
        None => (None, None),
    };
    Ok(Material {
        key: Arc::new(key),
        client_verifier,
        server_verifier,
    })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.len() > PEM_BYTES_MAX {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            what: format!("{} bytes is too large for a PEM file", meta.len()),
        });
    }
    std::fs::read(path).map_err(read)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| TlsError::Invalid {
        path: path.to_path_buf(),
        what: format!("not a PEM certificate file: {e}"),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            what: "no PEM certificate in it".into(),
        });
    }
    for cert in &certs {
        if x509_parser::parse_x509_certificate(cert).is_err() {
            return Err(TlsError::Invalid {
                path: path.to_path_buf(),
                what: "holds a certificate that does not parse".into(),
            });
        }
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        path: path.to_path_buf(),
        what: format!("no PEM private key in it: {e}"),
    })
}

pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}
