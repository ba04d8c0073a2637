//! etcd's `HashKV`: a hash of the key space's history, the same on every
//! member that has applied the same entries, for checking that replicas
//! agree (`etcdctl endpoint hashkv`, the corruption check).
//!
//! etcd hashes every revision in its key bucket at or below the asked
//! revision that compaction keeps (for each key the newest version at or
//! below the compaction revision, and everything after it). The histories
//! here hold exactly those versions, so the hash covers every version with
//! `mod_revision <= revision`, in key order and then revision order: a
//! deterministic order, the same on every member.

use bytes::Bytes;

use crate::crc32::Crc32;
use crate::error::StateError;
use crate::kv::KvStore;

impl KvStore {
    /// The hash at `revision` (0 or below: the current revision) and the
    /// revision hashed. As etcd: a revision at or below the compaction
    /// revision is `Compacted`, one above the current `FutureRevision`.
    pub(crate) fn hash_kv(&self, revision: i64) -> Result<(u32, i64), StateError> {
        if revision > 0 && revision <= self.compact_revision {
            return Err(StateError::Compacted);
        }
        if revision > self.revision {
            return Err(StateError::FutureRevision);
        }
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        let mut h = Crc32::new();
        h.update(b"key");
        for (key, history) in &self.keys {
            for v in history.versions() {
                if v.mod_revision > at {
                    break;
                }
                h.update(&(key.len() as u64).to_le_bytes());
                h.update(key);
                h.update(&v.mod_revision.to_le_bytes());
                h.update(&v.sub.to_le_bytes());
                match &v.put {
                    None => h.update(&[0]),
                    Some(p) => {
                        h.update(&[1]);
                        h.update(&p.create_revision.to_le_bytes());
                        h.update(&p.version.to_le_bytes());
                        h.update(&p.lease.to_le_bytes());
                        h.update(&(p.value.len() as u64).to_le_bytes());
                        h.update(&p.value);
                    }
                }
            }
        }
        Ok((h.finish(), at))
    }

    /// Test-only divergence: flips the newest value of `key` in place (no
    /// new revision), as a damaged disk would. Returns whether it existed.
    pub(crate) fn corrupt_value(&mut self, key: &[u8]) -> bool {
        let Some(history) = self.keys.get_mut(key) else {
            return false;
        };
        let Some(put) = history.newest_put_mut() else {
            return false;
        };
        let mut value = put.value.to_vec();
        value.push(b'!');
        put.value = Bytes::from(value);
        self.bytes = self.bytes.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::test_util::*;
    use crate::StateError;

    #[test]
    fn hash_kv_depends_on_history_up_to_the_revision() {
        let mut a = Store::default();
        let mut b = Store::default();
        for s in [&mut a, &mut b] {
            s.put("x", "1"); // 2
            s.put("y", "1"); // 3
        }
        a.put("x", "2"); // 4
        b.put("x", "3"); // 4
        assert_eq!(a.kv.hash_kv(3), b.kv.hash_kv(3));
        assert_ne!(a.kv.hash_kv(4), b.kv.hash_kv(4));
        assert_eq!(a.kv.hash_kv(0).map(|h| h.1), Ok(4));
        assert_eq!(a.kv.hash_kv(5), Err(StateError::FutureRevision));
        a.compact(3).unwrap();
        assert_eq!(a.kv.hash_kv(3), Err(StateError::Compacted));
        assert!(a.kv.hash_kv(4).is_ok());
    }

    #[test]
    fn a_corrupted_value_changes_the_hash() {
        let mut s = Store::default();
        s.put("x", "1");
        let before = s.kv.hash_kv(0);
        assert!(s.kv.corrupt_value(b"x"));
        assert_ne!(s.kv.hash_kv(0), before);
        assert!(!s.kv.corrupt_value(b"nope"));
    }
}
