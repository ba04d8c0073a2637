//! etcd's Lock and Election services (`v3lockpb`, `v3electionpb`): the
//! translation to `ferrite_service::concurrency`, which builds them from
//! leases, transactions and watches as etcd does.

use std::pin::Pin;

use bytes::Bytes;
use ferrite_proto::etcdserverpb::ResponseHeader;
use ferrite_proto::v3electionpb as ep;
use ferrite_proto::v3electionpb::election_server::Election;
use ferrite_proto::v3lockpb as lp;
use ferrite_proto::v3lockpb::lock_server::Lock;
use ferrite_service::concurrency::{self, ConcurrencyError, Held};
use ferrite_service::Context;
use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status};

use crate::auth::principal;
use crate::convert;
use crate::errors::{service_status, state_status};
use crate::header::Header;

/// Leader changes waiting for a slow observer.
const OBSERVED_QUEUED_MAX: usize = 16;

fn status(e: ConcurrencyError) -> Status {
    match e {
        ConcurrencyError::Service(e) => service_status(e),
        ConcurrencyError::State(e) => state_status(e),
        e @ (ConcurrencyError::NotLeader | ConcurrencyError::NoLeader) => {
            Status::new(Code::Unknown, e.to_string())
        }
        e @ ConcurrencyError::Unexpected(_) => Status::internal(e.to_string()),
    }
}

fn header(ctx: &Context, revision: i64) -> Option<ResponseHeader> {
    ctx.header(revision)
}

pub struct LockService(pub Context);

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        req: Request<lp::LockRequest>,
    ) -> Result<Response<lp::LockResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let held = concurrency::lock(&self.0, &who, &req.name, req.lease)
            .await
            .map_err(status)?;
        Ok(Response::new(lp::LockResponse {
            header: header(&self.0, held.header_revision),
            key: held.key.to_vec(),
        }))
    }

    async fn unlock(
        &self,
        req: Request<lp::UnlockRequest>,
    ) -> Result<Response<lp::UnlockResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let key = Bytes::from(req.into_inner().key);
        let revision = concurrency::unlock(&self.0, &who, &key)
            .await
            .map_err(status)?;
        Ok(Response::new(lp::UnlockResponse {
            header: header(&self.0, revision),
        }))
    }
}

pub struct ElectionService(pub Context);

fn held(leader: Option<ep::LeaderKey>) -> Result<Held, Status> {
    let l = leader.ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
    Ok(Held {
        name: l.name.into(),
        key: l.key.into(),
        revision: l.rev,
        lease: l.lease,
        header_revision: 0,
    })
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<ep::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<ep::CampaignRequest>,
    ) -> Result<Response<ep::CampaignResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let h = concurrency::campaign(&self.0, &who, &req.name, req.lease, req.value.into())
            .await
            .map_err(status)?;
        Ok(Response::new(ep::CampaignResponse {
            header: header(&self.0, h.header_revision),
            leader: Some(ep::LeaderKey {
                name: h.name.to_vec(),
                key: h.key.to_vec(),
                rev: h.revision,
                lease: h.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ep::ProclaimRequest>,
    ) -> Result<Response<ep::ProclaimResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let leader = held(req.leader)?;
        let revision = concurrency::proclaim(&self.0, &who, &leader, req.value.into())
            .await
            .map_err(status)?;
        Ok(Response::new(ep::ProclaimResponse {
            header: header(&self.0, revision),
        }))
    }

    async fn leader(
        &self,
        req: Request<ep::LeaderRequest>,
    ) -> Result<Response<ep::LeaderResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let (kv, revision) = concurrency::leader(&self.0, &who, &req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(ep::LeaderResponse {
            header: header(&self.0, revision),
            kv: Some(convert::key_value(kv)),
        }))
    }

    async fn observe(
        &self,
        req: Request<ep::LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let who = principal(&self.0, &req)?;
        let name = req.into_inner().name;
        let (tx, mut rx) = mpsc::channel(OBSERVED_QUEUED_MAX);
        let (out_tx, out_rx) = mpsc::channel(1);
        let ctx = self.0.clone();
        tokio::spawn(async move {
            let observing = concurrency::observe(&ctx, &who, &name, tx);
            let forwarding = async {
                while let Some((kv, revision)) = rx.recv().await {
                    let resp = ep::LeaderResponse {
                        header: header(&ctx, revision),
                        kv: Some(convert::key_value(kv)),
                    };
                    if out_tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                r = observing => {
                    if let Err(e) = r {
                        let _ = out_tx.send(Err(status(e))).await;
                    }
                }
                () = forwarding => {}
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<ep::ResignRequest>,
    ) -> Result<Response<ep::ResignResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let leader = held(req.into_inner().leader)?;
        let revision = concurrency::resign(&self.0, &who, &leader)
            .await
            .map_err(status)?;
        Ok(Response::new(ep::ResignResponse {
            header: header(&self.0, revision),
        }))
    }
}
