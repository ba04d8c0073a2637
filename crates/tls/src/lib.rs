//! `ferrite-tls`: TLS for every Ferrite port, with rustls (no OpenSSL).
//!
//! Configured with etcd's flags and meanings, so operators' settings carry
//! over:
//!
//! - the client side (gRPC, HTTP, NBD): `--cert-file`, `--key-file`,
//!   `--trusted-ca-file`, `--client-cert-auth` ([`ClientTlsOptions`]). As in
//!   etcd, a client certificate is asked for, and required, only with
//!   `--client-cert-auth`; then it must chain to `--trusted-ca-file`.
//! - between members: `--peer-cert-file`, `--peer-key-file`,
//!   `--peer-trusted-ca-file`, `--peer-client-cert-auth`,
//!   `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`
//!   ([`PeerTlsOptions`]). Peer TLS is always mutual: both ends present
//!   their member certificate and verify the other's.
//!
//! Files are re-read when they change (`source.rs`): every handshake looks at
//! them at most once a second with a `stat`, so a renewed certificate is
//! served without a restart. `accept.rs` holds the acceptor every listener
//! uses: a handshake has a deadline, a failure is logged with the peer's
//! address and the listener goes on.
//!
//! - `source.rs`: the files, loaded and watched.
//! - `verify.rs`: the certificate verifiers (client certificates, peers'
//!   certificates with their allowed CN and hostname).
//! - `accept.rs`: handshakes with a deadline, for any listener.

mod accept;
mod source;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

pub use accept::{accept_loop, handshake, Accepted, HANDSHAKE_TIMEOUT};
pub use rustls;
pub use rustls_pki_types::ServerName;
pub use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use rustls::version::{TLS12, TLS13};
use source::Source;

/// ALPN for gRPC: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN for the HTTP port: HTTP/2 and HTTP/1.1.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{0}")]
    Config(String),
}

/// The client side's settings (etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsOptions {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates must chain to it (with `client_cert_auth`).
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify a client certificate. Without it no client
    /// certificate is asked for (etcd's behaviour, even when a trusted CA
    /// file is given).
    pub client_cert_auth: bool,
}

/// The members' settings (etcd's `--peer-*` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsOptions {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Both ends verify the other's certificate against it.
    pub trusted_ca_file: PathBuf,
    /// etcd's `--peer-client-cert-auth`. Peer TLS here is always mutual, so
    /// this only records that the operator asked for it.
    pub client_cert_auth: bool,
    /// Only a peer whose certificate has this common name may connect.
    pub allowed_cn: Option<String>,
    /// Only a peer whose certificate is valid for this host name (a DNS or
    /// IP subject alternative name) may connect.
    pub allowed_hostname: Option<String>,
}

impl ClientTlsOptions {
    /// Reads and checks every file now, so that a missing, unreadable or
    /// garbage file is one clear error at start.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(TlsError::Config(
                "--client-cert-auth needs --trusted-ca-file (the CA that client certificates must chain to)".into(),
            ));
        }
        let ca = if self.client_cert_auth {
            self.trusted_ca_file.clone()
        } else {
            None
        };
        let source = Source::open(self.cert_file.clone(), self.key_file.clone(), ca)?;
        // A CA file given without --client-cert-auth is unused (as in etcd),
        // but a broken one is still a mistake worth stopping for.
        if let (false, Some(path)) = (self.client_cert_auth, &self.trusted_ca_file) {
            source::load_roots(path)?;
        }
        Ok(ClientTls {
            source: Arc::new(source),
        })
    }
}

impl PeerTlsOptions {
    pub fn load(&self) -> Result<PeerTls, TlsError> {
        let source = Source::open(
            self.cert_file.clone(),
            self.key_file.clone(),
            Some(self.trusted_ca_file.clone()),
        )?;
        let hostname = match &self.allowed_hostname {
            Some(h) => Some(ServerName::try_from(h.clone()).map_err(|_| {
                TlsError::Config(format!(
                    "--peer-cert-allowed-hostname {h:?} is not a host name"
                ))
            })?),
            None => None,
        };
        Ok(PeerTls {
            source: Arc::new(source),
            rules: Arc::new(verify::PeerRules {
                allowed_cn: self.allowed_cn.clone(),
                allowed_hostname: hostname,
            }),
        })
    }
}

/// The client side's TLS, loaded: makes server configs for each port.
#[derive(Clone, Debug)]
pub struct ClientTls {
    source: Arc<Source>,
}

impl ClientTls {
    /// Whether clients must present a certificate.
    pub fn client_cert_auth(&self) -> bool {
        self.source.has_ca()
    }

    /// A server config offering `alpn` (e.g. [`ALPN_GRPC`]); certificates
    /// and the CA are re-read when their files change.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        self.config(alpn, false)
    }

    /// As [`ClientTls::server_config`], but a client certificate is only
    /// requested: a client without one is let in (and is nobody until it
    /// authenticates otherwise), while one that presents a certificate must
    /// present a valid one. For the HTTP port, which browsers open.
    pub fn server_config_cert_optional(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        self.config(alpn, true)
    }

    fn config(&self, alpn: &[&[u8]], optional: bool) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13, &TLS12])
            .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
        let builder = if self.source.has_ca() {
            builder.with_client_cert_verifier(Arc::new(verify::ClientVerifier {
                source: self.source.clone(),
                optional,
            }))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(verify::Resolver {
            source: self.source.clone(),
        }));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// The members' TLS, loaded: a server config for the peer port and a client
/// config for dialing peers, both mutual.
#[derive(Clone, Debug)]
pub struct PeerTls {
    source: Arc<Source>,
    rules: Arc<verify::PeerRules>,
}

impl PeerTls {
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13, &TLS12])
            .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
            .with_client_cert_verifier(Arc::new(verify::PeerClientVerifier {
                source: self.source.clone(),
                rules: self.rules.clone(),
            }))
            .with_cert_resolver(Arc::new(verify::Resolver {
                source: self.source.clone(),
            }));
        Arc::new(config)
    }

    /// For dialing a peer: presents this member's certificate and verifies
    /// the peer's (chain, the host name it is dialed by, allowed CN/host).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13, &TLS12])
            .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::PeerServerVerifier {
                source: self.source.clone(),
                rules: self.rules.clone(),
            }))
            .with_client_cert_resolver(Arc::new(verify::Resolver {
                source: self.source.clone(),
            }));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// The one crypto provider (ring), named explicitly so that no process-wide
/// default has to be installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The common name of the certificate the client of `conn` presented (and
/// the verifier accepted), if any.
pub fn peer_common_name(conn: &rustls::CommonState) -> Option<String> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| common_name(cert))
}

#[cfg(test)]
mod tests;

/// A TLS client's settings, as etcdctl's `--cacert`, `--cert` and `--key`:
/// the CA the server's certificate must chain to, and optionally this
/// client's certificate. For the binary's own calls to members (e.g.
/// `ferrite up --tls` waiting for a leader).
pub fn client_config(
    ca_file: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = source::load_roots(ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let source = Source::open(cert.to_path_buf(), key.to_path_buf(), None)?;
            builder.with_client_cert_resolver(Arc::new(verify::Resolver {
                source: Arc::new(source),
            }))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
