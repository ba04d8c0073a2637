//! The web dashboard: a page (plain HTML, CSS and JS, embedded in the
//! binary, no network access needed) that draws the cluster live from one
//! server-sent-event stream, `/v1/watch` (see `sampler.rs`), and uses the
//! JSON API for data. In a `ferrite up` cluster it also has buttons to stop,
//! kill, restart, isolate and heal members (see `control.rs`).

mod control;
mod sampler;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferrite_service::Context;
use ferrite_state::Principal;

use crate::http::Who;
use serde_json::json;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};

pub use control::{http_post, http_post_tls};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

#[derive(Clone)]
pub struct Dashboard {
    ctx: Context,
    view: watch::Receiver<Arc<sampler::View>>,
    /// `ferrite up`'s control address, if this member runs under it.
    control: Option<SocketAddr>,
    /// Whether `/v1/fault/...` may cut this member off (`--fault-injection`).
    faults: bool,
}

impl Dashboard {
    /// Starts the sampler; the routes serve what it publishes.
    pub fn start(ctx: Context, control: Option<SocketAddr>, faults: bool) -> Dashboard {
        let (tx, view) = watch::channel(Arc::new(sampler::View {
            doc: json!({}),
            text: String::from("{}"),
            change_keys: Vec::new(),
        }));
        tokio::spawn(sampler::run(ctx.clone(), control.is_some(), tx));
        Dashboard {
            ctx,
            view,
            control,
            faults,
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
            .route(
                "/index.html",
                get(|| asset("text/html; charset=utf-8", INDEX_HTML)),
            )
            .route(
                "/app.js",
                get(|| asset("text/javascript; charset=utf-8", APP_JS)),
            )
            .route(
                "/style.css",
                get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
            )
            .route("/v1/watch", get(watch_view))
            .route("/v1/control/{name}/{action}", post(control::forward))
            .route("/v1/fault/{action}", post(control::fault))
            .with_state(self)
    }
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

impl axum::extract::FromRef<Dashboard> for Context {
    fn from_ref(d: &Dashboard) -> Context {
        d.ctx.clone()
    }
}

/// The live view: the current document at once, then every new one, each
/// cut to what the page's user may read (`sampler::for_user`). With auth
/// enabled, a page that has not logged in gets 401 and no stream.
async fn watch_view(
    State(d): State<Dashboard>,
    Who(who): Who,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let auth = d.ctx.auth.clone();
    let stream = WatchStream::new(d.view.clone()).map(move |view| {
        let text = sampler::for_user(&view, &auth.current(), &who);
        Ok(Event::default().data(text))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// With auth enabled, the controls are root's (etcd's admin permission):
/// the refusal to answer, if `who` is not.
fn refused_unless_root(d: &Dashboard, who: &Principal) -> Option<Response> {
    d.ctx.auth.current().check_admin(who).err().map(|e| {
        let code = match e {
            ferrite_state::StateError::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        error(code, format!("{}: the controls need the root role", e))
    })
}

fn error(code: StatusCode, text: impl Into<String>) -> Response {
    (code, Json(json!({ "error": text.into() }))).into_response()
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}
