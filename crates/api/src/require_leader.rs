//! etcd's require-leader metadata on every gRPC service of the client port.
//!
//! etcd's clients mark a call with the metadata `hasleader: true`
//! (`clientv3.WithRequireLeader`; etcdctl does on `watch`) when an answer
//! from a member cut off from its leader is worse than none. etcd then
//! (v3rpc `interceptor.go`):
//! - refuses the call at once with Unavailable "etcdserver: no leader" when
//!   the member knows no leader, instead of waiting for one to be elected;
//! - for a stream already open, watches the member's leader once per
//!   election timeout and, after `NO_LEADER_CHECKS_MAX` checks in a row
//!   without one, ends the stream with that same error, so that the client
//!   moves to another member (`watch.go` reports the server-side
//!   cancellation as "no leader").
//!
//! [`RequireLeaderLayer`] does both as a tower layer, for unary and
//! streaming calls alike: the answer's body is watched, and ended with the
//! error's trailers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use ferrite_node::{Metrics, Node};
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

/// The metadata key and value etcd's clients send (`rpctypes`).
pub const REQUIRE_LEADER_METADATA: &str = "hasleader";
const REQUIRE_LEADER_VALUE: &str = "true";

/// Election timeouts in a row without a leader before an open stream that
/// requires one ends (etcd's `maxNoLeaderCnt`): reconnecting streams costs
/// more than refusing new calls, so streams wait longer.
pub const NO_LEADER_CHECKS_MAX: u32 = 3;

fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

fn has_leader(node: &Node) -> bool {
    Metrics::get(&node.metrics().leader) != 0
}

/// See the module header.
#[derive(Clone)]
pub struct RequireLeaderLayer {
    node: Node,
    /// How often an open stream checks for a leader.
    election: Duration,
}

impl RequireLeaderLayer {
    pub fn new(node: Node, election: Duration) -> RequireLeaderLayer {
        RequireLeaderLayer {
            node,
            election: election.max(Duration::from_millis(1)),
        }
    }
}

impl<S> tower::Layer<S> for RequireLeaderLayer {
    type Service = RequireLeader<S>;

    fn layer(&self, inner: S) -> RequireLeader<S> {
        RequireLeader {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireLeader<S> {
    inner: S,
    layer: RequireLeaderLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RequireLeader<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<LeaderBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let required = req
            .headers()
            .get(REQUIRE_LEADER_METADATA)
            .is_some_and(|v| v.as_bytes() == REQUIRE_LEADER_VALUE.as_bytes());
        if required && !has_leader(&self.layer.node) {
            let refused = no_leader().into_http::<ResBody>().map(LeaderBody::plain);
            return Box::pin(std::future::ready(Ok(refused)));
        }
        let answer = self.inner.call(req);
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| match required {
                true => LeaderBody::watched(body, &layer),
                false => LeaderBody::plain(body),
            }))
        })
    }
}

/// Checks for a leader once per election timeout.
struct Monitor {
    node: Node,
    ticks: tokio::time::Interval,
    /// Checks in a row that found no leader.
    misses: u32,
}

/// An answer's body, ended with "no leader" once its member has had no
/// leader for `NO_LEADER_CHECKS_MAX` election timeouts (when the call
/// required a leader).
pub struct LeaderBody<B> {
    inner: B,
    monitor: Option<Monitor>,
    /// The "no leader" trailers went out: the body is over.
    ended: bool,
}

impl<B> LeaderBody<B> {
    fn plain(inner: B) -> LeaderBody<B> {
        LeaderBody {
            inner,
            monitor: None,
            ended: false,
        }
    }

    fn watched(inner: B, layer: &RequireLeaderLayer) -> LeaderBody<B> {
        let start = tokio::time::Instant::now() + layer.election;
        let mut ticks = tokio::time::interval_at(start, layer.election);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        LeaderBody {
            inner,
            monitor: Some(Monitor {
                node: layer.node.clone(),
                ticks,
                misses: 0,
            }),
            ended: false,
        }
    }
}

impl Monitor {
    /// Whether the stream must end now for want of a leader.
    fn poll_lost(&mut self, cx: &mut TaskContext<'_>) -> bool {
        while self.ticks.poll_tick(cx).is_ready() {
            if has_leader(&self.node) {
                self.misses = 0;
            } else {
                self.misses += 1;
                if self.misses >= NO_LEADER_CHECKS_MAX {
                    return true;
                }
            }
        }
        false
    }
}

impl<B> Body for LeaderBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let lost = this.monitor.as_mut().is_some_and(|m| m.poll_lost(cx));
        if !lost {
            return Poll::Pending;
        }
        this.ended = true;
        this.monitor = None;
        tracing::info!("a stream that requires a leader ends: this member has none");
        let mut trailers = http::HeaderMap::new();
        match no_leader().add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            // The message is plain ASCII; a failure here ends the body
            // without a status, which the client reports as an error too.
            Err(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.monitor {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}
