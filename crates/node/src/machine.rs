//! What the node needs of a state machine. Requests and replies are opaque
//! bytes here: the front ends encode them, the machine decodes them, and the
//! node only orders, replicates and routes them (so forwarding a write from a
//! follower to the leader is forwarding bytes).

use bytes::Bytes;
use ferrite_raft::Index;

use crate::lessor::LeaseChange;

/// A state machine failure the replica cannot go on from: the node stops
/// serving rather than diverge from the other members.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// Local storage beside the state failed (a volume file that cannot be
    /// written, a copy from a peer that cannot be made).
    #[error("state machine storage failed: {0}")]
    Storage(String),
    /// A snapshot's bytes do not decode into a state.
    #[error("snapshot does not restore: {0}")]
    Restore(String),
    /// A snapshot could not be taken or finished.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
}

/// The work of a snapshot that is left after the apply thread has captured
/// the state: encoding it and making durable whatever lives outside the
/// bytes. It runs on a thread of its own while applying goes on, so a large
/// state costs the apply thread only the capture (a clone of shared data),
/// never an encode of everything.
pub struct MachineSnapshot {
    pub finish: Box<dyn FnOnce() -> Result<Bytes, MachineError> + Send>,
}

impl MachineSnapshot {
    /// A snapshot that is all in `data`, already encoded.
    pub fn complete(data: Bytes) -> MachineSnapshot {
        MachineSnapshot {
            finish: Box::new(move || Ok(data)),
        }
    }
}

pub trait StateMachine: Send + 'static {
    /// Applies a committed command at `index` and returns the encoded reply.
    /// Must be deterministic; bad input is a reply, never a panic. An error
    /// is a local storage failure the replica cannot go on from: the node
    /// stops.
    fn apply(&mut self, index: Index, command: &[u8]) -> Result<Bytes, MachineError>;
    /// An entry with no command (a leader's no-op, a membership change).
    fn apply_empty(&mut self, index: Index);
    /// Answers a read-only query against the current state.
    fn query(&mut self, query: &[u8]) -> Bytes;
    /// The index of the last applied entry.
    fn applied(&self) -> Index;
    /// Everything, to restore a node that is far behind or restarting, as of
    /// `applied()`. The log up to there is discarded once the snapshot is
    /// saved, so whatever state the machine keeps outside the encoded bytes
    /// must be durable by the time `MachineSnapshot::finish` returns them.
    fn snapshot(&mut self) -> Result<MachineSnapshot, MachineError>;
    /// At start: the state of this node's own latest snapshot; empty data
    /// is the empty state.
    fn recover(&mut self, data: &[u8]) -> Result<(), MachineError>;
    /// A snapshot from the leader replaces the state (the node was too far
    /// behind for the log).
    fn install(&mut self, data: &[u8]) -> Result<(), MachineError>;
    /// Changes to the lease table since the last call, in the order they
    /// were made: what `apply` granted, revoked or checkpointed, and a
    /// `LeaseChange::Reset` with the whole table after `recover` or
    /// `install`. The node runs the expiry clock from them (`lessor.rs`).
    /// By default the machine has no leases.
    fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        Vec::new()
    }
}
