//! The node runtime: drives `ferrite-raft` with real time, disk and network.
//!
//! One driver task owns the core (`driver.rs`); a storage thread makes its
//! writes durable with group commit (`storage.rs`); an apply thread applies
//! committed entries and answers clients (`apply.rs`); the transport keeps one
//! TCP connection per peer with a versioned binary codec (`transport.rs`,
//! `codec.rs`). The state machine is anything that implements
//! [`StateMachine`]: the node routes opaque commands and replies.

mod apply;
pub mod codec;
mod config;
mod driver;
mod error;
mod machine;
mod metrics;
mod node;
mod storage;
mod transport;

pub use config::{NodeConfig, TICK};
pub use driver::Status;
pub use error::{NodeError, StartError};
pub use machine::{MachineSnapshot, StateMachine};
pub use metrics::{Histogram, Metrics, SYNC_BUCKETS};
pub use node::{wait_for_leader, Node};
pub use transport::Faults;
