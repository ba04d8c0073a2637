//! The lessor: etcd's lease expiry clock, inside the sans-IO replica.
//!
//! Leases live in the state machine (granted, revoked and checkpointed by
//! log entries, so every member holds the same table at the same index).
//! What the state machine cannot hold is *time*: when a lease expires. As in
//! etcd, expiry is decided by the leader's monotonic clock alone (here: the
//! replica's ticks times the tick length) and carried out through the log:
//! the leader proposes a revoke, and every member deletes the same keys at
//! the same revision. The node does not know the machine's command format,
//! so it learns of lease changes from the apply side (`LeaseChange`, in log
//! order, no later than the index they were applied at) and proposes through
//! the encoders it is given (`LeaseProposals`).
//!
//! Roles:
//! - a follower keeps the table but no clock (`demote` clears expiries): it
//!   never proposes a revoke, and forwards keepalives to the leader;
//! - a leader *promotes* once it knows every lease applied up to its term's
//!   first entry (the no-op committed and applied): each lease expires at
//!   now + its checkpointed remaining TTL if that is > 0, else its full TTL.
//!   No lease expires because of a failover;
//! - the leader renews from memory (no log write), checkpoints remaining TTLs
//!   through the log every `lease_checkpoint_ticks` (so that repeated
//!   failovers cannot keep a lease alive forever), and proposes revokes for
//!   leases past their expiry (at most `lease_revokes_per_tick_max` a tick,
//!   proposed again if still in the table after `lease_revoke_retry_ticks`).
//!
//! Safety: a lease is never revoked while a renew the client got an answer
//! to still covers it, given bounded clock-rate differences. The replica
//! answers a renew made at leader time `t` (expiry `E = t + TTL`) only after
//! (1) a ReadIndex round confirmed, after `t`, that this member still led:
//! so any later leader promotes after `t` in real time; and (2) no checkpoint
//! proposed before `t` can be the last one applied for the lease: if one may
//! be (the table holds a remaining TTL > 0, or a checkpoint of this leader is
//! still in flight), a checkpoint with remaining 0 is proposed and the answer
//! waits until it is applied (etcd proposes it too, but answers at once).
//! A later leader then expires the lease at `promote + r`, where `r` is TTL
//! (checkpoint 0) or `E' - p` for a checkpoint proposed at `p` (before the
//! promote) by a leader whose expiry `E'` was at least `E`: in both cases no
//! earlier than `E`. This leader itself revokes only at its own `E`.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrite_raft::{Index, Raft, Term};

use crate::codec::CodecError;
use crate::replica::ReplicaCounters;

pub type LeaseId = i64;

/// A change to the lease table made by an applied entry (or a restore),
/// reported by the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Granted {
        id: LeaseId,
        ttl_s: i64,
    },
    Revoked {
        id: LeaseId,
    },
    /// `remaining_s == 0` means "no checkpoint: use the full TTL".
    Checkpointed {
        id: LeaseId,
        remaining_s: i64,
    },
    /// The whole table after a snapshot restore/recover: replaces what the
    /// lessor knew.
    Reset(Vec<LeaseRecord>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    pub ttl_s: i64,
    pub remaining_s: i64,
}

/// What a keepalive or time-to-live query answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    pub id: LeaseId,
    pub granted_ttl_s: i64,
    pub remaining_s: i64,
}

impl LeaseTtl {
    const BYTES: usize = 24;

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(Self::BYTES);
        b.put_i64_le(self.id);
        b.put_i64_le(self.granted_ttl_s);
        b.put_i64_le(self.remaining_s);
        b.freeze()
    }

    pub fn decode(mut data: &[u8]) -> Result<LeaseTtl, CodecError> {
        if data.len() < Self::BYTES {
            return Err(CodecError::Truncated);
        }
        if data.len() > Self::BYTES {
            return Err(CodecError::Trailing(data.len() - Self::BYTES));
        }
        Ok(LeaseTtl {
            id: data.get_i64_le(),
            granted_ttl_s: data.get_i64_le(),
            remaining_s: data.get_i64_le(),
        })
    }
}

/// How the replica turns its lease duties into commands the machine
/// understands.
#[derive(Clone, Copy)]
pub struct LeaseProposals {
    pub revoke: fn(LeaseId) -> Bytes,
    pub checkpoint: fn(&[(LeaseId, i64)]) -> Bytes,
}

impl std::fmt::Debug for LeaseProposals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseProposals")
    }
}

/// Leases in one checkpoint command at most.
pub const CHECKPOINT_LEASES_MAX: usize = 1000;

/// The lessor's limits, from `ReplicaConfig`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LessorConfig {
    pub tick_ms: u64,
    pub proposals: Option<LeaseProposals>,
    pub checkpoint_ticks: u64,
    pub revokes_per_tick_max: usize,
    pub revoke_retry_ticks: u64,
    /// Canary: promote does not extend leases.
    pub no_extend_on_promote: bool,
}

#[derive(Clone, Debug)]
struct Lease {
    ttl_s: i64,
    /// The last checkpoint applied; 0: none (use the full TTL).
    remaining_s: i64,
    /// Lessor time (ms) its grant was applied here.
    granted_ms: u64,
    /// Leader only: when it expires. Invariant: None unless promoted.
    expiry_ms: Option<u64>,
    /// When this leader last proposed its revoke.
    revoke_proposed_ms: Option<u64>,
    /// A checkpoint with remaining 0 proposed by this leader at this index
    /// (and when), that renews wait for.
    reset: Option<(Index, u64)>,
}

pub(crate) struct Lessor {
    cfg: LessorConfig,
    leases: BTreeMap<LeaseId, Lease>,
    /// Leases whose reset waits to be proposed, in one checkpoint command
    /// for all of them (`flush_resets`, once per replica step): a burst of
    /// renews costs one log entry, not one each.
    pending_resets: Vec<LeaseId>,
    /// Leases whose `reset` is set: what `settle_resets` looks at (it runs
    /// after every apply; the table may hold 100,000 leases).
    resetting: std::collections::BTreeSet<LeaseId>,
    /// Everything up to here is reflected in `leases`.
    applied: Index,
    /// Leading, with the clock running: every lease has an expiry.
    promoted: bool,
    /// Leading and ready in `term`: promote once `applied` reaches this.
    promote_at: Option<(Index, Term)>,
    /// The index of this leader's latest checkpoint proposal.
    checkpoint_index: Index,
    /// Ticks since the last periodic checkpoint.
    checkpoint_ticks: u64,
}

impl Lessor {
    /// `applied`: what the state machine holds at start (its snapshot).
    pub fn new(cfg: LessorConfig, applied: Index) -> Lessor {
        Lessor {
            cfg,
            leases: BTreeMap::new(),
            pending_resets: Vec::new(),
            resetting: std::collections::BTreeSet::new(),
            applied,
            promoted: false,
            promote_at: None,
            checkpoint_index: Index::ZERO,
            checkpoint_ticks: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    pub fn promoted(&self) -> bool {
        self.promoted
    }

    fn ms(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(self.cfg.tick_ms)
    }

    // ---- What apply reports ----------------------------------------------

    pub fn on_changes(&mut self, now: u64, changes: Vec<LeaseChange>) {
        let now_ms = self.ms(now);
        for change in changes {
            match change {
                LeaseChange::Granted { id, ttl_s } => self.insert(now_ms, id, ttl_s, 0),
                LeaseChange::Revoked { id } => {
                    self.leases.remove(&id);
                }
                LeaseChange::Checkpointed { id, remaining_s } => {
                    if let Some(lease) = self.leases.get_mut(&id) {
                        lease.remaining_s = remaining_s.max(0);
                    }
                }
                LeaseChange::Reset(records) => {
                    self.leases.clear();
                    for r in records {
                        self.insert(now_ms, r.id, r.ttl_s, r.remaining_s.max(0));
                    }
                }
            }
        }
        self.check_invariants();
    }

    fn insert(&mut self, now_ms: u64, id: LeaseId, ttl_s: i64, remaining_s: i64) {
        let mut lease = Lease {
            ttl_s: ttl_s.max(1),
            remaining_s,
            granted_ms: now_ms,
            expiry_ms: None,
            revoke_proposed_ms: None,
            reset: None,
        };
        if self.promoted {
            lease.expiry_ms = Some(self.promoted_expiry(now_ms, &lease));
        }
        self.leases.insert(id, lease);
    }

    pub fn on_applied(&mut self, index: Index) {
        self.applied = self.applied.max(index);
    }

    // ---- Roles ---------------------------------------------------------------

    /// Follows the core's role: demotes when not leading; once leading and
    /// ready (its no-op committed), promotes when apply has caught up.
    pub fn follow_role(&mut self, now: u64, raft: &Raft) {
        let leading = raft.role() == ferrite_raft::Role::Leader;
        let stale = self.promote_at.is_some_and(|(_, term)| term != raft.term());
        if !leading || stale {
            if self.promoted || self.promote_at.is_some() {
                self.demote();
            }
            if !leading {
                return;
            }
        }
        if self.promoted {
            return;
        }
        // Raft §6.4: only once its no-op committed does the leader's commit
        // index cover every entry an earlier leader committed.
        let ready = raft.log().term_at(raft.commit()) == Some(raft.term());
        if ready && self.promote_at.is_none() {
            self.promote_at = Some((raft.commit(), raft.term()));
        }
        if self.promote_at.is_some_and(|(at, _)| self.applied >= at) {
            self.promote(now);
        }
    }

    fn promoted_expiry(&self, now_ms: u64, lease: &Lease) -> u64 {
        if self.cfg.no_extend_on_promote {
            // Canary: as if granted when its grant was applied here.
            return lease.granted_ms + lease.ttl_s as u64 * 1000;
        }
        let remaining_s = if lease.remaining_s > 0 {
            lease.remaining_s
        } else {
            lease.ttl_s
        };
        now_ms + remaining_s as u64 * 1000
    }

    fn promote(&mut self, now: u64) {
        let now_ms = self.ms(now);
        let expiries: Vec<(LeaseId, u64)> = self
            .leases
            .iter()
            .map(|(id, l)| (*id, self.promoted_expiry(now_ms, l)))
            .collect();
        for (id, expiry) in expiries {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.expiry_ms = Some(expiry);
            }
        }
        self.promoted = true;
        self.checkpoint_ticks = 0;
        tracing::debug!(leases = self.leases.len(), "lessor promoted");
        self.check_invariants();
    }

    fn demote(&mut self) {
        self.pending_resets.clear();
        self.resetting.clear();
        for lease in self.leases.values_mut() {
            lease.expiry_ms = None;
            lease.revoke_proposed_ms = None;
            lease.reset = None;
        }
        self.promoted = false;
        self.promote_at = None;
        self.checkpoint_index = Index::ZERO;
        self.check_invariants();
    }

    // ---- Requests (leader, promoted) -------------------------------------

    /// Whether `id` is in the table and not past its expiry.
    pub fn is_live(&self, now: u64, id: LeaseId) -> bool {
        let now_ms = self.ms(now);
        self.leases
            .get(&id)
            .is_some_and(|l| l.expiry_ms.is_none_or(|e| e > now_ms))
    }

    pub fn is_known(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Renews a live lease: it expires a full TTL from now. A checkpoint
    /// with remaining 0 is proposed if one that predates the renew could be
    /// the last applied (see the module header); `reset_done` says when it
    /// was applied.
    pub fn renew(&mut self, now: u64, id: LeaseId, raft: &mut Raft) {
        assert!(self.promoted, "renew of {id} before promote");
        let now_ms = self.ms(now);
        let in_flight = self.checkpoint_index > self.applied;
        let Some(lease) = self.leases.get_mut(&id) else {
            return;
        };
        lease.expiry_ms = Some(now_ms + lease.ttl_s as u64 * 1000);
        lease.revoke_proposed_ms = None;
        let unused = lease.remaining_s == 0 && !in_flight;
        if unused || lease.reset.is_some() || self.cfg.proposals.is_none() {
            return;
        }
        self.propose_reset(now_ms, id, raft);
    }

    /// Queues a checkpoint with remaining 0 for `id`, proposed with the
    /// others of this step by `flush_resets`. Until then (and if it cannot
    /// be proposed) it is recorded at an index never applied, so that renews
    /// keep waiting and `settle_resets` tries again.
    fn propose_reset(&mut self, now_ms: u64, id: LeaseId, _raft: &mut Raft) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.reset = Some((Index(u64::MAX), now_ms));
            self.pending_resets.push(id);
            self.resetting.insert(id);
        }
    }

    /// Proposes the queued resets, up to `CHECKPOINT_LEASES_MAX` per
    /// command.
    pub fn flush_resets(&mut self, raft: &mut Raft) {
        if self.pending_resets.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_resets);
        let Some(p) = self.cfg.proposals else {
            return;
        };
        for chunk in pending.chunks(CHECKPOINT_LEASES_MAX) {
            let resets: Vec<(LeaseId, i64)> = chunk.iter().map(|id| (*id, 0)).collect();
            let Ok((index, _)) = raft.propose((p.checkpoint)(&resets)) else {
                continue;
            };
            for id in chunk {
                if let Some(lease) = self.leases.get_mut(id) {
                    if let Some((at, _)) = &mut lease.reset {
                        if *at == Index(u64::MAX) {
                            *at = index;
                        }
                    }
                }
            }
        }
    }

    /// Whether renews of `id` waiting for their reset checkpoint may be
    /// answered: it was applied (or the lease is gone).
    pub fn reset_done(&self, id: LeaseId) -> bool {
        self.leases.get(&id).is_none_or(|l| l.reset.is_none())
    }

    /// What a keepalive or time-to-live query answers for a live lease.
    pub fn ttl(&self, now: u64, id: LeaseId, renew: bool) -> Option<LeaseTtl> {
        let lease = self.leases.get(&id)?;
        let remaining_s = if renew {
            lease.ttl_s
        } else {
            let left_ms = lease.expiry_ms?.saturating_sub(self.ms(now));
            left_ms.div_ceil(1000) as i64
        };
        Some(LeaseTtl {
            id,
            granted_ttl_s: lease.ttl_s,
            remaining_s,
        })
    }

    // ---- Time (leader) ---------------------------------------------------

    /// The leader's duties this tick: settle resets that were applied,
    /// propose revokes for expired leases, periodic checkpoints.
    pub fn tick(&mut self, now: u64, raft: &mut Raft, counters: &mut ReplicaCounters) {
        if !self.promoted {
            return;
        }
        self.settle_resets(now, raft);
        self.propose_revokes(now, raft, counters);
        self.checkpoint_ticks += 1;
        if self.checkpoint_ticks >= self.cfg.checkpoint_ticks {
            self.checkpoint_ticks = 0;
            self.propose_checkpoints(now, raft, counters);
        }
        self.check_invariants();
    }

    /// A reset whose entry is applied is done if the table shows it; one
    /// that is applied but not shown lost its place to another leader's
    /// entry (we are no longer leading then, unless it was refused), or was
    /// never proposed: propose it again after the retry interval.
    pub fn settle_resets(&mut self, now: u64, raft: &mut Raft) {
        let now_ms = self.ms(now);
        let retry_ms = self.ms(self.cfg.revoke_retry_ticks);
        let mut again = Vec::new();
        let mut settled = Vec::new();
        for id in &self.resetting {
            let Some(lease) = self.leases.get_mut(id) else {
                settled.push(*id);
                continue;
            };
            let Some((index, at_ms)) = lease.reset else {
                settled.push(*id);
                continue;
            };
            if self.applied >= index && lease.remaining_s == 0 {
                lease.reset = None;
                settled.push(*id);
            } else if now_ms >= at_ms + retry_ms {
                lease.reset = None;
                settled.push(*id);
                again.push(*id);
            }
        }
        for id in settled {
            self.resetting.remove(&id);
        }
        for id in again {
            self.propose_reset(now_ms, id, raft);
        }
    }

    fn propose_revokes(&mut self, now: u64, raft: &mut Raft, counters: &mut ReplicaCounters) {
        let Some(proposals) = self.cfg.proposals else {
            return;
        };
        let now_ms = self.ms(now);
        let retry_ms = self.ms(self.cfg.revoke_retry_ticks);
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expiry_ms.is_some_and(|e| e <= now_ms))
            .filter(|(_, l)| {
                l.revoke_proposed_ms
                    .is_none_or(|at| now_ms >= at + retry_ms)
            })
            .map(|(id, _)| *id)
            .take(self.cfg.revokes_per_tick_max)
            .collect();
        for id in due {
            if raft.propose((proposals.revoke)(id)).is_err() {
                // Not leading any more, or the queue is full: next tick.
                break;
            }
            counters.lease_revokes_proposed += 1;
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.revoke_proposed_ms = Some(now_ms);
            }
        }
    }

    /// Checkpoints remaining TTLs that moved by a second or more since the
    /// last checkpoint, `CHECKPOINT_LEASES_MAX` to a command. Leases waiting
    /// for a reset are left to it.
    fn propose_checkpoints(&mut self, now: u64, raft: &mut Raft, counters: &mut ReplicaCounters) {
        let Some(proposals) = self.cfg.proposals else {
            return;
        };
        let now_ms = self.ms(now);
        let moved: Vec<(LeaseId, i64)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.reset.is_none())
            .filter_map(|(id, l)| {
                let expiry = l.expiry_ms?;
                if expiry <= now_ms {
                    return None;
                }
                let remaining_s = (expiry - now_ms).div_ceil(1000) as i64;
                let last_s = if l.remaining_s > 0 {
                    l.remaining_s
                } else {
                    l.ttl_s
                };
                ((last_s - remaining_s).abs() >= 1).then_some((*id, remaining_s))
            })
            .collect();
        for chunk in moved.chunks(CHECKPOINT_LEASES_MAX) {
            match raft.propose((proposals.checkpoint)(chunk)) {
                Ok((index, _)) => {
                    self.checkpoint_index = index;
                    counters.lease_checkpoints_proposed += 1;
                }
                Err(_) => break,
            }
        }
    }

    pub fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
    }

    pub fn assert_invariants(&self) {
        for (id, lease) in &self.leases {
            assert!(
                self.promoted || lease.expiry_ms.is_none(),
                "lease {id} has an expiry on a member that is not promoted"
            );
            assert!(
                self.promoted || lease.reset.is_none(),
                "lease {id} waits for a reset on a member that is not promoted"
            );
            assert!(
                lease.reset.is_none() || self.resetting.contains(id),
                "lease {id} waits for a reset settle_resets does not look at"
            );
            assert!(lease.ttl_s >= 1, "lease {id} ttl={}", lease.ttl_s);
            assert!(
                lease.remaining_s >= 0,
                "lease {id} remaining={}",
                lease.remaining_s
            );
        }
        assert!(
            !(self.promoted && self.promote_at.is_none()),
            "promoted without a promote point"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_round_trips_and_refuses_bad_lengths() {
        let ttl = LeaseTtl {
            id: -5,
            granted_ttl_s: 60,
            remaining_s: 42,
        };
        assert_eq!(LeaseTtl::decode(&ttl.encode()), Ok(ttl));
        let bytes = ttl.encode();
        for cut in 0..bytes.len() {
            assert_eq!(LeaseTtl::decode(&bytes[..cut]), Err(CodecError::Truncated));
        }
        let mut longer = bytes.to_vec();
        longer.push(1);
        assert_eq!(LeaseTtl::decode(&longer), Err(CodecError::Trailing(1)));
    }
}
