//! The Watch service on the wire: the generated server encodes every
//! `WatchResponse` whole, so an event sent to a thousand watchers was
//! turned into protobuf a thousand times. Here a response goes out as its
//! head (everything but the events) and its events as shared runs
//! (`ferrite_state::watch::EventRun`), each encoded once, the first time a
//! reply carries it, and copied into every response after that. Clients
//! see the same bytes prost would write: `events` is the message's last
//! field, so head ++ events is its encoding.
//!
//! `WatchServer` replaces the generated `watch_server::WatchServer` only to
//! put this codec in place of the prost one; requests are decoded by prost.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_proto::etcdserverpb as pb;
use ferrite_state::watch::ReplyEvents;
use ferrite_state::KvEvent;
use futures_util::Stream;
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::prost::{self, Message};

use crate::watch::WatchService;

/// `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;
/// The one method of the service.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// One `WatchResponse` as it goes out.
#[derive(Debug)]
pub struct WatchFrame {
    /// Everything but the events. Invariant: `head.events` is empty.
    pub head: pb::WatchResponse,
    pub events: ReplyEvents,
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<WatchFrame, Status>> + Send>>;

impl WatchFrame {
    /// Writes the frame as a `WatchResponse`: the head, then each run's
    /// encoding, made by the first frame that carries the run.
    pub fn encode(&self, buf: &mut impl BufMut) {
        assert!(self.head.events.is_empty(), "a frame's events are its runs");
        // Never fails: tonic's buffer grows as needed.
        let _ = self.head.encode(buf);
        for run in self.events.runs() {
            buf.put_slice(run.wire(encode_events));
        }
    }
}

/// Events as the `events` field of a `WatchResponse` (each one tagged).
fn encode_events(events: &[KvEvent]) -> Bytes {
    let mut buf = BytesMut::new();
    for e in events {
        prost::encoding::message::encode(EVENTS_FIELD, &crate::watch::event(e.clone()), &mut buf);
    }
    buf.freeze()
}

/// Frames out, prost's `WatchRequest`s in.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchCodec;

#[derive(Clone, Copy, Debug, Default)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = WatchFrame;
    type Error = Status;

    fn encode(&mut self, item: WatchFrame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

impl Codec for WatchCodec {
    type Encode = WatchFrame;
    type Decode = pb::WatchRequest;
    type Encoder = FrameEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::WatchRequest>;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// etcd's Watch service, served with `WatchCodec`.
#[derive(Clone)]
pub struct WatchServer {
    inner: Arc<WatchService>,
}

impl WatchServer {
    pub fn new(service: WatchService) -> WatchServer {
        WatchServer {
            inner: Arc::new(service),
        }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

struct WatchMethod(Arc<WatchService>);

impl StreamingService<pb::WatchRequest> for WatchMethod {
    type Response = WatchFrame;
    type ResponseStream = FrameStream;
    type Future = BoxFuture<Response<FrameStream>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.watch(request).await })
    }
}

impl<B> Service<http::Request<B>> for WatchServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = WatchMethod(Arc::clone(&self.inner));
        Box::pin(async move { Ok(Grpc::new(WatchCodec).streaming(method, req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_state::watch::EventRun;
    use ferrite_state::KeyValue;

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            lease: 7,
        }
    }

    fn put(key: &str, value: &str, rev: i64, prev: bool) -> KvEvent {
        KvEvent {
            revision: rev,
            key: Bytes::copy_from_slice(key.as_bytes()),
            prev: prev.then(|| kv(key, "old", rev - 1)),
            kv: Some(kv(key, value, rev)),
        }
    }

    fn delete(key: &str, rev: i64) -> KvEvent {
        KvEvent {
            revision: rev,
            key: Bytes::copy_from_slice(key.as_bytes()),
            prev: Some(kv(key, "gone", rev - 1)),
            kv: None,
        }
    }

    fn head(watch_id: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 11,
                member_id: 12,
                revision: 9,
                raft_term: 3,
            }),
            watch_id,
            fragment: watch_id == 2,
            ..pb::WatchResponse::default()
        }
    }

    #[test]
    fn a_frame_is_the_bytes_prost_writes_for_the_whole_response() {
        let shared = Arc::new(EventRun::new(vec![put("a", "1", 5, true), delete("b", 5)]));
        let cases = [ReplyEvents::default(), ReplyEvents::run(shared.clone()), {
            let mut e = ReplyEvents::run(shared.clone());
            e.append(ReplyEvents::from(vec![put("c", "2", 6, false)]));
            e.append(ReplyEvents::run(shared.clone()));
            e
        }];
        for (id, events) in cases.into_iter().enumerate() {
            let whole = pb::WatchResponse {
                events: events.iter().cloned().map(crate::watch::event).collect(),
                ..head(id as i64)
            };
            let frame = WatchFrame {
                head: head(id as i64),
                events,
            };
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            assert_eq!(buf.freeze(), whole.encode_to_vec(), "case {id}");
            assert_eq!(
                pb::WatchResponse::decode(whole.encode_to_vec().as_slice()).ok(),
                Some(whole)
            );
        }
    }
}
