//! The watch checker.
//!
//! The applied KV history is the sequence of (revision, events) the cluster
//! committed. It is recorded from every member's applied entries (the same
//! `Published` entries its event stream carries): the first member to apply
//! a revision defines it, and every other member that applies it must have
//! made exactly the same events (`observe`), which is itself a check that
//! members agree.
//!
//! Every watcher's received stream is a list of segments, one per watch it
//! created (on a member; again on another after a crash, or after a cancel
//! for compaction). Rule for a segment that starts at revision `s` and whose
//! last event has revision `r`: its events are exactly the history's events
//! with revision in `s..=r` that fall in the watched range, in order (by
//! revision, and within a revision in the order the entry made them), with
//! the previous value present iff the watch asked for `prev_kv`: no gap, no
//! duplicate, nothing reordered. The events of one revision come in one
//! response.
//!
//! Compaction, as in etcd: a history read from exactly the compact revision
//! `c` finds no deletion made at `c` (a key whose newest version at or
//! below `c` is a deletion goes entirely), and a previous value below the
//! compaction is gone ("if the previous KV is already compacted, nothing
//! will be returned"). So a deletion at revision `c` may be missing if one
//! of the segment's reads started at `c` while the store was compacted to
//! `c`, and `prev` may be absent if its version is below the highest
//! compact revision the segment's reads saw. Nothing else is excused. Segments chain: a segment starts where the previous one's
//! events stopped (`last + 1`, or its start if it got none), unless the
//! previous one ended canceled for compaction, in which case it starts at
//! the compact revision (which must be past where it stopped), or ended
//! canceled because the watcher's user lost read permission, in which case
//! it starts where the previous one stopped. A segment may end canceled
//! only with a stated reason. That no event reaches a watch after its
//! permission was revoked is checked as events arrive (`auth.rs`).

use std::collections::BTreeMap;

use bytes::Bytes;
use ferrite_raft::NodeId;
use ferrite_state::watch::in_range;
use ferrite_state::{Event, KvEvent, Published};

use super::Violation;

/// The committed KV history, by revision.
#[derive(Default)]
pub struct KvHistory {
    revisions: BTreeMap<i64, Vec<KvEvent>>,
}

impl KvHistory {
    /// The newest revision any member applied (1: none, as an empty store).
    pub fn newest(&self) -> i64 {
        self.revisions.keys().next_back().copied().unwrap_or(1)
    }

    /// What `member` applied in one entry.
    pub fn observe(&mut self, member: NodeId, p: &Published) -> Result<(), Violation> {
        let events: Vec<KvEvent> = p
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Kv(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        if let Some(e) = events.iter().find(|e| e.revision != p.revision) {
            return Err(Violation::new(
                "watch history",
                format!(
                    "{member}: entry {} at revision {} made an event at revision {}",
                    p.index, p.revision, e.revision
                ),
            ));
        }
        match self.revisions.get(&p.revision) {
            Some(known) if *known != events => Err(Violation::new(
                "watch history",
                format!(
                    "{member}: revision {} (entry {}) made {events:?}; another member made {known:?}",
                    p.revision, p.index
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.revisions.insert(p.revision, events);
                Ok(())
            }
        }
    }

    /// The history's events in `from..=to` that a watch of
    /// `[key, range_end)` is sent, shaped for `prev_kv`.
    pub fn expected(
        &self,
        key: &Bytes,
        range_end: &Bytes,
        prev_kv: bool,
        from: i64,
        to: i64,
    ) -> Vec<KvEvent> {
        if from > to {
            return Vec::new();
        }
        self.revisions
            .range(from..=to)
            .flat_map(|(_, events)| events.iter())
            .filter(|e| in_range(&e.key, key, range_end))
            .map(|e| {
                let mut e = e.clone();
                if !prev_kv {
                    e.prev = None;
                }
                e
            })
            .collect()
    }
}

/// What one watch (one segment of a watcher's life) received.
#[derive(Clone, Debug)]
pub struct Segment {
    pub member: NodeId,
    pub start: i64,
    pub events: Vec<KvEvent>,
    /// The last revision of the previous response with events.
    pub last_response_revision: i64,
    pub canceled: Option<(String, i64)>,
    /// Start revisions of history reads that started exactly at the
    /// store's compact revision (their deletions at it are gone).
    pub reads_at_compaction: Vec<i64>,
    /// The highest compact revision a history read of this segment saw.
    pub compact_seen: i64,
}

impl Segment {
    pub fn new(member: NodeId, start: i64) -> Segment {
        Segment {
            member,
            start,
            events: Vec::new(),
            last_response_revision: 0,
            canceled: None,
            reads_at_compaction: Vec::new(),
            compact_seen: 0,
        }
    }

    /// Where the next segment must start.
    pub fn next(&self) -> i64 {
        self.events.last().map_or(self.start, |e| e.revision + 1)
    }

    /// One response's events: a revision never continues one the previous
    /// response had.
    pub fn receive(&mut self, events: Vec<KvEvent>) -> Result<(), String> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        if first.revision <= self.last_response_revision {
            return Err(format!(
                "a response starts at revision {} after one that reached {}",
                first.revision, self.last_response_revision
            ));
        }
        self.last_response_revision = last.revision;
        self.events.extend(events);
        Ok(())
    }
}

/// The rule of the module header, for one watcher.
pub fn check_watcher(
    history: &KvHistory,
    watcher: usize,
    key: &Bytes,
    range_end: &Bytes,
    prev_kv: bool,
    segments: &[Segment],
) -> Result<(), Violation> {
    let fail = |detail: String| {
        Err(Violation::new(
            "watch",
            format!(
                "watcher {watcher} [{:?}, {:?}) prev_kv={prev_kv}: {detail}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(range_end)
            ),
        ))
    };
    let mut prev: Option<&Segment> = None;
    for (i, s) in segments.iter().enumerate() {
        if let Some(p) = prev {
            let want = match &p.canceled {
                Some((_, compact)) if *compact > 0 => {
                    if *compact <= p.next() {
                        return fail(format!(
                            "segment {} canceled for compaction at {compact}, but it needed only {}",
                            i - 1,
                            p.next()
                        ));
                    }
                    *compact
                }
                // Access taken away: the watcher resumes from where it
                // stopped once access is back (`auth.rs`).
                Some((reason, _)) if crate::auth::resumable_reason(reason) => p.next(),
                Some((reason, _)) => {
                    return fail(format!("segment {} canceled ({reason}) and resumed", i - 1))
                }
                None => p.next(),
            };
            if s.start != want {
                return fail(format!(
                    "segment {i} starts at {}, the last one stopped before {want}",
                    s.start
                ));
            }
        }
        if let Some((reason, _)) = &s.canceled {
            if reason.is_empty() {
                return fail(format!("segment {i} canceled without a reason"));
            }
        }
        if let Some(last) = s.events.last() {
            let want = history.expected(key, range_end, prev_kv, s.start, last.revision);
            if let Err((at, at_want)) = matches(s, &want) {
                return fail(format!(
                    "segment {i} on {} from revision {}: received {} events, history has {} up to revision {}; first difference at received #{at}: {:?}, history #{at_want}: {:?}",
                    s.member,
                    s.start,
                    s.events.len(),
                    want.len(),
                    last.revision,
                    s.events.get(at),
                    want.get(at_want),
                ));
            }
        }
        prev = Some(s);
    }
    Ok(())
}

/// Whether `s.events` is `want` with only what compaction excuses (see the
/// module header) left out; else the positions of the first difference.
fn matches(s: &Segment, want: &[KvEvent]) -> Result<(), (usize, usize)> {
    let (mut i, mut j) = (0, 0);
    while j < want.len() {
        let w = &want[j];
        match s.events.get(i) {
            Some(got) if got == w => {}
            Some(got)
                if got.prev.is_none()
                    && w.prev
                        .as_ref()
                        .is_some_and(|p| p.mod_revision < s.compact_seen)
                    && got.revision == w.revision
                    && got.key == w.key
                    && got.kv == w.kv => {}
            _ if w.kv.is_none() && s.reads_at_compaction.contains(&w.revision) => {
                j += 1;
                continue;
            }
            _ => return Err((i, j)),
        }
        i += 1;
        j += 1;
    }
    if i < s.events.len() {
        return Err((i, j));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_state::KeyValue;

    fn kv(key: &str, rev: i64, value: &str) -> KeyValue {
        KeyValue {
            key: Bytes::from(key.to_string()),
            create_revision: 2,
            mod_revision: rev,
            version: rev - 1,
            value: Bytes::from(value.to_string()),
            lease: 0,
        }
    }

    fn put(key: &str, rev: i64, prev: Option<KeyValue>) -> KvEvent {
        KvEvent {
            revision: rev,
            key: Bytes::from(key.to_string()),
            prev,
            kv: Some(kv(key, rev, &format!("v{rev}"))),
        }
    }

    fn history(events: &[KvEvent]) -> KvHistory {
        let mut h = KvHistory::default();
        for (i, e) in events.iter().enumerate() {
            let p = Published {
                index: i as u64 + 1,
                revision: e.revision,
                events: vec![Event::Kv(e.clone())],
                restored: false,
            };
            h.observe(NodeId(1), &p).unwrap();
        }
        h
    }

    #[test]
    fn a_gap_a_duplicate_and_a_missing_prev_are_caught() {
        let a2 = put("a", 2, None);
        let a3 = put("a", 3, Some(kv("a", 2, "v2")));
        let a4 = put("a", 4, Some(kv("a", 3, "v3")));
        let h = history(&[a2.clone(), a3.clone(), a4.clone()]);
        let (key, end) = (Bytes::from_static(b"a"), Bytes::new());
        let seg = |events: Vec<KvEvent>| {
            let mut s = Segment::new(NodeId(1), 2);
            s.events = events;
            s
        };
        let ok = seg(vec![a2.clone(), a3.clone(), a4.clone()]);
        assert!(check_watcher(&h, 0, &key, &end, true, &[ok]).is_ok());
        let gap = seg(vec![a2.clone(), a4.clone()]);
        assert!(check_watcher(&h, 0, &key, &end, true, &[gap]).is_err());
        let dup = seg(vec![a2.clone(), a3.clone(), a3.clone(), a4.clone()]);
        assert!(check_watcher(&h, 0, &key, &end, true, &[dup]).is_err());
        let mut no_prev = a3.clone();
        no_prev.prev = None;
        let bare = seg(vec![a2.clone(), no_prev.clone(), a4.clone()]);
        assert!(check_watcher(&h, 0, &key, &end, true, std::slice::from_ref(&bare)).is_err());
        // Unless the previous value was below a compaction a read saw.
        let mut compacted = bare;
        compacted.compact_seen = 3;
        assert!(check_watcher(&h, 0, &key, &end, true, &[compacted]).is_ok());
    }

    #[test]
    fn members_that_disagree_on_a_revision_are_caught() {
        let mut h = history(&[put("a", 2, None)]);
        let other = Published {
            index: 1,
            revision: 2,
            events: vec![Event::Kv(put("b", 2, None))],
            restored: false,
        };
        assert_eq!(
            h.observe(NodeId(2), &other).unwrap_err().kind,
            "watch history"
        );
    }

    #[test]
    fn segments_chain_and_a_compaction_cancel_resumes_at_its_revision() {
        let a2 = put("a", 2, None);
        let a3 = put("a", 3, Some(kv("a", 2, "v2")));
        let h = history(&[a2.clone(), a3.clone()]);
        let (key, end) = (Bytes::from_static(b"a"), Bytes::new());
        let mut first = Segment::new(NodeId(1), 2);
        first.events = vec![a2];
        let mut second = Segment::new(NodeId(2), 3);
        second.events = vec![a3.clone()];
        assert!(check_watcher(&h, 0, &key, &end, true, &[first.clone(), second]).is_ok());
        // Resuming past where the last one stopped skips revision 3.
        let late = Segment::new(NodeId(2), 4);
        assert!(check_watcher(&h, 0, &key, &end, true, &[first.clone(), late.clone()]).is_err());
        // A cancel for compaction at 4 excuses it.
        first.canceled = Some(("compacted".to_string(), 4));
        assert!(check_watcher(&h, 0, &key, &end, true, &[first, late]).is_ok());
    }
}
