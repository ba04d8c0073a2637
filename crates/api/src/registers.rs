//! Ferrite's Registers service: named integer registers with get, set, add
//! and compare-and-set. Writes may carry a client id and sequence number;
//! then a retry is answered from the session table, never applied twice.
//! Register `NAME` is the key `/ferrite/registers/NAME` for permissions
//! (etcd's `token` metadata): get needs read, set, add and compare-and-set
//! write.

use ferrite_proto::ferrite::v1 as fv;
use ferrite_proto::ferrite::v1::registers_server::Registers;
use ferrite_service::Context;
use ferrite_state::{Op, Reply};
use tonic::{Request, Response, Status};

use crate::auth::principal;
use crate::errors::{service_status, unexpected};
use crate::header::Header;

pub struct RegistersService(pub Context);

fn session(client_id: u64, sequence: u64) -> Result<Option<(u64, u64)>, Status> {
    match (client_id, sequence) {
        (0, _) => Ok(None),
        (_, 0) => Err(Status::invalid_argument(
            "a client_id needs a sequence number from 1",
        )),
        (c, s) => Ok(Some((c, s))),
    }
}

#[tonic::async_trait]
impl Registers for RegistersService {
    async fn get(&self, req: Request<fv::GetRequest>) -> Result<Response<fv::GetResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        match self
            .0
            .read(Op::RegisterGet { name: req.name }, &who, req.serializable)
            .await
            .map_err(service_status)?
        {
            Reply::Value(value) => Ok(Response::new(fv::GetResponse {
                header: self.0.header_now(),
                value,
                exists: value != 0,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn set(&self, req: Request<fv::SetRequest>) -> Result<Response<fv::SetResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let op = Op::RegisterSet {
            name: req.name,
            value: req.value,
        };
        match self
            .0
            .write(op, session(req.client_id, req.sequence)?, &who)
            .await
            .map_err(service_status)?
        {
            Reply::Set { previous } => Ok(Response::new(fv::SetResponse {
                header: self.0.header_now(),
                value: req.value,
                previous,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn add(&self, req: Request<fv::AddRequest>) -> Result<Response<fv::AddResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let op = Op::RegisterAdd {
            name: req.name,
            delta: req.delta,
        };
        match self
            .0
            .write(op, session(req.client_id, req.sequence)?, &who)
            .await
            .map_err(service_status)?
        {
            Reply::Value(value) => Ok(Response::new(fv::AddResponse {
                header: self.0.header_now(),
                value,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn compare_and_set(
        &self,
        req: Request<fv::CompareAndSetRequest>,
    ) -> Result<Response<fv::CompareAndSetResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let req = req.into_inner();
        let op = Op::RegisterCas {
            name: req.name,
            expected: req.expected,
            new: req.new_value,
        };
        match self
            .0
            .write(op, session(req.client_id, req.sequence)?, &who)
            .await
            .map_err(service_status)?
        {
            Reply::Cas { swapped, current } => Ok(Response::new(fv::CompareAndSetResponse {
                header: self.0.header_now(),
                succeeded: swapped,
                current,
            })),
            other => Err(unexpected(other)),
        }
    }
}
