//! What one step asks the caller to do. The order matters and is part of the
//! contract:
//!
//! 1. Make `persist` durable (snapshot first, then entries, then hard state),
//!    atomically: after a crash either all of it is on disk or none of it
//!    (entries of a newer term without the hard state that names that term
//!    would not pass `Raft::new`). Persists complete in the order they were
//!    handed out.
//! 2. Meanwhile `send` may leave at once.
//!    `must_sync` says whether that takes an fdatasync before step 3: it is
//!    false only when the persist moves nothing but the commit index (etcd's
//!    `MustSync`); such a write may be lost in a crash, which is safe because
//!    a restarted node learns the commit index again from the leader, and an
//!    append-only log never keeps a commit index past the entries that
//!    survived with it.
//! 3. Once this persist and every earlier one is durable, send
//!    `send_after_persist` and report `Raft::on_persisted` with `Persist::last`.
//! 4. Restore the state machine from `persist.snapshot` if present, then
//!    apply `apply` in order; report progress with `Raft::on_applied`.
//! 5. Answer the reads in `reads` once the state machine has applied their
//!    index; fail those in `reads_dropped`.

use crate::log::Entry;
use crate::message::Message;
use crate::snapshot::Snapshot;
use crate::types::{Index, NodeId, Term};

/// The state that must survive a crash (Raft Figure 2), plus the commit index
/// so that a restarted node never reports less than it had committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    pub hard_state: Option<HardState>,
    /// Replaces the whole durable log: drop every entry, keep this snapshot.
    pub snapshot: Option<Snapshot>,
    /// Drop every durable entry at or after `entries[0].index`, then append.
    pub entries: Vec<Entry>,
}

impl Persist {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }

    /// The log position this persist makes durable, to pass to
    /// `Raft::on_persisted` once it is.
    pub fn last(&self) -> Option<(Index, Term)> {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => Some((e.index, e.term)),
            (None, Some(s)) => Some((s.meta.index, s.meta.term)),
            (None, None) => None,
        }
    }
}

/// A confirmed linearizable read: serve `ctx` once `index` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    pub ctx: u64,
    pub index: Index,
}

#[derive(Debug, Default)]
pub struct Output {
    pub persist: Persist,
    /// `persist` must be fdatasynced before `send_after_persist` leaves and
    /// before `Raft::on_persisted` is reported (see the module header).
    pub must_sync: bool,
    pub send: Vec<Message>,
    pub send_after_persist: Vec<Message>,
    pub apply: Vec<Entry>,
    pub reads: Vec<ReadReady>,
    /// Reads that will never be confirmed here (leadership was lost).
    pub reads_dropped: Vec<u64>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.send_after_persist.is_empty()
            && self.apply.is_empty()
            && self.reads.is_empty()
            && self.reads_dropped.is_empty()
    }
}
