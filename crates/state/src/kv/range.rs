//! Range: read the keys of a span at a revision, with etcd's limit, count,
//! filters and sorting. The same code serves local reads (ReadIndex or
//! serializable), reads proposed through the log, and ranges inside
//! transactions.

use std::cmp::Ordering;

use bytes::Bytes;

use crate::error::StateError;
use crate::kv::key_range::KeySpan;
use crate::kv::{KeyValue, KvStore};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Bytes,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Bytes,
    /// At most this many kvs; 0 or negative: no limit.
    pub limit: i64,
    /// Read at this revision; 0 or negative: the current one.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// etcd's choice between a linearizable and a local read; the node acts
    /// on it, the state machine does not.
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    /// The filters: 0 means no bound.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the read ran (etcd's header revision), not
    /// the revision read at.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More kvs matched than `limit` let through.
    pub more: bool,
    /// How many keys the span holds at the revision read, before filters
    /// and limit, as etcd counts.
    pub count: i64,
}

impl RangeRequest {
    /// A request for one key at the current revision.
    pub fn key(key: impl Into<Bytes>) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        }
    }

    pub(crate) fn check_shape(&self) -> Result<(), StateError> {
        if self.key.is_empty() {
            return Err(StateError::EmptyKey);
        }
        Ok(())
    }

    fn has_filters(&self) -> bool {
        self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
    }

    fn keeps(&self, kv: &KeyValue) -> bool {
        let above = |v: i64, max: i64| max != 0 && v > max;
        let below = |v: i64, min: i64| min != 0 && v < min;
        !(above(kv.mod_revision, self.max_mod_revision)
            || below(kv.mod_revision, self.min_mod_revision)
            || above(kv.create_revision, self.max_create_revision)
            || below(kv.create_revision, self.min_create_revision))
    }

    /// etcd's normalisation: a non-key target without an order sorts
    /// ascending; ascending by key is the natural order and needs no sort.
    fn effective_order(&self) -> SortOrder {
        match (self.sort_target, self.sort_order) {
            (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
            (SortTarget::Key, order) => order,
            (_, SortOrder::None) => SortOrder::Ascend,
            (_, order) => order,
        }
    }

    fn limit(&self) -> Option<usize> {
        (self.limit > 0).then(|| usize::try_from(self.limit).unwrap_or(usize::MAX))
    }
}

impl KvStore {
    /// A read at the request's revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StateError> {
        req.check_shape()?;
        let revision = self.check_read_revision(req.revision)?;
        Ok(self.range_at(req, revision, self.revision))
    }

    /// A read at a `revision` already checked; `header` is the revision to
    /// report.
    pub(crate) fn range_at(&self, req: &RangeRequest, revision: i64, header: i64) -> RangeResponse {
        let span = KeySpan::new(&req.key, &req.range_end);
        let count = self.live(span, revision).count() as i64;
        let mut resp = RangeResponse {
            revision: header,
            kvs: Vec::new(),
            more: false,
            count,
        };
        if req.count_only {
            return resp;
        }
        let order = req.effective_order();
        let mut kvs: Vec<KeyValue> = match req.limit() {
            // The common case: the first `limit + 1` keys tell `more`.
            Some(limit) if order == SortOrder::None && !req.has_filters() => self
                .live(span, revision)
                .take(limit.saturating_add(1))
                .collect(),
            _ => self
                .live(span, revision)
                .filter(|kv| req.keeps(kv))
                .collect(),
        };
        sort(&mut kvs, req.sort_target, order);
        if let Some(limit) = req.limit() {
            resp.more = kvs.len() > limit;
            kvs.truncate(limit);
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        resp.kvs = kvs;
        resp
    }
}

/// Sorts stably, so that ties stay in key order whichever the direction:
/// etcd's unstable sort leaves ties unspecified, and replies must be
/// deterministic.
fn sort(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::test_util::*;

    fn abc() -> Store {
        let mut s = Store::default();
        s.put("a", "3"); // rev 2
        s.put("b", "1"); // rev 3
        s.put("c", "2"); // rev 4
        s.put("b", "4"); // rev 5: b has version 2
        s
    }

    #[test]
    fn range_end_forms() {
        let s = abc();
        assert_eq!(keys_of(&s.range("b", "").kvs), vec!["b"]);
        assert_eq!(keys_of(&s.range("b", "\0").kvs), vec!["b", "c"]);
        assert_eq!(keys_of(&s.range("a", "c").kvs), vec!["a", "b"]);
        assert_eq!(keys_of(&s.range("\0", "\0").kvs), vec!["a", "b", "c"]);
        assert!(s.range("c", "a").kvs.is_empty(), "inverted names nothing");
        assert!(s.range("zz", "").kvs.is_empty());
    }

    #[test]
    fn limit_more_and_count() {
        let s = abc();
        let mut req = range_req("\0", "\0");
        req.limit = 2;
        let resp = s.kv.range(&req).unwrap();
        assert_eq!(keys_of(&resp.kvs), vec!["a", "b"]);
        assert!(resp.more);
        assert_eq!(resp.count, 3);
        req.limit = 3;
        let resp = s.kv.range(&req).unwrap();
        assert!(!resp.more);
        assert_eq!(resp.revision, 5);
    }

    #[test]
    fn keys_only_and_count_only() {
        let s = abc();
        let mut req = range_req("\0", "\0");
        req.keys_only = true;
        let resp = s.kv.range(&req).unwrap();
        assert_eq!(keys_of(&resp.kvs), vec!["a", "b", "c"]);
        assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));
        assert_eq!(resp.kvs[1].version, 2, "metadata stays");
        let mut req = range_req("\0", "\0");
        req.count_only = true;
        req.limit = 1;
        let resp = s.kv.range(&req).unwrap();
        assert!(resp.kvs.is_empty());
        assert_eq!((resp.count, resp.more), (3, false));
    }

    #[test]
    fn sorting() {
        let s = abc();
        let sorted = |target, order| {
            let mut req = range_req("\0", "\0");
            req.sort_target = target;
            req.sort_order = order;
            keys_of(&s.kv.range(&req).unwrap().kvs)
        };
        assert_eq!(
            sorted(SortTarget::Key, SortOrder::Descend),
            vec!["c", "b", "a"]
        );
        assert_eq!(
            sorted(SortTarget::Value, SortOrder::Ascend),
            vec!["c", "a", "b"]
        );
        assert_eq!(
            sorted(SortTarget::Value, SortOrder::None),
            vec!["c", "a", "b"],
            "a non-key target without an order sorts ascending"
        );
        assert_eq!(
            sorted(SortTarget::Mod, SortOrder::Descend),
            vec!["b", "c", "a"]
        );
        assert_eq!(
            sorted(SortTarget::Create, SortOrder::Descend),
            vec!["c", "b", "a"]
        );
        assert_eq!(
            sorted(SortTarget::Version, SortOrder::Descend),
            vec!["b", "a", "c"],
            "ties stay in key order"
        );
    }

    #[test]
    fn sort_then_limit() {
        let s = abc();
        let mut req = range_req("\0", "\0");
        req.sort_target = SortTarget::Mod;
        req.sort_order = SortOrder::Descend;
        req.limit = 1;
        let resp = s.kv.range(&req).unwrap();
        assert_eq!(keys_of(&resp.kvs), vec!["b"]);
        assert!(resp.more);
    }

    #[test]
    fn revision_filters() {
        let s = abc();
        let filtered = |f: &dyn Fn(&mut RangeRequest)| {
            let mut req = range_req("\0", "\0");
            f(&mut req);
            let resp = s.kv.range(&req).unwrap();
            assert_eq!(resp.count, 3, "count is before filters");
            keys_of(&resp.kvs)
        };
        assert_eq!(filtered(&|r| r.min_mod_revision = 4), vec!["b", "c"]);
        assert_eq!(filtered(&|r| r.max_mod_revision = 4), vec!["a", "c"]);
        assert_eq!(filtered(&|r| r.min_create_revision = 3), vec!["b", "c"]);
        assert_eq!(filtered(&|r| r.max_create_revision = 3), vec!["a", "b"]);
    }

    #[test]
    fn reads_at_old_revisions() {
        let s = abc();
        let at = |rev| {
            let mut req = range_req("b", "");
            req.revision = rev;
            s.kv.range(&req)
        };
        assert!(at(2).unwrap().kvs.is_empty());
        assert_eq!(at(3).unwrap().kvs[0].value, b("1"));
        assert_eq!(at(4).unwrap().revision, 5, "header is the current revision");
        assert_eq!(at(5).unwrap().kvs[0].value, b("4"));
        assert_eq!(at(6), Err(StateError::FutureRevision));
        assert_eq!(at(0).unwrap().kvs[0].value, b("4"));
        assert_eq!(at(-1).unwrap().kvs[0].value, b("4"));
    }

    #[test]
    fn the_empty_key_is_refused() {
        let s = abc();
        assert_eq!(s.kv.range(&range_req("", "")), Err(StateError::EmptyKey));
    }
}
