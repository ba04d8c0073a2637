//! Tuning and limits of one Raft node. Every queue and message the core builds
//! has a named bound here; the relations between them are checked in
//! `Config::validate` (and the defaults at compile time).

use crate::canary::Canary;
use crate::error::ConfigError;
use crate::types::NodeId;

/// Default ticks between heartbeats. With the node's 100 ms tick this is one
/// heartbeat per 100 ms: cheap, yet a lost heartbeat is retried well inside
/// the election timeout.
pub const HEARTBEAT_TICKS: u32 = 1;
/// Default minimum election timeout in ticks; the actual timeout is drawn from
/// `[min, 2 * min)` so that split votes resolve (Raft §5.2).
pub const ELECTION_TICKS_MIN: u32 = 10;
const _: () = assert!(HEARTBEAT_TICKS < ELECTION_TICKS_MIN);

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Ticks between heartbeats from a leader.
    pub heartbeat_ticks: u32,
    /// Minimum ticks without hearing from a leader before a follower starts a
    /// pre-vote. Also the check-quorum period of a leader and the lease during
    /// which a follower ignores vote requests.
    pub election_ticks_min: u32,
    /// AppendEntries messages in flight to one follower before the leader
    /// waits for acknowledgements (the pipeline window).
    pub inflight_appends_max: usize,
    /// Entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Payload bytes in one AppendEntries message (at least one entry is
    /// always sent, and no entry exceeds `entry_bytes_max`).
    pub append_bytes_max: usize,
    /// Payload bytes of one proposal.
    pub entry_bytes_max: usize,
    /// Payload bytes proposed but not yet committed, across all proposals;
    /// beyond it proposals are refused with `ProposalQueueFull`.
    pub uncommitted_bytes_max: usize,
    /// Read requests waiting for confirmation of leadership.
    pub pending_reads_max: usize,
    /// Bytes of snapshot data in one InstallSnapshot message.
    pub snapshot_chunk_bytes: usize,
    /// Payload bytes of committed entries handed out for apply in one output.
    pub apply_bytes_max: usize,
    /// A learner is promoted only when it is at most this many entries behind
    /// the leader's log.
    pub learner_lag_max: u64,
    /// Test-only: a deliberately broken behaviour, to show the simulator's
    /// checkers catch it. `Canary::None` in every real configuration.
    pub canary: Canary,
}

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            heartbeat_ticks: HEARTBEAT_TICKS,
            election_ticks_min: ELECTION_TICKS_MIN,
            inflight_appends_max: 64,
            append_entries_max: 1024,
            append_bytes_max: 1 << 20,
            entry_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            pending_reads_max: 4096,
            snapshot_chunk_bytes: 1 << 20,
            apply_bytes_max: 16 << 20,
            learner_lag_max: 1000,
            canary: Canary::None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if self.id == NodeId(0) {
            return bad("node id 0 is reserved for `no node`");
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks must be at least 1");
        }
        if self.heartbeat_ticks >= self.election_ticks_min {
            return bad("heartbeat_ticks must be below election_ticks_min");
        }
        if self.inflight_appends_max == 0 || self.append_entries_max == 0 {
            return bad("inflight_appends_max and append_entries_max must be at least 1");
        }
        if self.append_bytes_max == 0 || self.snapshot_chunk_bytes == 0 {
            return bad("append_bytes_max and snapshot_chunk_bytes must be at least 1");
        }
        if self.entry_bytes_max > self.uncommitted_bytes_max {
            return bad("entry_bytes_max must not exceed uncommitted_bytes_max");
        }
        if self.pending_reads_max == 0 || self.apply_bytes_max == 0 {
            return bad("pending_reads_max and apply_bytes_max must be at least 1");
        }
        Ok(())
    }
}
