//! etcd's Lease service. Grants and revokes go through the log (a revoke
//! deletes the lease's keys at one revision on every member); keepalives
//! and remaining TTLs are the leader's lessor's to answer, so a follower
//! forwards them to it (`Node::lease_keep_alive`, `lease_time_to_live`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrite_node::NodeError;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::lease_server::Lease;
use ferrite_service::Context;
use ferrite_state::{Op, Reply, StateError, LEASE_TTL_MAX};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::principal;
use crate::errors::{node_status, service_status, state_status, unexpected};
use crate::header::Header;

/// Keepalive answers waiting for a slow client, per stream.
const KEEPALIVES_QUEUED_MAX: usize = 64;
/// Keepalives of one stream being answered at once.
const KEEPALIVES_IN_FLIGHT_MAX: usize = 64;
/// Tries with a new server-chosen id when one is taken.
const GRANT_TRIES: usize = 3;

pub struct LeaseService {
    pub ctx: Context,
    /// etcd's minimum TTL: one and a half election timeouts, rounded up to
    /// a second, so a lease cannot expire during a failover.
    pub min_ttl: i64,
    pub ids: LeaseIds,
}

/// Server-chosen lease ids, as etcd's request id generator makes them:
/// unique per member (its id in the high bits), increasing from the start
/// time, positive.
pub struct LeaseIds {
    prefix: u64,
    next: AtomicU64,
}

impl LeaseIds {
    pub fn new(member_id: u64) -> LeaseIds {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        LeaseIds {
            prefix: (member_id & 0x7f_ffff) << 40,
            next: AtomicU64::new((millis << 8) & ((1 << 40) - 1)),
        }
    }

    pub fn next(&self) -> i64 {
        let suffix = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1);
        let id = (self.prefix | suffix) & (i64::MAX as u64);
        // 0 is "no lease".
        (id as i64).max(1)
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

impl LeaseService {
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.ctx.header(self.ctx.events.revision())
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        if req.ttl > LEASE_TTL_MAX {
            return Err(state_status(StateError::LeaseTtlTooLarge));
        }
        if req.id < 0 {
            return Err(state_status(StateError::LeaseNotFound));
        }
        let ttl = req.ttl.max(self.min_ttl);
        let tries = if req.id == 0 { GRANT_TRIES } else { 1 };
        for _ in 0..tries {
            let id = if req.id == 0 { self.ids.next() } else { req.id };
            match self.ctx.write(Op::LeaseGrant { id, ttl }, None, &who).await {
                Ok(Reply::LeaseGranted { id, ttl }) => {
                    return Ok(Response::new(pb::LeaseGrantResponse {
                        header: self.header(),
                        id,
                        ttl,
                        error: String::new(),
                    }))
                }
                Ok(Reply::Error(StateError::LeaseExists)) if req.id == 0 => continue,
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(service_status(e)),
            }
        }
        Err(state_status(StateError::LeaseExists))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let id = req.into_inner().id;
        match self
            .ctx
            .write(Op::LeaseRevoke { id }, None, &who)
            .await
            .map_err(service_status)?
        {
            Reply::LeaseRevoked { revision } => Ok(Response::new(pb::LeaseRevokeResponse {
                header: self.ctx.header(revision),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        // Renewals need a user, checked once for the stream (etcd checks
        // none; Ferrite asks what lease grants ask).
        let who = principal(&self.ctx, &req)?;
        self.ctx
            .auth
            .current()
            .check_user(&who)
            .map_err(state_status)?;
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVES_QUEUED_MAX);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            // Several keepalives of one stream in flight at once (a client
            // renews all its leases on one stream), at most
            // `KEEPALIVES_IN_FLIGHT_MAX`.
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                let next = if inflight.len() < KEEPALIVES_IN_FLIGHT_MAX {
                    tokio::select! {
                        next = incoming.next() => next,
                        Some(done) = inflight.join_next() => {
                            if !matches!(done, Ok(true)) {
                                break;
                            }
                            continue;
                        }
                    }
                } else {
                    match inflight.join_next().await {
                        Some(Ok(true)) => continue,
                        _ => break,
                    }
                };
                let id = match next {
                    Some(Ok(r)) => r.id,
                    _ => break,
                };
                let (ctx, tx) = (ctx.clone(), tx.clone());
                inflight.spawn(async move {
                    let answer = match ctx.node.lease_keep_alive(id).await {
                        Ok(ttl) => Ok(pb::LeaseKeepAliveResponse {
                            header: ctx.header(ctx.events.revision()),
                            id,
                            ttl: ttl.granted_ttl_s,
                        }),
                        // etcd answers a keepalive of an unknown or expired
                        // lease with TTL 0, and keeps the stream.
                        Err(NodeError::LeaseNotFound) => Ok(pb::LeaseKeepAliveResponse {
                            header: ctx.header(ctx.events.revision()),
                            id,
                            ttl: 0,
                        }),
                        Err(e) => Err(node_status(e)),
                    };
                    let ok = answer.is_ok();
                    tx.send(answer).await.is_ok() && ok
                });
            }
            // Answer what is in flight before the stream ends.
            while inflight.join_next().await.is_some() {}
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        self.ctx
            .auth
            .current()
            .check_user(&who)
            .map_err(state_status)?;
        let not_found = || {
            Response::new(pb::LeaseTimeToLiveResponse {
                header: self.header(),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })
        };
        let ttl = match self.ctx.node.lease_time_to_live(req.id).await {
            Ok(ttl) => ttl,
            Err(NodeError::LeaseNotFound) => return Ok(not_found()),
            Err(e) => return Err(node_status(e)),
        };
        let keys = if req.keys {
            match self
                .ctx
                .read(
                    Op::LeaseGet {
                        id: req.id,
                        keys: true,
                    },
                    &who,
                    false,
                )
                .await
            {
                Ok(Reply::Lease(info)) => info.keys.into_iter().map(|k| k.to_vec()).collect(),
                Ok(Reply::Error(StateError::LeaseNotFound)) => return Ok(not_found()),
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(service_status(e)),
            }
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: self.header(),
            id: req.id,
            ttl: ttl.remaining_s,
            granted_ttl: ttl.granted_ttl_s,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        match self.ctx.read(Op::LeaseList, &who, false).await {
            Ok(Reply::Leases(ids)) => Ok(Response::new(pb::LeaseLeasesResponse {
                header: self.header(),
                leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
            })),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(service_status(e)),
        }
    }
}
