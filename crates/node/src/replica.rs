//! The replica: everything between the front ends and the Raft core, as a
//! deterministic state machine with no IO, no clock and no threads. The real
//! node runs it on a tokio task (`driver.rs`); the simulator runs the very
//! same code on virtual time. Only the network, the disk and the clock
//! differ.
//!
//! It owns the core and the requests around it:
//! - client writes: proposed here when leading, forwarded to the leader
//!   otherwise, and parked while no leader is known; each ends in exactly
//!   one outcome: applied (with the state machine's reply, answered by the
//!   apply side), definitely not applied, or unknown (see `NodeError`);
//! - linearizable reads: ReadIndex here when leading, asked of the leader
//!   otherwise; the confirmed read index goes to the apply side, which
//!   answers once it has applied that far (`apply.rs`);
//! - requests forwarded by followers, answered with frames;
//! - what the core says to persist (with its must-sync flag), send and
//!   apply, turned into tasks for the executor's storage and apply workers;
//! - time, as ticks: request deadlines are counted in them;
//! - leases (`lessor.rs`): the expiry clock runs here on the leader, which
//!   proposes revokes and checkpoints; keepalives and time-to-live queries
//!   are answered by the leader (once its leadership is confirmed and it
//!   knows every lease applied up to its commit index at their arrival),
//!   forwarded to it by followers.
//!
//! Outcomes, and why each is safe:
//! - an entry proposed here that commits with the same term is applied: the
//!   apply side answers with its reply;
//! - one whose index commits with another term was not applied
//!   (`Superseded`): it may be proposed again, and is while its deadline
//!   lasts;
//! - one whose index a snapshot from the leader covers may or may not be in
//!   it (unless its term is above the snapshot's: then it cannot be): its
//!   outcome is unknown, and it is never proposed again by the server;
//! - a forwarded write whose leader stops leading (or goes silent until the
//!   deadline) is unknown too.
//!
//! Handlers follow one shape: ignore untrusted input first (and count it),
//! then do the work; `check_invariants` asserts what must hold after every
//! input (always in the simulator, in debug builds elsewhere).

use std::collections::BTreeMap;

use bytes::Bytes;
use ferrite_raft::{
    Entry, Index, MembershipChange, Message, NodeId, Persist, ProposeError, Raft, Snapshot, Term,
};

use crate::codec::{Frame, Refusal};
use crate::error::{NodeError, Unknown};
use crate::lessor::{LeaseChange, LeaseId, LeaseProposals, LeaseTtl, Lessor, LessorConfig};

/// A request of one of this member's clients, named by the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Who waits for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// A client of this member: the executor holds its channel.
    Local(RequestId),
    /// A write forwarded by a follower: answered with a `ForwardReply`.
    Peer { from: NodeId, id: u64 },
}

/// What a request ends with.
pub type Answer = Result<Bytes, NodeError>;

/// Work for the apply side, to be done in the order given.
#[derive(Debug)]
pub enum ApplyTask {
    /// Replace the state with the leader's snapshot.
    Restore(Snapshot),
    /// Apply `entries` in order; answer each waiter with its entry's reply
    /// (the replica has checked that the entry is the waiter's own).
    Entries {
        entries: Vec<Entry>,
        waiters: Vec<(Index, Requester)>,
    },
    /// Answer `query` once everything up to `index` is applied.
    ReadAt {
        index: Index,
        query: Bytes,
        requester: Requester,
    },
    /// Answer `query` from the state as it is (a serializable read).
    Query { query: Bytes, requester: Requester },
}

/// Work for the storage side, in order.
#[derive(Debug)]
pub enum StorageTask {
    /// Write `persist`; fdatasync it first if `must_sync`; then send `after`
    /// and report `Replica::on_persisted` with `persist.last()`.
    Persist {
        persist: Persist,
        must_sync: bool,
        after: Vec<Message>,
    },
    /// A snapshot this member took: durable before the log prefix goes.
    Snapshot(Snapshot),
}

/// Everything one step asks the executor to do.
#[derive(Debug, Default)]
pub struct ReplicaOutput {
    pub storage: Vec<StorageTask>,
    /// Frames that may leave now.
    pub send: Vec<(NodeId, Frame)>,
    pub apply: Vec<ApplyTask>,
    /// Answers to local requests decided here (refusals, superseded,
    /// unknown); answers with a state machine reply come from the apply side.
    pub answers: Vec<(RequestId, Answer)>,
}

impl ReplicaOutput {
    pub fn is_empty(&self) -> bool {
        self.storage.is_empty()
            && self.send.is_empty()
            && self.apply.is_empty()
            && self.answers.is_empty()
    }
}

/// Counters of what the replica ignored or decided, for metrics and the
/// simulator's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounters {
    /// Writes this member forwarded to the leader.
    pub forwarded: u64,
    /// Frames from peers that named no request of ours (late, duplicated).
    pub ignored_frames: u64,
    /// Writes proposed again after a definite "not applied".
    pub reproposed: u64,
    /// Writes answered "unknown".
    pub unknown: u64,
    /// Writes answered "superseded" or re-proposed after it.
    pub superseded: u64,
    /// Revokes of expired leases this member proposed as leader.
    pub lease_revokes_proposed: u64,
    /// Checkpoint commands (of remaining TTLs) proposed as leader.
    pub lease_checkpoints_proposed: u64,
    /// Leases renewed here as leader.
    pub lease_renewals: u64,
    /// Snapshots the core now holds as read back from their file.
    pub snapshots_mapped: u64,
    /// Reads this member forwarded to the leader, and the `ReadIndex`
    /// frames that carried them (several reads share one).
    pub reads_forwarded: u64,
    pub read_batches: u64,
}

/// Limits of the replica.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaConfig {
    /// Ticks a request may wait for its answer before it is answered
    /// `Timeout` (a write) or its last refusal (a read, or a parked write).
    pub request_ticks: u64,
    /// Local requests waiting at once; beyond it new ones are refused busy.
    pub requests_max: usize,
    /// Where this life's request ids start: drawn at random at every start,
    /// so that a peer's late reply to a request of an earlier life of this
    /// member (a `ForwardReply` queued before a restart) names no request
    /// of this one.
    pub first_request_id: u64,
    /// The length of a tick: the lessor's clock is ticks times this.
    pub tick_ms: u64,
    /// How the lessor proposes revokes and checkpoints; None: leases are
    /// disabled and the lessor never proposes.
    pub lease_proposals: Option<LeaseProposals>,
    /// How often (in ticks) the leader checkpoints remaining TTLs.
    pub lease_checkpoint_ticks: u64,
    /// Revokes proposed per tick at most (etcd: 1000 a second).
    pub lease_revokes_per_tick_max: usize,
    /// A lease whose revoke (or reset checkpoint) was proposed but is still
    /// in the table after this many ticks is proposed again.
    pub lease_revoke_retry_ticks: u64,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            request_ticks: 50,
            requests_max: REQUESTS_MAX,
            first_request_id: 0,
            tick_ms: 100,
            lease_proposals: None,
            lease_checkpoint_ticks: 50,
            lease_revokes_per_tick_max: 100,
            lease_revoke_retry_ticks: 20,
        }
    }
}

/// Local requests (writes and reads) waiting at once, by default.
pub const REQUESTS_MAX: usize = 65_536;

struct LocalWrite {
    data: Bytes,
    deadline: u64,
    state: WriteState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum WriteState {
    /// Waiting for a leader; the last refusal is the answer at the deadline.
    Parked(NodeError),
    /// In this leader's log at `index`, proposed in `term`.
    Proposed { index: Index, term: Term },
    /// Sent to the leader `to`.
    Forwarded { to: NodeId },
}

struct LocalRead {
    query: Bytes,
    deadline: u64,
    state: ReadState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ReadState {
    Parked(NodeError),
    /// Waiting for this leader's ReadIndex with context `ctx`.
    Confirming {
        ctx: u64,
    },
    /// Asked of the leader `to`, in the forwarded batch `batch`.
    Forwarded {
        to: NodeId,
        batch: u64,
    },
}

/// Reads forwarded to the leader together: one `ReadIndex` frame, whose id
/// is the batch's, asks for a read point for all of them. Every read of a
/// batch arrived before its frame was sent, so the leader's answer, taken
/// after the frame arrives, is a valid read point for each; the leader
/// confirms one context instead of one per read.
struct ReadBatch {
    reads: Vec<RequestId>,
}

/// Who asked for a read index given to the core.
#[derive(Clone, Copy, Debug)]
enum ReadOrigin {
    Local(RequestId),
    Peer {
        from: NodeId,
        id: u64,
    },
    /// A lease request's leadership confirmation.
    Lease(LeaseOrigin),
}

/// Who asked about a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LeaseOrigin {
    Local(RequestId),
    Peer { from: NodeId, id: u64 },
}

/// A keepalive (`renew`) or time-to-live query.
struct LeaseAsk {
    lease: LeaseId,
    renew: bool,
    deadline: u64,
    stage: LeaseStage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LeaseStage {
    /// Local only: waiting for a leader; the last refusal is the answer at
    /// the deadline.
    Parked(NodeError),
    /// Local only: asked of the leader `to`.
    Forwarded { to: NodeId },
    /// Here, leading: waiting until the lessor is promoted and, if the
    /// lease is unknown, has applied up to `index` (the commit index at the
    /// request's arrival: a grant the client was answered is in there).
    Applying { index: Index },
    /// Decided (renewed, or found live); waiting for the ReadIndex round
    /// `ctx` to confirm that this member still leads.
    Confirming { ctx: u64 },
    /// Confirmed; a renew may still wait for its reset checkpoint.
    Confirmed,
}

pub struct Replica {
    raft: Raft,
    cfg: ReplicaConfig,
    /// Ticks since start.
    now: u64,
    next_id: u64,
    writes: BTreeMap<RequestId, LocalWrite>,
    reads: BTreeMap<RequestId, LocalRead>,
    /// Entries this member proposed as leader, with who waits for them.
    /// Invariant: a `Local` requester here is a write in state `Proposed`
    /// with the same index and term, or a membership change.
    proposed: BTreeMap<Index, (Term, Requester)>,
    /// Membership changes waiting for their entry.
    changes: BTreeMap<RequestId, u64>,
    read_ctx: BTreeMap<u64, ReadOrigin>,
    /// Forwarded read batches waiting for their reply, by frame id.
    read_batches: BTreeMap<u64, ReadBatch>,
    /// The batch that reads forwarded in this step join: its frame is in
    /// `out` and leaves with it, so `take_output` closes it.
    read_batch_open: Option<(NodeId, u64)>,
    /// Replies to forwarded writes the leader applied at the key's index,
    /// held until this member has applied that far.
    applied_replies: BTreeMap<Index, Vec<(RequestId, Bytes)>>,
    /// Lease requests of local clients and, on the leader, of followers.
    lease_asks: BTreeMap<LeaseOrigin, LeaseAsk>,
    lessor: Lessor,
    /// The leader when parked requests were last tried.
    last_leader: Option<NodeId>,
    out: ReplicaOutput,
    counters: ReplicaCounters,
}

impl Replica {
    pub fn new(raft: Raft, cfg: ReplicaConfig) -> Replica {
        let no_extend = raft.config().canary.no_lease_extend_on_promote();
        let applied = raft.applied();
        Replica {
            raft,
            cfg,
            now: 0,
            // Half the id space lies ahead, whatever the draw.
            next_id: cfg.first_request_id >> 1,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            proposed: BTreeMap::new(),
            changes: BTreeMap::new(),
            read_ctx: BTreeMap::new(),
            read_batches: BTreeMap::new(),
            read_batch_open: None,
            applied_replies: BTreeMap::new(),
            lease_asks: BTreeMap::new(),
            lessor: Lessor::new(
                LessorConfig {
                    tick_ms: cfg.tick_ms.max(1),
                    proposals: cfg.lease_proposals,
                    checkpoint_ticks: cfg.lease_checkpoint_ticks.max(1),
                    revokes_per_tick_max: cfg.lease_revokes_per_tick_max,
                    revoke_retry_ticks: cfg.lease_revoke_retry_ticks.max(1),
                    no_extend_on_promote: no_extend,
                },
                applied,
            ),
            last_leader: None,
            out: ReplicaOutput::default(),
            counters: ReplicaCounters::default(),
        }
    }

    // ---- Inspection -------------------------------------------------------

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn id(&self) -> NodeId {
        self.raft.id()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader()
    }

    pub fn counters(&self) -> &ReplicaCounters {
        &self.counters
    }

    /// Local requests waiting for an answer decided here (and followers'
    /// lease requests, which share the bound).
    pub fn waiting(&self) -> usize {
        self.writes.len() + self.reads.len() + self.changes.len() + self.lease_asks.len()
    }

    /// Leases this member knows of (granted and not yet revoked, as applied).
    pub fn leases(&self) -> usize {
        self.lessor.len()
    }

    /// Whether this member runs the lease expiry clock (leading, promoted).
    pub fn lessor_promoted(&self) -> bool {
        self.lessor.promoted()
    }

    // ---- Client requests --------------------------------------------------

    fn next_request(&mut self) -> RequestId {
        self.next_id = self.next_id.wrapping_add(1);
        RequestId(self.next_id)
    }

    fn full(&mut self, id: RequestId) -> bool {
        if self.waiting() >= self.cfg.requests_max {
            let busy = NodeError::Busy(format!(
                "{} requests waiting (limit {})",
                self.waiting(),
                self.cfg.requests_max
            ));
            self.out.answers.push((id, Err(busy)));
            return true;
        }
        false
    }

    /// A client write. The answer comes in `ReplicaOutput::answers` or from
    /// the apply side, under the returned id.
    pub fn propose(&mut self, data: Bytes) -> RequestId {
        let id = self.next_request();
        if self.full(id) {
            return id;
        }
        let write = LocalWrite {
            data,
            deadline: self.now + self.cfg.request_ticks,
            state: WriteState::Parked(NodeError::NoLeader),
        };
        self.writes.insert(id, write);
        self.try_write(id);
        id
    }

    /// A client read: linearizable (ReadIndex, here or at the leader) or
    /// serializable (this member's state as it is).
    pub fn read(&mut self, query: Bytes, linearizable: bool) -> RequestId {
        let id = self.next_request();
        if !linearizable {
            let requester = Requester::Local(id);
            self.out.apply.push(ApplyTask::Query { query, requester });
            return id;
        }
        if self.full(id) {
            return id;
        }
        let read = LocalRead {
            query,
            deadline: self.now + self.cfg.request_ticks,
            state: ReadState::Parked(NodeError::NoLeader),
        };
        self.reads.insert(id, read);
        self.try_read(id);
        id
    }

    /// A membership change, proposed here (only a leader takes one).
    pub fn change_membership(&mut self, change: MembershipChange) -> RequestId {
        let id = self.next_request();
        match self.raft.propose_membership(change) {
            Ok((index, term)) => {
                self.changes.insert(id, self.now + self.cfg.request_ticks);
                self.wait_for_entry(index, term, Requester::Local(id));
            }
            Err(e) => self.out.answers.push((id, Err(propose_error(e)))),
        }
        id
    }

    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), NodeError> {
        self.raft.transfer_leader(to).map_err(propose_error)
    }

    /// Tries a write where it can go now: proposed here, forwarded to the
    /// leader, or parked until one is known.
    fn try_write(&mut self, id: RequestId) {
        let Some(write) = self.writes.get(&id) else {
            return;
        };
        debug_assert!(matches!(write.state, WriteState::Parked(_)));
        let data = write.data.clone();
        let state = match self.raft.propose(data.clone()) {
            Ok((index, term)) => {
                self.wait_for_entry(index, term, Requester::Local(id));
                WriteState::Proposed { index, term }
            }
            Err(ProposeError::NotLeader { leader }) => {
                let me = self.id();
                let frame = Frame::Forward {
                    id: id.0,
                    from: me,
                    data,
                };
                self.out.send.push((leader, frame));
                self.counters.forwarded += 1;
                WriteState::Forwarded { to: leader }
            }
            Err(e) if parks(&e) => WriteState::Parked(propose_error(e)),
            Err(e) => {
                self.writes.remove(&id);
                self.out.answers.push((id, Err(propose_error(e))));
                return;
            }
        };
        if let Some(write) = self.writes.get_mut(&id) {
            write.state = state;
        }
    }

    /// The open batch of reads forwarded to `leader` in this step, or a new
    /// one whose frame is queued now.
    fn read_batch_for(&mut self, leader: NodeId) -> u64 {
        if let Some((to, batch)) = self.read_batch_open {
            if to == leader {
                return batch;
            }
        }
        let batch = self.next_request().0;
        let me = self.id();
        self.out.send.push((
            leader,
            Frame::ReadIndex {
                id: batch,
                from: me,
            },
        ));
        self.read_batches
            .insert(batch, ReadBatch { reads: Vec::new() });
        self.read_batch_open = Some((leader, batch));
        self.counters.read_batches += 1;
        batch
    }

    fn try_read(&mut self, id: RequestId) {
        let ctx = id.0;
        let state = match self.raft.read_index(ctx) {
            Ok(()) => {
                self.read_ctx.insert(ctx, ReadOrigin::Local(id));
                ReadState::Confirming { ctx }
            }
            Err(ProposeError::NotLeader { leader }) => {
                let batch = self.read_batch_for(leader);
                if let Some(b) = self.read_batches.get_mut(&batch) {
                    b.reads.push(id);
                }
                self.counters.reads_forwarded += 1;
                ReadState::Forwarded { to: leader, batch }
            }
            Err(e) if parks(&e) => ReadState::Parked(propose_error(e)),
            Err(e) => {
                self.reads.remove(&id);
                self.out.answers.push((id, Err(propose_error(e))));
                return;
            }
        };
        if let Some(read) = self.reads.get_mut(&id) {
            read.state = state;
        }
    }

    /// Someone waits for the entry proposed at `index` in `term`. An entry
    /// of an earlier term still waited for at that index was overwritten in
    /// this member's log; whether it committed elsewhere is decided when
    /// the index commits, but its waiter can no longer be told apart: it
    /// is not ours any more, so it was not applied.
    fn wait_for_entry(&mut self, index: Index, term: Term, requester: Requester) {
        if let Some((old_term, old)) = self.proposed.insert(index, (term, requester)) {
            assert!(
                old_term < term,
                "index {index} proposed twice in term {term}"
            );
            self.not_applied(old, NodeError::Superseded);
        }
    }

    // ---- Time ---------------------------------------------------------------

    /// One tick: the core's, then deadlines, then parked requests get
    /// another try.
    pub fn tick(&mut self) {
        self.now += 1;
        self.raft.tick();
        self.expire();
        self.lessor.follow_role(self.now, &self.raft);
        self.lessor
            .tick(self.now, &mut self.raft, &mut self.counters);
        self.expire_lease_asks();
        self.retry_parked();
        self.advance_lease_asks();
    }

    /// Answers the requests whose deadline passed, and forwarded ones whose
    /// leader no longer leads (it will never answer).
    fn expire(&mut self) {
        let (now, leader) = (self.now, self.raft.leader());
        let expired: Vec<RequestId> = self
            .writes
            .iter()
            .filter(|(_, w)| {
                now >= w.deadline
                    || matches!(w.state, WriteState::Forwarded { to } if leader != Some(to))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(write) = self.writes.remove(&id) else {
                continue;
            };
            let answer = match write.state {
                WriteState::Parked(last) => last,
                WriteState::Proposed { index, term } => {
                    // The apply side answers it if it still applies; nobody
                    // waits for it here any more.
                    if self.proposed.get(&index) == Some(&(term, Requester::Local(id))) {
                        self.proposed.remove(&index);
                    }
                    NodeError::Timeout
                }
                WriteState::Forwarded { to } if leader != Some(to) && now < write.deadline => {
                    self.counters.unknown += 1;
                    if self.raft.config().canary.reproposes_unknown() {
                        // Canary: treat "unknown" as "not applied".
                        self.counters.reproposed += 1;
                        let parked = WriteState::Parked(NodeError::NoLeader);
                        self.writes.insert(
                            id,
                            LocalWrite {
                                state: parked,
                                ..write
                            },
                        );
                        continue;
                    }
                    NodeError::Unknown(Unknown::LeaderChanged)
                }
                WriteState::Forwarded { .. } => NodeError::Timeout,
            };
            self.out.answers.push((id, Err(answer)));
        }
        let expired: Vec<RequestId> = self
            .reads
            .iter()
            .filter(|(_, r)| {
                now >= r.deadline
                    || matches!(r.state, ReadState::Forwarded { to, .. } if leader != Some(to))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(read) = self.reads.get_mut(&id) else {
                continue;
            };
            if now < read.deadline {
                // Its leader is gone: ask again (a read is always safe to).
                read.state = ReadState::Parked(NodeError::NoLeader);
                continue;
            }
            let Some(read) = self.reads.remove(&id) else {
                continue;
            };
            let answer = match read.state {
                ReadState::Parked(last) => last,
                ReadState::Confirming { ctx } => {
                    self.read_ctx.remove(&ctx);
                    NodeError::Timeout
                }
                ReadState::Forwarded { .. } => NodeError::Timeout,
            };
            self.out.answers.push((id, Err(answer)));
        }
        // A batch whose reads all moved on (answered, timed out, asked
        // again) will never be needed: its late reply is ignored.
        let reads = &self.reads;
        self.read_batches.retain(|batch, b| {
            b.reads.iter().any(|id| {
                matches!(reads.get(id).map(|r| &r.state), Some(ReadState::Forwarded { batch: b, .. }) if b == batch)
            })
        });
        let expired: Vec<RequestId> = self
            .changes
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.changes.remove(&id);
            self.proposed.retain(|_, (_, r)| *r != Requester::Local(id));
            self.out.answers.push((id, Err(NodeError::Timeout)));
        }
    }

    /// Gives every parked request another try; called on ticks and when a
    /// leader becomes known, never in a loop of its own.
    fn retry_parked(&mut self) {
        let writes: Vec<RequestId> = self
            .writes
            .iter()
            .filter(|(_, w)| matches!(w.state, WriteState::Parked(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in writes {
            self.try_write(id);
        }
        let reads: Vec<RequestId> = self
            .reads
            .iter()
            .filter(|(_, r)| matches!(r.state, ReadState::Parked(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in reads {
            self.try_read(id);
        }
    }

    // ---- Outcomes -------------------------------------------------------------

    /// `requester`'s write was definitely not applied: a local one goes
    /// again while its deadline lasts, a peer's is told so.
    fn not_applied(&mut self, requester: Requester, why: NodeError) {
        debug_assert!(why.not_applied(), "{why:?}");
        if why == NodeError::Superseded {
            self.counters.superseded += 1;
        }
        match requester {
            Requester::Local(id) => {
                if self.changes.remove(&id).is_some() {
                    self.out.answers.push((id, Err(why)));
                    return;
                }
                let Some(write) = self.writes.get_mut(&id) else {
                    return;
                };
                if self.now < write.deadline && why.retryable() {
                    self.counters.reproposed += 1;
                    write.state = WriteState::Parked(why);
                    if self.raft.leader().is_some() {
                        self.try_write(id);
                    }
                } else {
                    self.writes.remove(&id);
                    self.out.answers.push((id, Err(why)));
                }
            }
            Requester::Peer { from, id } => {
                let result = Err(refusal(&why));
                self.out
                    .send
                    .push((from, Frame::ForwardReply { id, result }));
            }
        }
    }

    /// `requester`'s write may or may not have been applied: it is answered
    /// so and never proposed again by the server.
    fn unknown(&mut self, requester: Requester, why: Unknown) {
        self.counters.unknown += 1;
        match requester {
            Requester::Local(id) => {
                if self.changes.remove(&id).is_some() {
                    self.out.answers.push((id, Err(NodeError::Unknown(why))));
                    return;
                }
                let Some(write) = self.writes.get_mut(&id) else {
                    return;
                };
                if self.raft.config().canary.reproposes_unknown() && self.now < write.deadline {
                    // Canary: the bug this module exists to prevent.
                    self.counters.reproposed += 1;
                    write.state = WriteState::Parked(NodeError::NoLeader);
                    return;
                }
                self.writes.remove(&id);
                self.out.answers.push((id, Err(NodeError::Unknown(why))));
            }
            Requester::Peer { from, id } => {
                let result = Err(Refusal::Unknown);
                self.out
                    .send
                    .push((from, Frame::ForwardReply { id, result }));
            }
        }
    }

    // ---- Peers ---------------------------------------------------------------

    /// A frame from a peer. Raft messages the core refuses are counted and
    /// dropped; replies that name no waiting request (late, after a
    /// deadline) are ignored.
    pub fn on_frame(&mut self, frame: Frame) -> Result<(), ferrite_raft::StepError> {
        match frame {
            Frame::Hello { .. } => {}
            Frame::Raft(msg) => self.raft.step(msg)?,
            Frame::Forward { id, from, data } => self.on_forward(id, from, data),
            Frame::ForwardReply { id, result } => {
                self.on_forward_reply(RequestId(id), result, Index(0))
            }
            Frame::ForwardApplied { id, index, reply } => {
                self.on_forward_reply(RequestId(id), Ok(reply), index)
            }
            Frame::ReadIndex { id, from } => self.on_read_index(id, from),
            Frame::ReadIndexReply { id, result } => self.on_read_index_reply(RequestId(id), result),
            Frame::LeaseRenew {
                id,
                from,
                lease,
                renew,
            } => self.on_lease_renew(id, from, lease, renew),
            Frame::LeaseRenewReply { id, result } => {
                self.on_lease_renew_reply(RequestId(id), result)
            }
        }
        Ok(())
    }

    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.raft.report_unreachable(peer);
    }

    pub fn report_disconnected(&mut self, peer: NodeId) {
        self.raft.report_disconnected(peer);
    }

    /// A follower's client write, proposed here; the apply side answers it
    /// with a frame once applied.
    fn on_forward(&mut self, id: u64, from: NodeId, data: Bytes) {
        match self.raft.propose(data) {
            Ok((index, term)) => self.wait_for_entry(index, term, Requester::Peer { from, id }),
            Err(e) => {
                let result = Err(refusal(&propose_error(e)));
                self.out
                    .send
                    .push((from, Frame::ForwardReply { id, result }));
            }
        }
    }

    /// `index`: apply must reach it here before the client is answered
    /// (0: answer at once).
    fn on_forward_reply(&mut self, id: RequestId, result: Result<Bytes, Refusal>, index: Index) {
        let forwarded = self
            .writes
            .get(&id)
            .is_some_and(|w| matches!(w.state, WriteState::Forwarded { .. }));
        if !forwarded {
            self.counters.ignored_frames += 1;
            return;
        }
        match result {
            Ok(reply) => {
                self.writes.remove(&id);
                if index > self.raft.applied() {
                    self.applied_replies
                        .entry(index)
                        .or_default()
                        .push((id, reply));
                } else {
                    self.out.answers.push((id, Ok(reply)));
                }
            }
            Err(Refusal::Unknown) => self.unknown(Requester::Local(id), Unknown::LeaderChanged),
            Err(r) => self.not_applied(Requester::Local(id), refusal_error(r)),
        }
    }

    fn on_read_index(&mut self, id: u64, from: NodeId) {
        // Read contexts and request ids come from one counter: a peer's
        // context never meets a local read's.
        let ctx = self.next_request().0;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.read_ctx.insert(ctx, ReadOrigin::Peer { from, id });
            }
            Err(e) => {
                let result = Err(refusal(&propose_error(e)));
                self.out
                    .send
                    .push((from, Frame::ReadIndexReply { id, result }));
            }
        }
    }

    /// The leader's answer for a batch of forwarded reads (`id` is the
    /// batch's): each read still waiting on it is served at that index, or
    /// parked with the refusal.
    fn on_read_index_reply(&mut self, id: RequestId, result: Result<Index, Refusal>) {
        let batch = id.0;
        let Some(b) = self.read_batches.remove(&batch) else {
            self.counters.ignored_frames += 1;
            return;
        };
        if self.read_batch_open.is_some_and(|(_, open)| open == batch) {
            self.read_batch_open = None;
        }
        for id in b.reads {
            let waiting = self.reads.get(&id).is_some_and(
                |r| matches!(r.state, ReadState::Forwarded { batch: b, .. } if b == batch),
            );
            if !waiting {
                continue;
            }
            match result {
                Ok(index) => {
                    if let Some(read) = self.reads.remove(&id) {
                        let requester = Requester::Local(id);
                        let query = read.query;
                        self.out.apply.push(ApplyTask::ReadAt {
                            index,
                            query,
                            requester,
                        });
                    }
                }
                Err(r) => {
                    if let Some(read) = self.reads.get_mut(&id) {
                        read.state = ReadState::Parked(refusal_error(r));
                    }
                }
            }
        }
    }

    // ---- Storage and apply report back ------------------------------------

    /// Storage made everything up to `(index, term)` durable.
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        self.raft.on_persisted(index, term);
    }

    /// The apply side has applied everything up to `index`. Lease changes
    /// applied at or below it must have been given to `on_lease_changes`
    /// first.
    pub fn on_applied(&mut self, index: Index) {
        self.raft.on_applied(index);
        while let Some(entry) = self.applied_replies.first_entry() {
            if *entry.key() > index {
                break;
            }
            for (id, reply) in entry.remove() {
                self.out.answers.push((id, Ok(reply)));
            }
        }
        self.lessor.on_applied(index);
        self.lessor.settle_resets(self.now, &mut self.raft);
        self.advance_lease_asks();
    }

    /// Changes to the lease table the apply side made, in log order (at
    /// start: the table the machine recovered, as a `Reset`).
    pub fn on_lease_changes(&mut self, changes: Vec<LeaseChange>) {
        if changes.is_empty() {
            return;
        }
        self.lessor.on_changes(self.now, changes);
        self.advance_lease_asks();
    }

    /// The state machine's snapshot at `index` is encoded and durable: the
    /// log up to there may go, once the snapshot file is saved.
    pub fn on_snapshot_ready(&mut self, index: Index, data: Bytes) {
        match self.raft.compact(index, data.clone()) {
            Ok(meta) => self
                .out
                .storage
                .push(StorageTask::Snapshot(Snapshot { meta, data })),
            Err(e) => tracing::warn!("snapshot at {index} not used: {e}"),
        }
    }

    /// The snapshot storage saved, read back from its file: the core holds
    /// it instead of the copy it was given (a memory map on real disks, so
    /// the last snapshot costs no heap beside the state it was taken from).
    pub fn on_snapshot_saved(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if self.raft.use_snapshot_data(index, snapshot.data) {
            self.counters.snapshots_mapped += 1;
        }
    }

    // ---- Output ---------------------------------------------------------------

    /// Everything to do now, until the core is quiet.
    pub fn take_output(&mut self) -> ReplicaOutput {
        if self.raft.leader() != self.last_leader {
            self.last_leader = self.raft.leader();
            if self.last_leader.is_some() {
                self.retry_parked();
            }
        }
        self.advance_lease_asks();
        self.lessor.flush_resets(&mut self.raft);
        loop {
            let out = self.raft.take_output();
            if out.is_empty() {
                break;
            }
            if let Some(snapshot) = &out.persist.snapshot {
                self.on_snapshot_installed(snapshot.meta.index, snapshot.meta.term);
                self.out.apply.push(ApplyTask::Restore(snapshot.clone()));
            }
            if !out.persist.is_empty() || !out.send_after_persist.is_empty() {
                self.out.storage.push(StorageTask::Persist {
                    persist: out.persist,
                    must_sync: out.must_sync,
                    after: out.send_after_persist,
                });
            }
            for msg in out.send {
                self.out.send.push((msg.to, Frame::Raft(msg)));
            }
            if !out.apply.is_empty() {
                self.hand_to_apply(out.apply);
            }
            for ready in out.reads {
                self.on_read_ready(ready.ctx, ready.index);
            }
            for ctx in out.reads_dropped {
                self.on_read_dropped(ctx);
            }
        }
        self.check_invariants();
        // What was forwarded in this step leaves now: later reads need a
        // frame of their own.
        self.read_batch_open = None;
        std::mem::take(&mut self.out)
    }

    /// Committed entries go to the apply side with their waiters: an entry
    /// with the term it was proposed in is the waiter's own; one with
    /// another term took its place, so the waiter's was not applied.
    fn hand_to_apply(&mut self, entries: Vec<Entry>) {
        let mut waiters = Vec::new();
        let (first, last) = match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => (f.index, l.index),
            _ => return,
        };
        assert_eq!(
            last.distance_from(first) as usize + 1,
            entries.len(),
            "entries {first}..={last} handed to apply are not contiguous"
        );
        // Proposals go after the log's end, beyond what was handed out: a
        // waiter below these entries would never be answered.
        assert!(
            self.proposed.range(..first).next().is_none(),
            "a waiter below the first entry handed to apply ({first}) was skipped"
        );
        let waiting: Vec<Index> = self.proposed.range(first..=last).map(|(i, _)| *i).collect();
        for index in waiting {
            let Some((term, requester)) = self.proposed.remove(&index) else {
                continue;
            };
            let entry_term = entries
                .get(index.distance_from(first) as usize)
                .map(|e| e.term);
            if entry_term == Some(term) {
                if let Requester::Local(id) = requester {
                    self.writes.remove(&id);
                    self.changes.remove(&id);
                }
                waiters.push((index, requester));
            } else {
                self.not_applied(requester, NodeError::Superseded);
            }
        }
        debug_assert!(waiters.iter().all(|(i, _)| *i >= first && *i <= last));
        self.out.apply.push(ApplyTask::Entries { entries, waiters });
    }

    /// A snapshot from the leader replaced the log up to `index`: entries
    /// this member proposed at or below it are in the snapshot or not, and
    /// their replies are not. Only one proposed in a term above the
    /// snapshot's is certainly not in it (the committed entry at its index
    /// has a term at most the snapshot's).
    fn on_snapshot_installed(&mut self, index: Index, term: Term) {
        let covered: Vec<Index> = self.proposed.range(..=index).map(|(i, _)| *i).collect();
        for i in covered {
            let Some((entry_term, requester)) = self.proposed.remove(&i) else {
                continue;
            };
            if entry_term > term {
                self.not_applied(requester, NodeError::Superseded);
            } else {
                self.unknown(requester, Unknown::CoveredBySnapshot);
            }
        }
    }

    fn on_read_ready(&mut self, ctx: u64, index: Index) {
        match self.read_ctx.remove(&ctx) {
            Some(ReadOrigin::Local(id)) => {
                if let Some(read) = self.reads.remove(&id) {
                    let requester = Requester::Local(id);
                    self.out.apply.push(ApplyTask::ReadAt {
                        index,
                        query: read.query,
                        requester,
                    });
                }
            }
            Some(ReadOrigin::Peer { from, id }) => {
                let result = Ok(index);
                self.out
                    .send
                    .push((from, Frame::ReadIndexReply { id, result }));
            }
            Some(ReadOrigin::Lease(origin)) => self.on_lease_confirmed(origin),
            None => {}
        }
    }

    /// Leadership was lost before the read was confirmed: a local read goes
    /// again, a peer's is told to.
    fn on_read_dropped(&mut self, ctx: u64) {
        match self.read_ctx.remove(&ctx) {
            Some(ReadOrigin::Local(id)) => {
                if let Some(read) = self.reads.get_mut(&id) {
                    read.state = ReadState::Parked(NodeError::NoLeader);
                }
            }
            Some(ReadOrigin::Peer { from, id }) => {
                let result = Err(Refusal::NotLeader { leader: None });
                self.out
                    .send
                    .push((from, Frame::ReadIndexReply { id, result }));
            }
            Some(ReadOrigin::Lease(origin)) => self.lease_leader_lost(origin),
            None => {}
        }
    }

    /// Stops: every request still waiting here is answered. A write that
    /// was proposed or forwarded may still commit: its outcome is unknown.
    pub fn stop(&mut self) -> ReplicaOutput {
        for (id, write) in std::mem::take(&mut self.writes) {
            let answer = match write.state {
                WriteState::Parked(last) => last,
                _ => NodeError::Stopped,
            };
            self.out.answers.push((id, Err(answer)));
        }
        for (id, _) in std::mem::take(&mut self.reads) {
            self.out.answers.push((id, Err(NodeError::Stopped)));
        }
        // Applied by the leader: the reply is true whether or not this
        // member gets to apply it.
        for (_, replies) in std::mem::take(&mut self.applied_replies) {
            for (id, reply) in replies {
                self.out.answers.push((id, Ok(reply)));
            }
        }
        for (id, _) in std::mem::take(&mut self.changes) {
            self.out.answers.push((id, Err(NodeError::Stopped)));
        }
        for (origin, ask) in std::mem::take(&mut self.lease_asks) {
            if let LeaseOrigin::Local(id) = origin {
                let answer = match ask.stage {
                    LeaseStage::Parked(last) => last,
                    _ => NodeError::Stopped,
                };
                self.out.answers.push((id, Err(answer)));
            }
        }
        for (_, (_, requester)) in std::mem::take(&mut self.proposed) {
            if let Requester::Peer { from, id } = requester {
                let result = Err(Refusal::Unknown);
                self.out
                    .send
                    .push((from, Frame::ForwardReply { id, result }));
            }
        }
        self.read_ctx.clear();
        self.read_batches.clear();
        self.read_batch_open = None;
        std::mem::take(&mut self.out)
    }

    /// What must hold after every input. Cheap enough for every simulated
    /// step; the real node runs it in debug builds.
    pub fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
    }

    pub fn assert_invariants(&self) {
        self.raft.assert_invariants();
        for (id, write) in &self.writes {
            if let WriteState::Proposed { index, term } = write.state {
                assert_eq!(
                    self.proposed.get(&index),
                    Some(&(term, Requester::Local(*id))),
                    "write {id:?} proposed at {index} in {term} is not waited for there"
                );
            }
            assert!(
                write.deadline <= self.now + self.cfg.request_ticks,
                "write {id:?} deadline {} beyond now {} + {}",
                write.deadline,
                self.now,
                self.cfg.request_ticks
            );
        }
        for (index, (term, requester)) in &self.proposed {
            if let Requester::Local(id) = requester {
                let own = self.writes.get(id).is_some_and(|w| {
                    w.state
                        == WriteState::Proposed {
                            index: *index,
                            term: *term,
                        }
                });
                assert!(
                    own || self.changes.contains_key(id),
                    "entry {index} waited for by {id:?}, which waits for nothing there"
                );
            }
        }
        for (id, read) in &self.reads {
            if let ReadState::Forwarded { batch, .. } = read.state {
                assert!(
                    self.read_batches
                        .get(&batch)
                        .is_some_and(|b| b.reads.contains(id)),
                    "read {id:?} forwarded in batch {batch}, which does not hold it"
                );
            }
            if let ReadState::Confirming { ctx } = read.state {
                assert!(
                    matches!(self.read_ctx.get(&ctx), Some(ReadOrigin::Local(r)) if r == id),
                    "read {id:?} confirming with context {ctx} the core does not hold for it"
                );
            }
        }
        self.assert_lease_invariants();
        assert!(
            self.waiting() <= self.cfg.requests_max,
            "waiting={} max={}",
            self.waiting(),
            self.cfg.requests_max
        );
    }
}

// ---- Leases -------------------------------------------------------------------

impl Replica {
    /// A keepalive: renews `lease` (a full TTL from now on the leader's
    /// clock) and answers its TTL (`LeaseTtl::encode`), or
    /// `LeaseNotFound` if it is unknown or expired.
    pub fn lease_keep_alive(&mut self, lease: LeaseId) -> RequestId {
        self.lease_ask(lease, true)
    }

    /// A time-to-live query: like a keepalive, but extends nothing.
    pub fn lease_time_to_live(&mut self, lease: LeaseId) -> RequestId {
        self.lease_ask(lease, false)
    }

    fn lease_ask(&mut self, lease: LeaseId, renew: bool) -> RequestId {
        let id = self.next_request();
        if self.full(id) {
            return id;
        }
        let ask = LeaseAsk {
            lease,
            renew,
            deadline: self.now + self.cfg.request_ticks,
            stage: LeaseStage::Parked(NodeError::NoLeader),
        };
        self.lease_asks.insert(LeaseOrigin::Local(id), ask);
        self.advance_lease_asks();
        id
    }

    /// A follower's lease request, decided here if leading.
    fn on_lease_renew(&mut self, id: u64, from: NodeId, lease: LeaseId, renew: bool) {
        let origin = LeaseOrigin::Peer { from, id };
        if self.raft.role() != ferrite_raft::Role::Leader {
            let leader = self.raft.leader().filter(|l| *l != self.id());
            let result = Err(Refusal::NotLeader { leader });
            self.out
                .send
                .push((from, Frame::LeaseRenewReply { id, result }));
            return;
        }
        if self.waiting() >= self.cfg.requests_max || self.lease_asks.contains_key(&origin) {
            let result = Err(Refusal::Busy);
            self.out
                .send
                .push((from, Frame::LeaseRenewReply { id, result }));
            return;
        }
        let ask = LeaseAsk {
            lease,
            renew,
            deadline: self.now + self.cfg.request_ticks,
            stage: LeaseStage::Applying {
                index: self.raft.commit(),
            },
        };
        self.lease_asks.insert(origin, ask);
        self.advance_lease(origin);
    }

    fn on_lease_renew_reply(&mut self, id: RequestId, result: Result<LeaseTtl, Refusal>) {
        let origin = LeaseOrigin::Local(id);
        let forwarded = self
            .lease_asks
            .get(&origin)
            .is_some_and(|a| matches!(a.stage, LeaseStage::Forwarded { .. }));
        if !forwarded {
            self.counters.ignored_frames += 1;
            return;
        }
        match result {
            Ok(ttl) => self.answer_lease(origin, Ok(ttl)),
            Err(Refusal::LeaseNotFound) => self.answer_lease(origin, Err(NodeError::LeaseNotFound)),
            Err(r) => {
                if let Some(ask) = self.lease_asks.get_mut(&origin) {
                    ask.stage = LeaseStage::Parked(refusal_error(r));
                }
            }
        }
    }

    /// Moves every lease request on as far as it can go now. Called on
    /// ticks, on what apply reports, and when the leader changes.
    fn advance_lease_asks(&mut self) {
        self.lessor.follow_role(self.now, &self.raft);
        if self.lease_asks.is_empty() {
            return;
        }
        let origins: Vec<LeaseOrigin> = self.lease_asks.keys().copied().collect();
        for origin in origins {
            self.advance_lease(origin);
        }
    }

    fn advance_lease(&mut self, origin: LeaseOrigin) {
        let Some(ask) = self.lease_asks.get(&origin) else {
            return;
        };
        let leading = self.raft.role() == ferrite_raft::Role::Leader;
        match ask.stage.clone() {
            LeaseStage::Parked(_) => self.route_lease(origin),
            LeaseStage::Forwarded { .. } => {}
            LeaseStage::Applying { .. } | LeaseStage::Confirmed if !leading => {
                self.lease_leader_lost(origin)
            }
            LeaseStage::Applying { index } => self.decide_lease(origin, index),
            LeaseStage::Confirming { .. } => {}
            LeaseStage::Confirmed => self.maybe_answer_lease(origin),
        }
    }

    /// A parked local request: decided here when leading, asked of the
    /// leader otherwise, or left parked until one is known.
    fn route_lease(&mut self, origin: LeaseOrigin) {
        let LeaseOrigin::Local(id) = origin else {
            return;
        };
        let Some(ask) = self.lease_asks.get_mut(&origin) else {
            return;
        };
        debug_assert!(matches!(ask.stage, LeaseStage::Parked(_)));
        let me = self.raft.id();
        match self.raft.leader() {
            Some(leader) if leader == me && self.raft.role() == ferrite_raft::Role::Leader => {
                ask.stage = LeaseStage::Applying {
                    index: self.raft.commit(),
                };
                self.advance_lease(origin);
            }
            Some(leader) if leader != me => {
                let frame = Frame::LeaseRenew {
                    id: id.0,
                    from: me,
                    lease: ask.lease,
                    renew: ask.renew,
                };
                ask.stage = LeaseStage::Forwarded { to: leader };
                self.out.send.push((leader, frame));
            }
            _ => {}
        }
    }

    /// On the promoted leader, with the lease table caught up: not found,
    /// or renewed (or found live) and then confirmed by a ReadIndex round.
    fn decide_lease(&mut self, origin: LeaseOrigin, index: Index) {
        let Some(ask) = self.lease_asks.get(&origin) else {
            return;
        };
        let (lease, renew) = (ask.lease, ask.renew);
        if !self.lessor.promoted() {
            return;
        }
        if !self.lessor.is_known(lease) && self.lessor.applied() < index {
            // etcd's waitAppliedIndex: its grant may be committed, not yet
            // applied here.
            return;
        }
        if !self.lessor.is_live(self.now, lease) {
            self.answer_lease(origin, Err(NodeError::LeaseNotFound));
            return;
        }
        assert!(self.lessor.is_known(lease), "a live lease {lease} is known");
        if renew {
            self.counters.lease_renewals += 1;
            // Whether it must wait for a reset is asked once confirmed.
            self.lessor.renew(self.now, lease, &mut self.raft);
        }
        let ctx = self.next_request().0;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.read_ctx.insert(ctx, ReadOrigin::Lease(origin));
                if let Some(ask) = self.lease_asks.get_mut(&origin) {
                    ask.stage = LeaseStage::Confirming { ctx };
                }
            }
            Err(ProposeError::NotLeader { .. } | ProposeError::NoLeader) => {
                self.lease_leader_lost(origin)
            }
            Err(e) => self.answer_lease(origin, Err(propose_error(e))),
        }
    }

    /// This member still led after the request was decided.
    fn on_lease_confirmed(&mut self, origin: LeaseOrigin) {
        let Some(ask) = self.lease_asks.get_mut(&origin) else {
            return;
        };
        assert!(
            matches!(ask.stage, LeaseStage::Confirming { .. }),
            "{origin:?} confirmed in stage {:?}",
            ask.stage
        );
        ask.stage = LeaseStage::Confirmed;
        self.maybe_answer_lease(origin);
    }

    /// Answers a confirmed request, unless a renew still waits for its
    /// reset checkpoint to be applied (see `lessor.rs`).
    fn maybe_answer_lease(&mut self, origin: LeaseOrigin) {
        let Some(ask) = self.lease_asks.get(&origin) else {
            return;
        };
        debug_assert_eq!(ask.stage, LeaseStage::Confirmed);
        let (lease, renew) = (ask.lease, ask.renew);
        if renew && !self.lessor.reset_done(lease) {
            return;
        }
        let answer = self
            .lessor
            .ttl(self.now, lease, renew)
            .ok_or(NodeError::LeaseNotFound);
        self.answer_lease(origin, answer);
    }

    /// Leadership was lost under a request being decided here: a local one
    /// goes again (a renew is safe to repeat), a follower's is told.
    fn lease_leader_lost(&mut self, origin: LeaseOrigin) {
        let Some(ask) = self.lease_asks.get_mut(&origin) else {
            return;
        };
        if let LeaseStage::Confirming { ctx } = ask.stage {
            self.read_ctx.remove(&ctx);
        }
        match origin {
            LeaseOrigin::Local(_) => ask.stage = LeaseStage::Parked(NodeError::NoLeader),
            LeaseOrigin::Peer { .. } => {
                let leader = self.raft.leader().filter(|l| *l != self.raft.id());
                self.answer_lease(origin, Err(NodeError::NotLeader { leader }));
            }
        }
    }

    fn answer_lease(&mut self, origin: LeaseOrigin, answer: Result<LeaseTtl, NodeError>) {
        if let Some(LeaseAsk {
            stage: LeaseStage::Confirming { ctx },
            ..
        }) = self.lease_asks.remove(&origin)
        {
            self.read_ctx.remove(&ctx);
        }
        match origin {
            LeaseOrigin::Local(id) => {
                self.out.answers.push((id, answer.map(|t| t.encode())));
            }
            LeaseOrigin::Peer { from, id } => {
                let result = answer.map_err(|e| refusal(&e));
                self.out
                    .send
                    .push((from, Frame::LeaseRenewReply { id, result }));
            }
        }
    }

    /// Deadlines: a local request gets its last refusal (or `Timeout`), a
    /// follower's is dropped (the follower times it out). A forwarded one
    /// whose leader no longer leads is asked again.
    fn expire_lease_asks(&mut self) {
        let (now, leader) = (self.now, self.raft.leader());
        let due: Vec<LeaseOrigin> = self
            .lease_asks
            .iter()
            .filter(|(_, a)| {
                now >= a.deadline
                    || matches!(a.stage, LeaseStage::Forwarded { to } if leader != Some(to))
            })
            .map(|(o, _)| *o)
            .collect();
        for origin in due {
            let Some(ask) = self.lease_asks.get_mut(&origin) else {
                continue;
            };
            if now < ask.deadline {
                ask.stage = LeaseStage::Parked(NodeError::NoLeader);
                continue;
            }
            let Some(ask) = self.lease_asks.remove(&origin) else {
                continue;
            };
            if let LeaseStage::Confirming { ctx } = ask.stage {
                self.read_ctx.remove(&ctx);
            }
            if let LeaseOrigin::Local(id) = origin {
                let answer = match ask.stage {
                    LeaseStage::Parked(last) => last,
                    _ => NodeError::Timeout,
                };
                self.out.answers.push((id, Err(answer)));
            }
        }
    }

    fn assert_lease_invariants(&self) {
        self.lessor.assert_invariants();
        for (origin, ask) in &self.lease_asks {
            match ask.stage {
                LeaseStage::Confirming { ctx } => assert!(
                    matches!(self.read_ctx.get(&ctx), Some(ReadOrigin::Lease(o)) if o == origin),
                    "{origin:?} confirming with context {ctx} the core does not hold for it"
                ),
                LeaseStage::Parked(_) | LeaseStage::Forwarded { .. } => assert!(
                    matches!(origin, LeaseOrigin::Local(_)),
                    "a follower's lease request {origin:?} in stage {:?}",
                    ask.stage
                ),
                LeaseStage::Applying { .. } | LeaseStage::Confirmed => {}
            }
            assert!(
                ask.deadline <= self.now + self.cfg.request_ticks,
                "{origin:?} deadline {} beyond now {} + {}",
                ask.deadline,
                self.now,
                self.cfg.request_ticks
            );
        }
    }
}

/// Refusals after which a request waits for a leader instead of failing.
fn parks(e: &ProposeError) -> bool {
    matches!(
        e,
        ProposeError::NoLeader | ProposeError::LeaderNotReady | ProposeError::TransferInProgress
    )
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

/// What a follower is told about its forwarded request.
pub fn refusal(e: &NodeError) -> Refusal {
    match e {
        NodeError::NotLeader { leader } => Refusal::NotLeader { leader: *leader },
        NodeError::NoLeader => Refusal::NotLeader { leader: None },
        NodeError::TooLarge => Refusal::TooLarge,
        NodeError::Superseded => Refusal::Superseded,
        NodeError::LeaseNotFound => Refusal::LeaseNotFound,
        e if e.is_unknown() => Refusal::Unknown,
        _ => Refusal::Busy,
    }
}

/// What a follower's client is told of the leader's refusal.
pub(crate) fn refusal_error(r: Refusal) -> NodeError {
    match r {
        Refusal::NotLeader {
            leader: Some(leader),
        } => NodeError::NotLeader {
            leader: Some(leader),
        },
        Refusal::NotLeader { leader: None } => NodeError::NoLeader,
        Refusal::Busy => NodeError::Busy("the leader could not take it".into()),
        Refusal::TooLarge => NodeError::TooLarge,
        Refusal::Superseded => NodeError::Superseded,
        Refusal::Unknown => NodeError::Unknown(Unknown::LeaderChanged),
        Refusal::LeaseNotFound => NodeError::LeaseNotFound,
    }
}
