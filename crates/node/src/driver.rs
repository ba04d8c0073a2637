//! The driver: the one task that owns the Raft core. Each turn it takes
//! everything pending (client requests, peer frames, acknowledgements from
//! storage and apply, the tick), steps the core with all of it, then executes
//! the output: writes go to the storage thread and messages to the transport
//! in parallel, committed entries to the apply thread. Followers forward
//! writes and read-index requests to the leader, so any node serves any
//! client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrite_raft::{Index, Membership, MembershipChange, NodeId, ProposeError, Raft, Role, Term};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{ApplyMsg, Reply};
use crate::codec::{Frame, Refusal};
use crate::config::NodeConfig;
use std::sync::Arc;

use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::storage::StorageMsg;
use crate::transport::{Inbound, Transport};

/// Inputs handled in one turn at most, so that output is never starved.
const TURN_INPUTS_MAX: usize = 4096;

/// What a front end may ask, and what storage and apply report.
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
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Persisted {
        last: Option<(Index, Term)>,
        /// The fdatasync's duration; None if the batch needed none.
        sync: Option<Duration>,
    },
    Applied {
        index: Index,
    },
    SnapshotReady {
        index: Index,
        data: Bytes,
    },
    StorageFailed(String),
    Shutdown,
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

enum ReadOrigin {
    Local { query: Bytes, reply: Reply },
    Remote { from: NodeId, id: u64 },
}

pub struct Driver {
    pub raft: Raft,
    pub cfg: NodeConfig,
    pub transport: Transport,
    pub storage: mpsc::UnboundedSender<StorageMsg>,
    pub apply: mpsc::UnboundedSender<ApplyMsg>,
    next_id: u64,
    /// Writes this follower forwarded to the leader, by request id, with the
    /// leader they went to.
    forwarded: BTreeMap<u64, (Instant, NodeId, Reply)>,
    /// Reads waiting for the leader's read index, by request id.
    remote_reads: BTreeMap<u64, (Instant, NodeId, Bytes, Reply)>,
    /// Read-index contexts given to the core.
    reads: BTreeMap<u64, ReadOrigin>,
    last_sync: Duration,
    failed: Option<String>,
    metrics: Arc<Metrics>,
    last_role: Role,
    /// When the oldest unanswered heartbeat to each peer left, for the
    /// round-trip metric.
    heartbeat_sent: BTreeMap<NodeId, Instant>,
    /// The leader as last seen, for front ends waiting for one (and for
    /// noticing changes).
    leader_tx: watch::Sender<Option<NodeId>>,
}

impl Driver {
    pub fn new(
        raft: Raft,
        cfg: NodeConfig,
        transport: Transport,
        storage: mpsc::UnboundedSender<StorageMsg>,
        apply: mpsc::UnboundedSender<ApplyMsg>,
        metrics: Arc<Metrics>,
        leader_tx: watch::Sender<Option<NodeId>>,
    ) -> Driver {
        Driver {
            raft,
            cfg,
            transport,
            storage,
            apply,
            next_id: 0,
            forwarded: BTreeMap::new(),
            remote_reads: BTreeMap::new(),
            reads: BTreeMap::new(),
            last_sync: Duration::ZERO,
            failed: None,
            metrics,
            last_role: Role::Follower,
            heartbeat_sent: BTreeMap::new(),
            leader_tx,
        }
    }

    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.on_tick(),
                event = events.recv() => match event {
                    Some(Event::Shutdown) | None => break,
                    Some(event) => self.on_event(event),
                },
                Some(frame) = inbound.recv() => self.on_inbound(frame),
            }
            for _ in 0..TURN_INPUTS_MAX {
                match inbound.try_recv() {
                    Ok(frame) => self.on_inbound(frame),
                    Err(_) => break,
                }
            }
            for _ in 0..TURN_INPUTS_MAX {
                match events.try_recv() {
                    Ok(Event::Shutdown) => return,
                    Ok(event) => self.on_event(event),
                    Err(_) => break,
                }
            }
            self.flush();
        }
    }

    fn id(&self) -> NodeId {
        self.cfg.id
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn on_tick(&mut self) {
        self.raft.tick();
        // Requests whose answer never came (the leader died, a message was
        // lost), or sent to a leader that no longer leads and so will never
        // answer: say so now rather than at the timeout. A forwarded write
        // may still commit, so its outcome is unknown (Timeout); a read was
        // not served and can simply be retried.
        let deadline = Instant::now().checked_sub(self.cfg.request_timeout);
        let leader = self.raft.leader();
        let gone =
            |at: &Instant, to: &NodeId| deadline.is_some_and(|d| *at < d) || leader != Some(*to);
        for (_, (_, _, reply)) in self.forwarded.extract_if(.., |_, (at, to, _)| gone(at, to)) {
            let _ = reply.send(Err(NodeError::Timeout));
        }
        for (_, (_, _, _, reply)) in self
            .remote_reads
            .extract_if(.., |_, (at, to, _, _)| gone(at, to))
        {
            let _ = reply.send(Err(NodeError::NoLeader));
        }
    }

    fn on_event(&mut self, event: Event) {
        if let Some(reason) = &self.failed {
            refuse(event, NodeError::Storage(reason.clone()));
            return;
        }
        match event {
            Event::Propose { data, reply } => self.propose(data, reply),
            Event::Read {
                query,
                linearizable,
                reply,
            } => self.read(query, linearizable, reply),
            Event::Membership { change, reply } => match self.raft.propose_membership(change) {
                Ok((index, term)) => self.wait(index, term, reply),
                Err(e) => {
                    let _ = reply.send(Err(propose_error(e)));
                }
            },
            Event::Transfer { to, reply } => {
                let _ = reply.send(self.raft.transfer_leader(to).map_err(propose_error));
            }
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Event::Persisted { last, sync } => {
                if let Some(sync) = sync {
                    self.last_sync = sync;
                }
                if let Some((index, term)) = last {
                    self.raft.on_persisted(index, term);
                }
            }
            Event::Applied { index } => self.raft.on_applied(index),
            Event::SnapshotReady { index, data } => match self.raft.compact(index, data.clone()) {
                Ok(meta) => {
                    let _ = self
                        .storage
                        .send(StorageMsg::Snapshot(ferrite_raft::Snapshot { meta, data }));
                }
                Err(e) => tracing::warn!("snapshot at {index} not used: {e}"),
            },
            Event::StorageFailed(reason) => {
                tracing::error!("node {} stops serving: {reason}", self.id());
                self.failed = Some(reason);
            }
            Event::Shutdown => {}
        }
    }

    fn status(&self) -> Status {
        Status {
            id: self.id(),
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit: self.raft.commit(),
            applied: self.raft.applied(),
            last_index: self.raft.log().last_index(),
            snapshot_index: self.raft.log().snapshot_index(),
            membership: self.raft.membership().clone(),
            last_sync: self.last_sync,
            tail_terms: {
                let log = self.raft.log();
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

    fn wait(&mut self, index: Index, term: Term, reply: Reply) {
        let _ = self.apply.send(ApplyMsg::Wait { index, term, reply });
    }

    fn propose(&mut self, data: Bytes, reply: Reply) {
        Metrics::bump(&self.metrics.proposals);
        match self.raft.propose(data.clone()) {
            Ok((index, term)) => self.wait(index, term, reply),
            Err(ProposeError::NotLeader { leader }) => {
                let id = self.next_id();
                self.forwarded.insert(id, (Instant::now(), leader, reply));
                let me = self.id();
                self.transport
                    .send(leader, &Frame::Forward { id, from: me, data });
            }
            Err(e) => {
                Metrics::bump(&self.metrics.proposals_failed);
                let _ = reply.send(Err(propose_error(e)));
            }
        }
    }

    fn read(&mut self, query: Bytes, linearizable: bool, reply: Reply) {
        if !linearizable {
            let _ = self.apply.send(ApplyMsg::Query { query, reply });
            return;
        }
        // Linearizable reads only: status pages poll with local reads.
        Metrics::bump(&self.metrics.reads);
        let ctx = self.next_id();
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.reads.insert(ctx, ReadOrigin::Local { query, reply });
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.remote_reads
                    .insert(ctx, (Instant::now(), leader, query, reply));
                let me = self.id();
                self.transport
                    .send(leader, &Frame::ReadIndex { id: ctx, from: me });
            }
            Err(e) => {
                let _ = reply.send(Err(propose_error(e)));
            }
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Unreachable(id) => self.raft.report_unreachable(id),
            Inbound::Disconnected(id) => {
                if self.raft.leader() == Some(id) && self.raft.role() == Role::Follower {
                    tracing::info!(leader = %id, term = self.raft.term().0, "the leader's connection closed; standing for election soon");
                }
                self.raft.report_disconnected(id);
            }
            Inbound::Frame(frame) => self.on_frame(frame),
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Hello { .. } => {}
            Frame::Raft(msg) => {
                let from = msg.from;
                if matches!(
                    msg.body,
                    ferrite_raft::Body::PreVote { .. }
                        | ferrite_raft::Body::PreVoteResponse { .. }
                        | ferrite_raft::Body::Vote { .. }
                        | ferrite_raft::Body::VoteResponse { .. }
                ) {
                    tracing::debug!(
                        %from,
                        term = msg.term.0,
                        my_term = self.raft.term().0,
                        my_last = self.raft.log().last_index().0,
                        my_last_term = self.raft.log().last_term().0,
                        body = ?msg.body,
                        "election message"
                    );
                }
                if matches!(msg.body, ferrite_raft::Body::HeartbeatResponse { .. }) {
                    if let Some(sent) = self.heartbeat_sent.remove(&from) {
                        self.metrics.peer_rtt.record(sent.elapsed());
                    }
                }
                if let Err(e) = self.raft.step(msg) {
                    Metrics::bump(&self.metrics.peer_frames_refused);
                    tracing::warn!(peer = %from, "refused a message: {e}");
                }
            }
            Frame::Forward { id, from, data } => self.on_forward(id, from, data),
            Frame::ForwardReply { id, result } => {
                if let Some((_, _, reply)) = self.forwarded.remove(&id) {
                    let _ = reply.send(result.map_err(refusal_error));
                }
            }
            Frame::ReadIndex { id, from } => {
                let ctx = self.next_id();
                match self.raft.read_index(ctx) {
                    Ok(()) => {
                        self.reads.insert(ctx, ReadOrigin::Remote { from, id });
                    }
                    Err(e) => {
                        let result = Err(refusal(&e));
                        self.transport
                            .send(from, &Frame::ReadIndexReply { id, result });
                    }
                }
            }
            Frame::ReadIndexReply { id, result } => {
                if let Some((_, _, query, reply)) = self.remote_reads.remove(&id) {
                    match result {
                        Ok(index) => {
                            let _ = self.apply.send(ApplyMsg::ReadAt {
                                index,
                                query,
                                reply,
                            });
                        }
                        Err(r) => {
                            let _ = reply.send(Err(refusal_error(r)));
                        }
                    }
                }
            }
        }
    }

    /// A follower's client write, proposed here; the answer goes back when
    /// it is applied.
    fn on_forward(&mut self, id: u64, from: NodeId, data: Bytes) {
        match self.raft.propose(data) {
            Ok((index, term)) => {
                let (tx, rx) = oneshot::channel();
                self.wait(index, term, tx);
                let transport = self.transport.clone();
                tokio::spawn(async move {
                    let result = match rx.await {
                        Ok(Ok(reply)) => Ok(reply),
                        Ok(Err(NodeError::Lost)) | Ok(Err(_)) | Err(_) => Err(Refusal::Busy),
                    };
                    transport.send(from, &Frame::ForwardReply { id, result });
                });
            }
            Err(e) => {
                let result = Err(refusal(&e));
                self.transport
                    .send(from, &Frame::ForwardReply { id, result });
            }
        }
    }

    /// Executes everything the core asks for, until it is quiet.
    fn flush(&mut self) {
        let m = &self.metrics;
        Metrics::set(&m.term, self.raft.term().0);
        Metrics::set(&m.leader, self.raft.leader().map_or(0, |l| l.0));
        Metrics::set(&m.commit, self.raft.commit().0);
        Metrics::set(&m.applied, self.raft.applied().0);
        Metrics::set(&m.is_leader, u64::from(self.raft.role() == Role::Leader));
        if self.raft.role() != self.last_role {
            self.last_role = self.raft.role();
            tracing::debug!(role = ?self.last_role, term = self.raft.term().0, "role changed");
        }
        let leader = self.raft.leader();
        if leader != *self.leader_tx.borrow() {
            tracing::info!(
                leader = ?leader,
                term = self.raft.term().0,
                role = ?self.raft.role(),
                "leader changed"
            );
            self.leader_tx.send_replace(leader);
            if leader.is_some() {
                Metrics::bump(&self.metrics.leader_changes);
            }
        }
        loop {
            let out = self.raft.take_output();
            if out.is_empty() {
                return;
            }
            if let Some(snapshot) = &out.persist.snapshot {
                let _ = self.apply.send(ApplyMsg::Restore(snapshot.clone()));
            }
            if !out.persist.is_empty() || !out.send_after_persist.is_empty() {
                let _ = self.storage.send(StorageMsg::Persist {
                    persist: out.persist,
                    after: out.send_after_persist,
                });
            }
            for msg in out.send {
                let to = msg.to;
                if matches!(msg.body, ferrite_raft::Body::Heartbeat { .. }) {
                    self.heartbeat_sent.entry(to).or_insert_with(Instant::now);
                }
                self.transport.send(to, &Frame::Raft(msg));
            }
            if !out.apply.is_empty() {
                let _ = self.apply.send(ApplyMsg::Entries(out.apply));
            }
            for ready in out.reads {
                match self.reads.remove(&ready.ctx) {
                    Some(ReadOrigin::Local { query, reply }) => {
                        let index = ready.index;
                        let _ = self.apply.send(ApplyMsg::ReadAt {
                            index,
                            query,
                            reply,
                        });
                    }
                    Some(ReadOrigin::Remote { from, id }) => {
                        let result = Ok(ready.index);
                        self.transport
                            .send(from, &Frame::ReadIndexReply { id, result });
                    }
                    None => {}
                }
            }
            for ctx in out.reads_dropped {
                match self.reads.remove(&ctx) {
                    Some(ReadOrigin::Local { reply, .. }) => {
                        let _ = reply.send(Err(NodeError::NoLeader));
                    }
                    Some(ReadOrigin::Remote { from, id }) => {
                        let result = Err(Refusal::NotLeader { leader: None });
                        self.transport
                            .send(from, &Frame::ReadIndexReply { id, result });
                    }
                    None => {}
                }
            }
        }
    }
}

fn refuse(event: Event, error: NodeError) {
    match event {
        Event::Propose { reply, .. }
        | Event::Read { reply, .. }
        | Event::Membership { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Event::Transfer { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        _ => {}
    }
}

pub fn propose_error(e: ProposeError) -> NodeError {
    match e {
        ProposeError::NotLeader { leader } => NodeError::NotLeader {
            leader: Some(leader),
        },
        ProposeError::NoLeader => NodeError::NoLeader,
        ProposeError::EntryTooLarge { .. } => NodeError::TooLarge,
        ProposeError::InvalidMembershipChange(reason) => NodeError::Invalid(reason),
        other => NodeError::Busy(other.to_string()),
    }
}

fn refusal(e: &ProposeError) -> Refusal {
    match e {
        ProposeError::NotLeader { leader } => Refusal::NotLeader {
            leader: Some(*leader),
        },
        ProposeError::NoLeader => Refusal::NotLeader { leader: None },
        ProposeError::EntryTooLarge { .. } => Refusal::TooLarge,
        _ => Refusal::Busy,
    }
}

fn refusal_error(r: Refusal) -> NodeError {
    match r {
        Refusal::NotLeader {
            leader: Some(leader),
        } => NodeError::NotLeader {
            leader: Some(leader),
        },
        Refusal::NotLeader { leader: None } => NodeError::NoLeader,
        Refusal::Busy => NodeError::Busy("the leader could not serve it".into()),
        Refusal::TooLarge => NodeError::TooLarge,
    }
}
