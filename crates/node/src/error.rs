//! Errors the node returns to front ends. Each says whether and where to
//! retry, because that is what a client needs to know.

use ferrite_raft::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("no leader at the moment; retry")]
    NoLeader,
    #[error("busy: {0}; retry")]
    Busy(String),
    #[error("request too large")]
    TooLarge,
    #[error("request timed out")]
    Timeout,
    #[error("the entry was superseded by a new leader's; retry")]
    Lost,
    #[error("the node is stopping")]
    Stopped,
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("invalid request: {0}")]
    Invalid(String),
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
