//! What every front end shares: the node, this member's identity, and the
//! one way to run a request (propose a write, or read after ReadIndex) with
//! retries through elections. What fails is a typed `ServiceError`; each
//! front end translates it to its protocol.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrite_node::{Metrics, Node, NodeError};
use ferrite_state::{Command, Op, Principal, Reply};

use crate::auth::{AuthConfig, AuthView};
use crate::error::ServiceError;
use crate::events::EventStream;
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
    /// Every applied change, in order (the machine publishes it).
    pub events: EventStream,
    pub watch_metrics: Arc<WatchMetrics>,
    /// How this member calls the others (on their peer ports).
    pub peers: crate::members::PeerDialer,
    /// The applied auth store (the machine keeps it current).
    pub auth: AuthView,
    pub auth_config: AuthConfig,
    /// Point-in-time captures of the state, shared with the machine
    /// (`snapshot.rs`).
    pub captures: Arc<crate::snapshot::Captures>,
    /// The space quota, this member's db size, test-only faults.
    pub maintenance: Arc<crate::maintenance::Maintenance>,
}

/// Watch figures for `/metrics`.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    pub streams: AtomicI64,
    pub watchers: AtomicI64,
    pub events_sent: AtomicU64,
    /// Times a stream fell behind the event stream and caught up from
    /// history (etcd's slow watchers).
    pub lagged: AtomicU64,
}

impl WatchMetrics {
    pub fn adjust_watchers(&self, before: usize, after: usize) {
        let delta = after as i64 - before as i64;
        if delta != 0 {
            self.watchers.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

impl Context {
    pub fn metrics(&self) -> &Metrics {
        self.node.metrics()
    }

    pub fn term(&self) -> u64 {
        Metrics::get(&self.metrics().term)
    }

    /// Proposes `op` as `who` (in a session if `session` is given) and
    /// returns the state machine's reply; a write over the space quota is
    /// refused first (`maintenance.rs`) (a refusal of `who` is a
    /// `Reply::Error`). Retries while there is no leader, or when a leader
    /// change superseded the entry (then it was not applied).
    pub async fn write(
        &self,
        op: Op,
        session: Option<(u64, u64)>,
        who: &Principal,
    ) -> Result<Reply, ServiceError> {
        self.check_quota(&op).await?;
        self.write_unchecked(op, session, who).await
    }

    /// `write` without the quota check (the alarm the check raises).
    pub(crate) async fn write_unchecked(
        &self,
        op: Op,
        session: Option<(u64, u64)>,
        who: &Principal,
    ) -> Result<Reply, ServiceError> {
        let command = Command {
            session,
            principal: who.clone(),
            op,
        }
        .encode();
        self.retrying(LEADER_WAIT, false, || self.node.propose(command.clone()))
            .await
    }

    /// Answers a read-only `op` for `who`: linearizable unless
    /// `serializable`.
    pub async fn read(
        &self,
        op: Op,
        who: &Principal,
        serializable: bool,
    ) -> Result<Reply, ServiceError> {
        let query = Command::new(op).by(who.clone()).encode();
        self.retrying(LEADER_WAIT, false, || {
            self.node.read(query.clone(), !serializable)
        })
        .await
    }

    /// A linearizable read of a raw query (one the machine answers without
    /// decoding it as a command: `snapshot.rs`'s captures).
    pub(crate) async fn read_query(&self, query: Bytes) -> Result<Reply, ServiceError> {
        self.retrying(LEADER_WAIT, false, || self.node.read(query.clone(), true))
            .await
    }

    /// Proposes an `op` that may safely apply twice (a volume write or zero,
    /// whose later overlapping requests wait for its reply), retrying for as
    /// long as `within`: also when the outcome of an attempt is unknown
    /// (timed out), so that a block device sees a failover as latency.
    pub async fn write_idempotent(
        &self,
        op: Op,
        who: &Principal,
        within: Duration,
    ) -> Result<Reply, ServiceError> {
        let command = Command::new(op).by(who.clone()).encode();
        self.retrying(within, true, || self.node.propose(command.clone()))
            .await
    }

    /// A linearizable read that keeps retrying through failovers for `within`.
    pub async fn read_patiently(
        &self,
        op: Op,
        who: &Principal,
        within: Duration,
    ) -> Result<Reply, ServiceError> {
        let query = Command::new(op).by(who.clone()).encode();
        self.retrying(within, true, || self.node.read(query.clone(), true))
            .await
    }

    async fn retrying<F, Fut>(
        &self,
        within: Duration,
        retry_unknown: bool,
        mut attempt: F,
    ) -> Result<Reply, ServiceError>
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
                    return open_envelope(&bytes).map_err(ServiceError::Envelope);
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
                Err(e) => return Err(ServiceError::Node(e)),
            }
        }
    }
}
