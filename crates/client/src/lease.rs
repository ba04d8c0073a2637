//! etcd's leases: grant, revoke, time-to-live, list, and keep-alive.
//!
//! A keep-alive is a task that renews the lease every third of its TTL on
//! whichever member answers (any member forwards it to the leader), and
//! reports each renewal's TTL, or why the lease is lost, on a channel. The
//! lease is lost when a renewal says TTL 0 (etcd: expired or revoked) or
//! when no member answers for the client's patience.

use std::time::Duration;

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::lease_client::LeaseClient;
use tokio::sync::mpsc;

use crate::{Client, ClientError, Retry};

/// The shortest pause between two renewals.
const RENEW_PAUSE_MIN: Duration = Duration::from_millis(200);
/// Renewals reported but not yet read; beyond it the oldest are not
/// reported (the renewals themselves go on).
const RENEWALS_QUEUED_MAX: usize = 16;

/// A lease as `lease_time_to_live` finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// Seconds left; -1 when the lease no longer exists (etcd's answer).
    pub ttl: i64,
    /// The TTL it was granted with.
    pub granted_ttl: i64,
    /// The keys bound to it, if asked for.
    pub keys: Vec<Vec<u8>>,
}

impl LeaseInfo {
    pub fn exists(&self) -> bool {
        self.ttl >= 0
    }
}

impl Client {
    /// Grants a lease of `ttl` seconds; returns its id and TTL. Not sent
    /// again when its outcome is unknown (a lost lease merely expires).
    pub async fn lease_grant(&mut self, ttl: i64) -> Result<(i64, i64), ClientError> {
        let req = pb::LeaseGrantRequest { ttl, id: 0 };
        let r = self
            .call_with(Retry::IfNotApplied, |ch| async move {
                LeaseClient::new(ch).lease_grant(req).await
            })
            .await?
            .into_inner();
        if !r.error.is_empty() {
            return Err(ClientError::Refused(r.error));
        }
        Ok((r.id, r.ttl))
    }

    /// Revokes a lease and deletes its keys. `NotFound` if it is gone.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<(), ClientError> {
        let req = pb::LeaseRevokeRequest { id };
        self.call(|ch| async move { LeaseClient::new(ch).lease_revoke(req).await })
            .await?;
        Ok(())
    }

    /// Renews a lease once; returns its TTL, or `LeaseExpired`.
    pub async fn lease_keep_alive_once(&mut self, id: i64) -> Result<i64, ClientError> {
        let r = self
            .call(|ch| async move {
                let once = tokio_stream::once(pb::LeaseKeepAliveRequest { id });
                let mut responses = LeaseClient::new(ch)
                    .lease_keep_alive(once)
                    .await?
                    .into_inner();
                responses
                    .message()
                    .await?
                    .ok_or_else(|| tonic::Status::unavailable("the keep-alive stream ended"))
            })
            .await?;
        if r.ttl <= 0 {
            return Err(ClientError::LeaseExpired(id));
        }
        Ok(r.ttl)
    }

    /// Keeps a lease alive until the returned handle is dropped.
    pub fn lease_keep_alive(&self, id: i64) -> KeepAlive {
        let mut client = self.sibling();
        let (tx, rx) = mpsc::channel(RENEWALS_QUEUED_MAX);
        let task = tokio::spawn(async move {
            loop {
                match client.lease_keep_alive_once(id).await {
                    Ok(ttl) => {
                        let _ = tx.try_send(Ok(ttl));
                        let pause = Duration::from_millis(ttl as u64 * 1000 / 3);
                        tokio::time::sleep(pause.max(RENEW_PAUSE_MIN)).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        KeepAlive { id, rx, task }
    }

    pub async fn lease_time_to_live(
        &mut self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseInfo, ClientError> {
        let req = pb::LeaseTimeToLiveRequest { id, keys };
        let r = self
            .call(|ch| async move { LeaseClient::new(ch).lease_time_to_live(req).await })
            .await?
            .into_inner();
        Ok(LeaseInfo {
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        })
    }

    /// The ids of every lease the cluster holds.
    pub async fn lease_list(&mut self) -> Result<Vec<i64>, ClientError> {
        let r = self
            .call(|ch| async move {
                LeaseClient::new(ch)
                    .lease_leases(pb::LeaseLeasesRequest {})
                    .await
            })
            .await?;
        Ok(r.into_inner().leases.into_iter().map(|l| l.id).collect())
    }
}

/// A lease kept alive by a task; dropping it stops the renewals (the lease
/// then expires after its TTL unless revoked).
pub struct KeepAlive {
    id: i64,
    rx: mpsc::Receiver<Result<i64, ClientError>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The next renewal's TTL, or why the lease is lost (then the task has
    /// ended and every later call says `LeaseExpired`).
    pub async fn next(&mut self) -> Result<i64, ClientError> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(ClientError::LeaseExpired(self.id)),
        }
    }

    /// Resolves when the lease is lost, with why.
    pub async fn lost(&mut self) -> ClientError {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
