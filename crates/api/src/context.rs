//! What every front end shares: the node, this member's identity, and the
//! one way to run a request (propose a write, or read after ReadIndex) with
//! retries through elections and etcd's error codes for what fails.

use std::time::Duration;

use bytes::Bytes;
use ferrite_node::{Metrics, Node, NodeError};
use ferrite_proto::etcdserverpb::ResponseHeader;
use ferrite_state::{Command, Op, Reply, StateError};
use tonic::{Code, Status};

use crate::machine::open_envelope;

/// How long a request may spend waiting for a leader before the client is
/// told "no leader": long enough to ride out an election.
const LEADER_WAIT: Duration = Duration::from_secs(3);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct Context {
    pub node: Node,
    pub cluster_id: u64,
    pub member_id: u64,
    pub name: String,
}

impl Context {
    pub fn metrics(&self) -> &Metrics {
        self.node.metrics()
    }

    pub fn term(&self) -> u64 {
        Metrics::get(&self.metrics().term)
    }

    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term(),
        })
    }

    /// Proposes `op` (in a session if `session` is given) and returns the
    /// state machine's reply. Retries while there is no leader, or when a
    /// leader change superseded the entry (then it was not applied).
    pub async fn write(&self, op: Op, session: Option<(u64, u64)>) -> Result<Reply, Status> {
        let command = Command { session, op }.encode();
        self.retrying(LEADER_WAIT, false, || self.node.propose(command.clone()))
            .await
    }

    /// Answers a read-only `op`: linearizable unless `serializable`.
    pub async fn read(&self, op: Op, serializable: bool) -> Result<Reply, Status> {
        let query = Command::new(op).encode();
        self.retrying(LEADER_WAIT, false, || {
            self.node.read(query.clone(), !serializable)
        })
        .await
    }

    /// Proposes an `op` that may safely apply twice (a volume write or zero,
    /// whose later overlapping requests wait for its reply), retrying for as
    /// long as `within`: also when the outcome of an attempt is unknown
    /// (timed out), so that a block device sees a failover as latency.
    pub async fn write_idempotent(&self, op: Op, within: Duration) -> Result<Reply, Status> {
        let command = Command::new(op).encode();
        self.retrying(within, true, || self.node.propose(command.clone()))
            .await
    }

    /// A linearizable read that keeps retrying through failovers for `within`.
    pub async fn read_patiently(&self, op: Op, within: Duration) -> Result<Reply, Status> {
        let query = Command::new(op).encode();
        self.retrying(within, true, || self.node.read(query.clone(), true))
            .await
    }

    async fn retrying<F, Fut>(
        &self,
        within: Duration,
        retry_unknown: bool,
        mut attempt: F,
    ) -> Result<Reply, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, NodeError>>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + within;
        loop {
            match attempt().await {
                Ok(bytes) => {
                    self.metrics().requests.record(started.elapsed());
                    return open_envelope(&bytes)
                        .map_err(|e| Status::internal(format!("etcdserver: {e}")));
                }
                Err(NodeError::NoLeader) if tokio::time::Instant::now() < deadline => {
                    self.node.leader_known(RETRY_PAUSE).await;
                }
                Err(NodeError::NotLeader { .. } | NodeError::Superseded)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(NodeError::Timeout | NodeError::Busy(_) | NodeError::Unknown(_))
                    if retry_unknown && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(node_status(e)),
            }
        }
    }
}

/// etcd's codes and messages for node-level failures (clients match on
/// them: see etcd's `rpctypes`).
pub fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::NoLeader | NodeError::NotLeader { leader: None } => {
            Status::new(Code::Unavailable, "etcdserver: no leader")
        }
        NodeError::NotLeader { .. } => Status::new(Code::Unavailable, "etcdserver: leader changed"),
        NodeError::Superseded => Status::new(Code::Unavailable, "etcdserver: leader changed"),
        NodeError::Timeout => Status::new(Code::Unavailable, "etcdserver: request timed out"),
        NodeError::Unknown(ferrite_node::Unknown::LeaderChanged) => Status::new(
            Code::Unavailable,
            "etcdserver: request timed out, possibly due to previous leader failure",
        ),
        NodeError::Unknown(ferrite_node::Unknown::CoveredBySnapshot) => {
            Status::new(Code::Unavailable, "etcdserver: request timed out")
        }
        NodeError::TooLarge => {
            Status::new(Code::InvalidArgument, "etcdserver: request is too large")
        }
        NodeError::Busy(why) => Status::new(
            Code::Unavailable,
            format!("etcdserver: too many requests ({why})"),
        ),
        NodeError::Stopped => Status::new(Code::Unavailable, "etcdserver: server stopped"),
        NodeError::Storage(why) => {
            Status::new(Code::Internal, format!("etcdserver: storage failed: {why}"))
        }
        NodeError::Invalid(why) => {
            Status::new(Code::FailedPrecondition, format!("etcdserver: {why}"))
        }
    }
}

/// etcd's codes and messages for request-level errors.
pub fn state_status(e: StateError) -> Status {
    let code = match e {
        StateError::Compacted | StateError::FutureRevision => Code::OutOfRange,
        StateError::Overflow { .. } => Code::OutOfRange,
        _ => Code::InvalidArgument,
    };
    let text = e.to_string();
    let text = if text.starts_with("etcdserver: ") {
        text
    } else {
        format!("etcdserver: {text}")
    };
    Status::new(code, text)
}

/// A reply of the wrong kind is a bug on one side of the wire.
pub fn unexpected(reply: Reply) -> Status {
    match reply {
        Reply::Error(e) => state_status(e),
        other => Status::internal(format!("etcdserver: unexpected reply {other:?}")),
    }
}
