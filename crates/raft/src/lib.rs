//! The Raft consensus algorithm as a pure, deterministic state machine.
//!
//! No IO, no clock, no threads, no async: inputs are messages
//! ([`Raft::step`]), ticks ([`Raft::tick`]), proposals ([`Raft::propose`],
//! [`Raft::propose_membership`]), reads ([`Raft::read_index`]), and reports
//! from the caller ([`Raft::on_persisted`], [`Raft::on_applied`],
//! [`Raft::compact`]). Outputs are data ([`Raft::take_output`]): what to make
//! durable, what to send (and what only after it is durable), what to apply,
//! which reads are confirmed. Given the same inputs and seed, a node produces
//! the same outputs; that is what makes the simulator possible.

mod canary;
mod config;
mod core;
mod election;
mod error;
mod leader;
mod log;
mod membership;
mod message;
mod output;
mod prng;
mod progress;
mod quorum;
mod replication;
mod snapshot;
mod snapshot_transfer;
mod types;

pub use crate::canary::Canary;
pub use crate::config::{Config, ELECTION_TICKS_MIN, HEARTBEAT_TICKS};
pub use crate::core::{DurableState, Raft, Role, DISCONNECT_WAIT_TICKS_MAX};
pub use crate::error::{CompactError, ConfigError, ProposeError, StepError};
pub use crate::log::{Entry, Log, Payload};
pub use crate::membership::{Membership, MembershipChange};
pub use crate::message::{AppendResult, Body, Message};
pub use crate::output::{HardState, Output, Persist, ReadReady};
pub use crate::prng::Prng;
pub use crate::progress::{Progress, ProgressState};
pub use crate::quorum::quorum_value;
pub use crate::snapshot::{Snapshot, SnapshotMeta};
pub use crate::types::{Index, NodeId, Term};
