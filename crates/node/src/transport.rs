//! Peer transport: one long-lived outbound TCP connection per peer for what
//! we send, and the peers' connections to us for what we receive. Frames are
//! length-prefixed (`codec.rs`). Each outbound connection has a bounded queue;
//! when it is full, or the peer is down, frames are dropped (Raft retries)
//! and the driver is told the peer is unreachable. Connections reconnect with
//! exponential backoff, resolving the peer's host name again each time, and
//! leave from this member's own address when it listens on a specific one.
//! A peer that sends garbage loses its connection, and nothing else happens;
//! a peer's newer connection replaces its older one (which may be dead
//! without our knowing: its host vanished, or a partition healed).
//!
//! With peer TLS (`peer_io.rs`) every connection, both ways, is mutual TLS:
//! a caller whose certificate does not verify is refused before any of its
//! bytes is read as a frame, and the refusal is logged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferrite_raft::NodeId;
use ferrite_tls::{PeerTls, TlsAcceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use crate::codec::{self, Frame, ReadError};
use crate::config::NodeConfig;
use crate::peer_addr::PeerAddr;
use crate::peer_io::{self, Arrival, PeerConnections, PeerIo};

/// Frames queued for one peer before new ones are dropped.
const PEER_QUEUE_FRAMES_MAX: usize = 4096;
/// Bytes written to a peer in one system call when frames are waiting.
const WRITE_BATCH_BYTES_MAX: usize = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the transport hands to the driver.
#[derive(Debug)]
pub enum Inbound {
    Frame(Frame),
    Unreachable(NodeId),
    /// The peer closed its connection to us (its process died, or it
    /// reconnects): see `Raft::report_disconnected`.
    Disconnected(NodeId),
}

#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    cluster_id: u64,
    addresses: Mutex<BTreeMap<NodeId, PeerAddr>>,
    /// Where outbound connections leave from (None: the kernel chooses).
    local: Option<IpAddr>,
    /// Each peer's newest inbound connection (numbered), and how to end it
    /// when a newer one arrives.
    inbound: Mutex<BTreeMap<NodeId, (u64, Arc<Notify>)>>,
    inbound_seq: AtomicU64,
    queues: Mutex<BTreeMap<NodeId, mpsc::Sender<Bytes>>>,
    inbox: mpsc::Sender<Inbound>,
    runtime: tokio::runtime::Handle,
    /// Fault injection: which peers' frames are dropped, each way.
    faults: Mutex<Faults>,
    /// Whether `faults` drops anything: the send path checks only this.
    faulty: AtomicBool,
    /// Every connection task (outbound and inbound), so that `close` ends
    /// them all; finished ones are pruned as new ones start.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Peer TLS: how this member dials, and how it accepts.
    tls: Option<PeerTls>,
    acceptor: Option<TlsAcceptor>,
    /// Where HTTP/2 connections that arrive on the peer port go; None:
    /// they are closed.
    http2: Option<PeerConnections>,
}

/// Frames dropped at the socket, to model network partitions: `isolated`
/// drops everything, `drop_to` what this node sends to those peers,
/// `drop_from` what it receives from them (one-way partitions and bridges
/// are made of these).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub isolated: bool,
    pub drop_to: BTreeSet<NodeId>,
    pub drop_from: BTreeSet<NodeId>,
}

impl Faults {
    fn any(&self) -> bool {
        self.isolated || !self.drop_to.is_empty() || !self.drop_from.is_empty()
    }
}

impl Transport {
    /// The transport of the node `cfg` describes: it dials `cfg.peers`,
    /// from `cfg.listen_peer`'s IP address unless that is 0.0.0.0, with
    /// `cfg.peer_tls`; what arrives goes to `inbox`.
    pub fn new(
        cfg: &NodeConfig,
        inbox: mpsc::Sender<Inbound>,
        runtime: tokio::runtime::Handle,
    ) -> Transport {
        let tls = cfg.peer_tls.clone();
        let local = Some(cfg.listen_peer.ip());
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.server_config()));
        Transport {
            inner: Arc::new(Inner {
                me: cfg.id,
                cluster_id: cfg.cluster_id,
                addresses: Mutex::new(cfg.peers.clone()),
                local: local.filter(|ip| !ip.is_unspecified()),
                inbound: Mutex::new(BTreeMap::new()),
                inbound_seq: AtomicU64::new(0),
                queues: Mutex::new(BTreeMap::new()),
                inbox,
                runtime,
                faults: Mutex::new(Faults::default()),
                faulty: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                tls,
                acceptor,
                http2: cfg.peer_http2.clone(),
            }),
        }
    }

    /// Teaches the transport where a (new) member listens.
    pub fn set_address(&self, id: NodeId, addr: PeerAddr) {
        let old = lock(&self.inner.addresses).insert(id, addr.clone());
        if old != Some(addr) {
            // A changed address takes effect on the next connection.
            lock(&self.inner.queues).remove(&id);
        }
    }

    /// Sets which frames are dropped (fault injection; the default drops
    /// nothing).
    pub fn set_faults(&self, faults: Faults) {
        self.inner.faulty.store(faults.any(), Ordering::Release);
        *lock(&self.inner.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).clone()
    }

    /// Queues a frame for `to`. Never blocks: a full queue drops the frame.
    pub fn send(&self, to: NodeId, frame: &Frame) {
        if to == self.inner.me || self.inner.dropped(to, |f| &f.drop_to) {
            return;
        }
        let bytes = codec::encode(frame);
        let queue = {
            let mut queues = lock(&self.inner.queues);
            match queues.get(&to) {
                Some(q) if !q.is_closed() => q.clone(),
                _ => {
                    let Some(addr) = lock(&self.inner.addresses).get(&to).cloned() else {
                        tracing::debug!(peer = %to, "no address for peer; frame dropped");
                        return;
                    };
                    let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
                    let inner = self.inner.clone();
                    let task = self
                        .inner
                        .runtime
                        .spawn(async move { outbound(inner, to, addr, rx).await });
                    self.inner.track(task.abort_handle());
                    queues.insert(to, tx.clone());
                    tx
                }
            }
        };
        if queue.try_send(bytes).is_err() {
            let _ = self.inner.inbox.try_send(Inbound::Unreachable(to));
        }
    }

    /// Accepts peers' connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let inner = self.inner.clone();
                    let task = tokio::spawn(async move {
                        let arrival =
                            match peer_io::arrive(stream, addr, inner.acceptor.as_ref()).await {
                                Ok(arrival) => arrival,
                                Err(e) => {
                                    if inner.acceptor.is_some() {
                                        tracing::warn!(%addr, "peer connection refused: {e}");
                                    } else {
                                        tracing::debug!(%addr, "peer connection closed: {e}");
                                    }
                                    return;
                                }
                            };
                        match arrival {
                            Arrival::Frames(stream) => {
                                if let Err(e) = inbound(inner, stream).await {
                                    tracing::warn!(%addr, "peer connection closed: {e}");
                                }
                            }
                            Arrival::Http2(connection) => match &inner.http2 {
                                Some(http2) => {
                                    let _ = http2.send(connection).await;
                                }
                                None => {
                                    tracing::debug!(%addr, "HTTP/2 on the peer port, not served")
                                }
                            },
                        }
                    });
                    self.inner.track(task.abort_handle());
                }
                Err(e) => {
                    tracing::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(BACKOFF_MIN).await;
                }
            }
        }
    }
}

impl Transport {
    /// Ends every connection, both ways; frames sent afterwards open new
    /// ones, so call it only once the node has stopped.
    pub fn close(&self) {
        lock(&self.inner.queues).clear();
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Inner {
    fn track(&self, task: tokio::task::AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Registers a new inbound connection from `peer` as its newest, and
    /// ends the one it replaces; returns the new one's number and what
    /// tells it that it was replaced in turn.
    fn newest_inbound(&self, peer: NodeId) -> (u64, Arc<Notify>) {
        let seq = self.inbound_seq.fetch_add(1, Ordering::Relaxed);
        let superseded = Arc::new(Notify::new());
        if let Some((_, older)) = lock(&self.inbound).insert(peer, (seq, superseded.clone())) {
            // A stored permit: the older connection ends even if it is not
            // waiting right now.
            older.notify_one();
        }
        (seq, superseded)
    }

    /// Whether a frame to or from `peer` is dropped by fault injection.
    fn dropped(&self, peer: NodeId, set: impl Fn(&Faults) -> &BTreeSet<NodeId>) -> bool {
        if !self.faulty.load(Ordering::Acquire) {
            return false;
        }
        let faults = lock(&self.faults);
        faults.isolated || set(&faults).contains(&peer)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("expected a hello frame first")]
    NoHello,
    #[error("peer belongs to cluster {0:#x}")]
    WrongCluster(u64),
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame(stream: &mut PeerIo) -> Result<Option<Frame>, LinkError> {
    Ok(codec::read_frame(stream).await?)
}

async fn inbound(inner: Arc<Inner>, mut stream: PeerIo) -> Result<(), LinkError> {
    let from = match read_frame(&mut stream).await? {
        Some(Frame::Hello { cluster_id, from }) if cluster_id == inner.cluster_id => from,
        Some(Frame::Hello { cluster_id, .. }) => return Err(LinkError::WrongCluster(cluster_id)),
        _ => return Err(LinkError::NoHello),
    };
    let (seq, superseded) = inner.newest_inbound(from);
    let result = tokio::select! {
        result = read_frames(&inner, from, &mut stream) => result,
        _ = superseded.notified() => {
            // The peer is connected anew: nothing to report.
            tracing::debug!(peer = %from, "peer connection replaced by a newer one");
            return Ok(());
        }
    };
    let was_newest = {
        let mut newest = lock(&inner.inbound);
        let was = newest.get(&from).is_some_and(|(s, _)| *s == seq);
        if was {
            newest.remove(&from);
        }
        was
    };
    // Whatever ended the connection, the peer may be gone: say so at once
    // (a partition drops frames instead, and is left to the timeouts).
    if was_newest && !inner.dropped(from, |f| &f.drop_from) {
        let _ = inner.inbox.send(Inbound::Disconnected(from)).await;
    }
    result
}

async fn read_frames(inner: &Inner, from: NodeId, stream: &mut PeerIo) -> Result<(), LinkError> {
    while let Some(frame) = read_frame(stream).await? {
        if matches!(frame, Frame::Hello { .. }) {
            return Err(LinkError::NoHello);
        }
        if inner.dropped(from, |f| &f.drop_from) {
            continue;
        }
        if inner.inbox.send(Inbound::Frame(frame)).await.is_err() {
            return Ok(()); // the node is stopping
        }
    }
    Ok(())
}

/// Keeps one connection to `to` open and writes its queue into it.
async fn outbound(inner: Arc<Inner>, to: NodeId, addr: PeerAddr, mut rx: mpsc::Receiver<Bytes>) {
    let mut backoff = BACKOFF_MIN;
    let hello = codec::encode(&Frame::Hello {
        cluster_id: inner.cluster_id,
        from: inner.me,
    });
    loop {
        let mut stream = match peer_io::dial_from(&addr, inner.local, inner.tls.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                if e.get_ref()
                    .is_some_and(|e| e.is::<ferrite_tls::rustls::Error>())
                {
                    tracing::warn!(peer = %to, %addr, "peer refused (TLS): {e}");
                } else {
                    tracing::debug!(peer = %to, %addr, "connect failed: {e}");
                }
                let _ = inner.inbox.try_send(Inbound::Unreachable(to));
                // Drop what queued up while the peer was away: Raft resends.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        if stream.write_all(&hello).await.is_err() || stream.flush().await.is_err() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        backoff = BACKOFF_MIN;
        // The peer never writes on this connection, so a read that returns
        // means it closed (its process died or restarted). Noticing that now
        // keeps the next frame from going into a dead socket and being lost
        // (a vote response lost that way costs a whole election timeout).
        let (mut reader, mut stream) = tokio::io::split(stream);
        let mut probe = [0u8; 1];
        let mut batch = Vec::with_capacity(64 << 10);
        loop {
            let first = tokio::select! {
                frame = rx.recv() => match frame {
                    Some(frame) => frame,
                    None => return,
                },
                _ = reader.read(&mut probe) => {
                    tracing::debug!(peer = %to, "peer closed the connection; reconnecting");
                    break;
                }
            };
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH_BYTES_MAX {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            let written = match stream.write_all(&batch).await {
                Ok(()) => stream.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::debug!(peer = %to, "write failed: {e}");
                let _ = inner.inbox.try_send(Inbound::Unreachable(to));
                break;
            }
        }
    }
}
