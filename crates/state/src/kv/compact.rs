//! Compaction: forget the history no read at or after a revision can see.
//! This is what bounds the store's memory (see `store.rs`). It does not
//! change the revision, and it publishes no events: no key changed.

use crate::error::StateError;
use crate::kv::KvStore;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactRequest {
    pub revision: i64,
    /// etcd's "wait until the backend has freed the space"; in memory there
    /// is nothing to wait for.
    pub physical: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactResponse {
    /// The store's revision (unchanged by compaction).
    pub revision: i64,
}

impl KvStore {
    /// Keeps, for every key, the newest version at or below `revision` and
    /// everything later; a key whose newest version at or below it is a
    /// deletion, with nothing later, goes entirely. Reads below `revision`
    /// then fail with `Compacted`.
    pub(crate) fn compact(&mut self, req: &CompactRequest) -> Result<CompactResponse, StateError> {
        if req.revision <= self.compact_revision {
            return Err(StateError::Compacted);
        }
        if req.revision > self.revision {
            return Err(StateError::FutureRevision);
        }
        self.keys.retain(|_, h| !h.compact(req.revision));
        self.compact_revision = req.revision;
        self.bytes = self.accounted_bytes();
        Ok(CompactResponse {
            revision: self.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::test_util::*;
    use crate::StateError;

    #[test]
    fn reads_below_the_compaction_fail_and_at_or_above_work() {
        let mut s = Store::default();
        s.put("a", "1"); // 2
        s.put("a", "2"); // 3
        s.put("b", "1"); // 4
        s.delete("b", ""); // 5
        s.put("a", "3"); // 6
        s.compact(4).unwrap();
        assert_eq!(s.kv.compact_revision(), 4);
        assert_eq!(s.kv.revision(), 6, "compaction keeps the revision");
        assert_eq!(s.range_at("a", 3), Err(StateError::Compacted));
        let at4 = s.range_at("\0", 4).unwrap();
        assert_eq!(values_of(&at4.kvs), vec!["2", "1"]);
        assert_eq!(keys_of(&s.range_at("\0", 5).unwrap().kvs), vec!["a"]);
        assert_eq!(values_of(&s.range_at("a", 6).unwrap().kvs), vec!["3"]);
    }

    #[test]
    fn deleted_keys_go_once_compacted_past_their_deletion() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("b", "1");
        s.delete("a", "");
        assert_eq!(s.kv.key_count(), 2);
        s.compact(3).unwrap();
        assert_eq!(s.kv.key_count(), 2, "a is still visible at 3");
        s.compact(4).unwrap();
        assert_eq!(s.kv.key_count(), 1);
        assert_eq!(s.kv.version_count(), 1);
        s.put("a", "2");
        let a = s.get("a").unwrap();
        assert_eq!((a.create_revision, a.version), (5, 1));
    }

    #[test]
    fn compaction_revision_bounds() {
        let mut s = Store::default();
        s.put("a", "1");
        assert_eq!(s.compact(3), Err(StateError::FutureRevision));
        assert_eq!(s.compact(0), Err(StateError::Compacted));
        s.compact(2).unwrap();
        assert_eq!(s.compact(2), Err(StateError::Compacted));
        assert_eq!(s.compact(1), Err(StateError::Compacted));
    }
}
