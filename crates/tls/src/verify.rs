//! The certificate resolver and verifiers. Each asks its `Source` for the
//! current material on every handshake, so a renewed certificate or CA takes
//! effect without a restart.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::source::Source;

/// Hands out this side's certificate, server or client.
#[derive(Debug)]
pub(crate) struct Resolver {
    pub source: Arc<Source>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.source.current().key)
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.source.current().key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `--client-cert-auth`: a client certificate must chain to
/// `--trusted-ca-file`; it is required unless `optional` (the HTTP port,
/// where a browser without one logs in with a password instead).
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub source: Arc<Source>,
    pub optional: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients send the certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verifier = self
            .source
            .current()
            .client_verifier
            .ok_or(Error::General("no trusted CA configured".into()))?;
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// etcd's `--peer-cert-allowed-cn` and `--peer-cert-allowed-hostname`,
/// checked on a peer's certificate once its chain is verified (both ways:
/// by the member accepting and by the member dialing).
#[derive(Debug)]
pub(crate) struct PeerRules {
    pub allowed_cn: Option<String>,
    pub allowed_hostname: Option<ServerName<'static>>,
}

impl PeerRules {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        if let Some(allowed) = &self.allowed_cn {
            let cn = crate::common_name(end_entity);
            if cn.as_deref() != Some(allowed.as_str()) {
                return Err(Error::General(format!(
                    "peer certificate's common name {cn:?} is not the allowed {allowed:?}"
                )));
            }
        }
        if let Some(host) = &self.allowed_hostname {
            let parsed = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, host).map_err(|_| {
                Error::General(format!(
                    "peer certificate is not valid for the allowed host name {}",
                    host.to_str()
                ))
            })?;
        }
        Ok(())
    }
}

/// The peer port's verifier: a member certificate is always required, must
/// chain to `--peer-trusted-ca-file` and pass the allowed CN and hostname.
#[derive(Debug)]
pub(crate) struct PeerClientVerifier {
    pub source: Arc<Source>,
    pub rules: Arc<PeerRules>,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verifier = self
            .source
            .current()
            .client_verifier
            .ok_or(Error::General("no peer trusted CA configured".into()))?;
        let verified = verifier.verify_client_cert(end_entity, intermediates, now)?;
        self.rules.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The dialing member's verifier of the peer it called: the chain, the name
/// it was dialed by (its peer URL's host), and the allowed CN and hostname.
#[derive(Debug)]
pub(crate) struct PeerServerVerifier {
    pub source: Arc<Source>,
    pub rules: Arc<PeerRules>,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verifier = self
            .source
            .current()
            .server_verifier
            .ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let verified = verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.rules.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}
