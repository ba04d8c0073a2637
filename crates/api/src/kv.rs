//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::kv_server::Kv;
use ferrite_proto::{Session, SESSION_METADATA};
use ferrite_service::Context;
use ferrite_state::{Op, Reply};
use tonic::{Request, Response, Status};

use crate::auth::principal;
use crate::convert;
use crate::errors::{service_status, unexpected};
use crate::header::Header;

pub struct KvService(pub Context);

/// The write's session, if Ferrite's client sent one (`ferrite-session`,
/// see `ferrite_proto::Session`): a retried write with a sequence already
/// applied gets the saved answer instead of applying again (an etcd client
/// sends none: at-least-once).
fn session_of<T>(req: &Request<T>) -> Result<Option<(u64, u64)>, Status> {
    let Some(value) = req.metadata().get(SESSION_METADATA) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        Status::invalid_argument(format!("etcdserver: bad {SESSION_METADATA} metadata"))
    })?;
    let session =
        Session::parse(text).map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
    Ok(session.map(|s| (s.client, s.seq)))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let serializable = req.serializable;
        let header = |rev| self.0.header(rev);
        match self
            .0
            .read(Op::Range(convert::range_request(req)), &who, serializable)
            .await
            .map_err(service_status)?
        {
            Reply::Range(r) => Ok(Response::new(convert::range_response(r, header))),
            other => Err(unexpected(other)),
        }
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let session = session_of(&req)?;
        let who = principal(&self.0, &req)?;
        let op = Op::Put(convert::put_request(req.into_inner()));
        let header = |rev| self.0.header(rev);
        match self
            .0
            .write(op, session, &who)
            .await
            .map_err(service_status)?
        {
            Reply::Put(r) => Ok(Response::new(convert::put_response(r, header))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let session = session_of(&req)?;
        let who = principal(&self.0, &req)?;
        let op = Op::DeleteRange(convert::delete_request(req.into_inner()));
        let header = |rev| self.0.header(rev);
        match self
            .0
            .write(op, session, &who)
            .await
            .map_err(service_status)?
        {
            Reply::DeleteRange(r) => Ok(Response::new(convert::delete_response(r, header))),
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let session = session_of(&req)?;
        let who = principal(&self.0, &req)?;
        let txn = convert::txn_request(req.into_inner())
            .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        let header = |rev| self.0.header(rev);
        match self
            .0
            .write(Op::Txn(txn), session, &who)
            .await
            .map_err(service_status)?
        {
            Reply::Txn(r) => Ok(Response::new(convert::txn_response(r, &header))),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let op = Op::Compact(ferrite_state::CompactRequest {
            revision: req.revision,
            physical: req.physical,
        });
        match self.0.write(op, None, &who).await.map_err(service_status)? {
            Reply::Compact(r) => Ok(Response::new(pb::CompactionResponse {
                header: self.0.header(r.revision),
            })),
            other => Err(unexpected(other)),
        }
    }
}
