//! Starting a node and talking to it. `Node::start` recovers the WAL (or
//! founds the cluster on an empty directory), restores the state machine,
//! listens for peers and spawns the driver, storage and apply workers.
//! `Node`'s methods are what front ends call; each waits at most the
//! configured request timeout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ferrite_raft::{Config, DurableState, MembershipChange, NodeId, Raft};
use ferrite_wal::{FileDisk, Wal, WalOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{self, ApplyMsg};
use crate::config::NodeConfig;
use crate::driver::{Driver, Event, Status};
use crate::error::{NodeError, StartError};
use std::sync::Arc;

use crate::machine::StateMachine;
use crate::metrics::Metrics;
use crate::storage::{self, StorageMsg};
use crate::transport::Faults;
use crate::transport::Transport;

/// Requests queued for the driver before callers wait.
const EVENTS_MAX: usize = 65_536;
/// Peer frames queued for the driver before connections are back-pressured.
const INBOUND_MAX: usize = 16_384;

#[derive(Clone)]
pub struct Node {
    events: mpsc::Sender<Event>,
    transport: Transport,
    cfg: NodeConfig,
    peer_addr: SocketAddr,
    metrics: Arc<Metrics>,
    /// The leader as the driver last saw it.
    leader: watch::Receiver<Option<NodeId>>,
}

impl Node {
    pub async fn start<M: StateMachine>(
        cfg: NodeConfig,
        mut machine: M,
    ) -> Result<Node, StartError> {
        if !cfg.join && !cfg.peers.contains_key(&cfg.id) {
            return Err(StartError::Config(format!(
                "{} is not in the initial cluster",
                cfg.id
            )));
        }
        let dir = cfg.data_dir.to_string_lossy().into_owned();
        let (mut wal, recovered) = Wal::open(FileDisk::new(), &dir, WalOptions::default())?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!("recovered after a crash: {torn:?}");
        }
        let mut durable = recovered.durable;
        let empty = durable.snapshot.is_none() && durable.entries.is_empty();
        if empty && !cfg.join {
            // Found the cluster: the initial configuration is made durable
            // before anything else, so it survives a crash.
            durable = DurableState::bootstrap(cfg.peers.keys().copied());
            if let Some(snapshot) = &durable.snapshot {
                wal.save_snapshot(snapshot)?;
            }
        }
        let snapshot_index = durable
            .snapshot
            .as_ref()
            .map_or(Default::default(), |s| s.meta.index);
        let snapshot_bytes = durable.snapshot.as_ref().map_or(0, |s| s.data.len());
        if let Some(s) = &durable.snapshot {
            machine.recover(&s.data).map_err(StartError::Snapshot)?;
        }
        let mut raft_cfg = Config::new(cfg.id);
        raft_cfg.heartbeat_ticks = cfg.heartbeat_ticks;
        raft_cfg.election_ticks_min = cfg.election_ticks;
        let seed = cfg.id.0 ^ std::process::id() as u64 ^ nanos();
        let raft = Raft::new(raft_cfg, durable, seed)?;

        let listener =
            TcpListener::bind(cfg.listen_peer)
                .await
                .map_err(|source| StartError::Listen {
                    addr: cfg.listen_peer,
                    source,
                })?;
        let peer_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: cfg.listen_peer,
            source,
        })?;

        let (events_tx, events_rx) = mpsc::channel(EVENTS_MAX);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_MAX);
        let runtime = tokio::runtime::Handle::current();
        let transport = Transport::new(
            cfg.id,
            cfg.cluster_id,
            cfg.peers.clone(),
            inbound_tx,
            runtime,
        );
        let listening = tokio::spawn(transport.clone().serve(listener));

        let metrics = Arc::new(Metrics::default());
        let (storage_tx, storage_rx) = mpsc::unbounded_channel::<StorageMsg>();
        let (apply_tx, apply_rx) = mpsc::unbounded_channel::<ApplyMsg>();
        {
            let events = events_tx.clone();
            let transport = transport.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("storage-{}", cfg.id))
                .spawn(move || storage::run(wal, storage_rx, events, transport, metrics))
                .map_err(|e| StartError::Config(format!("cannot start the storage thread: {e}")))?;
        }
        {
            let events = events_tx.clone();
            let every = cfg.snapshot_entries;
            std::thread::Builder::new()
                .name(format!("apply-{}", cfg.id))
                .spawn(move || {
                    let last = (snapshot_index, snapshot_bytes);
                    apply::run(machine, apply_rx, events, every, last)
                })
                .map_err(|e| StartError::Config(format!("cannot start the apply thread: {e}")))?;
        }
        let (leader_tx, leader) = watch::channel(None);
        let driver = Driver::new(
            raft,
            cfg.clone(),
            transport.clone(),
            storage_tx,
            apply_tx,
            metrics.clone(),
            leader_tx,
        );
        tokio::spawn(async move {
            driver.run(events_rx, inbound_rx).await;
            // Stop taking peer connections: a stopped node is gone.
            listening.abort();
        });
        tracing::info!(id = %cfg.id, %peer_addr, snapshot = snapshot_index.0, "node started");
        Ok(Node {
            events: events_tx,
            transport,
            cfg,
            peer_addr,
            metrics,
            leader,
        })
    }

    /// Returns once this node knows a leader, or after `within`: a request
    /// refused for want of a leader is retried as soon as one is elected
    /// rather than after a fixed pause.
    pub async fn leader_known(&self, within: Duration) {
        let mut leader = self.leader.clone();
        if leader.borrow_and_update().is_some() {
            // Known here, yet the request was refused for want of one (the
            // member it was forwarded to lost it): no busy loop meanwhile.
            tokio::time::sleep(within.min(Duration::from_millis(10))).await;
            return;
        }
        let _ = tokio::time::timeout(within, leader.wait_for(Option::is_some)).await;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// Fault injection: which peer traffic this node drops.
    pub fn set_faults(&self, faults: Faults) {
        self.transport.set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.transport.faults()
    }

    /// Cut off from every peer by fault injection.
    pub fn is_isolated(&self) -> bool {
        self.transport.faults().isolated
    }

    /// Fault injection: every group commit's fdatasync takes at least this
    /// much longer (a slow disk).
    pub fn set_disk_delay(&self, delay: Duration) {
        Metrics::set(&self.metrics.disk_delay_micros, delay.as_micros() as u64);
    }

    /// Where peers reach this node (useful when it listened on port 0).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Event) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Replicates `command` and returns the state machine's reply, from
    /// this node or (forwarded) from the leader.
    pub async fn propose(&self, command: Bytes) -> Result<Bytes, NodeError> {
        self.ask(|reply| Event::Propose {
            data: command,
            reply,
        })
        .await?
    }

    /// Answers `query`: linearizable (ReadIndex, confirmed by the leader) or
    /// serializable (this node's state, possibly stale).
    pub async fn read(&self, query: Bytes, linearizable: bool) -> Result<Bytes, NodeError> {
        self.ask(|reply| Event::Read {
            query,
            linearizable,
            reply,
        })
        .await?
    }

    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(|reply| Event::Status { reply }).await
    }

    /// Adds a member (a learner first, unless `voter`), reachable at `addr`.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: SocketAddr,
        voter: bool,
    ) -> Result<(), NodeError> {
        self.transport.set_address(id, addr);
        let change = if voter {
            MembershipChange::AddVoter(id)
        } else {
            MembershipChange::AddLearner(id)
        };
        self.change_membership(change).await
    }

    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), NodeError> {
        self.ask(|reply| Event::Membership { change, reply })
            .await?
            .map(|_| ())
    }

    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        self.ask(|reply| Event::Transfer { to, reply }).await?
    }

    /// Teaches this node a peer's address (for members added elsewhere).
    pub fn set_peer_address(&self, id: NodeId, addr: SocketAddr) {
        self.transport.set_address(id, addr);
    }

    /// Stops the driver; storage and apply stop when their queues close.
    pub async fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown).await;
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Waits until `node` reports a leader, polling; for tests and `ferrite up`.
pub async fn wait_for_leader(node: &Node, within: Duration) -> Option<NodeId> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Ok(status) = node.status().await {
            if let Some(leader) = status.leader {
                return Some(leader);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
