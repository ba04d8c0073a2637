//! Leases over the etcd v3 API, the same for both systems: many leases
//! granted through every member, then keepalive streams spread over the
//! members renewing them as fast as the cluster answers. A follower
//! forwards each keepalive to the leader in both systems (etcd over its
//! peer HTTP, Ferrite in LeaseRenew frames), so spreading the streams
//! measures that path too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::lease_client::LeaseClient;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::watch::Members;

/// A lease's TTL: long enough that none expires during the run.
const TTL_SECONDS: i64 = 3600;
/// Concurrent grant requests.
const GRANTERS: usize = 64;
/// Keepalive streams, spread round-robin over the members.
pub const KEEPALIVE_STREAMS: usize = 24;
/// Keepalives each stream keeps in flight.
const KEEPALIVE_WINDOW: usize = 32;

/// Grants `count` leases through all members; returns their ids and the
/// grants per second.
pub async fn grant(members: &Members, count: usize) -> anyhow::Result<(Vec<i64>, f64)> {
    let n = members.len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for g in 0..GRANTERS {
        let mut client = LeaseClient::new(members.channel(g % n, g / n));
        let mine = count / GRANTERS + usize::from(g < count % GRANTERS);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(mine);
            for _ in 0..mine {
                let req = pb::LeaseGrantRequest {
                    ttl: TTL_SECONDS,
                    id: 0,
                };
                let ask = tokio::time::timeout(Duration::from_secs(10), client.lease_grant(req));
                match ask.await {
                    Ok(Ok(r)) => ids.push(r.into_inner().id),
                    Ok(Err(e)) => anyhow::bail!("lease grant: {e}"),
                    Err(_) => anyhow::bail!("lease grant: timed out"),
                }
            }
            Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok((ids, count as f64 / started.elapsed().as_secs_f64()))
}

/// What the keepalive streams got.
pub struct Renewals {
    /// Keepalives answered with a positive TTL.
    pub renewed: u64,
    /// Answered with TTL 0 (lease not found), or streams that failed.
    pub errors: u64,
    pub seconds: f64,
}

/// Renews `ids` round-robin on `KEEPALIVE_STREAMS` streams for `duration`.
pub async fn keepalive(members: &Members, ids: &[i64], duration: Duration) -> Renewals {
    let n = members.len();
    let ids: Arc<Vec<i64>> = Arc::new(ids.to_vec());
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for s in 0..KEEPALIVE_STREAMS {
        let mut client = LeaseClient::new(members.channel(s % n, s / n));
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            // The sender starts before the call returns: etcd (grpc-go)
            // sends the response headers only with the first reply.
            let (tx, rx) = mpsc::channel(KEEPALIVE_WINDOW);
            let window = Arc::new(Semaphore::new(KEEPALIVE_WINDOW));
            let sender = {
                let window = window.clone();
                tokio::spawn(async move {
                    let mut k = s;
                    while Instant::now() < until {
                        let Ok(permit) = window.acquire().await else {
                            return;
                        };
                        permit.forget();
                        let id = ids[k % ids.len()];
                        k += KEEPALIVE_STREAMS;
                        if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                            return;
                        }
                    }
                })
            };
            let call = client.lease_keep_alive(ReceiverStream::new(rx));
            let mut replies = match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(r)) => r.into_inner(),
                _ => {
                    sender.abort();
                    return (0, 1);
                }
            };
            let (mut renewed, mut errors) = (0u64, 0u64);
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, replies.message()).await {
                    Ok(Ok(Some(r))) => {
                        if r.ttl > 0 {
                            renewed += 1;
                        } else {
                            errors += 1;
                        }
                        window.add_permits(1);
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        errors += 1;
                        break;
                    }
                    Err(_) => break,
                }
            }
            sender.abort();
            (renewed, errors)
        }));
    }
    let (mut renewed, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((r, e)) = t.await {
            renewed += r;
            errors += e;
        }
    }
    Renewals {
        renewed,
        errors,
        seconds: started.elapsed().as_secs_f64(),
    }
}
