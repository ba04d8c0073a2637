//! The byte streams between members: plain TCP, or mutual TLS when the
//! member has peer certificates (`--peer-cert-file` and friends), for every
//! connection either way. One peer port carries two protocols, told apart
//! by their first bytes: Raft frames (a connection starts with a hello
//! frame) and HTTP/2 (a connection starts with the HTTP/2 preface, "PRI "),
//! which carries the gRPC calls members make of each other (volume-file
//! copies, `ferrite-service`'s `copy.rs`). So everything members send each
//! other goes through the same TLS and the same certificate checks.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ferrite_tls::{PeerTls, ServerName, TlsAcceptor, TlsConnector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::peer_addr::PeerAddr;

/// How long dialing a peer may take: resolving, TCP and TLS together.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long written bytes may stay unacknowledged before the connection is
/// given up (etcd's peer connections time writes out after 5 s too).
const UNACKED_MAX: Duration = Duration::from_secs(5);
/// Keep-alive: first probe after this much silence, then every interval;
/// the connection ends after `KEEPALIVE_PROBES` unanswered ones.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
#[cfg(any(target_os = "linux", target_os = "android"))]
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
#[cfg(any(target_os = "linux", target_os = "android"))]
const KEEPALIVE_PROBES: u32 = 3;
/// The first bytes of an HTTP/2 connection.
const HTTP2_PREFIX: &[u8; 4] = b"PRI ";

/// A connection between members, plain or TLS.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerStream for T {}

pub type PeerIo = Box<dyn PeerStream>;

/// An HTTP/2 connection that arrived on the peer port, for the gRPC server
/// of member-to-member calls. With peer TLS, `common_name` is the calling
/// member's verified certificate's.
pub struct PeerConnection {
    pub io: PeerIo,
    pub remote: SocketAddr,
    pub common_name: Option<String>,
}

/// Where the peer port sends HTTP/2 connections.
pub type PeerConnections = mpsc::Sender<PeerConnection>;

/// Dials a member's peer port (TLS with this member's certificate when
/// `tls` is set; the peer's certificate must be valid for `addr`'s IP).
pub async fn dial(addr: SocketAddr, tls: Option<&PeerTls>) -> io::Result<PeerIo> {
    dial_from(&PeerAddr::from(addr), None, tls).await
}

/// Dials a member's peer port at `addr`, resolving a host name now (so a
/// member whose address changed behind its name is found again on the
/// next dial), from `local` when given (this member's own address, so that
/// peers and network rules see connections come from it; port 0). With
/// `tls`, the peer's certificate must be valid for `addr`'s host (its IP
/// address or its name).
pub async fn dial_from(
    addr: &PeerAddr,
    local: Option<IpAddr>,
    tls: Option<&PeerTls>,
) -> io::Result<PeerIo> {
    let connecting = async {
        let stream = connect(addr, local).await?;
        tune(&stream);
        let Some(tls) = tls else {
            return Ok(Box::new(stream) as PeerIo);
        };
        let connector = TlsConnector::from(tls.client_config(&[]));
        let name = match addr.ip() {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => ServerName::try_from(addr.host())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let stream = connector.connect(name, stream).await?;
        Ok(Box::new(stream) as PeerIo)
    };
    tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dialing the peer timed out"))?
}

/// A TCP connection to the first of `addr`'s addresses that answers.
async fn connect(addr: &PeerAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let mut failed = None;
    for target in addr.resolve().await? {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = local.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failed = Some(io::Error::new(e.kind(), format!("{target}: {e}"))),
        }
    }
    Err(failed.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Socket options of every connection between members, both ways: no
/// Nagle delay; a write that stays unacknowledged for `UNACKED_MAX` ends
/// the connection (the peer's host is gone or cut off: reconnecting
/// resolves its name again, where TCP alone would retransmit for many
/// minutes); and keep-alive probes, so that a connection nobody writes on
/// (the receiving side) finds out too.
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_user_timeout(Some(UNACKED_MAX));
}

/// What arrived on the peer port, once TLS (if any) is done.
pub(crate) enum Arrival {
    Frames(PeerIo),
    Http2(PeerConnection),
}

/// Completes an accepted connection: the TLS handshake (with its deadline,
/// failures logged with the caller's address), then a look at the first
/// bytes.
pub(crate) async fn arrive(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<&TlsAcceptor>,
) -> io::Result<Arrival> {
    tune(&stream);
    let (io, common_name): (PeerIo, _) = match acceptor {
        Some(acceptor) => {
            let accepted = ferrite_tls::handshake(acceptor, stream, remote, "peer").await?;
            (Box::new(accepted.stream), accepted.common_name)
        }
        None => (Box::new(stream), None),
    };
    let mut io = io;
    let mut prefix = [0u8; 4];
    let mut got = 0;
    // Bounded like a TLS handshake: a caller that says nothing is dropped.
    let read = tokio::time::timeout(ferrite_tls::HANDSHAKE_TIMEOUT, async {
        while got < prefix.len() {
            let n = io.read(&mut prefix[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok::<_, io::Error>(())
    })
    .await;
    match read {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "peer sent nothing")),
    }
    let io: PeerIo = Box::new(Prefixed {
        prefix,
        len: got,
        pos: 0,
        inner: io,
    });
    if got == prefix.len() && &prefix == HTTP2_PREFIX {
        Ok(Arrival::Http2(PeerConnection {
            io,
            remote,
            common_name,
        }))
    } else {
        Ok(Arrival::Frames(io))
    }
}

/// A stream with a few bytes already read from it put back in front.
struct Prefixed {
    prefix: [u8; 4],
    len: usize,
    pos: usize,
    inner: PeerIo,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
