//! etcd's `Maintenance.Snapshot`: a consistent point-in-time backup of this
//! member's replicated state, streamed as a Ferrite backup file
//! (`ferrite_state::backup`) in pieces of 64 KiB, each with the bytes that
//! remain after it. The file ends with its SHA-256 and its size is 32 more
//! than a multiple of 512, which is what etcdctl 3.4's `snapshot save`
//! checks before it keeps the file.
//!
//! The state is captured like a linearizable read (everything committed
//! before the call is in it), encoded once on a blocking thread, and
//! streamed from that one buffer: no second copy of the whole is made.
//! As etcd's, the call is for root alone when auth is enabled.

use std::time::{SystemTime, UNIX_EPOCH};

use ferrite_proto::etcdserverpb as pb;
use ferrite_service::Context;
use ferrite_state::backup::{BackupMeta, BackupWriter};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::auth::principal;
use crate::errors::{service_status, state_status};
use crate::header::Header;

/// Pieces encoded ahead of the client.
const PIECES_AHEAD: usize = 4;

pub async fn snapshot(
    ctx: &Context,
    req: Request<pb::SnapshotRequest>,
) -> Result<Response<BoxStream<pb::SnapshotResponse>>, Status> {
    let who = principal(ctx, &req)?;
    ctx.auth.current().check_admin(&who).map_err(state_status)?;
    let sm = ctx.capture_state().await.map_err(service_status)?;
    let revision = sm.revision();
    let mut meta = ferrite_state::backup::BackupMeta {
        cluster_id: ctx.cluster_id,
        member_id: ctx.member_id,
        raft_term: ctx.term(),
        created_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ..BackupMeta::of(&sm, 0)
    };
    let writer = tokio::task::spawn_blocking(move || {
        let state = sm.snapshot();
        meta.state_len = state.len() as u64;
        BackupWriter::new(meta, state)
    })
    .await
    .map_err(|e| Status::internal(format!("encoding the snapshot failed: {e}")))?;
    tracing::info!(bytes = writer.total_len(), revision, "streaming a snapshot");
    let header = ctx.header(revision);
    let (tx, rx) = tokio::sync::mpsc::channel(PIECES_AHEAD);
    // Hashing is CPU work: a blocking thread produces the pieces, and stops
    // as soon as the client is gone.
    tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        while let Some(blob) = writer.next_chunk() {
            let piece = pb::SnapshotResponse {
                header,
                remaining_bytes: writer.remaining(),
                blob: blob.to_vec(),
                ..Default::default()
            };
            if tx.blocking_send(Ok(piece)).is_err() {
                tracing::info!("the snapshot's client went away");
                return;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}
