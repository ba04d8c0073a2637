//! Typed errors the core returns to its caller. Anything that came from the
//! network or from the caller is an error here; our own bugs are assertions.

use crate::types::{Index, NodeId, Term};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid raft configuration: {0}")]
    Invalid(String),
    #[error("invalid durable state: {0}")]
    Durable(String),
}

/// Why a proposal, a membership change or a read was refused. The client may
/// retry elsewhere (`NotLeader`, `NoLeader`) or later (the rest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader; the leader is {leader}")]
    NotLeader { leader: NodeId },
    #[error("no leader is known at the moment")]
    NoLeader,
    #[error("the proposal queue is full ({uncommitted_bytes} bytes uncommitted, limit {limit})")]
    ProposalQueueFull {
        uncommitted_bytes: usize,
        limit: usize,
    },
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    EntryTooLarge { size: usize, limit: usize },
    #[error("too many reads pending (limit {limit})")]
    ReadQueueFull { limit: usize },
    #[error("a leader transfer is in progress")]
    TransferInProgress,
    #[error("the leader has not yet committed an entry of its term")]
    LeaderNotReady,
    #[error("a membership change is already in progress (index {index})")]
    MembershipChangePending { index: Index },
    #[error("invalid membership change: {0}")]
    InvalidMembershipChange(String),
    #[error("learner {node} is {behind} entries behind; promote it once caught up")]
    LearnerBehind { node: NodeId, behind: u64 },
}

/// A message the core could not accept. The message is dropped and the node
/// goes on; the caller should log it and, for a garbage peer, close the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("message addressed to {to}, but this is {me}")]
    WrongRecipient { to: NodeId, me: NodeId },
    #[error("malformed message from {from}: {reason}")]
    Malformed { from: NodeId, reason: String },
}

/// Why a compaction request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("cannot compact to {index}: only {applied} has been applied")]
    NotApplied { index: Index, applied: Index },
    #[error("log is already compacted to {snapshot_index}")]
    AlreadyCompacted { snapshot_index: Index },
    #[error("no entry at {index} (term {term:?})")]
    Unavailable { index: Index, term: Option<Term> },
}
