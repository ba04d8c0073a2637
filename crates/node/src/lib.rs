//! The node: the replica around the Raft core, and the threads that run it.
//!
//! The replica's logic is sans-IO and deterministic, so that the simulator
//! runs exactly the code that ships: [`Replica`] (`replica.rs`: proposals,
//! forwarding, read index, outcomes, deadlines in ticks), [`Applier`]
//! (`applier.rs`: apply in order, answer waiters, serve reads at their
//! index, snapshot policy), the lessor (`lessor.rs`: the leader's lease
//! expiry clock, which revokes and checkpoints through the log) and
//! [`write_batch`] (`storage.rs`: the group-commit rule). The real node runs them with real time, disk and
//! network: one driver task owns the replica (`driver.rs`), a storage thread
//! owns the WAL (`storage.rs`), an apply thread owns the state machine
//! (`apply.rs`), and the transport keeps one TCP connection per peer with a
//! versioned binary codec (`transport.rs`, `codec.rs`), dialing peers
//! by IP address or host name, resolved at each connect (`peer_addr.rs`). The state machine is
//! anything that implements [`StateMachine`]: the node routes opaque
//! commands and replies; `state_leases.rs` maps `ferrite-state`'s leases
//! to the lessor, for the machines that are `ferrite-state`'s.

mod applier;
mod apply;
pub mod codec;
mod config;
mod driver;
mod error;
mod force_new_cluster;
mod lessor;
mod machine;
mod metrics;
mod node;
mod peer_addr;
pub mod peer_io;
pub mod ports;
pub mod replica;
pub mod state_leases;
mod storage;
mod transport;

pub use applier::{Applied, Applier, SnapshotPolicy};
pub use config::{NodeConfig, TICK};
pub use driver::Status;
pub use error::{NodeError, StartError, Unknown};
pub use lessor::{
    LeaseChange, LeaseId, LeaseProposals, LeaseRecord, LeaseTtl, CHECKPOINT_LEASES_MAX,
};
pub use machine::{MachineError, MachineSnapshot, StateMachine};
pub use metrics::{Histogram, Metrics, SYNC_BUCKETS};
pub use node::{wait_for_leader, Node};
pub use peer_addr::{AddrError, PeerAddr};
pub use replica::{
    Answer, ApplyTask, Replica, ReplicaConfig, ReplicaCounters, ReplicaOutput, RequestId,
    Requester, StorageTask,
};
pub use storage::{write_batch, Committed};
pub use transport::Faults;
