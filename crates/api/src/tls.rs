//! The front ends over TLS: connections whose handshake `ferrite-tls` did
//! (with its deadline), handed to tonic and axum as streams that say who the
//! client is.
//!
//! For gRPC, the verified client certificate's common name goes into every
//! request's extensions as [`ClientCommonName`] (`common_name_layer`), where
//! the auth layer reads it. Connections that arrive on the peer port's
//! gRPC server (calls between members) carry [`PeerConnectInfo`] instead:
//! a member's certificate never names a user.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ferrite_node::peer_io::{PeerConnection, PeerIo};
use ferrite_tls::Accepted;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::identity::ClientCommonName;

/// What tonic knows of a client-port TLS connection (in request extensions).
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    pub remote: SocketAddr,
    /// The verified client certificate's common name, if one was presented.
    pub common_name: Option<String>,
}

/// What tonic knows of a call from another member on the peer port.
#[derive(Clone, Debug)]
pub struct PeerConnectInfo {
    pub remote: SocketAddr,
    /// The calling member's certificate's common name (with peer TLS).
    pub common_name: Option<String>,
}

/// A client-port connection after its TLS handshake.
pub struct TlsConn(pub Accepted<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        TlsConnectInfo {
            remote: self.0.remote,
            common_name: self.0.common_name.clone(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.stream.is_write_vectored()
    }
}

/// A member's call arriving on the peer port.
pub struct PeerConn {
    io: PeerIo,
    info: PeerConnectInfo,
}

impl From<PeerConnection> for PeerConn {
    fn from(c: PeerConnection) -> PeerConn {
        PeerConn {
            io: c.io,
            info: PeerConnectInfo {
                remote: c.remote,
                common_name: c.common_name,
            },
        }
    }
}

impl tonic::transport::server::Connected for PeerConn {
    type ConnectInfo = PeerConnectInfo;

    fn connect_info(&self) -> PeerConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Puts the verified client certificate's common name into each request's
/// extensions as `ClientCommonName` (nothing for plaintext connections or
/// clients without a certificate).
pub fn insert_common_name<B>(mut request: http::Request<B>) -> http::Request<B> {
    let name = request
        .extensions()
        .get::<TlsConnectInfo>()
        .and_then(|info| info.common_name.clone());
    if let Some(name) = name {
        request.extensions_mut().insert(ClientCommonName(name));
    }
    request
}

/// The HTTP port's TLS listener for axum: connections whose handshake is done.
pub struct TlsListener {
    pub accepted: mpsc::Receiver<Accepted<TcpStream>>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = ferrite_tls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.accepted.recv().await {
            Some(accepted) => (accepted.stream, accepted.remote),
            // The acceptor is gone (it never is while the server runs).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What the HTTP handlers know of a TLS connection (as axum's
/// `ConnectInfo`): the verified client certificate's common name, if the
/// client presented one. The HTTP port only requests a certificate, so a
/// browser without one gets in and logs in with a password instead.
#[derive(Clone, Debug)]
pub struct HttpConnectInfo {
    pub remote: SocketAddr,
    pub common_name: Option<String>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for HttpConnectInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> HttpConnectInfo {
        let (_, conn) = stream.io().get_ref();
        HttpConnectInfo {
            remote: *stream.remote_addr(),
            common_name: ferrite_tls::peer_common_name(conn),
        }
    }
}
