//! Who a client is, as far as the transport can tell.
//!
//! With `--client-cert-auth`, the TLS layer verifies the client's
//! certificate against `--trusted-ca-file` and puts the certificate's common
//! name into each request's extensions as a `ClientCommonName`. When a
//! request carries no auth token, the auth layer takes that name as the user
//! (etcd's rule).

/// The common name of a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCommonName(pub String);
