//! The dashboard's buttons. Stopping, killing and restarting a member is
//! the job of whoever runs its process: `ferrite up` listens for these on a
//! control address it gives every member (`--control`), and a member
//! forwards the page's request there. Cutting a member off from its peers
//! is done by the member itself (`/v1/fault/isolate|heal`, only with
//! `--fault-injection`): its transport drops every peer frame.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{error, ok, Dashboard};

const ACTIONS: [&str; 5] = ["stop", "kill", "restart", "isolate", "heal"];
/// The most of an answer read back.
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

pub async fn forward(
    State(d): State<Dashboard>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if !ACTIONS.contains(&action.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?}; one of {}", ACTIONS.join(", ")),
        );
    }
    let Some(addr) = d.control else {
        return error(
            StatusCode::NOT_FOUND,
            "controls are available in a `ferrite up` cluster only",
        );
    };
    match http_post(addr, &format!("/{name}/{action}")).await {
        Ok((code, body)) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            (
                code,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("ferrite up: {e}")),
    }
}

pub async fn fault(State(d): State<Dashboard>, Path(action): Path<String>) -> Response {
    if !d.faults {
        return error(
            StatusCode::FORBIDDEN,
            "fault injection is off (start the member with --fault-injection)",
        );
    }
    match action.as_str() {
        "isolate" => {
            tracing::warn!(name = %d.ctx.name, "isolated from its peers (fault injection)");
            d.ctx.node.set_isolated(true);
            ok()
        }
        "heal" => {
            tracing::warn!(name = %d.ctx.name, "connected to its peers again (fault injection)");
            d.ctx.node.set_isolated(false);
            ok()
        }
        _ => error(StatusCode::BAD_REQUEST, "the action is isolate or heal"),
    }
}

/// A bodiless HTTP/1.1 POST to a local service; the status code and body.
pub async fn http_post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .take(ANSWER_BYTES_MAX)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{addr} did not answer within 10 s"))??;
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}
