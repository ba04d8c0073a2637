//! etcd's lock (v3lockpb) and election (v3electionpb) services.
//!
//! Both are bound to a lease the caller keeps alive: the holder's key is
//! `NAME/LEASE_HEX`, so a lock or campaign sent again after a lost answer
//! finds its own key and is safe to retry. A lock's fencing token is its
//! key's create revision: a later holder's is always higher.

use ferrite_proto::v3electionpb as epb;
use ferrite_proto::v3electionpb::election_client::ElectionClient;
use ferrite_proto::v3lockpb as lpb;
use ferrite_proto::v3lockpb::lock_client::LockClient;
use tonic::Code;

use crate::{Client, ClientError, KeyValue, Retry};

/// A held lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockKey {
    /// `NAME/LEASE_HEX`: pass it to `unlock`.
    pub key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub revision: i64,
}

/// Leadership won by `campaign`: pass it to `proclaim` and `resign`.
pub type LeaderKey = epb::LeaderKey;

impl Client {
    /// Waits until `name` is held with `lease`, however long that takes.
    pub async fn lock(&mut self, name: &[u8], lease: i64) -> Result<LockKey, ClientError> {
        let req = lpb::LockRequest {
            name: name.to_vec(),
            lease,
        };
        let r = self
            .call_waiting(|ch| {
                let req = req.clone();
                async move { LockClient::new(ch).lock(req).await }
            })
            .await?
            .into_inner();
        // The answer's header carries the store's revision, not the key's:
        // read the key for its create revision, the token.
        let kv = self
            .get(&r.key)
            .await?
            .ok_or(ClientError::LeaseExpired(lease))?;
        Ok(LockKey {
            key: r.key,
            revision: kv.create_revision,
        })
    }

    pub async fn unlock(&mut self, key: &[u8]) -> Result<(), ClientError> {
        let req = lpb::UnlockRequest { key: key.to_vec() };
        self.call(|ch| {
            let req = req.clone();
            async move { LockClient::new(ch).unlock(req).await }
        })
        .await?;
        Ok(())
    }

    /// Waits until this lease's contender leads election `name`, then
    /// returns its leader key. Campaigning again with the same lease
    /// changes the value.
    pub async fn campaign(
        &mut self,
        name: &[u8],
        lease: i64,
        value: &[u8],
    ) -> Result<LeaderKey, ClientError> {
        let req = epb::CampaignRequest {
            name: name.to_vec(),
            lease,
            value: value.to_vec(),
        };
        let r = self
            .call_waiting(|ch| {
                let req = req.clone();
                async move { ElectionClient::new(ch).campaign(req).await }
            })
            .await?;
        r.into_inner().leader.ok_or(ClientError::EmptyAnswer)
    }

    /// Changes the leader's value without an election.
    pub async fn proclaim(&mut self, leader: &LeaderKey, value: &[u8]) -> Result<(), ClientError> {
        let req = epb::ProclaimRequest {
            leader: Some(leader.clone()),
            value: value.to_vec(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { ElectionClient::new(ch).proclaim(req).await }
        })
        .await?;
        Ok(())
    }

    /// The election's current leader (its key and value).
    pub async fn leader(&mut self, name: &[u8]) -> Result<KeyValue, ClientError> {
        let req = epb::LeaderRequest {
            name: name.to_vec(),
        };
        let r = self
            .call_with(Retry::Always, |ch| {
                let req = req.clone();
                async move { ElectionClient::new(ch).leader(req).await }
            })
            .await;
        let missing = || ClientError::NoElectionLeader(String::from_utf8_lossy(name).into_owned());
        match r {
            Ok(r) => r.into_inner().kv.ok_or_else(missing),
            Err(ClientError::NotFound(_)) => Err(missing()),
            Err(e) => Err(e),
        }
    }

    /// Gives up leadership (or a place in the queue).
    pub async fn resign(&mut self, leader: &LeaderKey) -> Result<(), ClientError> {
        let req = epb::ResignRequest {
            leader: Some(leader.clone()),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { ElectionClient::new(ch).resign(req).await }
        })
        .await?;
        Ok(())
    }

    /// Follows the election's leader: the stream yields the leader now (if
    /// any) and every change after. It ends on a member's failure; call
    /// again to go on (the first answer is the leader at that time).
    pub async fn observe(&mut self, name: &[u8]) -> Result<Observer, ClientError> {
        let req = epb::LeaderRequest {
            name: name.to_vec(),
        };
        let stream = self
            .call_waiting(|ch| {
                let req = req.clone();
                async move { ElectionClient::new(ch).observe(req).await }
            })
            .await?
            .into_inner();
        Ok(Observer { stream })
    }
}

/// The leaders of one election, as they change.
pub struct Observer {
    stream: tonic::Streaming<epb::LeaderResponse>,
}

impl Observer {
    /// The next leader; `Ok(None)` when the member ended the stream.
    pub async fn next(&mut self) -> Result<Option<KeyValue>, ClientError> {
        loop {
            match self.stream.message().await {
                Ok(Some(r)) => match r.kv {
                    Some(kv) => return Ok(Some(kv)),
                    None => continue,
                },
                Ok(None) => return Ok(None),
                Err(s) if s.code() == Code::NotFound => continue,
                Err(s) => {
                    return Err(ClientError::Unavailable(
                        std::time::Duration::ZERO,
                        s.message().to_string(),
                    ))
                }
            }
        }
    }
}
