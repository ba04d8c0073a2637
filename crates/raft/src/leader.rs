//! What clients ask of a leader: proposals (batched into shared appends),
//! membership changes, linearizable reads by ReadIndex, and leader transfer.
//! Each is refused with a typed error when it cannot be served here.

use bytes::Bytes;

use crate::core::{PendingRead, Raft, Role, Transfer};
use crate::error::ProposeError;
use crate::log::{Entry, Payload};
use crate::membership::MembershipChange;
use crate::message::Body;
use crate::quorum::quorum_value;
use crate::types::{Index, NodeId, Term};

impl Raft {
    fn ensure_leader(&self) -> Result<(), ProposeError> {
        if self.role == Role::Leader {
            return Ok(());
        }
        match self.leader {
            Some(leader) => Err(ProposeError::NotLeader { leader }),
            None => Err(ProposeError::NoLeader),
        }
    }

    /// Appends client data to the log. Proposals made before the next
    /// `take_output` leave in the same AppendEntries (bounded by
    /// `append_entries_max` and `append_bytes_max`). The entry is applied if
    /// an entry with this index *and* term comes out of `apply`; a different
    /// term at that index means it was lost to a leader change.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        self.ensure_leader()?;
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let size = data.len();
        if size > self.cfg.entry_bytes_max {
            return Err(ProposeError::EntryTooLarge {
                size,
                limit: self.cfg.entry_bytes_max,
            });
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.uncommitted_bytes_max
        {
            return Err(ProposeError::ProposalQueueFull {
                uncommitted_bytes: self.uncommitted_bytes,
                limit: self.cfg.uncommitted_bytes_max,
            });
        }
        let entry = Entry {
            index: self.log.last_index().next(),
            term: self.term,
            payload: Payload::Normal(data),
        };
        let at = (entry.index, entry.term);
        self.append_as_leader(entry);
        self.check_invariants();
        Ok(at)
    }

    /// Proposes one single-server membership change (see `membership.rs` for
    /// why one at a time is safe).
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<(Index, Term), ProposeError> {
        self.ensure_leader()?;
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.commit < self.term_start {
            return Err(ProposeError::LeaderNotReady);
        }
        if self.membership_index > self.commit {
            return Err(ProposeError::MembershipChangePending {
                index: self.membership_index,
            });
        }
        let next = self
            .membership
            .apply(change)
            .map_err(ProposeError::InvalidMembershipChange)?;
        if let MembershipChange::Promote(node) = change {
            let matched = self
                .progress
                .get(&node)
                .map_or(Index::ZERO, |p| p.match_index);
            let behind = self.log.last_index().distance_from(matched);
            if behind > self.cfg.learner_lag_max {
                return Err(ProposeError::LearnerBehind { node, behind });
            }
        }
        let entry = Entry {
            index: self.log.last_index().next(),
            term: self.term,
            payload: Payload::Membership(next),
        };
        let at = (entry.index, entry.term);
        self.append_as_leader(entry);
        self.check_invariants();
        Ok(at)
    }

    /// Asks for a linearizable read point (Raft §6.4). `ctx` comes back in
    /// `Output::reads` with the index the state machine must have applied
    /// before the read is served, or in `Output::reads_dropped`. Reads made
    /// before the next `take_output` share one heartbeat round.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.ensure_leader()?;
        if self.reads.len() + self.reads_waiting.len() >= self.cfg.pending_reads_max {
            return Err(ProposeError::ReadQueueFull {
                limit: self.cfg.pending_reads_max,
            });
        }
        if self.commit < self.term_start {
            // Our commit index may lag the previous leader's until our no-op
            // commits; only then is it a valid read point.
            self.reads_waiting.push_back(ctx);
        } else {
            self.enqueue_read(ctx);
        }
        Ok(())
    }

    fn enqueue_read(&mut self, ctx: u64) {
        let only_voter = self.membership.voters.len() == 1 && self.membership.is_voter(self.id);
        if only_voter {
            self.read_ready(ctx, self.commit);
            return;
        }
        self.reads.push_back(PendingRead {
            ctx,
            index: self.commit,
            round: self.read_round + 1,
        });
        self.read_round_wanted = true;
    }

    pub(crate) fn release_waiting_reads(&mut self) {
        while let Some(ctx) = self.reads_waiting.pop_front() {
            self.enqueue_read(ctx);
        }
    }

    /// Serves every read whose heartbeat round a quorum of voters answered.
    pub(crate) fn maybe_confirm_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let mut rounds: Vec<u64> = self
            .membership
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    u64::MAX
                } else {
                    self.progress.get(id).map_or(0, |p| p.read_round)
                }
            })
            .collect();
        let Some(confirmed) = quorum_value(&mut rounds, self.membership.quorum()) else {
            return;
        };
        while self.reads.front().is_some_and(|r| r.round <= confirmed) {
            if let Some(read) = self.reads.pop_front() {
                self.read_ready(read.ctx, read.index);
            }
        }
    }

    /// Hands leadership to `to` (dissertation §3.10): stop taking proposals,
    /// bring `to` up to date, then tell it to campaign at once. Abandoned
    /// after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.ensure_leader()?;
        if to == self.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(ProposeError::InvalidMembershipChange(format!(
                "cannot transfer leadership to {to}: not a voter"
            )));
        }
        // Asking again for the same target neither restarts the clock nor
        // resends TimeoutNow; a new target starts a new transfer.
        if self.transfer.is_none_or(|t| t.to != to) {
            self.transfer = Some(Transfer {
                to,
                elapsed: 0,
                sent: false,
            });
        }
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    pub(crate) fn maybe_send_timeout_now(&mut self, id: NodeId) {
        let Some(transfer) = self.transfer else {
            return;
        };
        if transfer.to != id || transfer.sent {
            return;
        }
        let caught_up = self
            .progress
            .get(&id)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            if let Some(t) = self.transfer.as_mut() {
                t.sent = true;
            }
            self.send(id, Body::TimeoutNow);
        }
    }
}
