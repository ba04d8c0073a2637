//! Errors the node returns to front ends. Every failed request is one of two
//! outcomes, and the type keeps them apart because what may be done next
//! depends on it:
//!
//! - **definitely not applied** ([`NodeError::not_applied`]): refused before
//!   it was proposed, or its log position was taken by another leader's
//!   entry. The server or the client may send it again.
//! - **outcome unknown** ([`NodeError::is_unknown`]): it may have been
//!   applied, or may still be. The server never re-proposes it; the client
//!   is told, as etcd tells it ("request timed out"), and decides.

use ferrite_raft::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    // ---- Definitely not applied ----------------------------------------
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("no leader at the moment; retry")]
    NoLeader,
    #[error("busy: {0}; retry")]
    Busy(String),
    #[error("request too large")]
    TooLarge,
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The entry's log position committed with another leader's entry.
    #[error("the entry was superseded by a new leader's; it was not applied")]
    Superseded,
    /// A keepalive or time-to-live query for a lease that is unknown or
    /// expired: nothing was renewed.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,

    // ---- Outcome unknown -------------------------------------------------
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The answer cannot be known any more (see [`Unknown`]).
    #[error("the outcome is unknown: {0}")]
    Unknown(Unknown),

    // ---- The node itself -------------------------------------------------
    /// The node is stopping. A write that was accepted before may still
    /// commit: treat it as unknown.
    #[error("the node is stopping")]
    Stopped,
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Why a write's outcome can no longer be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    /// A snapshot from the leader replaced the log where the entry was: it
    /// may be in the snapshot, and its reply is not.
    #[error("a snapshot from the leader covered the entry")]
    CoveredBySnapshot,
    /// The write was forwarded and the leader it went to lost leadership or
    /// its connection before answering.
    #[error("the leader changed after the write was forwarded")]
    LeaderChanged,
}

impl NodeError {
    /// Definitely not applied: sending it again cannot apply it twice.
    pub fn not_applied(&self) -> bool {
        matches!(
            self,
            NodeError::NotLeader { .. }
                | NodeError::NoLeader
                | NodeError::Busy(_)
                | NodeError::TooLarge
                | NodeError::Invalid(_)
                | NodeError::Superseded
                | NodeError::LeaseNotFound
        )
    }

    /// Worth retrying after a pause or elsewhere: not applied, and not
    /// refused for what it is (too large, invalid).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            NodeError::NotLeader { .. }
                | NodeError::NoLeader
                | NodeError::Busy(_)
                | NodeError::Superseded
        )
    }

    /// The write may have been applied (or may still be).
    pub fn is_unknown(&self) -> bool {
        matches!(
            self,
            NodeError::Timeout | NodeError::Unknown(_) | NodeError::Stopped
        )
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the data directory: {0}")]
    Wal(#[from] ferrite_wal::WalError),
    #[error("invalid durable state: {0}")]
    Raft(#[from] ferrite_raft::ConfigError),
    #[error("the snapshot on disk does not restore: {0}")]
    Snapshot(String),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}
