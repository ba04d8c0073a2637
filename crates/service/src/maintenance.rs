//! etcd's maintenance surface as the service runs it: the space quota
//! (`--quota-backend-bytes`) and the member's db size, alarms through the
//! log, hashes, defragmentation, the periodic corruption check, and the
//! test-only divergence that lets a test show the check bite.
//!
//! Sizes (see `ferrite_state::space` for what is counted):
//! - *in use* is the state's accounted bytes, the same on every member at
//!   the same applied index;
//! - *db size* is this member's high-water mark of it since it started or
//!   last defragmented, as a bbolt file grows and is only shrunk by a
//!   defragment. The quota bounds the db size, as etcd's bounds the file.
//!
//! The quota is checked before a request is proposed (etcd's quota KV
//! server): a write whose cost would take the db size over the quota
//! raises a NOSPACE alarm through the log and fails with etcd's "mvcc:
//! database space exceeded". From then on every member refuses, at apply,
//! what would grow the state, until the alarm is deactivated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferrite_state::{AlarmAction, AlarmMember, AlarmRequest, AlarmType, Op, Principal, Reply};

use crate::error::ServiceError;
use crate::Context;

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const QUOTA_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;

/// What the member shares between its front ends and its state machine.
#[derive(Debug)]
pub struct Maintenance {
    /// The space quota in bytes (`--quota-backend-bytes`).
    pub quota: u64,
    db_size: AtomicU64,
    in_use: AtomicU64,
    /// Test-only: a key whose newest value the machine flips in place at
    /// its next apply or query (`/v1/fault/corrupt`).
    corrupt_key: Mutex<Option<Bytes>>,
}

impl Maintenance {
    /// With `quota` bytes (0: etcd's default, 2 GiB).
    pub fn new(quota: u64) -> Arc<Maintenance> {
        Arc::new(Maintenance {
            quota: if quota == 0 {
                QUOTA_BYTES_DEFAULT
            } else {
                quota
            },
            db_size: AtomicU64::new(0),
            in_use: AtomicU64::new(0),
            corrupt_key: Mutex::new(None),
        })
    }

    /// This member's db size: the high-water mark of the bytes in use since
    /// it started or last defragmented.
    pub fn db_size(&self) -> u64 {
        self.db_size.load(Ordering::Acquire)
    }

    /// The accounted bytes of the applied state.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Acquire)
    }

    /// The machine applied something: `in_use` bytes now.
    pub(crate) fn observe(&self, in_use: u64) {
        self.in_use.store(in_use, Ordering::Release);
        self.db_size.fetch_max(in_use, Ordering::AcqRel);
    }

    /// A defragmentation (or a restore): the db size is what is in use.
    pub(crate) fn reset(&self, in_use: u64) -> u64 {
        self.in_use.store(in_use, Ordering::Release);
        self.db_size.swap(in_use, Ordering::AcqRel)
    }

    /// Whether `op` fits in the quota (etcd's `Available`): false if its
    /// cost would take the db size over it.
    pub fn available(&self, op: &Op) -> bool {
        let cost = ferrite_state::space::cost(op);
        cost == 0 || self.db_size().saturating_add(cost) <= self.quota
    }

    /// Test-only: flip `key`'s newest value at the machine's next apply or
    /// query.
    pub fn inject_corruption(&self, key: Bytes) {
        if let Ok(mut k) = self.corrupt_key.lock() {
            *k = Some(key);
        }
    }

    pub(crate) fn take_corruption(&self) -> Option<Bytes> {
        self.corrupt_key.lock().ok().and_then(|mut k| k.take())
    }
}

/// What a defragmentation reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defragmented {
    pub db_size_before: u64,
    pub db_size_after: u64,
    /// Spare version slots of the key histories given back.
    pub slots_released: u64,
}

/// One member's answer to HashKV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    pub compact_revision: i64,
    pub hash_revision: i64,
    pub revision: i64,
}

impl Context {
    /// Refuses `op` if it would take this member over the quota, raising
    /// NOSPACE through the log first (as etcd's quota KV server does).
    pub async fn check_quota(&self, op: &Op) -> Result<(), ServiceError> {
        if self.maintenance.available(op) {
            return Ok(());
        }
        tracing::warn!(
            db_size = self.maintenance.db_size(),
            quota = self.maintenance.quota,
            "space quota exceeded: raising the NOSPACE alarm"
        );
        self.raise_alarm(self.member_id, AlarmType::NoSpace).await?;
        Err(ServiceError::State(ferrite_state::StateError::NoSpace))
    }

    /// Raises `alarm` for `member` through the log (as the member itself).
    pub async fn raise_alarm(
        &self,
        member: u64,
        alarm: AlarmType,
    ) -> Result<Vec<AlarmMember>, ServiceError> {
        let op = Op::Alarm(AlarmRequest {
            action: AlarmAction::Activate,
            member_id: member,
            alarm,
        });
        match self.write_unchecked(op, None, &Principal::System).await? {
            Reply::Alarms(list) => Ok(list),
            other => Err(ServiceError::unexpected(other)),
        }
    }

    /// GET, ACTIVATE or DEACTIVATE, as `who`: a GET is a linearizable read,
    /// the others go through the log.
    pub async fn alarm(
        &self,
        req: AlarmRequest,
        who: &Principal,
    ) -> Result<Vec<AlarmMember>, ServiceError> {
        let op = Op::Alarm(req);
        let reply = if req.action == AlarmAction::Get {
            self.read(op, who, false).await?
        } else {
            self.write(op, None, who).await?
        };
        match reply {
            Reply::Alarms(list) => Ok(list),
            other => Err(ServiceError::unexpected(other)),
        }
    }

    /// This member's HashKV at `revision` (0: its current one).
    pub async fn hash_kv(&self, revision: i64, who: &Principal) -> Result<KvHash, ServiceError> {
        match self.read(Op::HashKv { revision }, who, true).await? {
            Reply::HashKv {
                hash,
                compact_revision,
                hash_revision,
                revision,
            } => Ok(KvHash {
                hash,
                compact_revision,
                hash_revision,
                revision,
            }),
            other => Err(ServiceError::unexpected(other)),
        }
    }

    /// This member's hash of its whole state, and its revision.
    pub async fn hash(&self, who: &Principal) -> Result<(u32, i64), ServiceError> {
        match self.read(Op::Hash, who, true).await? {
            Reply::Hash { hash, revision } => Ok((hash, revision)),
            other => Err(ServiceError::unexpected(other)),
        }
    }

    /// Defragments this member (see `machine.rs`).
    pub async fn defragment(&self, who: &Principal) -> Result<Defragmented, ServiceError> {
        let before = self.maintenance.db_size();
        match self.read(Op::Defragment, who, true).await? {
            Reply::Defragmented { released, in_use } => {
                let done = Defragmented {
                    db_size_before: before,
                    db_size_after: in_use,
                    slots_released: released,
                };
                tracing::info!(
                    db_size_before = done.db_size_before,
                    db_size_after = done.db_size_after,
                    reclaimed = done.db_size_before.saturating_sub(done.db_size_after),
                    history_slots_released = done.slots_released,
                    "defragmented"
                );
                Ok(done)
            }
            other => Err(ServiceError::unexpected(other)),
        }
    }
}

/// What the corruption check concluded from every member's hash at one
/// revision: the members whose hash differs from the one a majority of
/// the answers agree on. Answers at another compaction revision are not
/// compared (as etcd). None when no hash has a majority.
pub fn disagreeing(answers: &BTreeMap<u64, KvHash>) -> Option<Vec<u64>> {
    let compact = answers.values().map(|h| h.compact_revision).max()?;
    let comparable: Vec<(u64, u32)> = answers
        .iter()
        .filter(|(_, h)| h.compact_revision == compact)
        .map(|(id, h)| (*id, h.hash))
        .collect();
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, hash) in &comparable {
        *counts.entry(*hash).or_default() += 1;
    }
    let (majority, n) = counts.iter().max_by_key(|(_, n)| **n)?;
    if *n * 2 <= comparable.len() {
        return None;
    }
    Some(
        comparable
            .iter()
            .filter(|(_, h)| h != majority)
            .map(|(id, _)| *id)
            .collect(),
    )
}

/// The leader's periodic corruption check (`--corrupt-check-time`): every
/// `period`, if this member leads, it asks every member (on their peer
/// ports) for HashKV at its own revision, and raises a CORRUPT alarm for
/// each member whose hash differs from the majority's.
pub async fn corruption_check_loop(ctx: Context, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = check_once(&ctx, period).await {
            tracing::debug!("corruption check skipped: {e}");
        }
    }
}

/// Asks the member whose peer URL is `url` for its HashKV at `revision`.
async fn ask_hash(
    ctx: &Context,
    url: &str,
    revision: i64,
    within: Duration,
) -> Result<KvHash, String> {
    use ferrite_proto::ferrite::v1 as fv;
    let channel = ctx
        .peers
        .channel(url, within.min(Duration::from_secs(1)), within)
        .await?;
    let mut client = fv::peer_maintenance_client::PeerMaintenanceClient::new(channel);
    let r = client
        .kv_hash(fv::KvHashRequest { revision })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(KvHash {
        hash: r.hash,
        compact_revision: r.compact_revision,
        hash_revision: r.hash_revision,
        revision: r.revision,
    })
}

async fn check_once(ctx: &Context, period: Duration) -> Result<(), String> {
    let status = ctx.node.status().await.map_err(|e| e.to_string())?;
    if status.role != ferrite_raft::Role::Leader {
        return Ok(());
    }
    let mine = ctx
        .hash_kv(0, &Principal::System)
        .await
        .map_err(|e| e.to_string())?;
    let members = ctx.member_table().await.map_err(|e| e.to_string())?;
    let within = period.min(Duration::from_secs(5));
    let mut answers = BTreeMap::new();
    answers.insert(ctx.member_id, mine);
    for m in members {
        if m.id == ctx.member_id {
            continue;
        }
        let Some(url) = m.peer_urls.first() else {
            continue;
        };
        // A member behind (future revision) or compacted past it has no
        // answer to compare; the next round will.
        match ask_hash(ctx, url, mine.hash_revision, within).await {
            Ok(h) => {
                answers.insert(m.id, h);
            }
            Err(e) => tracing::debug!(member = %format!("{:x}", m.id), "no hash: {e}"),
        }
    }
    if answers.len() < 2 {
        return Ok(());
    }
    let Some(bad) = disagreeing(&answers) else {
        tracing::warn!(?answers, "corruption check: no majority among the hashes");
        return Ok(());
    };
    let get = AlarmRequest {
        action: AlarmAction::Get,
        member_id: 0,
        alarm: AlarmType::Corrupt,
    };
    let raised = ctx
        .alarm(get, &Principal::System)
        .await
        .map_err(|e| e.to_string())?;
    for id in bad {
        if raised.iter().any(|a| a.member_id == id) {
            continue;
        }
        tracing::error!(
            member = %format!("{:x}", id),
            revision = mine.hash_revision,
            "corruption check: this member's key space differs from the majority's; raising CORRUPT"
        );
        ctx.raise_alarm(id, AlarmType::Corrupt)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hash: u32, compact_revision: i64) -> KvHash {
        KvHash {
            hash,
            compact_revision,
            hash_revision: 10,
            revision: 10,
        }
    }

    #[test]
    fn the_odd_member_out_is_named() {
        let answers = BTreeMap::from([(1, h(5, 0)), (2, h(5, 0)), (3, h(6, 0))]);
        assert_eq!(disagreeing(&answers), Some(vec![3]));
        let agree = BTreeMap::from([(1, h(5, 0)), (2, h(5, 0))]);
        assert_eq!(disagreeing(&agree), Some(vec![]));
        let split = BTreeMap::from([(1, h(5, 0)), (2, h(6, 0))]);
        assert_eq!(disagreeing(&split), None);
        // Another compaction revision is not compared.
        let other = BTreeMap::from([(1, h(5, 4)), (2, h(5, 4)), (3, h(6, 0))]);
        assert_eq!(disagreeing(&other), Some(vec![]));
    }
}
