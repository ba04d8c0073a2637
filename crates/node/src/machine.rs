//! What the node needs of a state machine. Requests and replies are opaque
//! bytes here: the front ends encode them, the machine decodes them, and the
//! node only orders, replicates and routes them (so forwarding a write from a
//! follower to the leader is forwarding bytes).

use bytes::Bytes;
use ferrite_raft::Index;

pub struct MachineSnapshot {
    pub data: Bytes,
    /// Makes the state outside `data` durable as of the snapshot's index
    /// (or later); the snapshot is used only once it has succeeded.
    pub make_durable: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
}

impl MachineSnapshot {
    /// A snapshot that is all in `data`.
    pub fn complete(data: Bytes) -> MachineSnapshot {
        MachineSnapshot {
            data,
            make_durable: None,
        }
    }
}

pub trait StateMachine: Send + 'static {
    /// Applies a committed command at `index` and returns the encoded reply.
    /// Must be deterministic; bad input is a reply, never a panic. An error
    /// is a local storage failure the replica cannot go on from (a volume
    /// file that cannot be written): the node stops.
    fn apply(&mut self, index: Index, command: &[u8]) -> Result<Bytes, String>;
    /// An entry with no command (a leader's no-op, a membership change).
    fn apply_empty(&mut self, index: Index);
    /// Answers a read-only query against the current state.
    fn query(&mut self, query: &[u8]) -> Bytes;
    /// The index of the last applied entry.
    fn applied(&self) -> Index;
    /// Everything, to restore a node that is far behind or restarting. The
    /// log up to `applied()` is discarded once the snapshot is saved, so
    /// whatever state the machine keeps outside the returned bytes must be
    /// durable first: `MachineSnapshot::make_durable` does that, on another
    /// thread, while the apply thread goes on.
    fn snapshot(&mut self) -> Result<MachineSnapshot, String>;
    /// At start: the state of this node's own latest snapshot; empty data
    /// is the empty state.
    fn recover(&mut self, data: &[u8]) -> Result<(), String>;
    /// A snapshot from the leader replaces the state (the node was too far
    /// behind for the log).
    fn install(&mut self, data: &[u8]) -> Result<(), String>;
}
