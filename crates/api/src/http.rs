//! The HTTP front end: a small JSON API for curl and the browser, `/healthz`,
//! and `/metrics` in Prometheus' text format.
//!
//! ```text
//! GET    /v1/kv/{key}              one key (404 if absent)
//! GET    /v1/kv?prefix=p           keys with a prefix
//! PUT    /v1/kv/{key}   body=value
//! DELETE /v1/kv/{key}
//! GET    /v1/registers/{name}
//! PUT    /v1/registers/{name}      {"value": n}
//! POST   /v1/registers/{name}/add  {"delta": n}
//! POST   /v1/registers/{name}/cas  {"expected": a, "new": b}
//! GET    /v1/status                this node; /v1/members: the member table
//! ```
//!
//! POST   /v1/auth/login            {"name", "password"} (JSON or a form): a token
//! POST   /v1/auth/logout
//! GET    /v1/auth/whoami           user, roles, whether auth is enabled
//!
//! With auth enabled, requests carry a token from etcd's Authenticate (the
//! login) in an `Authorization` header (`Bearer TOKEN` or the bare token, as
//! etcd's gRPC gateway takes it), a `token` header, or the login's
//! `ferrite_token` cookie; over TLS a verified client certificate names the
//! user by its common name instead. Without any, JSON endpoints answer 401;
//! what the user may not do, 403. `/healthz` and `/metrics` stay open.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use ferrite_node::{Metrics, SYNC_BUCKETS};
use ferrite_service::{Context, ServiceError};
use ferrite_state::{
    DeleteRangeRequest, Op, Principal, PutRequest, RangeRequest, Reply, StateError,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::{node_status, service_status, unexpected};

/// The JSON API; `https`: whether the port serves TLS (the login cookie is
/// `Secure` then).
pub fn router(ctx: Context, https: bool) -> Router {
    Router::new()
        .route("/v1/auth/login", post(crate::http_auth::login))
        .route("/v1/auth/logout", post(crate::http_auth::logout))
        .route("/v1/auth/whoami", get(crate::http_auth::whoami))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/kv", get(list))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/registers/{name}", get(get_register).put(set_register))
        .route("/v1/registers/{name}/add", post(add_register))
        .route("/v1/registers/{name}/cas", post(cas_register))
        .layer(axum::Extension(Https(https)))
        .with_state(ctx)
}

/// The cookie the login sets: the same token as the bearer header.
pub const TOKEN_COOKIE: &str = "ferrite_token";

/// Whether the HTTP port serves TLS (for the cookie's `Secure`), as a
/// request extension.
#[derive(Clone, Copy, Debug)]
pub struct Https(pub bool);

/// The token a request carries: its `Authorization` header (with or without
/// `Bearer `), its `token` header (as etcd's gateway reads it), or the
/// login cookie.
pub fn request_token(parts: &axum::http::request::Parts) -> Option<String> {
    for h in ["authorization", "token"] {
        if let Some(v) = parts.headers.get(h) {
            let v = v.to_str().unwrap_or_default().trim();
            let v = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v);
            return Some(v.trim().to_string());
        }
    }
    cookie(&parts.headers, TOKEN_COOKIE)
}

/// The value of cookie `name`, if the request has it.
fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The verified client certificate's common name, on a TLS connection
/// whose client presented one.
fn request_common_name(parts: &axum::http::request::Parts) -> Option<String> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::tls::HttpConnectInfo>>()
        .and_then(|info| info.0.common_name.clone())
}

/// Who a request is from. With auth enabled, a request with no credentials
/// at all, or a token that is not valid (expired, forged, or from before
/// auth was enabled again), is refused with 401.
pub fn request_principal(
    parts: &axum::http::request::Parts,
    ctx: &Context,
) -> Result<Principal, ApiError> {
    if !ctx.auth.current().enabled() {
        return Ok(Principal::Anonymous);
    }
    let token = request_token(parts);
    let common_name = request_common_name(parts);
    if token.is_none() && common_name.is_none() {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "authentication required: log in (POST /v1/auth/login with name and password) \
             and send the token as a cookie or an Authorization: Bearer header"
                .into(),
        ));
    }
    ctx.principal(token.as_deref(), common_name.as_deref())
        .map_err(ApiError::from)
}

/// Who an HTTP request is from (see [`request_principal`]).
pub struct Who(pub Principal);

impl<S> axum::extract::FromRequestParts<S> for Who
where
    S: Send + Sync,
    Context: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Who, ApiError> {
        let ctx = Context::from_ref(state);
        request_principal(parts, &ctx).map(Who)
    }
}

/// A failed request as JSON with the right status code.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> ApiError {
        let code = match s.code() {
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, s.message().to_string())
    }
}

/// The JSON API reports what failed with etcd's messages, as the gRPC API
/// does, and the HTTP status for etcd's code.
/// Failed authentication (a wrong password, no user, a token older than
/// the last change to users and roles) is 401: log in again.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let unauthenticated = matches!(
            e,
            ServiceError::State(
                StateError::AuthFailed
                    | StateError::UserEmpty
                    | StateError::AuthOldRevision
                    | StateError::InvalidAuthToken
            )
        );
        let ApiError(code, text) = ApiError::from(service_status(e));
        if unauthenticated {
            ApiError(StatusCode::UNAUTHORIZED, text)
        } else {
            ApiError(code, text)
        }
    }
}

pub type ApiResult = Result<Json<Value>, ApiError>;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kv_json(kv: &ferrite_state::KeyValue) -> Value {
    json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

fn bad_reply(reply: Reply) -> ApiError {
    ApiError::from(unexpected(reply))
}

async fn healthz(State(ctx): State<Context>) -> (StatusCode, &'static str) {
    if Metrics::get(&ctx.metrics().leader) != 0 {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader\n")
    }
}

async fn status(State(ctx): State<Context>, _who: Who) -> ApiResult {
    let s = ctx.node.status().await.map_err(node_status)?;
    Ok(Json(json!({
        "id": s.id.0,
        "name": ctx.name,
        "role": format!("{:?}", s.role),
        "term": s.term.0,
        "leader": s.leader.map(|l| l.0),
        "commit": s.commit.0,
        "applied": s.applied.0,
        "last_index": s.last_index.0,
        "snapshot_index": s.snapshot_index.0,
        "voters": s.membership.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
        "learners": s.membership.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
    })))
}

async fn members(State(ctx): State<Context>, _who: Who) -> ApiResult {
    let members = crate::cluster::members(&ctx).await?;
    Ok(Json(json!(members
        .iter()
        .map(|m| json!({
            "id": m.id,
            "name": m.name,
            "peer_urls": m.peer_ur_ls,
            "client_urls": m.client_ur_ls,
            "is_learner": m.is_learner,
        }))
        .collect::<Vec<_>>())))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: i64,
}

/// The end of the range of keys that start with `prefix`, as etcd computes
/// it ("\0" for every key when the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

async fn list(State(ctx): State<Context>, Who(who): Who, Query(q): Query<ListQuery>) -> ApiResult {
    let key = if q.prefix.is_empty() {
        Bytes::from_static(&[0])
    } else {
        Bytes::from(q.prefix.clone())
    };
    let req = RangeRequest {
        key,
        range_end: prefix_end(q.prefix.as_bytes()),
        limit: q.limit,
        ..RangeRequest::default()
    };
    match ctx.read(Op::Range(req), &who, false).await? {
        Reply::Range(r) => Ok(Json(json!({
            "revision": r.revision,
            "count": r.count,
            "more": r.more,
            "kvs": r.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        }))),
        other => Err(bad_reply(other)),
    }
}

async fn get_key(State(ctx): State<Context>, Who(who): Who, Path(key): Path<String>) -> ApiResult {
    let req = RangeRequest {
        key: Bytes::from(key.clone()),
        ..RangeRequest::default()
    };
    match ctx.read(Op::Range(req), &who, false).await? {
        Reply::Range(r) => match r.kvs.first() {
            Some(kv) => Ok(Json(kv_json(kv))),
            None => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("key {key:?} not found"),
            )),
        },
        other => Err(bad_reply(other)),
    }
}

async fn put_key(
    State(ctx): State<Context>,
    Who(who): Who,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req = PutRequest {
        key: Bytes::from(key),
        value: body,
        ..PutRequest::default()
    };
    match ctx.write(Op::Put(req), None, &who).await? {
        Reply::Put(r) => Ok(Json(json!({ "revision": r.revision }))),
        other => Err(bad_reply(other)),
    }
}

async fn delete_key(
    State(ctx): State<Context>,
    Who(who): Who,
    Path(key): Path<String>,
) -> ApiResult {
    let req = DeleteRangeRequest {
        key: Bytes::from(key),
        ..DeleteRangeRequest::default()
    };
    match ctx.write(Op::DeleteRange(req), None, &who).await? {
        Reply::DeleteRange(r) => Ok(Json(
            json!({ "revision": r.revision, "deleted": r.deleted }),
        )),
        other => Err(bad_reply(other)),
    }
}

async fn get_register(
    State(ctx): State<Context>,
    Who(who): Who,
    Path(name): Path<String>,
) -> ApiResult {
    match ctx
        .read(Op::RegisterGet { name: name.clone() }, &who, false)
        .await?
    {
        Reply::Value(v) => Ok(Json(json!({ "name": name, "value": v }))),
        other => Err(bad_reply(other)),
    }
}

#[derive(Deserialize)]
struct SetBody {
    value: i64,
}

async fn set_register(
    State(ctx): State<Context>,
    Who(who): Who,
    Path(name): Path<String>,
    Json(b): Json<SetBody>,
) -> ApiResult {
    let op = Op::RegisterSet {
        name: name.clone(),
        value: b.value,
    };
    match ctx.write(op, None, &who).await? {
        Reply::Set { previous } => Ok(Json(
            json!({ "name": name, "value": b.value, "previous": previous }),
        )),
        other => Err(bad_reply(other)),
    }
}

#[derive(Deserialize)]
struct AddBody {
    delta: i64,
}

async fn add_register(
    State(ctx): State<Context>,
    Who(who): Who,
    Path(name): Path<String>,
    Json(b): Json<AddBody>,
) -> ApiResult {
    let op = Op::RegisterAdd {
        name: name.clone(),
        delta: b.delta,
    };
    match ctx.write(op, None, &who).await? {
        Reply::Value(v) => Ok(Json(json!({ "name": name, "value": v }))),
        other => Err(bad_reply(other)),
    }
}

#[derive(Deserialize)]
struct CasBody {
    expected: i64,
    new: i64,
}

async fn cas_register(
    State(ctx): State<Context>,
    Who(who): Who,
    Path(name): Path<String>,
    Json(b): Json<CasBody>,
) -> ApiResult {
    let op = Op::RegisterCas {
        name: name.clone(),
        expected: b.expected,
        new: b.new,
    };
    match ctx.write(op, None, &who).await? {
        Reply::Cas { swapped, current } => Ok(Json(
            json!({ "name": name, "succeeded": swapped, "value": current }),
        )),
        other => Err(bad_reply(other)),
    }
}

pub(crate) async fn metrics(State(ctx): State<Context>) -> String {
    let m = ctx.metrics();
    let g = Metrics::get;
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    line(
        "ferrite_raft_term",
        "gauge",
        "Current Raft term.",
        g(&m.term),
    );
    line(
        "ferrite_raft_is_leader",
        "gauge",
        "1 if this node leads.",
        g(&m.is_leader),
    );
    line(
        "ferrite_raft_leader_id",
        "gauge",
        "Id of the known leader (0: none).",
        g(&m.leader),
    );
    line(
        "ferrite_raft_commit_index",
        "gauge",
        "Commit index.",
        g(&m.commit),
    );
    line(
        "ferrite_raft_applied_index",
        "gauge",
        "Applied index.",
        g(&m.applied),
    );
    line(
        "ferrite_proposals_total",
        "counter",
        "Writes proposed here.",
        g(&m.proposals),
    );
    line(
        "ferrite_proposals_failed_total",
        "counter",
        "Writes refused here.",
        g(&m.proposals_failed),
    );
    line(
        "ferrite_reads_total",
        "counter",
        "Linearizable reads asked of this member.",
        g(&m.reads),
    );
    line(
        "ferrite_leader_changes_total",
        "counter",
        "Leaders seen.",
        g(&m.leader_changes),
    );
    line(
        "ferrite_peer_messages_refused_total",
        "counter",
        "Peer messages refused as malformed.",
        g(&m.peer_frames_refused),
    );
    let w = &ctx.watch_metrics;
    let gauge = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
    line(
        "ferrite_watch_streams",
        "gauge",
        "Watch streams open on this member.",
        gauge(&w.streams),
    );
    line(
        "ferrite_watchers",
        "gauge",
        "Watches open on this member.",
        gauge(&w.watchers),
    );
    line(
        "ferrite_watch_events_sent_total",
        "counter",
        "Watch events sent by this member.",
        w.events_sent.load(Ordering::Relaxed),
    );
    line(
        "ferrite_watch_slow_catchups_total",
        "counter",
        "Times a watch stream fell behind and caught up from history.",
        w.lagged.load(Ordering::Relaxed),
    );
    line(
        "ferrite_leases",
        "gauge",
        "Leases this member's lessor knows of.",
        g(&m.leases),
    );
    line(
        "ferrite_lease_expiries_total",
        "counter",
        "Revokes of expired leases this member proposed as leader.",
        g(&m.lease_revokes_proposed),
    );
    line(
        "ferrite_lease_renewals_total",
        "counter",
        "Lease keep-alives this member applied as leader.",
        g(&m.lease_renewals),
    );
    line(
        "ferrite_lease_checkpoints_total",
        "counter",
        "Lease checkpoints (remaining TTLs) this member proposed as leader.",
        g(&m.lease_checkpoints_proposed),
    );
    histogram(
        &mut out,
        "ferrite_wal_fsync_seconds",
        "Duration of the WAL's group-commit fdatasync.",
        &m.sync,
    );
    histogram(
        &mut out,
        "ferrite_peer_round_trip_seconds",
        "Heartbeat round trips from this leader to its peers.",
        &m.peer_rtt,
    );
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &ferrite_node::Histogram) {
    let (buckets, sum_nanos, count) = (
        &h.buckets,
        Metrics::get(&h.sum_nanos),
        Metrics::get(&h.count),
    );
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, le) in SYNC_BUCKETS.iter().enumerate() {
        cumulative += Metrics::get(&buckets[i]);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += Metrics::get(&buckets[SYNC_BUCKETS.len()]);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {count}",
        sum_nanos as f64 / 1e9
    );
}
