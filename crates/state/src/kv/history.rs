//! The versions of one key, oldest first: what the store remembers so that
//! it can answer a read at any revision since the last compaction.

use bytes::Bytes;

use crate::kv::KeyValue;

/// A put's payload, kept per version (the key is the map key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) value: Bytes,
    /// The lease the key is attached to at this version; 0: none.
    pub(crate) lease: i64,
}

/// One change to a key: a put, or a deletion (a tombstone) when `put` is
/// `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) mod_revision: i64,
    /// The change's position among those of its revision (etcd's
    /// sub-revision): a transaction's changes are ordered by it, so a
    /// watcher replaying history sees them in the order a live one did.
    pub(crate) sub: u32,
    pub(crate) put: Option<Stored>,
}

/// Invariant: `mod_revision` never decreases along `versions`. Two versions
/// may share a revision: etcd lets one transaction put a key in a nested
/// transaction and delete it in a later one (its duplicate-key check misses
/// that order), and orders the two by sub-revision; here the later one
/// comes later in the vector, and reads see the last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    versions: Vec<Version>,
}

impl History {
    pub(crate) fn from_versions(versions: Vec<Version>) -> History {
        History { versions }
    }

    pub(crate) fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The newest version's payload, if it is a put (fault injection).
    pub(crate) fn newest_put_mut(&mut self) -> Option<&mut Stored> {
        self.versions.last_mut()?.put.as_mut()
    }

    /// Drops spare capacity; returns how many version slots went.
    pub(crate) fn shrink(&mut self) -> usize {
        let spare = self.versions.capacity() - self.versions.len();
        self.versions.shrink_to_fit();
        spare
    }

    /// The version before the one at `i`, as the key's value: the previous
    /// value a watch event carries. `None` if there was none (a create) or
    /// compaction dropped it.
    pub(crate) fn before(&self, key: &Bytes, i: usize) -> Option<KeyValue> {
        self.value_of(key, i.checked_sub(1)?)
    }

    /// The key's value as the version at `i` left it; `None` for a deletion.
    pub(crate) fn value_of(&self, key: &Bytes, i: usize) -> Option<KeyValue> {
        key_value(key, self.versions.get(i)?)
    }

    pub(crate) fn push(&mut self, version: Version) {
        debug_assert!(
            self.versions
                .last()
                .is_none_or(|v| v.mod_revision <= version.mod_revision),
            "history out of order: {:?} then {}",
            self.versions.last().map(|v| v.mod_revision),
            version.mod_revision
        );
        self.versions.push(version);
    }

    /// The newest version at or below `revision`. Most reads and every put
    /// ask for the current revision, so the newest version is tried first.
    fn at(&self, revision: i64) -> Option<&Version> {
        if let Some(last) = self.versions.last() {
            if last.mod_revision <= revision {
                return Some(last);
            }
        }
        let n = self
            .versions
            .partition_point(|v| v.mod_revision <= revision);
        n.checked_sub(1).and_then(|i| self.versions.get(i))
    }

    /// The key as a read at `revision` sees it; `None` if it did not exist.
    pub(crate) fn live_at(&self, key: &Bytes, revision: i64) -> Option<KeyValue> {
        key_value(key, self.at(revision)?)
    }

    /// Drops what no read at or after `revision` can see: everything older
    /// than the newest version at or below it, and that version too if it is
    /// a deletion. Returns whether nothing is left, so the key can go.
    pub(crate) fn compact(&mut self, revision: i64) -> bool {
        let n = self
            .versions
            .partition_point(|v| v.mod_revision <= revision);
        let keep_from = match n.checked_sub(1).and_then(|i| self.versions.get(i)) {
            None => 0,
            Some(Version { put: Some(_), .. }) => n - 1,
            Some(Version { put: None, .. }) => n,
        };
        self.versions.drain(..keep_from);
        self.versions.is_empty()
    }
}

/// `key` as `v` left it; `None` for a deletion.
fn key_value(key: &Bytes, v: &Version) -> Option<KeyValue> {
    let put = v.put.as_ref()?;
    Some(KeyValue {
        key: key.clone(),
        create_revision: put.create_revision,
        mod_revision: v.mod_revision,
        version: put.version,
        value: put.value.clone(),
        lease: put.lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, version: i64) -> Version {
        Version {
            mod_revision: rev,
            sub: 0,
            put: Some(Stored {
                create_revision: 2,
                version,
                value: Bytes::from(format!("v{rev}")),
                lease: 0,
            }),
        }
    }

    fn tomb(rev: i64) -> Version {
        Version {
            mod_revision: rev,
            sub: 0,
            put: None,
        }
    }

    #[test]
    fn reads_see_the_newest_version_at_or_below() {
        let h = History::from_versions(vec![put(2, 1), put(4, 2), tomb(6)]);
        let key = Bytes::from_static(b"k");
        assert_eq!(h.live_at(&key, 1), None);
        assert_eq!(h.live_at(&key, 3).map(|kv| kv.mod_revision), Some(2));
        assert_eq!(h.live_at(&key, 5).map(|kv| kv.version), Some(2));
        assert_eq!(h.live_at(&key, 6), None);
    }

    #[test]
    fn compaction_keeps_the_visible_version_and_drops_tombstones() {
        let mut h = History::from_versions(vec![put(2, 1), put(4, 2), tomb(6), put(8, 1)]);
        assert!(!h.compact(5));
        assert_eq!(h.versions(), &[put(4, 2), tomb(6), put(8, 1)]);
        assert!(!h.compact(7));
        assert_eq!(h.versions(), &[put(8, 1)]);
        let mut gone = History::from_versions(vec![put(2, 1), tomb(3)]);
        assert!(gone.compact(3));
    }
}
