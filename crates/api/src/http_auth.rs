//! Logging in over HTTP, for the dashboard and curl: etcd's Authenticate
//! (`Context::authenticate`) behind `POST /v1/auth/login`, its token handed
//! back in JSON and as an `HttpOnly; SameSite=Strict` cookie (`Secure` over
//! TLS) that every JSON endpoint and the dashboard's stream accept; a logout
//! that drops the cookie; and `whoami`.
//!
//! Tokens are signed, not stored (`ferrite_service::auth`): a logout forgets
//! the cookie in the browser, and a copied token stays valid until it
//! expires (`--auth-token-ttl`) or users and roles change, as etcd's JWT
//! tokens do.

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use ferrite_service::Context;
use ferrite_state::Principal;
use serde::Deserialize;
use serde_json::json;

use crate::http::{request_principal, ApiError, Https, TOKEN_COOKIE};

#[derive(Deserialize)]
pub struct Login {
    name: String,
    password: String,
}

/// Longest name or password accepted (etcd has no limit; bcrypt reads 72
/// bytes of a password).
const CREDENTIAL_BYTES_MAX: usize = 1024;

/// `POST /v1/auth/login`, with `{"name", "password"}` as JSON or as an
/// HTML form.
pub async fn login(
    State(ctx): State<Context>,
    Extension(Https(https)): Extension<Https>,
    req: Request,
) -> Result<Response, ApiError> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bad = |e: String| ApiError(StatusCode::BAD_REQUEST, format!("login: {e}"));
    let login = if form {
        Form::<Login>::from_request(req, &())
            .await
            .map_err(|e| bad(e.body_text()))?
            .0
    } else {
        Json::<Login>::from_request(req, &())
            .await
            .map_err(|e| bad(e.body_text()))?
            .0
    };
    if login.name.len() > CREDENTIAL_BYTES_MAX || login.password.len() > CREDENTIAL_BYTES_MAX {
        return Err(bad("name or password too long".into()));
    }
    let token = ctx.authenticate(&login.name, &login.password).await?;
    let ttl = ctx.auth_config.token_ttl.as_secs();
    let cookie = format!(
        "{TOKEN_COOKIE}={token}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    );
    tracing::info!(user = %login.name, "logged in over HTTP");
    Ok(set_cookie(
        cookie,
        Json(json!({ "user": login.name, "token": token })),
    ))
}

/// `POST /v1/auth/logout`: the browser forgets the cookie.
pub async fn logout(Extension(Https(https)): Extension<Https>) -> Response {
    let cookie = format!(
        "{TOKEN_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    );
    set_cookie(cookie, Json(json!({ "ok": true })))
}

fn set_cookie(cookie: String, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `GET /v1/auth/whoami`: whether auth is enabled, and who the request is
/// from (`user` null when it has no valid credentials; `error` says why).
/// Answers 200 either way: it is how the dashboard learns it must log in.
pub async fn whoami(State(ctx): State<Context>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let store = ctx.auth.current();
    if !store.enabled() {
        return Json(json!({
            "auth_enabled": false, "user": null, "roles": [], "root": true,
        }))
        .into_response();
    }
    match request_principal(&parts, &ctx) {
        Ok(who @ Principal::User { .. }) => {
            let name = who.name().unwrap_or_default().to_string();
            let roles: Vec<String> = store
                .user(&name)
                .map(|u| u.roles.iter().cloned().collect())
                .unwrap_or_default();
            Json(json!({
                "auth_enabled": true,
                "user": name,
                "roles": roles,
                "root": store.check_admin(&who).is_ok(),
            }))
            .into_response()
        }
        Ok(_) => Json(json!({
            "auth_enabled": true, "user": null, "roles": [], "root": false,
        }))
        .into_response(),
        Err(ApiError(_, error)) => Json(json!({
            "auth_enabled": true, "user": null, "roles": [], "root": false, "error": error,
        }))
        .into_response(),
    }
}
