//! Log replication (Raft §5.3): the leader's pipeline of AppendEntries with a
//! bounded window per follower, the follower's consistency check and conflict
//! truncation, fast back-off by conflict hint, heartbeats, and commitment by
//! counting durable replicas of an entry of the current term (§5.4.2).

use std::collections::BTreeSet;

use crate::core::{Raft, Role};
use crate::error::StepError;
use crate::log::{Entry, Payload};
use crate::message::{AppendResult, Body};
use crate::progress::ProgressState;
use crate::quorum::quorum_value;
use crate::types::{Index, NodeId, Term};

impl Raft {
    // ---- Leader: sending ------------------------------------------------

    /// Sends whatever each follower's pace allows, the ReadIndex round if one
    /// is wanted, and the commit index to followers that got nothing else.
    pub(crate) fn flush_leader(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        let mut sent = BTreeSet::new();
        for id in &peers {
            if self.send_appends(*id) {
                sent.insert(*id);
            }
        }
        let commit_news = self.commit > self.commit_broadcast;
        let round_wanted = self.read_round_wanted;
        if round_wanted {
            self.read_round += 1;
            self.read_round_wanted = false;
        }
        let mut news_for = std::mem::take(&mut self.commit_news);
        if round_wanted || commit_news {
            for id in peers {
                let needs_round = round_wanted && self.membership.is_voter(id);
                if needs_round || !sent.contains(&id) {
                    self.send_heartbeat(id);
                    news_for.remove(&id);
                }
            }
        }
        for id in news_for {
            if !sent.contains(&id) {
                self.send_heartbeat(id);
            }
        }
        self.commit_broadcast = self.commit;
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        let mut resend = Vec::new();
        for (id, p) in self.progress.iter_mut() {
            p.maybe_reset_stalled();
            if p.snapshot_stalled() {
                resend.push(*id);
            }
        }
        for id in resend {
            self.send_snapshot_chunk(id);
        }
        for id in peers {
            self.send_heartbeat(id);
        }
    }

    fn send_heartbeat(&mut self, to: NodeId) {
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        // Never tell a follower of a commit beyond what it is known to hold.
        let commit = self.commit.min(p.match_index);
        let read_round = self.read_round;
        self.send(to, Body::Heartbeat { commit, read_round });
    }

    /// Sends appends to `to` as far as its state and window allow. Returns
    /// whether anything was sent.
    fn send_appends(&mut self, to: NodeId) -> bool {
        let mut sent = false;
        loop {
            let Some(p) = self.progress.get(&to) else {
                return sent;
            };
            match p.state {
                ProgressState::Snapshot { .. } | ProgressState::Probe { paused: true } => {
                    return sent
                }
                ProgressState::Probe { paused: false } => {
                    let did = self.send_append(to);
                    if let Some(p) = self.progress.get_mut(&to) {
                        if let ProgressState::Probe { paused } = &mut p.state {
                            *paused = true;
                        }
                    }
                    return sent || did;
                }
                ProgressState::Replicate => {
                    let full = p.inflight.len() >= self.cfg.inflight_appends_max;
                    if full || p.next > self.log.last_index() || !self.send_append(to) {
                        return sent;
                    }
                    sent = true;
                }
            }
        }
    }

    /// One AppendEntries from the follower's `next`, or the start of a
    /// snapshot transfer if that part of the log is compacted.
    fn send_append(&mut self, to: NodeId) -> bool {
        let Some(p) = self.progress.get(&to) else {
            return false;
        };
        let next = p.next;
        let replicating = p.state == ProgressState::Replicate;
        let prev_index = next.prev();
        let Some(prev_term) = self.log.term_at(prev_index) else {
            self.start_snapshot_transfer(to);
            return true;
        };
        let entries = self.log.slice(
            next,
            self.log.last_index(),
            self.cfg.append_entries_max,
            self.cfg.append_bytes_max,
        );
        if replicating && entries.is_empty() {
            return false;
        }
        let last_sent = prev_index + entries.len() as u64;
        if let Some(p) = self.progress.get_mut(&to) {
            if replicating {
                p.next = last_sent.next();
                p.inflight.push_back(last_sent);
            }
        }
        let commit = self.commit;
        self.send(
            to,
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    // ---- Leader: responses ----------------------------------------------

    pub(crate) fn on_append_response(
        &mut self,
        from: NodeId,
        result: AppendResult,
    ) -> Result<(), StepError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        // Only a valid acknowledgement shows the follower is alive.
        match result {
            AppendResult::Success { match_index } => {
                if match_index > last {
                    return Err(StepError::Malformed {
                        from,
                        reason: format!(
                            "acknowledged {match_index} beyond the leader's last {last}"
                        ),
                    });
                }
                p.recent_active = true;
                let probing = matches!(p.state, ProgressState::Probe { .. });
                let told = self.commit.min(p.match_index);
                let updated = p.maybe_update(match_index);
                // It was told of commits only up to what it held; now that it
                // holds more, tell it at once (etcd's empty append after a
                // commit does this), not at the next heartbeat: a follower
                // answers forwarded writes only once it has applied them.
                if updated && self.commit.min(p.match_index) > told {
                    self.commit_news.insert(from);
                }
                if probing {
                    p.become_replicate();
                }
                if let ProgressState::Snapshot { index, .. } = p.state {
                    if p.match_index >= index {
                        p.become_probe();
                    }
                }
                if let Some(p) = self.progress.get(&from) {
                    assert!(
                        p.match_index <= last,
                        "{from}: match={} last={last}",
                        p.match_index
                    );
                    assert!(
                        p.next > p.match_index,
                        "{from}: next={} match={}",
                        p.next,
                        p.match_index
                    );
                }
                if updated {
                    self.maybe_commit();
                }
                self.maybe_send_timeout_now(from);
            }
            AppendResult::Reject {
                rejected,
                hint_index,
                hint_term,
            } => {
                p.recent_active = true;
                let probe_to = if hint_term > Term::ZERO {
                    self.log.find_conflict_by_term(hint_index, hint_term).0
                } else {
                    hint_index
                };
                if let Some(p) = self.progress.get_mut(&from) {
                    p.maybe_decrease_to(rejected, probe_to);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn on_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.read_round = p.read_round.max(read_round);
        if let ProgressState::Probe { paused } = &mut p.state {
            *paused = false;
        }
        self.maybe_confirm_reads();
    }

    /// Raft §5.4.2: commit the highest index a quorum holds durably, but only
    /// if it is of the current term; earlier entries commit with it.
    pub(crate) fn maybe_commit(&mut self) {
        let mut matches: Vec<Index> = Vec::with_capacity(self.membership.voters.len());
        for id in &self.membership.voters {
            if *id == self.id {
                let own = if self.cfg.canary.acks_before_persist() {
                    self.log.last_index()
                } else {
                    self.persisted
                };
                matches.push(own);
            } else if let Some(p) = self.progress.get(id) {
                matches.push(p.match_index);
            } else {
                matches.push(Index::ZERO);
            }
        }
        let Some(candidate) = quorum_value(&mut matches, self.membership.quorum()) else {
            return;
        };
        if candidate <= self.commit {
            return;
        }
        let current_term = self.log.term_at(candidate) == Some(self.term);
        if current_term || self.cfg.canary.commits_earlier_term() {
            self.commit_to(candidate);
            assert_eq!(self.commit, candidate);
        }
    }

    fn commit_to(&mut self, index: Index) {
        assert!(
            index <= self.log.last_index(),
            "commit={index} last={}",
            self.log.last_index()
        );
        let released: usize = self
            .log
            .entries_after(self.commit)
            .take(index.distance_from(self.commit) as usize)
            .map(Entry::size)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(released);
        self.commit = index;
        if self.commit >= self.term_start {
            self.release_waiting_reads();
        }
        // Dissertation §4.2.2: a leader removed from the configuration steps
        // down once that configuration is committed.
        if self.membership_index <= self.commit && !self.membership.is_voter(self.id) {
            self.become_follower(self.term, None);
        }
    }

    // ---- Follower -------------------------------------------------------

    /// A message only a leader of our term sends: follow it. Two leaders in
    /// one term cannot happen in Raft, so meeting one means the sender lies.
    pub(crate) fn follow(&mut self, from: NodeId) -> Result<(), StepError> {
        if self.role == Role::Leader {
            return Err(StepError::Malformed {
                from,
                reason: format!("a second leader in term {}", self.term),
            });
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        Ok(())
    }

    pub(crate) fn on_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
    ) -> Result<(), StepError> {
        self.follow(from)?;
        let last_new = prev_index + entries.len() as u64;
        if prev_index < self.commit {
            // Committed entries are in every leader's log: skip them.
            if last_new <= self.commit {
                let commit = self.commit;
                self.send(
                    from,
                    Body::AppendResponse(AppendResult::Success {
                        match_index: commit,
                    }),
                );
                return Ok(());
            }
            let commit = self.commit;
            entries.retain(|e| e.index > commit);
        } else if self.log.term_at(prev_index) != Some(prev_term) {
            let (hint_index, hint_term) = self
                .log
                .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
            self.send(
                from,
                Body::AppendResponse(AppendResult::Reject {
                    rejected: prev_index,
                    hint_index,
                    hint_term,
                }),
            );
            return Ok(());
        }
        let last_term = entries.last().map(|e| (e.index, e.term));
        self.append_as_follower(entries);
        // Raft §5.3: the log now matches the leader's through `last_new`.
        if let Some((index, term)) = last_term {
            assert_eq!(
                self.log.term_at(index),
                Some(term),
                "entry {index} not held"
            );
        }
        assert!(
            self.log.last_index() >= last_new,
            "last={} after appending through {last_new}",
            self.log.last_index()
        );
        let commit = leader_commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
        }
        self.send(
            from,
            Body::AppendResponse(AppendResult::Success {
                match_index: last_new,
            }),
        );
        Ok(())
    }

    /// Appends what is new in `entries`, truncating a conflicting suffix
    /// first (Raft §5.3).
    fn append_as_follower(&mut self, entries: Vec<Entry>) {
        let Some(first_new) = entries
            .iter()
            .position(|e| self.log.term_at(e.index) != Some(e.term))
        else {
            return;
        };
        let new = &entries[first_new..];
        let from = new[0].index;
        let mut membership_changed = false;
        if from <= self.log.last_index() {
            assert!(
                from > self.commit,
                "truncating committed entries: from={from} commit={}",
                self.commit
            );
            membership_changed |= self
                .log
                .membership_at(self.log.last_index())
                .is_some_and(|(i, _)| i >= from);
            self.log.truncate_from(from);
            self.persisted = self.persisted.min(from.prev());
        }
        for e in new {
            membership_changed |= matches!(e.payload, Payload::Membership(_));
            self.log.append(e.clone());
        }
        self.persist_entries(new);
        if membership_changed {
            self.recompute_membership();
        }
    }

    pub(crate) fn on_heartbeat(
        &mut self,
        from: NodeId,
        commit: Index,
        read_round: u64,
    ) -> Result<(), StepError> {
        self.follow(from)?;
        let commit = commit.min(self.log.last_index());
        if commit > self.commit {
            self.commit = commit;
        }
        self.send(from, Body::HeartbeatResponse { read_round });
        Ok(())
    }

    // ---- Leader: appending ----------------------------------------------

    pub(crate) fn append_as_leader(&mut self, entry: Entry) {
        debug_assert_eq!(self.role, Role::Leader);
        self.uncommitted_bytes += entry.size();
        let is_membership = matches!(entry.payload, Payload::Membership(_));
        self.persist_entries(std::slice::from_ref(&entry));
        self.log.append(entry);
        if is_membership {
            self.recompute_membership();
        }
        // A single voter commits by itself, once its write is durable.
        self.maybe_commit();
    }
}
