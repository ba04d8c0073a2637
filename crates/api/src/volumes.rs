//! Ferrite's `Volumes` gRPC service (the operations themselves are on
//! `ferrite-service`'s `Context`, shared with the NBD server), and the
//! `Copy` stream a member serves to a peer that needs its volume files.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use ferrite_proto::ferrite::v1 as fv;
use ferrite_service::copy::COPY_CHUNK_BYTES;
use ferrite_service::machine::VolumeFiles;
use ferrite_service::{Context, ServiceError};
use ferrite_state::{AuthRequest, Op, Reply, StateError, VolumeInfo};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::auth::principal;
use crate::errors::{service_status, state_status};
use crate::header::Header;
use crate::tls::PeerConnectInfo;

/// The largest write or read one gRPC call carries.
const GRPC_DATA_BYTES_MAX: usize = 1 << 20;

/// Volume errors with the gRPC codes a client can act on.
pub fn volume_status(e: ServiceError) -> Status {
    match e {
        ServiceError::State(e) => {
            let code = match &e {
                StateError::NoSuchVolume(_) => Code::NotFound,
                StateError::VolumeExists(_) => Code::AlreadyExists,
                StateError::VolumeRange { .. } | StateError::VolumeSize { .. } => Code::OutOfRange,
                StateError::TooManyVolumes { .. } => Code::ResourceExhausted,
                _ => return state_status(e),
            };
            Status::new(code, e.to_string())
        }
        ServiceError::Unexpected(reply) => Status::internal(format!("unexpected reply {reply:?}")),
        other => service_status(other),
    }
}

fn to_proto(v: VolumeInfo) -> fv::Volume {
    fv::Volume {
        name: v.name,
        size: v.size,
        id: v.id,
    }
}

pub struct VolumesService {
    pub ctx: Context,
    pub files: Arc<VolumeFiles>,
}

impl VolumesService {
    fn answer(&self, v: VolumeInfo) -> Response<fv::VolumeResponse> {
        Response::new(fv::VolumeResponse {
            header: self.ctx.header_now(),
            volume: Some(to_proto(v)),
        })
    }
}

/// Every call but `Copy` (a member's, to a peer) is made as the caller
/// (etcd's `token` metadata): volume `NAME` is the key
/// `/ferrite/volumes/NAME` for permissions. `Copy` is served to members on
/// the peer port, and to root only on the client port once auth is enabled.
#[tonic::async_trait]
impl fv::volumes_server::Volumes for VolumesService {
    async fn create(
        &self,
        req: Request<fv::VolumeCreateRequest>,
    ) -> Result<Response<fv::VolumeResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        let v = self
            .ctx
            .volume_create(&req.name, req.size, &who)
            .await
            .map_err(volume_status)?;
        Ok(self.answer(v))
    }

    async fn list(
        &self,
        req: Request<fv::VolumeListRequest>,
    ) -> Result<Response<fv::VolumeListResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let volumes = self.ctx.volume_list(&who).await.map_err(volume_status)?;
        Ok(Response::new(fv::VolumeListResponse {
            header: self.ctx.header_now(),
            volumes: volumes.into_iter().map(to_proto).collect(),
        }))
    }

    async fn resize(
        &self,
        req: Request<fv::VolumeResizeRequest>,
    ) -> Result<Response<fv::VolumeResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        let v = self
            .ctx
            .volume_resize(&req.name, req.size, &who)
            .await
            .map_err(volume_status)?;
        Ok(self.answer(v))
    }

    async fn delete(
        &self,
        req: Request<fv::VolumeDeleteRequest>,
    ) -> Result<Response<fv::VolumeResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        let v = self
            .ctx
            .volume_delete(&req.name, &who)
            .await
            .map_err(volume_status)?;
        Ok(self.answer(v))
    }

    async fn write(
        &self,
        req: Request<fv::VolumeWriteRequest>,
    ) -> Result<Response<fv::VolumeWriteResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        if req.data.len() > GRPC_DATA_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "a write carries at most {GRPC_DATA_BYTES_MAX} bytes"
            )));
        }
        self.ctx
            .volume_write(&req.name, req.offset, Bytes::from(req.data), &who)
            .await
            .map_err(volume_status)?;
        Ok(Response::new(fv::VolumeWriteResponse {
            header: self.ctx.header_now(),
        }))
    }

    async fn read(
        &self,
        req: Request<fv::VolumeReadRequest>,
    ) -> Result<Response<fv::VolumeReadResponse>, Status> {
        let who = principal(&self.ctx, &req)?;
        let req = req.into_inner();
        if req.length > GRPC_DATA_BYTES_MAX as u64 {
            return Err(Status::invalid_argument(format!(
                "a read returns at most {GRPC_DATA_BYTES_MAX} bytes"
            )));
        }
        let data = self
            .ctx
            .volume_read(&req.name, req.offset, req.length, &who)
            .await
            .map_err(volume_status)?;
        Ok(Response::new(fv::VolumeReadResponse {
            header: self.ctx.header_now(),
            data: data.to_vec(),
        }))
    }

    /// Members copy volume files from each other on the peer port (mutual
    /// TLS with member certificates, when configured): those calls carry
    /// `PeerConnectInfo` and are served. On the client port the call would
    /// hand any volume's bytes to whoever asks, so once auth is enabled it
    /// needs root, checked linearizably by the state machine.
    async fn copy(
        &self,
        req: Request<fv::VolumeCopyRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<fv::VolumeChunk>>, Status> {
        if req.extensions().get::<PeerConnectInfo>().is_none() {
            let who = principal(&self.ctx, &req)?;
            // An admin-only read: refused unless `who` holds root (or auth
            // is disabled).
            self.ctx
                .read(Op::Auth(AuthRequest::UserList), &who, false)
                .await
                .and_then(|reply| match reply {
                    Reply::Error(e) => Err(ServiceError::State(e)),
                    _ => Ok(()),
                })
                .map_err(service_status)?;
        }
        let req = req.into_inner();
        let files = &self.files;
        let applied = files.applied.load(Ordering::Acquire);
        if !files.ready.load(Ordering::Acquire) || applied < req.min_applied {
            return Err(Status::failed_precondition(format!(
                "this member's volume files are not ready for index {} (applied {applied})",
                req.min_applied
            )));
        }
        let path = files.dir.join(format!("{:016x}.vol", req.id));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = send_copy(&path, req.size, &tx) {
                let _ = tx.blocking_send(Err(Status::internal(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Streams the data regions of one volume file below `size`; a missing file
/// (the volume was deleted after the snapshot) sends nothing, and the log
/// replay on the receiver deletes it too.
fn send_copy(
    path: &std::path::Path,
    size: u64,
    tx: &tokio::sync::mpsc::Sender<Result<fv::VolumeChunk, Status>>,
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut at = 0u64;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    while at < size {
        let Some((start, hole)) = ferrite_state::block_store::next_data(&file, at)
            .map_err(|e| format!("{}: {e}", path.display()))?
        else {
            break;
        };
        let end = hole
            .min(size)
            .min(start.saturating_add(COPY_CHUNK_BYTES as u64));
        if start >= end {
            break;
        }
        let n = (end - start) as usize;
        let read = file
            .read_at(&mut buf[..n], start)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if read == 0 {
            break;
        }
        let chunk = fv::VolumeChunk {
            offset: start,
            data: buf[..read].to_vec(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            return Ok(()); // the receiver went away
        }
        at = start + read as u64;
    }
    Ok(())
}
