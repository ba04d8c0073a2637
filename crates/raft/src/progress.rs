//! What a leader knows about each follower's log, and how it paces sending to
//! it: one probe at a time until the logs match, then a pipeline with a
//! bounded window, or a snapshot when the follower needs a compacted prefix.

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding where the logs match: one append in flight; `paused` until it is
    /// answered or the next heartbeat.
    Probe { paused: bool },
    /// Logs match up to `match_index`: appends are sent optimistically ahead.
    Replicate,
    /// Sending the snapshot at `index` in chunks; `offset` is the next byte to
    /// send.
    Snapshot { index: Index, offset: u64 },
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be durably replicated on the follower.
    pub match_index: Index,
    /// Next index to send. Invariant: `match_index < next`.
    pub next: Index,
    pub state: ProgressState,
    /// Last index of each append in flight, oldest first (Replicate only).
    /// Invariant: `inflight.len() <= inflight_appends_max`.
    pub inflight: VecDeque<Index>,
    /// Heard from in the current check-quorum period.
    pub recent_active: bool,
    /// Highest ReadIndex heartbeat round this follower answered.
    pub read_round: u64,
    /// The oldest append in flight at the previous heartbeat: if it is still
    /// unacknowledged a whole heartbeat interval later, it was lost, and the
    /// leader falls back to probing rather than wait on a window that will
    /// never drain.
    pub oldest_inflight_at_heartbeat: Option<Index>,
    /// The snapshot chunk in flight at the previous heartbeat, if sending one.
    pub snapshot_offset_at_heartbeat: Option<u64>,
}

impl Progress {
    pub fn new(next: Index) -> Progress {
        Progress {
            match_index: Index::ZERO,
            next,
            state: ProgressState::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: true,
            read_round: 0,
            oldest_inflight_at_heartbeat: None,
            snapshot_offset_at_heartbeat: None,
        }
    }

    /// Records a successful append up to `index`. Returns whether it was news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
        }
        if self.next <= index {
            self.next = index.next();
        }
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        if let ProgressState::Probe { paused } = &mut self.state {
            *paused = false;
        }
        updated
    }

    /// Handles a rejection of the append that followed `rejected`; `hint` is
    /// the highest index that may still match. Returns false if the rejection
    /// is stale (answers an append we no longer care about).
    pub fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.next = self.match_index.next();
                self.become_probe();
                true
            }
            ProgressState::Probe { .. } => {
                if self.next.prev() != rejected {
                    return false;
                }
                self.next = rejected.min(hint.next()).max(self.match_index.next());
                self.state = ProgressState::Probe { paused: false };
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Called at every heartbeat interval. Returns whether the pipeline had
    /// stalled (and so was reset to probing from `match_index`).
    pub fn maybe_reset_stalled(&mut self) -> bool {
        let oldest = self.inflight.front().copied();
        let stalled = self.state == ProgressState::Replicate
            && oldest.is_some()
            && oldest == self.oldest_inflight_at_heartbeat;
        self.oldest_inflight_at_heartbeat = oldest;
        if stalled {
            self.next = self.match_index.next();
            self.become_probe();
        }
        stalled
    }

    /// Called at every heartbeat interval while sending a snapshot. Returns
    /// whether the chunk in flight has gone unanswered for a whole interval
    /// (and so must be sent again).
    pub fn snapshot_stalled(&mut self) -> bool {
        let offset = match self.state {
            ProgressState::Snapshot { offset, .. } => Some(offset),
            _ => None,
        };
        let stalled = offset.is_some() && offset == self.snapshot_offset_at_heartbeat;
        self.snapshot_offset_at_heartbeat = offset;
        stalled
    }

    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe { paused: false };
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.match_index.next();
        self.inflight.clear();
    }

    pub fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot { index, offset: 0 };
        self.snapshot_offset_at_heartbeat = None;
        self.inflight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_backs_off_to_hint_but_not_below_match() {
        let mut p = Progress::new(Index(10));
        assert!(
            !p.maybe_decrease_to(Index(5), Index(2)),
            "stale: not our probe"
        );
        assert!(p.maybe_decrease_to(Index(9), Index(4)));
        assert_eq!(p.next, Index(5));
        p.match_index = Index(3);
        assert!(p.maybe_decrease_to(Index(4), Index(0)));
        assert_eq!(p.next, Index(4));
    }

    #[test]
    fn replicate_frees_window_on_ack() {
        let mut p = Progress::new(Index(1));
        p.become_replicate();
        p.inflight.extend([Index(5), Index(9), Index(12)]);
        p.next = Index(13);
        assert!(p.maybe_update(Index(9)));
        assert_eq!(p.inflight, [Index(12)]);
        assert!(
            !p.maybe_decrease_to(Index(8), Index(0)),
            "below match: stale"
        );
        assert!(p.maybe_decrease_to(Index(12), Index(0)));
        assert_eq!(p.next, Index(10));
        assert_eq!(p.state, ProgressState::Probe { paused: false });
    }

    #[test]
    fn lost_pipeline_falls_back_to_probe_after_a_silent_interval() {
        let mut p = Progress::new(Index(1));
        p.become_replicate();
        p.inflight.extend([Index(4), Index(8)]);
        p.next = Index(9);
        assert!(
            !p.maybe_reset_stalled(),
            "first interval: maybe still in flight"
        );
        assert!(p.maybe_update(Index(4)));
        assert!(!p.maybe_reset_stalled(), "progress was made");
        assert!(
            p.maybe_reset_stalled(),
            "an interval without progress: stalled"
        );
        assert_eq!(p.next, Index(5));
        assert!(p.inflight.is_empty());
        assert_eq!(p.state, ProgressState::Probe { paused: false });
    }
}
