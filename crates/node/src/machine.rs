//! What the node needs of a state machine. Requests and replies are opaque
//! bytes here: the front ends encode them, the machine decodes them, and the
//! node only orders, replicates and routes them (so forwarding a write from a
//! follower to the leader is forwarding bytes).

use bytes::Bytes;
use ferrite_raft::Index;

pub trait StateMachine: Send + 'static {
    /// Applies a committed command at `index` and returns the encoded reply.
    /// Must be deterministic; bad input is a reply, never a panic.
    fn apply(&mut self, index: Index, command: &[u8]) -> Bytes;
    /// An entry with no command (a leader's no-op, a membership change).
    fn apply_empty(&mut self, index: Index);
    /// Answers a read-only query against the current state.
    fn query(&self, query: &[u8]) -> Bytes;
    /// The index of the last applied entry.
    fn applied(&self) -> Index;
    /// Everything, to restore a node that is far behind or restarting.
    fn snapshot(&self) -> Bytes;
    /// Replaces the state by a snapshot's; empty data is the empty state.
    fn restore(&mut self, data: &[u8]) -> Result<(), String>;
}
