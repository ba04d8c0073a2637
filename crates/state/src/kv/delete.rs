//! DeleteRange: delete every key of a span, as etcd's `DeleteRange`. A
//! delete that finds nothing changes nothing, not even the revision.

use bytes::Bytes;

use crate::error::StateError;
use crate::event::Event;
use crate::kv::key_range::KeySpan;
use crate::kv::write::Write;
use crate::kv::{KeyValue, KvStore};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Bytes,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Bytes,
    /// Return the deleted key-value pairs.
    pub prev_kv: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The store's revision after the delete.
    pub revision: i64,
    pub deleted: i64,
    /// The deleted pairs, in key order, if `prev_kv` was asked for.
    pub prev_kvs: Vec<KeyValue>,
}

impl DeleteRangeRequest {
    pub(crate) fn check_shape(&self) -> Result<(), StateError> {
        if self.key.is_empty() {
            return Err(StateError::EmptyKey);
        }
        Ok(())
    }

    pub(crate) fn span(&self) -> KeySpan<'_> {
        KeySpan::new(&self.key, &self.range_end)
    }
}

impl KvStore {
    pub(crate) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
        events: &mut Vec<Event>,
    ) -> Result<DeleteRangeResponse, StateError> {
        req.check_shape()?;
        let mut w = Write::new(self, events);
        let mut resp = delete_in(&mut w, req);
        resp.revision = w.finish();
        Ok(resp)
    }
}

/// Carries out a checked delete inside a batch.
pub(crate) fn delete_in(w: &mut Write<'_>, req: &DeleteRangeRequest) -> DeleteRangeResponse {
    let deleted = w.delete(req.span());
    DeleteRangeResponse {
        revision: w.view_revision(),
        deleted: deleted.len() as i64,
        prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::test_util::*;
    use crate::StateError;

    #[test]
    fn a_delete_bumps_the_revision_only_if_it_deleted_something() {
        let mut s = Store::default();
        s.put("a", "1");
        let none = s.delete("b", "");
        assert_eq!((none.deleted, none.revision), (0, 2));
        let one = s.delete("a", "");
        assert_eq!((one.deleted, one.revision), (1, 3));
        let again = s.delete("a", "");
        assert_eq!((again.deleted, again.revision), (0, 3));
    }

    #[test]
    fn a_range_delete_shares_one_revision_and_returns_prev_kvs() {
        let mut s = Store::default();
        for k in ["a", "b", "c", "d"] {
            s.put(k, k);
        }
        let mut req = delete_req("b", "d");
        req.prev_kv = true;
        let resp = s.delete_req(req);
        assert_eq!(resp.deleted, 2);
        assert_eq!(resp.revision, 6);
        assert_eq!(keys_of(&resp.prev_kvs), vec!["b", "c"]);
        assert_eq!(keys_of(&s.range_all()), vec!["a", "d"]);
        assert_eq!(s.delete("\0", "\0").deleted, 2, "\\0..\\0 deletes all");
        assert!(s.range_all().is_empty());
    }

    #[test]
    fn from_key_delete() {
        let mut s = Store::default();
        for k in ["a", "b", "c"] {
            s.put(k, k);
        }
        assert_eq!(s.delete("b", "\0").deleted, 2);
        assert_eq!(keys_of(&s.range_all()), vec!["a"]);
    }

    #[test]
    fn the_empty_key_is_refused() {
        let mut s = Store::default();
        assert_eq!(
            s.try_delete(delete_req("", "\0")),
            Err(StateError::EmptyKey)
        );
    }
}
