//! etcd's Watch service: translates the bidirectional stream to and from
//! the service's watch session (`ferrite_service::watch`), which does the
//! work. Every member serves watches from its own applied state.
//!
//! With etcd's require-leader metadata (`hasleader: true`, what
//! `clientv3.WithRequireLeader` sends) a stream is refused while the member
//! has no leader, and ended with "no leader" when it loses it, as etcd's
//! leader monitor does (checked once per election timeout).

use std::time::Duration;

use ferrite_node::Metrics;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::mvccpb;
use ferrite_service::watch::{self, WatchCommand, WatchCreate, WatchLimits, WatchReply};
use ferrite_service::Context;
use ferrite_state::KvEvent;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::principal;
use crate::convert;
use crate::header::Header;
pub use crate::watch_wire::WatchServer;
use crate::watch_wire::{FrameStream, WatchFrame};

/// etcd's metadata key for "fail rather than serve without a leader".
pub const REQUIRE_LEADER_METADATA: &str = "hasleader";
/// Replies waiting for a slow client, per stream; beyond it the stream's
/// watches fall behind and catch up from history later.
const REPLIES_QUEUED_MAX: usize = 64;
/// Requests read ahead from a client, per stream.
const REQUESTS_QUEUED_MAX: usize = 64;
/// How often a require-leader stream checks that there is a leader (etcd:
/// every election timeout).
const LEADER_CHECK: Duration = Duration::from_secs(1);

pub struct WatchService {
    pub ctx: Context,
    pub limits: WatchLimits,
    /// Ends every stream when the server stops.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

fn has_leader(ctx: &Context) -> bool {
    Metrics::get(&ctx.metrics().leader) != 0
}

fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

pub fn create_request(c: pb::WatchCreateRequest) -> WatchCreate {
    use pb::watch_create_request::FilterType;
    let has = |f: FilterType| c.filters.contains(&(f as i32));
    WatchCreate {
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
        key: c.key.into(),
        range_end: c.range_end.into(),
        start_revision: c.start_revision,
        progress_notify: c.progress_notify,
        prev_kv: c.prev_kv,
        watch_id: c.watch_id,
        fragment: c.fragment,
    }
}

pub fn event(e: KvEvent) -> mvccpb::Event {
    let (kind, kv) = match e.kv {
        Some(kv) => (mvccpb::event::EventType::Put, convert::key_value(kv)),
        // etcd's delete event: the key, at the deleting revision.
        None => (
            mvccpb::event::EventType::Delete,
            mvccpb::KeyValue {
                key: e.key,
                mod_revision: e.revision,
                ..mvccpb::KeyValue::default()
            },
        ),
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: e.prev.map(convert::key_value),
    }
}

/// A reply as it goes out: the events stay shared runs, encoded once
/// (`watch_wire.rs`).
fn response(ctx: &Context, r: WatchReply) -> WatchFrame {
    WatchFrame {
        head: pb::WatchResponse {
            header: ctx.header(r.revision),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason,
            fragment: r.fragment,
            events: Vec::new(),
        },
        events: r.events,
    }
}

impl WatchService {
    /// etcd's `Watch`: one bidirectional stream that carries many watches.
    pub async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<FrameStream>, Status> {
        let require_leader = req
            .metadata()
            .get(REQUIRE_LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "true");
        if require_leader && !has_leader(&self.ctx) {
            return Err(no_leader());
        }
        // The stream's watches are checked against this principal: at
        // create, and again at every auth change.
        let who = principal(&self.ctx, &req)?;
        let mut incoming = req.into_inner();
        let (cmd_tx, cmd_rx) = mpsc::channel(REQUESTS_QUEUED_MAX);
        let (reply_tx, reply_rx) = mpsc::channel(REPLIES_QUEUED_MAX);
        // An error ends the stream: the client's, or "no leader".
        let (error_tx, error_rx) = mpsc::channel::<Status>(1);
        let ctx = self.ctx.clone();

        // Client requests in: translated, or the stream ends with the error.
        let errors = error_tx.clone();
        let reader = tokio::spawn(async move {
            while let Some(next) = incoming.next().await {
                let cmd = match next {
                    Ok(pb::WatchRequest {
                        request_union: Some(u),
                    }) => match u {
                        pb::watch_request::RequestUnion::CreateRequest(c) => {
                            WatchCommand::Create(create_request(c))
                        }
                        pb::watch_request::RequestUnion::CancelRequest(c) => {
                            WatchCommand::Cancel(c.watch_id)
                        }
                        pb::watch_request::RequestUnion::ProgressRequest(_) => {
                            WatchCommand::Progress
                        }
                    },
                    // An empty request is ignored, as etcd does.
                    Ok(pb::WatchRequest {
                        request_union: None,
                    }) => continue,
                    Err(e) => {
                        let _ = errors.send(e).await;
                        return;
                    }
                };
                if cmd_tx.send(cmd).await.is_err() {
                    return;
                }
            }
        });

        // The session; it ends the stream with "no leader" if the client
        // required one and the member lost it.
        let limits = self.limits;
        let mut stop = self.stop.clone();
        let session_ctx = ctx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let ctx = session_ctx;
            let session = watch::run(ctx.clone(), limits, who, cmd_rx, reply_tx, stopped);
            let leader_lost = async {
                loop {
                    tokio::time::sleep(LEADER_CHECK).await;
                    if require_leader && !has_leader(&ctx) {
                        return;
                    }
                }
            };
            tokio::select! {
                () = session => {}
                () = leader_lost => {
                    let _ = error_tx.send(no_leader()).await;
                }
            }
            reader.abort();
        });
        // Replies go straight from the session's channel to the client,
        // translated on the way: tonic takes whatever is queued per write.
        let replies = tokio_stream::wrappers::ReceiverStream::new(reply_rx)
            .map(move |r| Ok(response(&ctx, r)));
        let errors = tokio_stream::wrappers::ReceiverStream::new(error_rx).map(Err);
        Ok(Response::new(Box::pin(replies.merge(errors))))
    }
}
