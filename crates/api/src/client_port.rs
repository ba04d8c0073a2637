//! The client port, as etcd serves it: gRPC and HTTP on one port. A request
//! whose content type is `application/grpc*` goes to the gRPC services
//! (tonic `Routes`); anything else to an axum router with etcd's JSON
//! gateway (`gateway.rs`), `/version`, `/health` and `/metrics`. HTTP/1.1
//! and HTTP/2 are both spoken (hyper-util's auto connection builder); over
//! TLS, ALPN offers `h2` and `http/1.1`.
//!
//! [`serve_connection`] is the one place an accepted connection (plaintext,
//! or after its TLS handshake) becomes HTTP: anything that must see the raw
//! bytes of a connection wraps the IO before it.
//!
//! Also here: the standard gRPC health service (`grpc.health.v1.Health`,
//! SERVING while the member has a leader, NOT_SERVING without one and once
//! it stops) and gRPC server reflection for etcd's and Ferrite's protos;
//! `/metrics` adds the gRPC server counters (`grpc_metrics.rs`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ferrite_node::Metrics;
use ferrite_proto::etcdserverpb as pb;
use ferrite_service::Context;
use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower::ServiceExt;

use crate::cluster::ETCD_VERSION;
use crate::grpc_metrics::{CountedRoutes, GrpcMetrics};
use crate::require_leader::RequireLeaderLayer;
use crate::tls::TlsConnectInfo;

/// How often the gRPC health status follows the member's leader.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// How long `/health` waits for its read (etcd: its request timeout).
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the client port serves; cloned into every connection.
#[derive(Clone)]
pub struct ClientPort {
    grpc: CountedRoutes,
    http: Router,
    /// HTTP/1.1 and HTTP/2 with tonic's HTTP/2 settings.
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl ClientPort {
    /// `grpc`: the gRPC services (etcd's and Ferrite's); the gateway calls
    /// them in-process.
    /// `require_leader`: etcd's `hasleader` metadata, honoured on every
    /// gRPC call (and on the gateway's, which go through the same routes).
    pub fn new(ctx: Context, routes: Routes, require_leader: RequireLeaderLayer) -> ClientPort {
        let grpc = CountedRoutes {
            routes,
            require_leader,
            metrics: Arc::new(GrpcMetrics::new(&[
                ferrite_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ])),
        };
        let http = crate::gateway::router(grpc.clone())
            .merge(
                Router::new()
                    .route("/version", get(version))
                    .route("/health", get(health))
                    .route("/metrics", get(metrics))
                    .with_state(HealthState {
                        ctx,
                        grpc: grpc.clone(),
                    }),
            )
            .fallback(not_found);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(None)
            .keep_alive_timeout(Duration::from_secs(20));
        // hyper enforces its HTTP/1 header read timeout only with a timer.
        builder.http1().timer(TokioTimer::new());
        ClientPort {
            grpc,
            http,
            builder: Arc::new(builder),
        }
    }
}

/// One connection's view of the port: who the client is.
#[derive(Clone)]
struct ConnService {
    port: ClientPort,
    tls: Option<TlsConnectInfo>,
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for ConnService {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, mut request: http::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(info) = &self.tls {
            request.extensions_mut().insert(info.clone());
        }
        let request = crate::tls::insert_common_name(request);
        if is_grpc(&request) {
            let grpc = self.port.grpc.clone();
            Box::pin(async move {
                let response = grpc.call(request).await;
                Ok(response.map(axum::body::Body::new))
            })
        } else {
            let http = self.port.http.clone();
            Box::pin(async move { http.oneshot(request).await })
        }
    }
}

/// Serves one accepted client connection until it closes or, after
/// `graceful` begins, until what is in flight is done. `tls`: what its TLS
/// handshake said of the client (None: plaintext).
pub async fn serve_connection<I>(
    io: I,
    tls: Option<TlsConnectInfo>,
    port: ClientPort,
    graceful: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = port.builder.clone();
    let service = ConnService { port, tls };
    // etcdctl 3.4 may send a URL as the HTTP/2 :authority; etcd accepts it.
    let io = crate::authority::AuthorityFix::new(io);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = graceful.watch(conn).await {
        tracing::debug!("client connection: {e}");
    }
}

/// Accepts client connections (TLS handshakes done by `ferrite_tls` with
/// `tls`) and serves them until `stop`; then lets them finish gracefully
/// (HTTP/2 GOAWAY, HTTP/1 close after the current reply) and returns once
/// they are done. Dropping the future ends every connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ferrite_tls::ClientTls>,
    port: ClientPort,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let mut incoming = match tls {
        Some(tls) => Incoming::Tls(ferrite_tls::accept_loop(
            listener,
            tls.server_config(ferrite_tls::ALPN_HTTP),
            "client",
        )),
        None => Incoming::Plain(listener),
    };
    tokio::pin!(stop);
    loop {
        while conns.try_join_next().is_some() {}
        let next = tokio::select! {
            () = &mut stop => break,
            next = incoming.next() => next,
        };
        match next {
            Some(Conn::Plain(stream)) => {
                conns.spawn(serve_connection(
                    stream,
                    None,
                    port.clone(),
                    graceful.watcher(),
                ));
            }
            Some(Conn::Tls(a)) => {
                let a = *a;
                let info = TlsConnectInfo {
                    remote: a.remote,
                    common_name: a.common_name,
                };
                conns.spawn(serve_connection(
                    a.stream,
                    Some(info),
                    port.clone(),
                    graceful.watcher(),
                ));
            }
            None => break,
        }
    }
    // Stop accepting (closes the listening socket), then drain.
    drop(incoming);
    graceful.shutdown().await;
}

/// Where connections come from: the listener itself, or the TLS acceptor
/// (which owns the listener and hands over finished handshakes).
enum Incoming {
    Plain(TcpListener),
    Tls(tokio::sync::mpsc::Receiver<ferrite_tls::Accepted<TcpStream>>),
}

/// An accepted connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<ferrite_tls::Accepted<TcpStream>>),
}

impl Incoming {
    /// The next connection; None once the TLS acceptor is gone.
    async fn next(&mut self) -> Option<Conn> {
        match self {
            Incoming::Tls(rx) => rx.recv().await.map(|a| Conn::Tls(Box::new(a))),
            Incoming::Plain(listener) => loop {
                match listener.accept().await {
                    Ok((stream, _remote)) => {
                        // Small replies go out at once, not after the client's
                        // delayed ACK (Nagle's algorithm would hold them ~40 ms).
                        let _ = stream.set_nodelay(true);
                        return Some(Conn::Plain(stream));
                    }
                    Err(e) => {
                        // Typically out of file descriptors: wait, do not spin.
                        tracing::warn!("client port: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
        }
    }
}

#[derive(Clone)]
struct HealthState {
    ctx: Context,
    grpc: CountedRoutes,
}

/// The member's metrics (as on the HTTP port) and the gRPC counters.
async fn metrics(State(state): State<HealthState>) -> String {
    let mut out = crate::http::metrics(State(state.ctx.clone())).await;
    state.grpc.metrics.render(&mut out);
    out
}

impl axum::extract::FromRef<HealthState> for Context {
    fn from_ref(state: &HealthState) -> Context {
        state.ctx.clone()
    }
}

/// etcd's answers for unknown paths: grpc-gateway's under `/v3`, Go's
/// elsewhere.
async fn not_found(uri: http::Uri) -> Response {
    let body = if uri.path().starts_with("/v3") {
        "Not Found\n"
    } else {
        "404 page not found\n"
    };
    (StatusCode::NOT_FOUND, body).into_response()
}

/// etcd's `/version`: this server's etcd version and the cluster's
/// (major.minor.0, as etcd reports it).
async fn version() -> Response {
    #[derive(Serialize)]
    struct Versions {
        etcdserver: &'static str,
        etcdcluster: String,
    }
    axum::Json(Versions {
        etcdserver: ETCD_VERSION,
        etcdcluster: cluster_version(ETCD_VERSION),
    })
    .into_response()
}

fn cluster_version(server: &str) -> String {
    let mut parts = server.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => server.to_string(),
    }
}

#[derive(Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

#[derive(Deserialize)]
struct HealthQuery {
    #[serde(default)]
    serializable: Option<String>,
}

fn health_reply(healthy: bool, reason: String) -> Response {
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        health: if healthy { "true" } else { "false" },
        reason,
    };
    (status, axum::Json(body)).into_response()
}

/// etcd 3.5's `/health`: unhealthy with an alarm raised, without a leader,
/// or when a read (linearizable unless `?serializable=true`) fails.
async fn health(State(state): State<HealthState>, Query(q): Query<HealthQuery>) -> Response {
    if let Some(alarm) = active_alarm(&state.grpc).await {
        return health_reply(false, format!("ALARM {alarm}"));
    }
    if Metrics::get(&state.ctx.metrics().leader) == 0 {
        return health_reply(false, "RAFT NO LEADER".into());
    }
    let serializable = q.serializable.as_deref() == Some("true");
    let read = pb::RangeRequest {
        key: b"health".to_vec(),
        keys_only: true,
        limit: 1,
        serializable,
        ..pb::RangeRequest::default()
    };
    let answered = tokio::time::timeout(
        HEALTH_READ_TIMEOUT,
        call_unary::<_, pb::RangeResponse>(&state.grpc, "/etcdserverpb.KV/Range", &read),
    )
    .await;
    match answered {
        // With auth on, the anonymous read is refused, but the member
        // answered: healthy (etcd ignores "user name is empty" here).
        Ok(Ok(_)) => health_reply(true, String::new()),
        Ok(Err(s))
            if matches!(
                s.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::InvalidArgument
            ) =>
        {
            health_reply(true, String::new())
        }
        Ok(Err(s)) => {
            tracing::debug!("/health: read failed: {s}");
            health_reply(false, "RANGE ERROR".into())
        }
        Err(_) => health_reply(false, "RANGE ERROR".into()),
    }
}

/// The first raised alarm's name, if the Maintenance service reports one.
async fn active_alarm(grpc: &CountedRoutes) -> Option<String> {
    let get = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Get as i32,
        ..pb::AlarmRequest::default()
    };
    let reply: pb::AlarmResponse = call_unary(grpc, "/etcdserverpb.Maintenance/Alarm", &get)
        .await
        .ok()?;
    reply
        .alarms
        .iter()
        .find(|a| a.alarm != pb::AlarmType::None as i32)
        .map(|a| {
            pb::AlarmType::try_from(a.alarm)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| a.alarm.to_string())
        })
}

/// Calls a unary gRPC method in-process (as the member itself: no token).
async fn call_unary<Req, Resp>(
    grpc: &CountedRoutes,
    method: &'static str,
    req: &Req,
) -> Result<Resp, tonic::Status>
where
    Req: tonic_prost::prost::Message,
    Resp: tonic_prost::prost::Message + Default,
{
    crate::gateway::call_unary(grpc, method, req).await
}

/// gRPC server reflection (v1, and v1alpha for older tools such as
/// grpcurl before 1.8) over etcd's, Ferrite's and the health service's
/// protos.
pub fn add_reflection(grpc: &mut tonic::service::RoutesBuilder) {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ferrite_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    match configure().build_v1() {
        Ok(service) => {
            grpc.add_service(service);
        }
        Err(e) => tracing::warn!("gRPC reflection (v1) not served: {e}"),
    }
    match configure().build_v1alpha() {
        Ok(service) => {
            grpc.add_service(service);
        }
        Err(e) => tracing::warn!("gRPC reflection (v1alpha) not served: {e}"),
    }
}

/// Keeps the gRPC health status ("" : the whole server) on SERVING while
/// the member has a leader and NOT_SERVING otherwise; NOT_SERVING for
/// good once `stop` fires.
pub async fn follow_health(
    ctx: Context,
    reporter: tonic_health::server::HealthReporter,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last = None;
    loop {
        let status = if Metrics::get(&ctx.metrics().leader) != 0 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            last = Some(status);
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(HEALTH_POLL) => {}
        }
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_version_is_major_minor_zero() {
        assert_eq!(super::cluster_version("3.5.17"), "3.5.0");
        assert_eq!(super::cluster_version("3.4.0"), "3.4.0");
    }
}
