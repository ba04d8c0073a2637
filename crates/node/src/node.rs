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

use crate::applier::Applier;
use crate::apply::{self, ApplyMsg};
use crate::config::NodeConfig;
use crate::driver::{
    Driver, Event, Status, ACKS_MAX, APPLY_MSGS_MAX, EVENTS_MAX, STORAGE_TASKS_MAX,
};
use crate::error::{NodeError, StartError};
use crate::lessor::{LeaseId, LeaseTtl};
use crate::replica::{Replica, ReplicaConfig};
use std::sync::Arc;

use crate::machine::StateMachine;
use crate::metrics::Metrics;
use crate::peer_addr::PeerAddr;
use crate::replica::StorageTask;
use crate::storage;
use crate::transport::Faults;
use crate::transport::Transport;

/// Peer frames queued for the driver before connections are back-pressured.
const INBOUND_MAX: usize = 16_384;
/// The longest `shutdown` waits for the node to drain and stop.
const SHUTDOWN_MAX: Duration = Duration::from_secs(15);

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
        if cfg.force_new_cluster {
            durable = crate::force_new_cluster::force_new_cluster(&mut wal, durable, cfg.id)?;
        }
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
            machine
                .recover(&s.data)
                .map_err(|e| StartError::Snapshot(e.to_string()))?;
            // The core keeps the snapshot (a map of its file) to send to
            // followers; the pages read for the state need not stay.
            ferrite_wal::page_out(&s.data);
            // Empty data is the empty state of a founding member.
            if !s.data.is_empty() && machine.applied() != s.meta.index {
                return Err(StartError::Snapshot(format!(
                    "the snapshot at {} holds state applied to {}",
                    s.meta.index,
                    machine.applied()
                )));
            }
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
        let transport = Transport::new(&cfg, inbound_tx, runtime);
        let listening = tokio::spawn(transport.clone().serve(listener));

        let metrics = Arc::new(Metrics::default());
        let (storage_tx, storage_rx) = mpsc::channel::<StorageTask>(STORAGE_TASKS_MAX);
        let (apply_tx, apply_rx) = mpsc::channel::<ApplyMsg>(APPLY_MSGS_MAX);
        let (acks_tx, acks_rx) = mpsc::channel(ACKS_MAX);
        let storage_thread = {
            let acks = acks_tx.clone();
            let transport = transport.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("storage-{}", cfg.id))
                .spawn(move || storage::run(wal, storage_rx, acks, transport, metrics))
                .map_err(|e| StartError::Config(format!("cannot start the storage thread: {e}")))?
        };
        let recovered_leases = machine.take_lease_changes();
        let canary = raft.config().canary;
        let applier = Applier::new(
            machine,
            cfg.snapshot_entries,
            (snapshot_index, snapshot_bytes),
            canary,
        );
        let apply_thread = {
            let transport = transport.clone();
            std::thread::Builder::new()
                .name(format!("apply-{}", cfg.id))
                .spawn(move || apply::run(applier, apply_rx, acks_tx, transport))
                .map_err(|e| StartError::Config(format!("cannot start the apply thread: {e}")))?
        };
        let (leader_tx, leader) = watch::channel(None);
        let request_ticks = (cfg.request_timeout.as_millis() / cfg.tick.as_millis().max(1)).max(1);
        let mut replica = Replica::new(
            raft,
            ReplicaConfig {
                request_ticks: request_ticks as u64,
                first_request_id: seed.rotate_left(17) ^ nanos(),
                tick_ms: cfg.tick.as_millis().max(1) as u64,
                lease_proposals: cfg.lease_proposals,
                ..ReplicaConfig::default()
            },
        );
        // The lease table the machine recovered (a `Reset`), before any
        // apply: the replica's lessor starts from it.
        replica.on_lease_changes(recovered_leases);
        let closing = transport.clone();
        let driver = Driver::new(
            replica,
            cfg.clone(),
            transport.clone(),
            storage_tx,
            apply_tx,
            metrics.clone(),
            leader_tx,
        );
        tokio::spawn(async move {
            let done = driver.run(events_rx, acks_rx, inbound_rx).await;
            // Stop taking peer connections and end the open ones: a stopped
            // node is gone.
            listening.abort();
            closing.close();
            // The driver dropped its ends: storage drains and syncs, apply
            // answers what it holds; both are joined before `done`.
            let joined = tokio::task::spawn_blocking(move || {
                let storage = storage_thread.join().is_ok();
                let apply = apply_thread.join().is_ok();
                storage && apply
            })
            .await;
            if !matches!(joined, Ok(true)) {
                tracing::error!("a storage or apply thread panicked");
            }
            tracing::info!("node stopped");
            if let Some(done) = done {
                let _ = done.send(());
            }
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

    /// Queues a request for the driver (refused busy when the queue is
    /// full) and waits for its answer. The replica answers within the
    /// request timeout; the extra second here only guards against a
    /// driver that is stuck.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Event) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.events.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NodeError::Busy(format!("{EVENTS_MAX} requests queued"))
            }
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })?;
        let within = self.cfg.request_timeout + Duration::from_secs(1);
        match tokio::time::timeout(within, rx).await {
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

    /// Renews `lease` at the leader (forwarded if this node follows) and
    /// returns its TTL; `LeaseNotFound` if it is unknown or expired.
    pub async fn lease_keep_alive(&self, lease: LeaseId) -> Result<LeaseTtl, NodeError> {
        self.ask_lease(lease, true).await
    }

    /// The lease's granted and remaining TTL, as the leader's clock has it.
    pub async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseTtl, NodeError> {
        self.ask_lease(lease, false).await
    }

    async fn ask_lease(&self, lease: LeaseId, renew: bool) -> Result<LeaseTtl, NodeError> {
        let bytes = self
            .ask(|reply| Event::Lease {
                lease,
                renew,
                reply,
            })
            .await??;
        LeaseTtl::decode(&bytes)
            .map_err(|e| NodeError::Storage(format!("a lease answer does not decode: {e}")))
    }

    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(|reply| Event::Status { reply }).await
    }

    /// Adds a member (a learner first, unless `voter`), reachable at `addr`.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: impl Into<PeerAddr>,
        voter: bool,
    ) -> Result<(), NodeError> {
        self.transport.set_address(id, addr.into());
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
    pub fn set_peer_address(&self, id: NodeId, addr: impl Into<PeerAddr>) {
        self.transport.set_address(id, addr.into());
    }

    /// Stops the node, as etcd does on SIGTERM: a leader first hands
    /// leadership to the most up-to-date voter (bounded wait), new requests
    /// are refused `Stopped`, waiting ones answered (a write already
    /// proposed as unknown), storage drains and syncs, and the storage and
    /// apply threads are joined. Returns once all of that is done, or after
    /// `SHUTDOWN_MAX`.
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self.events.send(Event::Shutdown { done }).await.is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_MAX, stopped).await;
        }
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
