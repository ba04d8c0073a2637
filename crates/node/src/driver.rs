//! The driver: the tokio task that runs the `Replica` with real time, disk
//! and network. Each turn it takes everything pending (acknowledgements
//! first, then the tick, client requests and peer frames), steps the replica
//! with all of it, then executes the output: storage tasks to the storage
//! thread, frames to the transport, apply tasks to the apply thread, and the
//! answers the replica decided to the clients' channels. All the decisions
//! are the replica's; this file only moves things between threads.
//!
//! Every channel is bounded. Client requests: `EVENTS_MAX`, refused `Busy`
//! when full. Storage and apply: `STORAGE_TASKS_MAX` and `APPLY_MSGS_MAX`;
//! the driver stops taking client requests and peer frames while either is
//! that far behind, so a slow disk or state machine pushes back to the
//! clients instead of filling memory. Acknowledgements (persisted, applied,
//! snapshot ready) travel on their own channel, read before anything else,
//! and never queue behind proposals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrite_raft::{Index, Membership, MembershipChange, NodeId, Role, Term};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{ApplyMsg, Reply};
use crate::codec::Frame;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::lessor::{LeaseChange, LeaseId};
use crate::metrics::Metrics;
use crate::replica::{ApplyTask, Replica, ReplicaOutput, RequestId, Requester, StorageTask};
use crate::transport::{Inbound, Transport};
use std::sync::Arc;

/// Inputs handled in one turn at most, so that output is never starved.
const TURN_INPUTS_MAX: usize = 4096;
/// Client requests queued for the driver; beyond it they are refused busy.
pub const EVENTS_MAX: usize = 16_384;
/// Storage tasks handed out and not yet acknowledged before the driver stops
/// taking new work.
pub const STORAGE_TASKS_MAX: usize = 1024;
/// Apply hand-offs not yet acknowledged before the driver stops taking new
/// work (the bytes in them are bounded by the core's apply budget).
pub const APPLY_MSGS_MAX: usize = 1024;
/// Room for every acknowledgement that can be outstanding at once: one per
/// storage batch and apply hand-off, a snapshot, failures.
pub const ACKS_MAX: usize = STORAGE_TASKS_MAX + APPLY_MSGS_MAX + 64;
/// Ticks a leader that is shutting down waits for its leadership transfer.
const SHUTDOWN_TRANSFER_TICKS: u64 = 30;

/// What a front end may ask.
pub enum Event {
    Propose {
        data: Bytes,
        reply: Reply,
    },
    Read {
        query: Bytes,
        linearizable: bool,
        reply: Reply,
    },
    Membership {
        change: MembershipChange,
        reply: Reply,
    },
    /// A keepalive (`renew`) or time-to-live query; answered with
    /// `LeaseTtl::encode`.
    Lease {
        lease: LeaseId,
        renew: bool,
        reply: Reply,
    },
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// Stop: transfer leadership first when leading, answer what waits,
    /// drain storage, then say so on `done`.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What storage, apply and the snapshot thread report.
pub enum Ack {
    Persisted {
        /// Storage tasks this batch held.
        tasks: usize,
        last: Option<(Index, Term)>,
        /// The fdatasync's duration; None if the batch needed none.
        sync: Option<Duration>,
        /// The snapshot saved, mapped from its file (`Committed::snapshot`).
        snapshot: Option<ferrite_raft::Snapshot>,
    },
    /// One apply hand-off is done; entries up to `upto` are applied, and
    /// made these changes to the lease table.
    Applied {
        upto: Option<Index>,
        leases: Vec<LeaseChange>,
    },
    SnapshotReady {
        index: Index,
        data: Bytes,
    },
    StorageFailed(String),
}

/// One node's view, for status pages and `ferrite status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub snapshot_index: Index,
    pub membership: Membership,
    /// Duration of the last group commit's fdatasync.
    pub last_sync: Duration,
    /// The terms of the last entries of the log (at most `STATUS_TAIL`),
    /// ending at `last_index`: enough to draw divergence and catch-up.
    pub tail_terms: Vec<Term>,
}

/// Entries whose terms a status carries.
pub const STATUS_TAIL: u64 = 24;

pub struct Driver {
    pub replica: Replica,
    pub cfg: NodeConfig,
    pub transport: Transport,
    pub storage: mpsc::Sender<StorageTask>,
    pub apply: mpsc::Sender<ApplyMsg>,
    /// Local clients' channels, until their answer is decided here or the
    /// channel moves to the apply thread with the task that answers it.
    replies: BTreeMap<RequestId, Reply>,
    storage_outstanding: usize,
    apply_outstanding: usize,
    last_sync: Duration,
    failed: Option<String>,
    metrics: Arc<Metrics>,
    last_role: Role,
    /// When the oldest unanswered heartbeat to each peer left, for the
    /// round-trip metric.
    heartbeat_sent: BTreeMap<NodeId, Instant>,
    /// The leader as last seen, for front ends waiting for one.
    leader_tx: watch::Sender<Option<NodeId>>,
    /// Set once shutdown began: the tick count left for a leadership
    /// transfer, and who to tell when done.
    stopping: Option<(u64, oneshot::Sender<()>)>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        replica: Replica,
        cfg: NodeConfig,
        transport: Transport,
        storage: mpsc::Sender<StorageTask>,
        apply: mpsc::Sender<ApplyMsg>,
        metrics: Arc<Metrics>,
        leader_tx: watch::Sender<Option<NodeId>>,
    ) -> Driver {
        Driver {
            replica,
            cfg,
            transport,
            storage,
            apply,
            replies: BTreeMap::new(),
            storage_outstanding: 0,
            apply_outstanding: 0,
            last_sync: Duration::ZERO,
            failed: None,
            metrics,
            last_role: Role::Follower,
            heartbeat_sent: BTreeMap::new(),
            leader_tx,
            stopping: None,
        }
    }

    /// Runs until shutdown (or until every front end is gone). Returns who
    /// to tell once the storage and apply threads are joined.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut acks: mpsc::Receiver<Ack>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) -> Option<oneshot::Sender<()>> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let accepting = self.accepting();
            tokio::select! {
                biased;
                Some(ack) = acks.recv() => self.on_ack(ack),
                _ = ticker.tick() => self.on_tick(),
                event = events.recv(), if accepting => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some(inbound) = inbound.recv(), if accepting => self.on_inbound(inbound),
            }
            for _ in 0..TURN_INPUTS_MAX {
                match acks.try_recv() {
                    Ok(ack) => self.on_ack(ack),
                    Err(_) => break,
                }
            }
            for _ in 0..TURN_INPUTS_MAX {
                if !self.accepting() {
                    break;
                }
                match inbound.try_recv() {
                    Ok(frame) => self.on_inbound(frame),
                    Err(_) => break,
                }
            }
            for _ in 0..TURN_INPUTS_MAX {
                if !self.accepting() {
                    break;
                }
                match events.try_recv() {
                    Ok(event) => self.on_event(event),
                    Err(_) => break,
                }
            }
            if !self.flush().await {
                break;
            }
            if self.stop_now() {
                break;
            }
        }
        let out = self.replica.stop();
        self.execute(out).await;
        for (_, reply) in std::mem::take(&mut self.replies) {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        self.stopping.take().map(|(_, done)| done)
    }

    /// Whether new work (client requests, peer frames) is taken this turn.
    fn accepting(&self) -> bool {
        self.storage_outstanding < STORAGE_TASKS_MAX && self.apply_outstanding < APPLY_MSGS_MAX
    }

    fn id(&self) -> NodeId {
        self.cfg.id
    }

    fn on_tick(&mut self) {
        self.replica.tick();
        if let Some((left, _)) = self.stopping.as_mut() {
            *left = left.saturating_sub(1);
        }
    }

    /// Shutting down, and either not leading (any more) or out of patience
    /// for the transfer.
    fn stop_now(&self) -> bool {
        match &self.stopping {
            Some((left, _)) => *left == 0 || self.replica.raft().role() != Role::Leader,
            None => false,
        }
    }

    fn on_event(&mut self, event: Event) {
        if let Some(reason) = &self.failed {
            refuse(event, NodeError::Storage(reason.clone()));
            return;
        }
        if self.stopping.is_some() {
            refuse(event, NodeError::Stopped);
            return;
        }
        match event {
            Event::Propose { data, reply } => {
                Metrics::bump(&self.metrics.proposals);
                let id = self.replica.propose(data);
                self.replies.insert(id, reply);
            }
            Event::Read {
                query,
                linearizable,
                reply,
            } => {
                if linearizable {
                    // Linearizable reads only: status pages poll with local reads.
                    Metrics::bump(&self.metrics.reads);
                }
                let id = self.replica.read(query, linearizable);
                self.replies.insert(id, reply);
            }
            Event::Membership { change, reply } => {
                let id = self.replica.change_membership(change);
                self.replies.insert(id, reply);
            }
            Event::Lease {
                lease,
                renew,
                reply,
            } => {
                let id = if renew {
                    self.replica.lease_keep_alive(lease)
                } else {
                    self.replica.lease_time_to_live(lease)
                };
                self.replies.insert(id, reply);
            }
            Event::Transfer { to, reply } => {
                let _ = reply.send(self.replica.transfer_leader(to));
            }
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Event::Shutdown { done } => self.begin_shutdown(done),
        }
    }

    /// As etcd does: a leader hands leadership to the most up-to-date voter
    /// first, so the cluster does not wait out an election timeout.
    fn begin_shutdown(&mut self, done: oneshot::Sender<()>) {
        let raft = self.replica.raft();
        if raft.role() == Role::Leader {
            let me = self.id();
            let best = raft
                .membership()
                .voters
                .iter()
                .filter(|v| **v != me)
                .filter_map(|v| raft.progress(*v).map(|p| (p.match_index, *v)))
                .max();
            if let Some((_, to)) = best {
                match self.replica.transfer_leader(to) {
                    Ok(()) => tracing::info!(%to, "shutting down: leadership transferred"),
                    Err(e) => tracing::warn!(%to, "shutting down: no leadership transfer: {e}"),
                }
            }
        }
        self.stopping = Some((SHUTDOWN_TRANSFER_TICKS, done));
    }

    fn on_ack(&mut self, ack: Ack) {
        match ack {
            Ack::Persisted {
                tasks,
                last,
                sync,
                snapshot,
            } => {
                self.storage_outstanding = self.storage_outstanding.saturating_sub(tasks);
                if let Some(snapshot) = snapshot {
                    self.replica.on_snapshot_saved(snapshot);
                }
                if let Some(sync) = sync {
                    self.last_sync = sync;
                }
                if let Some((index, term)) = last {
                    self.replica.on_persisted(index, term);
                }
            }
            Ack::Applied { upto, leases } => {
                self.apply_outstanding = self.apply_outstanding.saturating_sub(1);
                // Before the index: a grant is known no later than its index.
                self.replica.on_lease_changes(leases);
                if let Some(index) = upto {
                    self.replica.on_applied(index);
                }
            }
            Ack::SnapshotReady { index, data } => self.replica.on_snapshot_ready(index, data),
            Ack::StorageFailed(reason) => {
                tracing::error!("node {} stops serving: {reason}", self.id());
                self.failed = Some(reason);
            }
        }
    }

    fn status(&self) -> Status {
        let raft = self.replica.raft();
        Status {
            id: self.id(),
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader(),
            commit: raft.commit(),
            applied: raft.applied(),
            last_index: raft.log().last_index(),
            snapshot_index: raft.log().snapshot_index(),
            membership: raft.membership().clone(),
            last_sync: self.last_sync,
            tail_terms: {
                let log = raft.log();
                let last = log.last_index().0;
                let first = last
                    .saturating_sub(STATUS_TAIL - 1)
                    .max(log.first_index().0);
                (first..=last)
                    .filter_map(|i| log.term_at(Index(i)))
                    .collect()
            },
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Unreachable(id) => self.replica.report_unreachable(id),
            Inbound::Disconnected(id) => {
                let raft = self.replica.raft();
                if raft.leader() == Some(id) && raft.role() == Role::Follower {
                    tracing::info!(leader = %id, term = raft.term().0, "the leader's connection closed; standing for election soon");
                }
                self.replica.report_disconnected(id);
            }
            Inbound::Frame(frame) => {
                if let Frame::Raft(msg) = &frame {
                    if matches!(msg.body, ferrite_raft::Body::HeartbeatResponse { .. }) {
                        if let Some(sent) = self.heartbeat_sent.remove(&msg.from) {
                            self.metrics.peer_rtt.record(sent.elapsed());
                        }
                    }
                }
                if let Err(e) = self.replica.on_frame(frame) {
                    Metrics::bump(&self.metrics.peer_frames_refused);
                    tracing::warn!("refused a peer message: {e}");
                }
            }
        }
    }

    /// Executes everything the replica asks for. False if storage or apply
    /// is gone (the node cannot go on).
    async fn flush(&mut self) -> bool {
        let out = self.replica.take_output();
        self.publish();
        self.execute(out).await
    }

    async fn execute(&mut self, out: ReplicaOutput) -> bool {
        for (id, answer) in out.answers {
            if answer.is_err() {
                Metrics::bump(&self.metrics.proposals_failed);
            }
            if let Some(reply) = self.replies.remove(&id) {
                let _ = reply.send(answer);
            }
        }
        for task in out.storage {
            self.storage_outstanding += 1;
            if self.storage.send(task).await.is_err() {
                return false;
            }
        }
        for (to, frame) in out.send {
            if let Frame::Raft(msg) = &frame {
                if matches!(msg.body, ferrite_raft::Body::Heartbeat { .. }) {
                    self.heartbeat_sent.entry(to).or_insert_with(Instant::now);
                }
            }
            self.transport.send(to, &frame);
        }
        if !out.apply.is_empty() {
            let mut replies = Vec::new();
            for requester in out.apply.iter().flat_map(requesters) {
                if let Requester::Local(id) = requester {
                    if let Some(reply) = self.replies.remove(&id) {
                        replies.push((id, reply));
                    }
                }
            }
            self.apply_outstanding += 1;
            let msg = ApplyMsg {
                tasks: out.apply,
                replies,
            };
            if self.apply.send(msg).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Mirrors the replica's view into metrics and the leader watch.
    fn publish(&mut self) {
        let raft = self.replica.raft();
        let m = &self.metrics;
        Metrics::set(&m.term, raft.term().0);
        Metrics::set(&m.leader, raft.leader().map_or(0, |l| l.0));
        Metrics::set(&m.commit, raft.commit().0);
        Metrics::set(&m.applied, raft.applied().0);
        Metrics::set(&m.is_leader, u64::from(raft.role() == Role::Leader));
        let c = self.replica.counters();
        Metrics::set(&m.leases, self.replica.leases() as u64);
        Metrics::set(&m.lease_revokes_proposed, c.lease_revokes_proposed);
        Metrics::set(&m.lease_renewals, c.lease_renewals);
        Metrics::set(&m.lease_checkpoints_proposed, c.lease_checkpoints_proposed);
        if raft.role() != self.last_role {
            self.last_role = raft.role();
            tracing::debug!(role = ?self.last_role, term = raft.term().0, "role changed");
        }
        let leader = raft.leader();
        if leader != *self.leader_tx.borrow() {
            tracing::info!(
                leader = ?leader,
                term = raft.term().0,
                role = ?raft.role(),
                "leader changed"
            );
            self.leader_tx.send_replace(leader);
            if leader.is_some() {
                Metrics::bump(&self.metrics.leader_changes);
            }
        }
    }
}

/// The requesters an apply task answers (no allocation: this is on the
/// path of every write).
fn requesters(task: &ApplyTask) -> impl Iterator<Item = Requester> + '_ {
    let (waiters, one): (&[(Index, Requester)], Option<Requester>) = match task {
        ApplyTask::Restore(_) => (&[], None),
        ApplyTask::Entries { waiters, .. } => (waiters, None),
        ApplyTask::ReadAt { requester, .. } | ApplyTask::Query { requester, .. } => {
            (&[], Some(*requester))
        }
    };
    waiters.iter().map(|(_, r)| *r).chain(one)
}

fn refuse(event: Event, error: NodeError) {
    match event {
        Event::Propose { reply, .. }
        | Event::Read { reply, .. }
        | Event::Membership { reply, .. }
        | Event::Lease { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Event::Transfer { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Event::Status { .. } => {}
        Event::Shutdown { done } => {
            let _ = done.send(());
        }
    }
}
