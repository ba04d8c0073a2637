//! Choosing a leader: timeouts, pre-vote, RequestVote, terms, and the role
//! changes that follow (Raft §5.2, §5.4.1; dissertation §9.6 for pre-vote and
//! check-quorum).

use crate::core::{Raft, Role};
use crate::log::{Entry, Payload};
use crate::message::{Body, Message};
use crate::progress::Progress;
use crate::types::{Index, NodeId, Term};

impl Raft {
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout && self.promotable() {
            self.start_pre_vote();
        }
    }

    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if let Some(t) = self.transfer.as_mut() {
            t.elapsed += 1;
            // A transfer that has not finished within an election timeout is
            // abandoned, so proposals flow again.
            if t.elapsed >= self.cfg.election_ticks_min {
                self.transfer = None;
            }
        }
        if self.election_elapsed >= self.cfg.election_ticks_min {
            self.election_elapsed = 0;
            if !self.check_quorum() {
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum of voters was heard from in the period just ended;
    /// starts the next period.
    fn check_quorum(&mut self) -> bool {
        let mut active = usize::from(self.membership.is_voter(self.id));
        for (id, p) in self.progress.iter_mut() {
            if self.membership.is_voter(*id) && p.recent_active {
                active += 1;
            }
            p.recent_active = false;
        }
        active >= self.membership.quorum()
    }

    /// Decides whether a message of a higher term moves this node to that
    /// term. Returns false if the message is to be ignored.
    pub(crate) fn accept_higher_term(&mut self, msg: &Message) -> bool {
        match &msg.body {
            // Pre-votes change nobody's term; a granted response carries the
            // term the candidate proposes.
            Body::PreVote { .. } => true,
            Body::PreVoteResponse { granted: true } => true,
            Body::Vote { transfer, .. } => {
                if !transfer && self.in_lease() {
                    return false;
                }
                self.become_follower(msg.term, None);
                true
            }
            Body::Append { .. }
            | Body::Heartbeat { .. }
            | Body::Snapshot { .. }
            | Body::TimeoutNow => {
                self.become_follower(msg.term, Some(msg.from));
                true
            }
            _ => {
                self.become_follower(msg.term, None);
                true
            }
        }
    }

    /// A message from an older term. A stale leader is told the current
    /// term, so it steps down; a stale pre-candidate too, so it catches up.
    pub(crate) fn on_stale_term(&mut self, msg: &Message) {
        match msg.body {
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                self.send(msg.from, Body::HeartbeatResponse { read_round: 0 });
            }
            Body::PreVote { .. } => {
                self.send(msg.from, Body::PreVoteResponse { granted: false });
            }
            _ => {}
        }
    }

    pub(crate) fn start_pre_vote(&mut self) {
        if self.membership.voters.len() == 1 {
            self.campaign(false);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timeout();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self.other_voters();
        for to in voters {
            let msg = Message {
                from: self.id,
                to,
                term: self.term.next(),
                body: Body::PreVote {
                    last_index,
                    last_term,
                },
            };
            self.send_message(msg);
        }
    }

    /// Starts a real election in the next term. The new term and the vote for
    /// ourselves reach the disk before any vote request leaves.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timeout();
        if self.tally() == Some(true) {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in self.other_voters() {
            self.send(
                to,
                Body::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    pub(crate) fn on_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
    ) {
        let up_to_date =
            self.log.is_up_to_date(last_index, last_term) || self.cfg.canary.skips_log_check();
        let granted = term > self.term && up_to_date && !self.in_lease();
        let msg = Message {
            from: self.id,
            to: from,
            term: if granted { term } else { self.term },
            body: Body::PreVoteResponse { granted },
        };
        self.send_message(msg);
    }

    pub(crate) fn on_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || (granted && term != self.term.next()) {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.campaign(false),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    /// RequestVote in our term (a higher term was adopted before this).
    pub(crate) fn on_vote(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let up_to_date =
            self.log.is_up_to_date(last_index, last_term) || self.cfg.canary.skips_log_check();
        let granted = can_vote && up_to_date;
        if granted {
            self.vote = Some(from);
            self.election_elapsed = 0;
        }
        self.send(from, Body::VoteResponse { granted });
    }

    pub(crate) fn on_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.become_leader(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    /// `Some(true)` once a quorum of voters granted, `Some(false)` once a
    /// quorum refused, else `None`.
    fn tally(&self) -> Option<bool> {
        let quorum = self.membership.quorum();
        let (mut yes, mut no) = (0, 0);
        for (id, granted) in &self.votes {
            if self.membership.is_voter(*id) {
                if *granted {
                    yes += 1;
                } else {
                    no += 1;
                }
            }
        }
        if yes >= quorum {
            Some(true)
        } else if no >= quorum {
            Some(false)
        } else {
            None
        }
    }

    pub(crate) fn on_timeout_now(&mut self, _from: NodeId) {
        if self.promotable() {
            self.campaign(true);
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "term goes backwards: {term} < {}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.drop_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.reset_election_timeout();
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(self.vote, Some(self.id), "leader without its own vote");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.transfer = None;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.uncommitted_bytes = 0;
        self.reads.clear();
        self.reads_waiting.clear();
        self.commit_broadcast = self.commit;
        self.progress.clear();
        self.sync_progress();
        // Raft §8: commit an entry of our own term at once; it commits every
        // earlier entry with it and lets reads and membership changes proceed.
        let noop = Entry {
            index: self.log.last_index().next(),
            term: self.term,
            payload: Payload::Noop,
        };
        self.term_start = noop.index;
        self.append_as_leader(noop);
    }

    /// Makes the progress map match the configuration: a tracker for every
    /// other member, none for anyone else.
    pub(crate) fn sync_progress(&mut self) {
        let next = self.log.last_index().next();
        let members: Vec<NodeId> = self
            .membership
            .members()
            .filter(|id| *id != self.id)
            .collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
    }

    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        self.membership
            .voters
            .iter()
            .copied()
            .filter(|id| *id != self.id)
            .collect()
    }
}
