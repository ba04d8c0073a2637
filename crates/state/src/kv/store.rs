//! The MVCC store: every key's history plus the global revision, and the
//! reads every request is built from.
//!
//! Memory: every put keeps its value in the key's history and every delete
//! adds a tombstone, so the store grows with each write, and a deleted key
//! keeps costing memory. Nothing is forgotten on its own: compaction
//! (`compact.rs`) is the only bound. It keeps, per key, the newest version at
//! or below the compaction revision plus everything later, so after a
//! compaction at the current revision the store holds exactly the live keys.
//! The node decides when to compact (etcd's auto-compaction is the model);
//! clients may compact too.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::StateError;
use crate::kv::key_range::KeySpan;
use crate::kv::{History, KeyValue};
use crate::leases::Leases;

/// The key-value state machine. Changed only through a `Write` batch or a
/// compaction, both applied in log order by `StateMachine`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    /// Invariant: no history is empty.
    pub(crate) keys: BTreeMap<Bytes, History>,
    /// The revision of the latest change. An empty store is at 1, as etcd.
    /// Invariant: 1 <= revision, and every version's mod_revision <= revision.
    pub(crate) revision: i64,
    /// Reads below this revision are refused. 0 until the first compaction.
    /// Invariant: 0 <= compact_revision <= revision.
    pub(crate) compact_revision: i64,
    /// The lease table: a put names a lease and a revoke deletes its keys,
    /// both in the write batch, so the table lives beside the keys.
    /// Invariant: a lease's key set is exactly the live keys naming it.
    pub(crate) leases: Leases,
    /// The accounted bytes of every version `keys` holds (`space.rs`):
    /// kept as writes add versions, recomputed when compaction drops some.
    /// Invariant: equals `accounted_bytes()`.
    pub(crate) bytes: u64,
}

impl Default for KvStore {
    fn default() -> KvStore {
        KvStore {
            keys: BTreeMap::new(),
            revision: 1,
            compact_revision: 0,
            leases: Leases::default(),
            bytes: 0,
        }
    }
}

impl KvStore {
    /// The revision of the latest change (1 for an empty store).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The revision of the latest compaction (0 if none).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// How many keys have a history (live or deleted but not yet compacted).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many versions (puts and tombstones) the store remembers: the
    /// figure compaction bounds.
    pub fn version_count(&self) -> usize {
        self.keys.values().map(|h| h.versions().len()).sum()
    }

    /// The accounted bytes of the key space (see `space.rs`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The accounted bytes of the key space, counted from scratch.
    pub(crate) fn accounted_bytes(&self) -> u64 {
        self.keys
            .iter()
            .flat_map(|(k, h)| {
                h.versions().iter().map(move |v| {
                    crate::space::version_bytes(
                        k.len(),
                        v.put.as_ref().map_or(0, |p| p.value.len()),
                    )
                })
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Returns unused capacity of the histories to the allocator; the
    /// number of version slots released.
    pub(crate) fn shrink(&mut self) -> usize {
        self.keys.values_mut().map(History::shrink).sum()
    }

    /// The revision a read asking for `revision` sees: the current one for
    /// 0 (or below, as etcd), else `revision` if it is still readable.
    pub(crate) fn check_read_revision(&self, revision: i64) -> Result<i64, StateError> {
        if revision <= 0 {
            return Ok(self.revision);
        }
        if revision > self.revision {
            return Err(StateError::FutureRevision);
        }
        if revision < self.compact_revision {
            return Err(StateError::Compacted);
        }
        Ok(revision)
    }

    /// The keys of `span` that exist at `revision`, in key order.
    pub(crate) fn live<'a>(
        &'a self,
        span: KeySpan<'a>,
        revision: i64,
    ) -> impl Iterator<Item = KeyValue> + 'a {
        span.bounds()
            .into_iter()
            .flat_map(move |b| self.keys.range::<[u8], _>(b))
            .filter_map(move |(k, h)| h.live_at(k, revision))
    }

    /// One key as it exists at `revision`.
    pub(crate) fn live_one(&self, key: &Bytes, revision: i64) -> Option<KeyValue> {
        self.keys.get(key).and_then(|h| h.live_at(key, revision))
    }

    pub(crate) fn history_mut(&mut self, key: &Bytes) -> &mut History {
        self.keys.entry(key.clone()).or_default()
    }
}
