//! How the client reaches a member: the endpoint's scheme decides between
//! plaintext and TLS, and TLS is rustls over our own connector (tonic's
//! `connect_with_connector`), so that a failed handshake comes back as a
//! rustls error we can name ("unknown CA") rather than as a chain of
//! transport errors.
//!
//! Schemes follow etcdctl: `https://host:port` is TLS, `http://host:port`
//! is plaintext, and a bare `host:port` is TLS exactly when TLS options
//! (a CA, a client certificate) were given.
//!
//! tonic itself is always handed an `http://` URI: the TLS happens below it,
//! in the connector, so tonic's own TLS support (on or off, whatever
//! features other crates of the workspace turn on) never sees an https URI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::ClientError;

/// TLS settings, etcdctl's `--cacert`, `--cert` and `--key`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA(s) that sign the members' certificates; without
    /// it, the system's trusted roots.
    pub ca: Option<PathBuf>,
    /// PEM file of the client's certificate (chain), for servers that ask
    /// for one (`--client-cert-auth`); needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key: Option<PathBuf>,
}

/// Whether an endpoint is reached in plaintext or over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Plain,
    Tls,
}

/// A member's address as the client uses it: `http://host:port` or
/// `https://host:port`, the scheme saying how it is reached.
///
/// `tls_by_default` is whether a bare `host:port` means TLS (it does when
/// TLS options were given, as with etcdctl).
pub fn endpoint_url(endpoint: &str, tls_by_default: bool) -> Result<String, ClientError> {
    let endpoint = endpoint.trim();
    let (scheme, rest) = match endpoint.split_once("://") {
        Some(("http", rest)) => (Scheme::Plain, rest),
        Some(("https", rest)) => (Scheme::Tls, rest),
        Some(_) => return Err(ClientError::BadEndpoint(endpoint.to_string())),
        None if tls_by_default => (Scheme::Tls, endpoint),
        None => (Scheme::Plain, endpoint),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(ClientError::BadEndpoint(endpoint.to_string()));
    }
    let url = match scheme {
        Scheme::Plain => format!("http://{rest}"),
        Scheme::Tls => format!("https://{rest}"),
    };
    // The authority must parse as tonic will parse it.
    Endpoint::from_shared(url.clone())
        .map_err(|_| ClientError::BadEndpoint(endpoint.to_string()))?;
    Ok(url)
}

/// The scheme of a URL made by `endpoint_url`.
pub fn scheme_of(url: &str) -> Scheme {
    if url.starts_with("https://") {
        Scheme::Tls
    } else {
        Scheme::Plain
    }
}

/// Reaches members: plaintext, or TLS with one rustls configuration built
/// (files read) once, when the client is made.
#[derive(Clone)]
pub(crate) struct Connector {
    /// `None` when no endpoint needs TLS and no TLS option was given.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The settings of one channel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelSettings {
    pub connect_timeout: Duration,
    /// Per-request timeout; `None` for calls that wait (lock, streams).
    pub request_timeout: Option<Duration>,
    /// HTTP/2 keep-alive pings, for long-lived streams.
    pub keep_alive: bool,
}

/// Why a channel could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The member could not be reached (try another).
    Unreachable(String),
    /// TLS failed: retrying elsewhere will not help.
    Tls(ClientError),
}

impl Connector {
    /// Reads the TLS files now, so that a missing or bad file is reported
    /// when the client is made, not at its first request.
    pub(crate) fn new(tls: Option<&TlsOptions>, any_https: bool) -> Result<Connector, ClientError> {
        let tls = match tls {
            Some(options) => Some(Arc::new(client_config(options)?)),
            None if any_https => Some(Arc::new(client_config(&TlsOptions::default())?)),
            None => None,
        };
        Ok(Connector { tls })
    }

    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A channel to `url` (made by `endpoint_url`).
    pub(crate) async fn connect(
        &self,
        url: &str,
        settings: ChannelSettings,
    ) -> Result<Channel, ConnectError> {
        let bad = || ConnectError::Unreachable(format!("bad endpoint {url:?}"));
        let (scheme, authority) = match url.split_once("://") {
            Some(("https", a)) => (Scheme::Tls, a),
            Some((_, a)) => (Scheme::Plain, a),
            None => (Scheme::Plain, url),
        };
        let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|_| bad())?
            .connect_timeout(settings.connect_timeout);
        if let Some(t) = settings.request_timeout {
            endpoint = endpoint.timeout(t);
        }
        if settings.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5));
        }
        let result = match (scheme, &self.tls) {
            (Scheme::Plain, _) => endpoint.connect().await,
            (Scheme::Tls, None) => {
                return Err(ConnectError::Tls(ClientError::Tls(format!(
                    "{url} needs TLS but the client has no TLS configuration"
                ))))
            }
            (Scheme::Tls, Some(config)) => {
                let config = config.clone();
                let connector = tower::service_fn(move |uri: Uri| {
                    let config = config.clone();
                    async move { tls_connect(config, uri).await }
                });
                endpoint.connect_with_connector(connector).await
            }
        };
        result.map_err(|e| match tls_failure(&e) {
            Some(why) => ConnectError::Tls(ClientError::Tls(why)),
            None => ConnectError::Unreachable(format!("cannot connect: {}", chain(&e))),
        })
    }
}

/// TCP, then the TLS handshake, to the URI's host (whose name or IP address
/// the server's certificate must carry).
async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    uri: Uri,
) -> Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, std::io::Error> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host in the endpoint"))?;
    let port = uri.port_u16().unwrap_or(443);
    // An IPv6 literal comes bracketed in a URI.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host).map_err(|_| invalid("bad server name"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(tls))
}

/// The rustls configuration: roots from `ca` (or the system's), the
/// client certificate if given, and ALPN h2 (gRPC servers require it).
fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca {
        Some(path) => {
            for cert in read_certs(path, "--cacert")? {
                roots
                    .add(cert)
                    .map_err(|e| tls_file_error(path, "--cacert", &e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(ClientError::Tls(
                    "no trusted CA certificates on this system; give --cacert".into(),
                ));
            }
        }
    }
    // One provider, named: the process-wide default would be ambiguous if
    // another crate of the build turned on a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "--cert")?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_file_error(key, "--key", &pem_error(&e)))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_file_error(cert, "--cert/--key", &e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(ClientError::Tls("--cert needs --key".into())),
        (None, Some(_)) => return Err(ClientError::Tls("--key needs --cert".into())),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_file_error(path, flag, &pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file_error(path, flag, &pem_error(&e)))?;
    if certs.is_empty() {
        return Err(tls_file_error(path, flag, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the right kind in it".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

fn tls_file_error(path: &Path, flag: &str, why: &str) -> ClientError {
    ClientError::TlsFile {
        flag: flag.to_string(),
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Every message of an error's chain, joined: for errors that are not a
/// TLS failure.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = s.source();
    }
    parts.join(": ")
}

/// The rustls error somewhere in `e`'s chain, as a sentence that says what
/// to do: "TLS handshake failed: unknown CA ...". `None` when the failure
/// is not TLS's.
pub(crate) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        // io::Error's `source` skips the error it wraps: look inside.
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(describe(r));
            }
        }
        next = err.source();
    }
    // An alert that arrives after the handshake (TLS 1.3: the server
    // checks the client's certificate then) reaches us through h2, which
    // keeps an IO error's kind and text but not its type.
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(alert) = alert_in_text(&err.to_string()) {
            return Some(describe(&rustls::Error::AlertReceived(alert)));
        }
        next = err.source();
    }
    None
}

/// The alert named by rustls's text "received fatal alert: NAME".
fn alert_in_text(text: &str) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    let (_, name) = text.split_once("received fatal alert: ")?;
    let name = name.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    Some(match name {
        "BadCertificate" => A::BadCertificate,
        "CertificateRequired" => A::CertificateRequired,
        "UnknownCA" => A::UnknownCA,
        "CertificateExpired" => A::CertificateExpired,
        "UnsupportedCertificate" => A::UnsupportedCertificate,
        "CertificateRevoked" => A::CertificateRevoked,
        "CertificateUnknown" => A::CertificateUnknown,
        "HandshakeFailure" => A::HandshakeFailure,
        "AccessDenied" => A::AccessDenied,
        "DecryptError" => A::DecryptError,
        "ProtocolVersion" => A::ProtocolVersion,
        _ => return None,
    })
}

/// A rustls failure in words a user can act on.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let why = match e {
        E::InvalidCertificate(C::UnknownIssuer) => {
            "unknown CA (the server's certificate is not signed by a CA in --cacert)".to_string()
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for this host name or IP address".to_string()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".to_string()
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet".to_string()
        }
        E::InvalidCertificate(other) => format!("bad server certificate ({other:?})"),
        E::AlertReceived(A::UnknownCA) => {
            "the server does not trust the client certificate (unknown CA)".to_string()
        }
        E::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate (give --cert and --key)".to_string()
        }
        E::AlertReceived(A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown) => {
            "the server refused the client certificate, or wanted one (bad certificate: \
              give --cert and --key signed by a CA the server trusts)"
                .to_string()
        }
        E::AlertReceived(A::CertificateExpired) => {
            "the server refused the client certificate (expired)".to_string()
        }
        E::AlertReceived(alert) => format!("the server sent the alert {alert:?}"),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "the server does not speak TLS (use an http:// endpoint, or no TLS flags)".to_string()
        }
        E::NoApplicationProtocol => "the server does not offer HTTP/2 (ALPN h2)".to_string(),
        other => other.to_string(),
    };
    format!("TLS handshake failed: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_say_how_an_endpoint_is_reached() {
        let url = |e: &str, tls: bool| endpoint_url(e, tls).ok();
        assert_eq!(
            url("127.0.0.1:2379", false).as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            url("127.0.0.1:2379", true).as_deref(),
            Some("https://127.0.0.1:2379")
        );
        assert_eq!(
            url("http://127.0.0.1:2379", true).as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            url("https://127.0.0.1:2379", false).as_deref(),
            Some("https://127.0.0.1:2379")
        );
        assert_eq!(url(" https://h:1/ ", false).as_deref(), Some("https://h:1"));
        assert_eq!(url("unix:///tmp/s", false), None);
        assert_eq!(url("ftp://h:1", false), None);
        assert_eq!(url("http://", false), None);
        assert_eq!(url("http://h:1/path", false), None);
        assert_eq!(scheme_of("https://h:1"), Scheme::Tls);
        assert_eq!(scheme_of("http://h:1"), Scheme::Plain);
    }

    #[test]
    fn handshake_failures_are_named() {
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        let text = tls_failure(&io).expect("a TLS failure");
        assert!(
            text.starts_with("TLS handshake failed: unknown CA"),
            "{text}"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_failure(&plain), None);
        let required = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(describe(&required).contains("requires a client certificate"));
        // After the handshake, h2 hands the alert on as text only.
        let late = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: BadCertificate",
        );
        let text = tls_failure(&late).expect("a TLS failure");
        assert!(text.contains("client certificate"), "{text}");
    }

    #[test]
    fn missing_files_and_half_a_key_pair_are_clear_errors() {
        let missing = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        match Connector::new(Some(&missing), false) {
            Err(ClientError::TlsFile { flag, path, .. }) => {
                assert_eq!(
                    (flag.as_str(), path.as_str()),
                    ("--cacert", "/nonexistent/ca.pem")
                )
            }
            Err(e) => panic!("expected a file error, got {e}"),
            Ok(_) => panic!("expected a file error"),
        }
        let half = TlsOptions {
            cert: Some("/nonexistent/c.pem".into()),
            ..Default::default()
        };
        // The CA comes from the system (may be absent here): either way an
        // error, never a panic.
        assert!(Connector::new(Some(&half), false).is_err());
    }
}
