//! Accepting TLS connections without letting one client hold up the rest.
//!
//! Each handshake runs in its own task with a deadline: a client that sends
//! garbage fails at once, one that stalls mid-handshake is dropped at the
//! deadline, and rustls bounds what it buffers of a client hello (an
//! oversized one is an error, not an allocation). At most
//! `HANDSHAKES_INFLIGHT_MAX` handshakes run at once; past that, accepting
//! waits. Failures are logged at debug level with the client's address (a
//! port scanner is not news), except a refused certificate, which is logged
//! at info level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, per listener.
const HANDSHAKES_INFLIGHT_MAX: usize = 1024;
/// Finished connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;

/// A connection whose handshake is done.
pub struct Accepted<S> {
    pub stream: TlsStream<S>,
    pub remote: SocketAddr,
    /// The common name of the client's verified certificate, if it gave one.
    pub common_name: Option<String>,
}

/// Runs a server-side handshake on `stream` with `HANDSHAKE_TIMEOUT`, and
/// logs a failure (`what` names the port) with the client's address.
pub async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    remote: SocketAddr,
    what: &'static str,
) -> std::io::Result<Accepted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
        )),
    };
    match result {
        Ok(stream) => {
            let common_name = crate::peer_common_name(stream.get_ref().1);
            tracing::debug!(%remote, port = what, cn = ?common_name, "tls: handshake done");
            Ok(Accepted {
                stream,
                remote,
                common_name,
            })
        }
        Err(e) => {
            if is_certificate_refusal(&e) {
                tracing::info!(%remote, port = what, "tls: client refused: {e}");
            } else {
                tracing::debug!(%remote, port = what, "tls: handshake failed: {e}");
            }
            Err(e)
        }
    }
}

fn is_certificate_refusal(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::General(_)
            )
        })
}

/// Accepts on `listener` and hands over connections whose handshake
/// succeeded, until the receiver is dropped (then the listener closes).
pub fn accept_loop(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> mpsc::Receiver<Accepted<TcpStream>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(HANDSHAKES_INFLIGHT_MAX));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = tx.closed() => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (stream, remote) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically out of file descriptors: wait, do not spin.
                        tracing::warn!(port = what, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Ok(accepted) = handshake(&acceptor, stream, remote, what).await {
                    let _ = tx.send(accepted).await;
                }
            });
        }
    });
    rx
}
