//! The dashboard's buttons. Stopping, killing and restarting a member is
//! the job of whoever runs its process: `ferrite up` listens for these on a
//! control address it gives every member (`--control`), and a member
//! forwards the page's request there. Network and disk faults are done by
//! the member itself (`/v1/fault/...`, only with `--fault-injection`): its
//! transport drops peer frames, its storage thread sleeps before fdatasync.

use std::net::SocketAddr;
use std::time::Duration;

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrite_node::Faults;
use ferrite_raft::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{error, ok, refused_unless_root, Dashboard};
use crate::http::Who;

const ACTIONS: [&str; 5] = ["stop", "kill", "restart", "isolate", "heal"];
/// The most of an answer read back.
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

pub async fn forward(
    State(d): State<Dashboard>,
    Who(who): Who,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = refused_unless_root(&d, &who) {
        return refused;
    }
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

/// Query of `/v1/fault/drop` and `/v1/fault/slow-disk`.
#[derive(serde::Deserialize, Default)]
pub struct FaultQuery {
    /// Peers (names or hex ids, comma-separated) whose frames are dropped.
    #[serde(default)]
    to: String,
    #[serde(default)]
    from: String,
    /// Extra milliseconds per fdatasync.
    #[serde(default)]
    ms: u64,
    /// The key whose value `corrupt` changes on this member only.
    #[serde(default)]
    key: String,
}

/// `isolate` (drop all peer traffic), `drop?to=..&from=..` (drop traffic to
/// and from some peers: partitions, one-way, bridges), `slow-disk?ms=N`,
/// `corrupt?key=K` (change K's value in this member's state only, for the
/// corruption check), `heal` (all back to normal; a corruption stays).
pub async fn fault(
    State(d): State<Dashboard>,
    Who(who): Who,
    Path(action): Path<String>,
    Query(q): Query<FaultQuery>,
) -> Response {
    if let Some(refused) = refused_unless_root(&d, &who) {
        return refused;
    }
    if !d.faults {
        return error(
            StatusCode::FORBIDDEN,
            "fault injection is off (start the member with --fault-injection)",
        );
    }
    let node = &d.ctx.node;
    match action.as_str() {
        "isolate" => {
            tracing::warn!(name = %d.ctx.name, "isolated from its peers (fault injection)");
            node.set_faults(Faults {
                isolated: true,
                ..node.faults()
            });
            ok()
        }
        "drop" => {
            let members = match crate::cluster::members(&d.ctx).await {
                Ok(m) => m,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.message().to_string()),
            };
            let resolve = |list: &str| -> Result<BTreeSet<NodeId>, String> {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|p| {
                        members
                            .iter()
                            .find(|m| m.name == p || format!("{:x}", m.id) == p)
                            .map(|m| NodeId(m.id))
                            .ok_or_else(|| format!("no member {p:?}"))
                    })
                    .collect()
            };
            match (resolve(&q.to), resolve(&q.from)) {
                (Ok(drop_to), Ok(drop_from)) => {
                    tracing::warn!(name = %d.ctx.name, to = %q.to, from = %q.from, "dropping peer traffic (fault injection)");
                    node.set_faults(Faults {
                        isolated: false,
                        drop_to,
                        drop_from,
                    });
                    ok()
                }
                (Err(e), _) | (_, Err(e)) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        "slow-disk" => {
            tracing::warn!(name = %d.ctx.name, ms = q.ms, "slow disk (fault injection)");
            node.set_disk_delay(Duration::from_millis(q.ms.min(10_000)));
            ok()
        }
        "corrupt" => {
            if q.key.is_empty() {
                return error(StatusCode::BAD_REQUEST, "corrupt needs ?key=K");
            }
            tracing::warn!(name = %d.ctx.name, key = %q.key, "corrupting a value (fault injection)");
            d.ctx
                .maintenance
                .inject_corruption(bytes::Bytes::from(q.key.clone().into_bytes()));
            // The machine takes the fault at its next apply or read: read.
            let now = ferrite_state::Op::HashKv { revision: 0 };
            match d
                .ctx
                .read(now, &ferrite_state::Principal::System, true)
                .await
            {
                Ok(_) => ok(),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        "heal" => {
            tracing::warn!(name = %d.ctx.name, "faults healed");
            node.set_faults(Faults::default());
            node.set_disk_delay(Duration::ZERO);
            ok()
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "the action is isolate, drop, slow-disk, corrupt or heal",
        ),
    }
}

/// A bodiless HTTP/1.1 POST to a local service; the status code and body.
pub async fn http_post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    http_post_tls(addr, path, None).await
}

/// `http_post` over TLS when `tls` is given (a member's HTTP port with
/// client TLS on); the server's certificate must be valid for `addr`'s IP.
pub async fn http_post_tls(
    addr: SocketAddr,
    path: &str,
    tls: Option<std::sync::Arc<ferrite_tls::rustls::ClientConfig>>,
) -> Result<(u16, String), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let mut stream: Box<dyn ferrite_node::peer_io::PeerStream> = match tls {
            Some(config) => Box::new(
                ferrite_tls::TlsConnector::from(config)
                    .connect(ferrite_tls::ServerName::IpAddress(addr.ip().into()), stream)
                    .await
                    .map_err(|e| format!("TLS with {addr}: {e}"))?,
            ),
            None => Box::new(stream),
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let read = (&mut stream)
            .take(ANSWER_BYTES_MAX)
            .read_to_end(&mut answer)
            .await;
        // A TLS server may close without close_notify: what came is the answer.
        if let Err(e) = read {
            if answer.is_empty() {
                return Err(e.to_string());
            }
        }
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
