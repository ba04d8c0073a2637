//! Messages between Raft nodes. Plain data: the node's codec turns them into
//! bytes, the core only reads and builds them.

use bytes::Bytes;

use crate::log::Entry;
use crate::snapshot::SnapshotMeta;
use crate::types::{Index, NodeId, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term the sender would
    /// campaign in (its own term plus one), which it has not adopted.
    pub term: Term,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Would you vote for me in `term`? Changes nobody's term (Raft
    /// dissertation §9.6), so a partitioned node cannot disrupt the cluster.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// RequestVote (Raft §5.2). `transfer` marks a campaign started by
    /// TimeoutNow: voters then ignore their leader lease.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): `entries` follow `prev_index`.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    AppendResponse(AppendResult),
    /// Leadership heartbeat. `commit` is at most what the follower is known
    /// to hold; `read_round` confirms ReadIndex requests.
    Heartbeat {
        commit: Index,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// One chunk of InstallSnapshot (Raft §7): `data` starts at `offset` of
    /// a snapshot of `total_bytes` bytes.
    Snapshot {
        meta: SnapshotMeta,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
    },
    /// `next_offset` is the first byte the follower still needs; `done` says
    /// it has made the whole snapshot durable.
    SnapshotResponse {
        index: Index,
        next_offset: u64,
        done: bool,
    },
    /// Leader transfer: start an election now, without pre-vote.
    TimeoutNow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`, durably.
    Success { match_index: Index },
    /// The follower's log does not contain `rejected` with the leader's term.
    /// The hint is the last index at or below `rejected` whose term is at most
    /// the leader's `prev_term`, so the leader can skip a whole term at once.
    Reject {
        rejected: Index,
        hint_index: Index,
        hint_term: Term,
    },
}

impl Message {
    /// A short name of the body, for traces.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::Vote { .. } => "Vote",
            Body::VoteResponse { .. } => "VoteResponse",
            Body::Append { .. } => "Append",
            Body::AppendResponse(_) => "AppendResponse",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::Snapshot { .. } => "Snapshot",
            Body::SnapshotResponse { .. } => "SnapshotResponse",
            Body::TimeoutNow => "TimeoutNow",
        }
    }
}
