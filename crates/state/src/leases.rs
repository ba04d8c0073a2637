//! The lease table, etcd's lessor without its clock: which leases exist,
//! their granted TTL, the remaining TTL last checkpointed through the log,
//! and which keys each one holds.
//!
//! Time is not here. Whether a lease has expired is decided by the leader's
//! monotonic clock (`ferrite-node`'s lessor), which then proposes a revoke;
//! every member applies that revoke at the same index and deletes the same
//! keys at the same revision. What the table keeps is what a new leader needs
//! to restart the clock: the TTL and, when a leader checkpointed it, the
//! remaining TTL (so that repeated failovers cannot keep a lease alive
//! forever).
//!
//! The key sets are derived data: a key belongs to the lease named by its
//! live version (see `KeyValue::lease`), and `KvStore`'s write batch keeps
//! the sets in step with every put and delete. Snapshots store only the
//! table; the sets are rebuilt from the keys on restore.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// A lease id. 0 is "no lease", as in etcd.
pub type LeaseId = i64;

/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Seconds, as granted (already raised to the minimum TTL).
    pub ttl: i64,
    /// The remaining TTL, in seconds, at the last checkpoint; 0: none since
    /// the grant or the last renewal, so a new leader uses `ttl`.
    pub remaining: i64,
    /// The keys attached. Invariant: exactly the live keys whose value
    /// names this lease.
    pub(crate) keys: BTreeSet<Bytes>,
}

/// One lease as the lessor and clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub ttl: i64,
    pub remaining: i64,
    /// The attached keys in key order, when asked for.
    pub keys: Vec<Bytes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    by_id: BTreeMap<LeaseId, Lease>,
}

impl Leases {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &Lease)> {
        self.by_id.iter().map(|(id, l)| (*id, l))
    }

    pub fn info(&self, id: LeaseId, with_keys: bool) -> Option<LeaseInfo> {
        let l = self.by_id.get(&id)?;
        Some(LeaseInfo {
            id,
            ttl: l.ttl,
            remaining: l.remaining,
            keys: if with_keys {
                l.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Adds a lease; false if the id is taken.
    pub(crate) fn grant(&mut self, id: LeaseId, ttl: i64) -> bool {
        if self.by_id.contains_key(&id) {
            return false;
        }
        let lease = Lease {
            ttl,
            remaining: 0,
            keys: BTreeSet::new(),
        };
        self.by_id.insert(id, lease);
        true
    }

    /// Removes a lease; its keys must already be deleted.
    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.by_id.remove(&id)?;
        debug_assert!(lease.keys.is_empty(), "lease {id} removed with keys");
        Some(lease)
    }

    /// Records a checkpoint; false if there is no such lease.
    pub(crate) fn checkpoint(&mut self, id: LeaseId, remaining: i64) -> bool {
        match self.by_id.get_mut(&id) {
            Some(l) => {
                l.remaining = remaining.clamp(0, l.ttl);
                true
            }
            None => false,
        }
    }

    /// `key` now names `new` (0: none) instead of `old`.
    pub(crate) fn move_key(&mut self, key: &Bytes, old: LeaseId, new: LeaseId) {
        if old == new {
            return;
        }
        if let Some(l) = self.by_id.get_mut(&old) {
            l.keys.remove(key);
        }
        if let Some(l) = self.by_id.get_mut(&new) {
            l.keys.insert(key.clone());
        }
    }

    /// The keys of a lease, in key order.
    pub(crate) fn keys_of(&self, id: LeaseId) -> Vec<Bytes> {
        self.by_id
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A table restored from a snapshot, keys not yet attached.
    pub(crate) fn from_records(records: Vec<(LeaseId, i64, i64)>) -> Leases {
        let by_id = records
            .into_iter()
            .map(|(id, ttl, remaining)| {
                let lease = Lease {
                    ttl,
                    remaining,
                    keys: BTreeSet::new(),
                };
                (id, lease)
            })
            .collect();
        Leases { by_id }
    }
}
