//! The Raft node as a pure state machine: its state, construction from
//! durable state, the tick, the message dispatch and the hand-over of
//! output. The rules themselves live in `election.rs`, `replication.rs`,
//! `leader.rs` and `snapshot_transfer.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::error::{ConfigError, StepError};
use crate::log::{Entry, Log};
use crate::membership::Membership;
use crate::message::{Body, Message};
use crate::output::{HardState, Output, ReadReady};
use crate::prng::Prng;
use crate::progress::Progress;
use crate::snapshot::{Incoming, Snapshot, SnapshotMeta};
use crate::types::{Index, NodeId, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking for pre-votes: has not changed its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// What a node finds on its disk at start.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    pub hard_state: HardState,
    /// The latest durable snapshot. A node that restarts restores its state
    /// machine from it before applying anything the core hands out.
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl DurableState {
    /// The state of a founding member of a new cluster: an empty snapshot at
    /// index 0 that names the initial voters. Every founder must be given the
    /// same voters.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> DurableState {
        DurableState {
            hard_state: HardState::default(),
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    index: Index::ZERO,
                    term: Term::ZERO,
                    membership: Membership::new(voters),
                },
                data: Bytes::new(),
            }),
            entries: Vec::new(),
        }
    }

    /// The state of a node that joins an existing cluster: it knows nothing
    /// and waits for a leader to replicate the log (or a snapshot) to it.
    pub fn joining() -> DurableState {
        DurableState::default()
    }
}

/// A ReadIndex request waiting for a heartbeat round to confirm leadership.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub ctx: u64,
    pub index: Index,
    pub round: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub to: NodeId,
    /// Ticks since the transfer began; abandoned after an election timeout.
    pub elapsed: u32,
    /// TimeoutNow went out: the target needs it once.
    pub sent: bool,
}

pub struct Raft {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) prng: Prng,

    // Durable (mirrored in `HardState`).
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    /// Invariant: `log.snapshot_index() <= commit <= log.last_index()`.
    pub(crate) commit: Index,
    pub(crate) log: Log,

    // Volatile.
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// Entries up to here are durable in the current log.
    pub(crate) persisted: Index,
    /// Committed entries up to here have been handed out for apply.
    /// Invariant: `handed <= commit` and `handed <= max(persisted, snapshot)`.
    pub(crate) handed: Index,
    /// What the caller has reported as applied.
    pub(crate) applied: Index,
    /// Batches handed out for apply and not yet reported applied: each
    /// batch's last index and payload bytes, oldest first.
    /// Invariant: `applying_bytes` is the sum of the batches' bytes.
    pub(crate) applying: VecDeque<(Index, usize)>,
    pub(crate) applying_bytes: usize,
    pub(crate) membership: Membership,
    /// Where `membership` came from: a config entry, or the snapshot's index.
    pub(crate) membership_index: Index,
    /// The configuration at `log.snapshot_index()`.
    pub(crate) snapshot_membership: Membership,
    /// The latest snapshot, kept to send to followers that need it.
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) incoming: Option<Incoming>,

    pub(crate) election_elapsed: u32,
    /// Randomized in `[election_ticks_min, 2 * election_ticks_min)`.
    pub(crate) election_timeout: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) votes: BTreeMap<NodeId, bool>,

    // Leader only.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Index of this leader's no-op: reads and membership changes wait until
    /// it is committed.
    pub(crate) term_start: Index,
    pub(crate) uncommitted_bytes: usize,
    pub(crate) transfer: Option<Transfer>,
    pub(crate) reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed its no-op.
    pub(crate) reads_waiting: VecDeque<u64>,
    pub(crate) read_round: u64,
    pub(crate) read_round_wanted: bool,
    pub(crate) commit_broadcast: Index,
    /// Followers that now hold entries up to a commit they were not told
    /// of (their heartbeat commit is capped at what they held): sent a
    /// heartbeat at the next flush unless an append goes to them anyway.
    pub(crate) commit_news: BTreeSet<NodeId>,

    pub(crate) out: Output,
    pub(crate) emitted: HardState,
}

/// The longest a follower waits, in ticks, before standing for election
/// once its leader's connection closed (see `report_disconnected`).
pub const DISCONNECT_WAIT_TICKS_MAX: u64 = 9;

impl Raft {
    pub fn new(cfg: Config, durable: DurableState, seed: u64) -> Result<Raft, ConfigError> {
        cfg.validate()?;
        let bad = |what: String| Err(ConfigError::Durable(what));
        let (log, snapshot_membership) = match &durable.snapshot {
            Some(s) => (
                Log::new(s.meta.index, s.meta.term),
                s.meta.membership.clone(),
            ),
            None => (Log::new(Index::ZERO, Term::ZERO), Membership::default()),
        };
        let mut log = log;
        for entry in durable.entries {
            if entry.index <= log.snapshot_index() {
                continue;
            }
            if entry.index != log.last_index().next() {
                return bad(format!(
                    "entries not contiguous: {} follows {}",
                    entry.index,
                    log.last_index()
                ));
            }
            if entry.term < log.last_term() {
                return bad(format!("term goes backwards at index {}", entry.index));
            }
            log.append(entry);
        }
        let hs = durable.hard_state;
        if hs.commit > log.last_index() {
            return bad(format!(
                "commit index {} beyond the last entry {}",
                hs.commit,
                log.last_index()
            ));
        }
        if hs.term < log.last_term() {
            return bad(format!(
                "term {} older than the log's last term {}",
                hs.term,
                log.last_term()
            ));
        }
        let snapshot_index = log.snapshot_index();
        let mut raft = Raft {
            id: cfg.id,
            prng: Prng::new(seed ^ cfg.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit.max(snapshot_index),
            persisted: log.last_index(),
            log,
            role: Role::Follower,
            leader: None,
            handed: snapshot_index,
            applied: snapshot_index,
            applying: VecDeque::new(),
            applying_bytes: 0,
            membership: snapshot_membership.clone(),
            membership_index: snapshot_index,
            snapshot_membership,
            snapshot: durable.snapshot,
            incoming: None,
            election_elapsed: 0,
            election_timeout: cfg.election_ticks_min,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start: Index::ZERO,
            uncommitted_bytes: 0,
            transfer: None,
            reads: VecDeque::new(),
            reads_waiting: VecDeque::new(),
            read_round: 0,
            read_round_wanted: false,
            commit_broadcast: Index::ZERO,
            commit_news: BTreeSet::new(),
            out: Output::default(),
            emitted: hs,
            cfg,
        };
        raft.recompute_membership();
        raft.reset_election_timeout();
        raft.check_invariants();
        Ok(raft)
    }

    // ---- Inspection -----------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this node believes in, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit(&self) -> Index {
        self.commit
    }
    pub fn persisted(&self) -> Index {
        self.persisted
    }
    pub fn applied(&self) -> Index {
        self.applied
    }
    pub fn log(&self) -> &Log {
        &self.log
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// The index of the entry (or snapshot) the configuration comes from; it
    /// is committed once `commit() >= membership_index()`.
    pub fn membership_index(&self) -> Index {
        self.membership_index
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The leader's view of a follower's log, for status pages and tests.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        }
    }

    // ---- Inputs ---------------------------------------------------------

    /// One unit of logical time.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.check_invariants();
    }

    /// A message from a peer. Garbage is refused with an error and changes
    /// nothing.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        self.validate(&msg)?;
        if msg.term > self.term && !self.accept_higher_term(&msg) {
            return Ok(());
        }
        if msg.term < self.term {
            self.on_stale_term(&msg);
            return Ok(());
        }
        self.dispatch(msg)?;
        self.check_invariants();
        Ok(())
    }

    /// The caller made everything up to `(index, term)` durable. An
    /// acknowledgement for entries since replaced is ignored.
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        if index > self.persisted && self.log.term_at(index) == Some(term) {
            self.persisted = index;
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
        self.check_invariants();
    }

    /// The transport could not reach `id` (a connection failed or a send
    /// queue overflowed): whatever was in flight to it is presumed lost, so
    /// the leader goes back to probing it instead of waiting for a pipeline
    /// that will never be acknowledged.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if let Some(p) = self.progress.get_mut(&id) {
            if p.state == crate::progress::ProgressState::Replicate {
                p.next = p.match_index.next();
                p.become_probe();
            }
        }
    }

    /// The connection from `id` was closed by its end — what TCP reports at
    /// once when a process dies. Everything `report_unreachable` does, and a
    /// follower whose leader `id` was stops waiting out the election
    /// timeout: it forgets the leader (ending its lease, so that it grants
    /// pre-votes) and stands after 1 + 2 × its rank among the other voters
    /// (by id) ticks: the survivors stand one after another, at least a tick
    /// apart whatever their clocks' phases, instead of splitting the vote;
    /// one whose log is behind is refused by the pre-vote without
    /// disturbing the next. Only liveness changes: a false report
    /// costs a pre-vote that the other followers, still hearing the leader,
    /// refuse.
    pub fn report_disconnected(&mut self, id: NodeId) {
        self.report_unreachable(id);
        if self.role == Role::Follower && self.leader == Some(id) {
            self.leader = None;
            let rank = self
                .membership
                .voters
                .iter()
                .filter(|v| **v != id && **v < self.id)
                .count() as u64;
            let wait = (1 + 2 * rank).min(DISCONNECT_WAIT_TICKS_MAX);
            self.election_timeout = wait.min(self.cfg.election_ticks_min as u64) as u32;
            self.election_elapsed = 0;
        }
    }

    /// The state machine has applied everything up to `index`: the bytes
    /// of the batches up to there no longer count against the apply budget.
    pub fn on_applied(&mut self, index: Index) {
        if index > self.applied && index <= self.handed {
            self.applied = index;
        }
        while let Some(&(last, bytes)) = self.applying.front() {
            if last > self.applied {
                break;
            }
            self.applying.pop_front();
            self.applying_bytes -= bytes;
        }
    }

    /// Payload bytes handed out for apply and not yet reported applied.
    pub fn applying_bytes(&self) -> usize {
        self.applying_bytes
    }

    /// Everything the caller must now do, in the order given in `output.rs`.
    pub fn take_output(&mut self) -> Output {
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let hs = self.hard_state();
        if hs != self.emitted {
            // A new term or vote must be durable before anything that
            // depends on it leaves (a vote above all); a commit index alone
            // need not be.
            if (hs.term, hs.vote) != (self.emitted.term, self.emitted.vote) {
                self.out.must_sync = true;
            }
            self.out.persist.hard_state = Some(hs);
            self.emitted = hs;
        }
        if !self.out.persist.entries.is_empty() || self.out.persist.snapshot.is_some() {
            self.out.must_sync = true;
        }
        self.collect_apply();
        self.check_invariants();
        std::mem::take(&mut self.out)
    }

    // ---- Internals shared by the rules ----------------------------------

    fn validate(&self, msg: &Message) -> Result<(), StepError> {
        if msg.to != self.id {
            return Err(StepError::WrongRecipient {
                to: msg.to,
                me: self.id,
            });
        }
        let malformed = |reason: &str| {
            Err(StepError::Malformed {
                from: msg.from,
                reason: reason.to_string(),
            })
        };
        const LIMIT: u64 = 1 << 62;
        if msg.from == self.id || msg.from == NodeId(0) {
            return malformed("bad sender");
        }
        if msg.term.0 >= LIMIT {
            return malformed("term out of range");
        }
        match &msg.body {
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if prev_index.0 >= LIMIT || commit.0 >= LIMIT {
                    return malformed("index out of range");
                }
                if *prev_term > msg.term {
                    return malformed("previous entry's term above the message's");
                }
                let mut expect = prev_index.next();
                let mut term = *prev_term;
                for e in entries {
                    if e.index != expect {
                        return malformed("entries not contiguous");
                    }
                    if e.term < term || e.term > msg.term {
                        return malformed("entry terms out of order");
                    }
                    if e.size() > self.cfg.entry_bytes_max {
                        return malformed("entry too large");
                    }
                    term = e.term;
                    expect = expect.next();
                }
            }
            Body::Snapshot {
                meta,
                offset,
                total_bytes,
                data,
            } if meta.index.0 >= LIMIT
                || meta.term > msg.term
                || offset
                    .checked_add(data.len() as u64)
                    .is_none_or(|end| end > *total_bytes) =>
            {
                return malformed("snapshot chunk out of range, or of a later term");
            }
            Body::PreVote { last_index, .. } | Body::Vote { last_index, .. }
                if last_index.0 >= LIMIT =>
            {
                return malformed("index out of range");
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, msg: Message) -> Result<(), StepError> {
        let from = msg.from;
        match msg.body {
            Body::PreVote {
                last_index,
                last_term,
            } => self.on_pre_vote(from, msg.term, last_index, last_term),
            Body::PreVoteResponse { granted } => self.on_pre_vote_response(from, msg.term, granted),
            Body::Vote {
                last_index,
                last_term,
                ..
            } => self.on_vote(from, last_index, last_term),
            Body::VoteResponse { granted } => self.on_vote_response(from, granted),
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.on_append(from, prev_index, prev_term, entries, commit)?,
            Body::AppendResponse(result) => self.on_append_response(from, result)?,
            Body::Heartbeat { commit, read_round } => {
                self.on_heartbeat(from, commit, read_round)?
            }
            Body::HeartbeatResponse { read_round } => self.on_heartbeat_response(from, read_round),
            Body::Snapshot {
                meta,
                offset,
                total_bytes,
                data,
            } => self.on_snapshot(from, meta, offset, total_bytes, data)?,
            Body::SnapshotResponse {
                index,
                next_offset,
                done,
            } => self.on_snapshot_response(from, index, next_offset, done),
            Body::TimeoutNow => self.on_timeout_now(from),
        }
        Ok(())
    }

    /// Queues a message. Only a leader's replication traffic may leave before
    /// the pending persist: everything else (votes, acknowledgements, and any
    /// message revealing a new term) waits until the state it depends on is
    /// durable.
    pub(crate) fn send(&mut self, to: NodeId, body: Body) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        self.send_message(msg);
    }

    pub(crate) fn send_message(&mut self, msg: Message) {
        if self.role == Role::Leader || self.cfg.canary.acks_before_persist() {
            self.out.send.push(msg);
        } else {
            self.out.send_after_persist.push(msg);
        }
    }

    pub(crate) fn reset_election_timeout(&mut self) {
        let min = self.cfg.election_ticks_min as u64;
        self.election_timeout = self.prng.range(min, 2 * min - 1) as u32;
        self.election_elapsed = 0;
    }

    /// Queues entries for the disk, replacing queued ones they supersede.
    pub(crate) fn persist_entries(&mut self, entries: &[Entry]) {
        let queued = &mut self.out.persist.entries;
        for e in entries {
            while queued.last().is_some_and(|l| l.index >= e.index) {
                queued.pop();
            }
            queued.push(e.clone());
        }
    }

    /// Derives the configuration from the log: the latest config entry, or
    /// else the snapshot's.
    pub(crate) fn recompute_membership(&mut self) {
        match self.log.membership_at(self.log.last_index()) {
            Some((index, m)) => {
                self.membership = m.clone();
                self.membership_index = index;
            }
            None => {
                self.membership = self.snapshot_membership.clone();
                self.membership_index = self.log.snapshot_index();
            }
        }
        if self.role == Role::Leader {
            self.sync_progress();
        }
    }

    pub(crate) fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// Within an election timeout of hearing from a leader: vote requests are
    /// ignored then (check-quorum's lease), so a node that was cut off cannot
    /// depose a healthy leader.
    pub(crate) fn in_lease(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks_min
    }

    pub(crate) fn drop_reads(&mut self) {
        let dropped = self
            .reads
            .drain(..)
            .map(|r| r.ctx)
            .chain(self.reads_waiting.drain(..));
        self.out.reads_dropped.extend(dropped);
    }

    pub(crate) fn read_ready(&mut self, ctx: u64, index: Index) {
        self.out.reads.push(ReadReady { ctx, index });
    }

    /// Hands out committed entries for apply, within the apply budget
    /// (etcd's `maxApplyingEntsSize`): at most `apply_bytes_max` payload
    /// bytes handed out and not yet applied, so that a slow state machine
    /// holds entries back here, in the log, instead of in a queue. One entry
    /// always goes when nothing is outstanding, however large.
    fn collect_apply(&mut self) {
        let upto = self
            .commit
            .min(self.persisted.max(self.log.snapshot_index()));
        let budget = self.cfg.apply_bytes_max;
        // The canary forgets what is outstanding: only each output is bounded.
        let outstanding = if self.cfg.canary.ignores_apply_budget() {
            0
        } else {
            self.applying_bytes
        };
        let mut bytes = 0usize;
        while self.handed < upto {
            let Some(entry) = self.log.get(self.handed.next()) else {
                break;
            };
            let size = entry.size();
            let total = outstanding + bytes;
            if total > 0 && total + size > budget {
                break;
            }
            bytes += size;
            self.out.apply.push(entry.clone());
            self.handed = self.handed.next();
        }
        if let Some(last) = self.out.apply.last() {
            self.applying.push_back((last.index, bytes));
            self.applying_bytes += bytes;
        }
    }

    /// Cheap structural invariants, checked after every input in debug builds
    /// and after every simulation step.
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.assert_invariants();
    }

    pub fn assert_invariants(&self) {
        let (commit, last) = (self.commit, self.log.last_index());
        assert!(commit <= last, "commit={commit} last={last}");
        let snap = self.log.snapshot_index();
        assert!(snap <= commit, "snapshot={snap} commit={commit}");
        assert!(
            self.handed <= commit,
            "handed={} commit={commit}",
            self.handed
        );
        let queued: usize = self.applying.iter().map(|(_, b)| *b).sum();
        assert!(
            queued == self.applying_bytes,
            "applying_bytes={} queued={queued}",
            self.applying_bytes
        );
        assert!(
            self.applied <= self.handed,
            "applied={} handed={}",
            self.applied,
            self.handed
        );
        assert!(
            self.persisted <= last,
            "persisted={} last={last}",
            self.persisted
        );
        if self.role == Role::Leader {
            assert_eq!(self.leader, Some(self.id), "a leader knows itself");
            assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
            for (id, p) in &self.progress {
                assert!(
                    p.match_index < p.next,
                    "{id}: match={} next={}",
                    p.match_index,
                    p.next
                );
                assert!(
                    p.inflight.len() <= self.cfg.inflight_appends_max,
                    "{id}: inflight={}",
                    p.inflight.len()
                );
            }
        }
    }
}
