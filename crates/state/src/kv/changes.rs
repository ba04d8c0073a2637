//! The changes to a key range since a revision, read back from the MVCC
//! history: what a watcher that starts in the past, or fell behind the live
//! stream, is sent before it goes live. The events are exactly those the
//! live stream carried (same order, same previous values) for every
//! revision compaction has not reached.

use bytes::Bytes;

use crate::error::StateError;
use crate::event::KvEvent;
use crate::kv::key_range::KeySpan;
use crate::kv::KvStore;

/// About this many bytes of keys and values per answer (more only when a
/// single revision holds more): a watcher catching up on large values gets
/// them a few megabytes at a time.
pub const CHANGES_BYTES_MAX: usize = 4 << 20;
/// Revisions one answer looks at, at most. The store is kept by key, not by
/// revision, so a read costs a binary search per key of the range plus the
/// versions in the window: bounded, however far behind the reader is and
/// however little of the window its range changed.
pub const CHANGES_REVISIONS_MAX: i64 = 10_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangesRequest {
    pub key: Bytes,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Bytes,
    /// The first revision wanted; must not be below the compact revision.
    pub start_revision: i64,
    /// Stop after about this many events (or `CHANGES_BYTES_MAX` of keys
    /// and values), but never inside a revision: the events of one
    /// revision always come together.
    pub events_max: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangesResponse {
    /// In revision order, and within a revision in the order it made them.
    pub events: Vec<KvEvent>,
    /// The store's revision when read.
    pub revision: i64,
    pub compact_revision: i64,
    /// Where to continue: every change below it was returned.
    /// `revision + 1` when the reader has caught up.
    pub next_revision: i64,
}

impl KvStore {
    /// The changes to `req`'s range from its start revision on. For a
    /// start below the compact revision the history is gone: the answer
    /// has no events and `compact_revision > start_revision`, which a
    /// watch reports as etcd does (canceled, with the compact revision).
    pub fn changes(&self, req: &ChangesRequest) -> Result<ChangesResponse, StateError> {
        let start = req.start_revision.max(1);
        if start < self.compact_revision {
            return Ok(ChangesResponse {
                events: Vec::new(),
                revision: self.revision,
                compact_revision: self.compact_revision,
                next_revision: start,
            });
        }
        let window_end = start.saturating_add(CHANGES_REVISIONS_MAX);
        let mut found: Vec<(i64, u32, &Bytes, usize)> = Vec::new();
        let span = KeySpan::new(&req.key, &req.range_end);
        if let Some(b) = span.bounds() {
            for (key, history) in self.keys.range::<[u8], _>(b) {
                let versions = history.versions();
                let from = versions.partition_point(|v| v.mod_revision < start);
                let to = versions.partition_point(|v| v.mod_revision < window_end);
                for (i, v) in versions.iter().enumerate().take(to).skip(from) {
                    found.push((v.mod_revision, v.sub, key, i));
                }
            }
        }
        found.sort_unstable_by_key(|&(rev, sub, _, _)| (rev, sub));
        let max = usize::try_from(req.events_max.max(1)).unwrap_or(usize::MAX);
        // Where a limit falls: the count, or the bytes.
        let mut limit_at = found.len().min(max);
        let mut bytes = 0usize;
        for (i, &(_, _, key, v)) in found.iter().enumerate().take(limit_at) {
            let size = self
                .keys
                .get(key)
                .and_then(|h| h.versions().get(v))
                .and_then(|v| v.put.as_ref())
                .map_or(0, |p| p.value.len());
            bytes += key.len() + size;
            if bytes > CHANGES_BYTES_MAX {
                limit_at = i + 1;
                break;
            }
        }
        let mut next_revision = self.revision.saturating_add(1).min(window_end);
        if limit_at < found.len() {
            // Keep whole revisions: cut after the revision the limit falls in.
            let last = found[limit_at - 1].0;
            let end = found.partition_point(|f| f.0 <= last);
            if end < found.len() {
                found.truncate(end);
                next_revision = last.saturating_add(1);
            }
        }
        let events = found
            .into_iter()
            .filter_map(|(revision, _, key, i)| {
                let history = self.keys.get(key)?;
                Some(KvEvent {
                    revision,
                    key: key.clone(),
                    prev: history.before(key, i),
                    kv: history.value_of(key, i),
                })
            })
            .collect();
        Ok(ChangesResponse {
            events,
            revision: self.revision,
            compact_revision: self.compact_revision,
            next_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Event;
    use crate::kv::test_util::*;
    use crate::kv::{RequestOp, TxnRequest};

    fn live_events(s: &Store, from: i64) -> Vec<crate::event::KvEvent> {
        s.events
            .iter()
            .filter_map(|e| match e {
                Event::Kv(k) if k.revision >= from => Some(k.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn history_replays_exactly_what_the_live_stream_carried() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("b", "1");
        s.put("a", "2");
        s.delete("b", "");
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(put_req("z", "1")),
                RequestOp::Put(put_req("c", "1")),
                RequestOp::DeleteRange(delete_req("a", "")),
            ],
            failure: vec![],
        };
        s.txn(&txn).unwrap();
        for from in 1..=s.kv.revision() + 1 {
            let got = s.changes("\0", "\0", from);
            assert_eq!(got.events, live_events(&s, from), "from {from}");
            assert_eq!(got.next_revision, s.kv.revision() + 1);
        }
        let only_a = s.changes("a", "", 1);
        assert_eq!(only_a.events.len(), 3);
    }

    #[test]
    fn a_limit_never_splits_a_revision() {
        let mut s = Store::default();
        s.put("a", "1"); // 2
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(put_req("b", "1")),
                RequestOp::Put(put_req("c", "1")),
            ],
            failure: vec![],
        };
        s.txn(&txn).unwrap(); // 3
        s.put("d", "1"); // 4
        let mut req = crate::kv::ChangesRequest {
            key: b("\0"),
            range_end: b("\0"),
            start_revision: 1,
            events_max: 2,
        };
        let first = s.kv.changes(&req).unwrap();
        assert_eq!(first.events.len(), 3, "revision 3 comes whole");
        assert_eq!(first.next_revision, 4);
        req.start_revision = first.next_revision;
        let rest = s.kv.changes(&req).unwrap();
        assert_eq!(rest.events.len(), 1);
        assert_eq!(rest.next_revision, 5);
    }

    #[test]
    fn large_values_come_a_few_megabytes_at_a_time() {
        let mut s = Store::default();
        let big = "x".repeat(1 << 20);
        for _ in 0..10 {
            s.put("big", &big); // 2..=11
        }
        let first = s.changes("big", "", 1);
        assert_eq!(first.events.len(), 4, "4 MiB: four 1 MiB values");
        assert_eq!(first.next_revision, 6);
        let rest = s.changes("big", "", first.next_revision);
        assert_eq!(rest.events[0].revision, 6);
    }

    #[test]
    fn a_read_looks_at_a_bounded_window_of_revisions() {
        let mut s = Store::default();
        let n = super::CHANGES_REVISIONS_MAX + 10;
        for i in 0..n {
            s.put("other", &i.to_string());
        }
        s.put("mine", "1");
        // Nothing of "mine" in the first window: an empty answer that
        // moves the reader on, not a scan of all history.
        let first = s.changes("mine", "", 1);
        assert!(first.events.is_empty());
        assert_eq!(first.next_revision, 1 + super::CHANGES_REVISIONS_MAX);
        let second = s.changes("mine", "", first.next_revision);
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.next_revision, s.kv.revision() + 1);
    }

    #[test]
    fn a_start_below_the_compaction_says_so() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("a", "2");
        s.put("a", "3");
        s.compact(3).unwrap();
        let req = crate::kv::ChangesRequest {
            key: b("a"),
            range_end: b(""),
            start_revision: 2,
            events_max: 10,
        };
        let gone = s.kv.changes(&req).unwrap();
        assert!(gone.events.is_empty());
        assert_eq!((gone.compact_revision, gone.next_revision), (3, 2));
        assert_eq!(s.changes("a", "", 3).events.len(), 2);
    }
}
