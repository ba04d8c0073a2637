//! `ferrite-nbd`, the NBD server: Ferrite's volumes as network block
//! devices, so that `qemu-img`, `nbdcopy`, `nbdinfo`, `fio` and the Linux
//! kernel client use them as disks. Like every front end it translates and
//! never decides: each request becomes a call on [`Exports`], which the
//! replicated volume store implements (`volumes.rs`, on
//! `ferrite-service`'s `Context`).
//!
//! - `protocol.rs`: wire constants and header codecs.
//! - `handshake.rs`: fixed-newstyle negotiation (GO, INFO, LIST, ABORT,
//!   EXPORT_NAME; everything else is refused and negotiation goes on).
//! - `transmission.rs`: the request loop: one reader, a task per request, one
//!   writer; replies out of order, bounded in count and bytes.
//! - `ordering.rs`: which earlier requests a request waits for (overlaps).
//! - `volumes.rs`: `VolumeExports`, the replicated volumes as [`Exports`].
//!
//! Only simple replies are offered (no structured replies, no block status).
//! With a TLS config (`--cert-file` etc. on the client side) the server
//! requires TLS through NBD_OPT_STARTTLS (see `handshake.rs`); the verified
//! client certificate's common name reaches [`Exports::authorize`] as
//! [`Client::common_name`], and every later call of that connection on
//! [`Exports`] carries the same [`Client`] (the replicated store makes each
//! request as that user, so permissions are checked when it applies); an
//! export `authorize` grants read-only is advertised with
//! `NBD_FLAG_READ_ONLY` and refuses changes with `NBD_EPERM`. Writes are durable on a majority before they are answered, so
//! FUA is free, FLUSH only waits for the writes sent before it, and
//! `NBD_FLAG_CAN_MULTI_CONN` is honest.

mod backend;
mod handshake;
mod ordering;
pub mod protocol;
mod transmission;
pub mod volumes;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use backend::{Client, ExportAccess, ExportError, Exports};
pub use volumes::VolumeExports;

/// Requests one connection may have in flight; past it the server stops
/// reading that socket until a reply has been written.
pub const REQUESTS_INFLIGHT_MAX: usize = 128;
/// Read and write payload bytes one connection may have in flight; past it
/// the server stops reading that socket (backpressure instead of buffering).
pub const PAYLOAD_BYTES_INFLIGHT_MAX: u32 = 64 << 20;
/// The longest option data read during negotiation; longer options are
/// skipped and refused with `NBD_REP_ERR_TOO_BIG`. Strings in options are at
/// most 4096 bytes, so honest clients stay far below.
pub const OPTION_DATA_MAX: u32 = 64 << 10;

const _: () = assert!(protocol::BLOCK_SIZE_MAX <= PAYLOAD_BYTES_INFLIGHT_MAX);
const _: () = assert!(REQUESTS_INFLIGHT_MAX <= tokio::sync::Semaphore::MAX_PERMITS);

/// Why a connection ended other than by the client's choice.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("client sent unknown flags {0:#x}")]
    ClientFlags(u32),
    #[error("export {0:?} does not exist (NBD_OPT_EXPORT_NAME cannot be refused, so the connection is closed)")]
    UnknownExport(String),
    #[error("NBD_OPT_EXPORT_NAME with {0} bytes of data")]
    OptionTooBig(u32),
    #[error("volume store: {0}")]
    Export(#[from] ExportError),
    #[error("NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS, and this server requires TLS")]
    TlsRequired,
}

/// Serves NBD on `listener` until `shutdown` completes: one task per
/// connection. On shutdown it stops accepting, lets every connection finish
/// the requests it has already read (replying to them) and close, and
/// returns once all connections are closed.
pub async fn serve<E: Exports>(
    listener: TcpListener,
    exports: Arc<E>,
    tls: Option<Arc<ferrite_tls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tls.map(ferrite_tls::TlsAcceptor::from);
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let exports = exports.clone();
                    let shutdown = Shutdown(Some(stopped.clone()));
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        tracing::debug!(%peer, "nbd: connection opened");
                        let served = match acceptor {
                            Some(acceptor) => run_tls_connection(stream, peer, acceptor, exports, shutdown).await,
                            None => run_connection(stream, exports, shutdown).await,
                        };
                        match served {
                            Ok(()) => tracing::debug!(%peer, "nbd: connection closed"),
                            Err(e) => tracing::info!(%peer, error = %e, "nbd: connection closed"),
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "nbd: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "nbd: stopped accepting, draining connections"
    );
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection from the greeting to its close. Ok(()) when the
/// client left cleanly (`NBD_OPT_ABORT`, `NBD_CMD_DISC`, or closing between
/// requests).
pub async fn serve_connection<E: Exports>(
    stream: TcpStream,
    exports: Arc<E>,
) -> Result<(), NbdError> {
    run_connection(stream, exports, Shutdown(None)).await
}

/// Serves one connection over any byte stream, as `serve_connection` does
/// over TCP. Public for the fuzz target (`fuzz/`), which runs the server over
/// an in-memory stream; the TCP path splits its socket without a lock.
pub async fn serve_stream<S, E>(mut stream: S, exports: Arc<E>) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Exports,
{
    let mut shutdown = Shutdown(None);
    let Some(export) = negotiate(&mut stream, &*exports, &mut shutdown).await? else {
        return Ok(());
    };
    let (read_half, write_half) = tokio::io::split(stream);
    transmission::run(read_half, write_half, exports, export, shutdown).await
}

async fn run_connection<E: Exports>(
    mut stream: TcpStream,
    exports: Arc<E>,
    mut shutdown: Shutdown,
) -> Result<(), NbdError> {
    // Replies are small and latency matters (the spec asks for this too).
    stream.set_nodelay(true)?;
    let Some(export) = negotiate(&mut stream, &*exports, &mut shutdown).await? else {
        return Ok(());
    };
    let (read_half, write_half) = stream.into_split();
    transmission::run(read_half, write_half, exports, export, shutdown).await
}

/// A connection on a server that requires TLS: the greeting and options in
/// the clear until NBD_OPT_STARTTLS, the TLS handshake (bounded in time),
/// then the rest of the negotiation and transmission over TLS.
async fn run_tls_connection<E: Exports>(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: ferrite_tls::TlsAcceptor,
    exports: Arc<E>,
    mut shutdown: Shutdown,
) -> Result<(), NbdError> {
    stream.set_nodelay(true)?;
    let before = async {
        let no_zeroes = handshake::greet(&mut stream).await?;
        let starttls = handshake::until_starttls(&mut stream).await?;
        Ok::<_, NbdError>(starttls.then_some(no_zeroes))
    };
    // The cleartext part is bounded like a TLS handshake: a client that
    // stalls before STARTTLS is dropped.
    let no_zeroes = tokio::select! {
        done = tokio::time::timeout(ferrite_tls::HANDSHAKE_TIMEOUT, before) => match done {
            Ok(Ok(Some(no_zeroes))) => no_zeroes,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(NbdError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no NBD_OPT_STARTTLS in time",
            ))),
        },
        () = shutdown.wait() => return Ok(()),
    };
    let accepted = ferrite_tls::handshake(&acceptor, stream, peer, "NBD").await?;
    let client = Client {
        tls: true,
        common_name: accepted.common_name,
    };
    let mut stream = accepted.stream;
    let export = tokio::select! {
        negotiated = handshake::haggle(&mut stream, &*exports, no_zeroes, &client) => match negotiated? {
            Some(export) => export,
            None => return Ok(()),
        },
        () = shutdown.wait() => return Ok(()),
    };
    tracing::debug!(export = %export.name, size = export.size, cn = ?export.client.common_name, "nbd: transmission over TLS");
    let (read_half, write_half) = tokio::io::split(stream);
    transmission::run(read_half, write_half, exports, export, shutdown).await
}

/// The handshake, given up when the server stops; None if the client left.
async fn negotiate<S, E>(
    stream: &mut S,
    exports: &E,
    shutdown: &mut Shutdown,
) -> Result<Option<handshake::Export>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: Exports,
{
    let export = tokio::select! {
        negotiated = handshake::negotiate(stream, exports) => match negotiated? {
            Some(export) => export,
            None => return Ok(None),
        },
        () = shutdown.wait() => return Ok(None),
    };
    tracing::debug!(export = %export.name, size = export.size, "nbd: transmission");
    Ok(Some(export))
}

/// The server's stop signal as seen by a connection; `None` never fires.
#[derive(Clone)]
pub(crate) struct Shutdown(Option<watch::Receiver<bool>>);

impl Shutdown {
    /// Completes once the server is stopping.
    pub(crate) async fn wait(&mut self) {
        if let Some(stopped) = &mut self.0 {
            if stopped.wait_for(|&stop| stop).await.is_ok() {
                return;
            }
        }
        // No server, or the server is gone without saying stop: never fires.
        std::future::pending().await
    }
}
