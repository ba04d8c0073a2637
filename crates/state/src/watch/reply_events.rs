//! A reply's events, shared instead of copied. One live entry usually goes
//! to many watches of a stream in the same shape (every event of the
//! entry, with or without the previous values), so the stream makes that
//! list once per entry, as an `EventRun`, and each reply holds a reference
//! to it. The front end can keep its wire encoding of a run in the run, so
//! an event sent to a thousand watchers is encoded once per stream, not a
//! thousand times.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::event::KvEvent;

/// Events that travel together, shared by every reply that carries them.
#[derive(Debug, Default)]
pub struct EventRun {
    events: Vec<KvEvent>,
    /// The front end's encoding of `events`, made by the first reply that
    /// goes out with them. Opaque here: only the encoder reads it.
    wire: OnceLock<Bytes>,
}

impl EventRun {
    pub fn new(events: Vec<KvEvent>) -> EventRun {
        EventRun {
            events,
            wire: OnceLock::new(),
        }
    }

    pub fn events(&self) -> &[KvEvent] {
        &self.events
    }

    /// The events' encoding, made by `encode` the first time it is asked
    /// for. Every caller must pass the same encoding: the first one wins.
    pub fn wire(&self, encode: impl FnOnce(&[KvEvent]) -> Bytes) -> &Bytes {
        self.wire.get_or_init(|| encode(&self.events))
    }
}

/// The events of one reply: runs, in order. Most replies carry one run,
/// which is kept inline; merged replies carry several.
#[derive(Clone, Debug, Default)]
pub struct ReplyEvents {
    first: Option<Arc<EventRun>>,
    rest: Vec<Arc<EventRun>>,
    /// Invariant: the number of events over all runs.
    len: usize,
}

impl ReplyEvents {
    /// The events of one run.
    pub fn run(run: Arc<EventRun>) -> ReplyEvents {
        let mut r = ReplyEvents::default();
        r.push_run(run);
        r
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The runs, in order (none empty).
    pub fn runs(&self) -> impl Iterator<Item = &Arc<EventRun>> {
        self.first.iter().chain(self.rest.iter())
    }

    pub fn iter(&self) -> impl Iterator<Item = &KvEvent> {
        self.runs().flat_map(|r| r.events.iter())
    }

    pub fn first(&self) -> Option<&KvEvent> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<&KvEvent> {
        self.runs().last().and_then(|r| r.events.last())
    }

    pub fn get(&self, i: usize) -> Option<&KvEvent> {
        self.iter().nth(i)
    }

    /// Appends a run after the events already here.
    pub fn push_run(&mut self, run: Arc<EventRun>) {
        if run.events.is_empty() {
            return;
        }
        self.len += run.events.len();
        if self.first.is_none() {
            self.first = Some(run);
        } else {
            self.rest.push(run);
        }
    }

    /// Appends `other`'s events after the events already here.
    pub fn append(&mut self, other: ReplyEvents) {
        let ReplyEvents { first, rest, .. } = other;
        for run in first.into_iter().chain(rest) {
            self.push_run(run);
        }
    }

    /// The events as an owned list (copies of shared `Bytes`: reference
    /// counts, not data).
    pub fn to_vec(&self) -> Vec<KvEvent> {
        self.iter().cloned().collect()
    }
}

impl From<Vec<KvEvent>> for ReplyEvents {
    fn from(events: Vec<KvEvent>) -> ReplyEvents {
        ReplyEvents::run(Arc::new(EventRun::new(events)))
    }
}

impl FromIterator<KvEvent> for ReplyEvents {
    fn from_iter<I: IntoIterator<Item = KvEvent>>(iter: I) -> ReplyEvents {
        ReplyEvents::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a ReplyEvents {
    type Item = &'a KvEvent;
    type IntoIter = Box<dyn Iterator<Item = &'a KvEvent> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<usize> for ReplyEvents {
    type Output = KvEvent;

    fn index(&self, i: usize) -> &KvEvent {
        match self.get(i) {
            Some(e) => e,
            None => panic!("event {i} of a reply with {} events", self.len),
        }
    }
}

/// Equal when the events are, however they are split into runs.
impl PartialEq for ReplyEvents {
    fn eq(&self, other: &ReplyEvents) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for ReplyEvents {}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(revision: i64) -> KvEvent {
        KvEvent {
            revision,
            key: Bytes::from_static(b"k"),
            prev: None,
            kv: None,
        }
    }

    fn revs(r: &ReplyEvents) -> Vec<i64> {
        r.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn runs_append_in_order_and_compare_by_events() {
        let shared = Arc::new(EventRun::new(vec![e(2), e(2)]));
        let mut a = ReplyEvents::from(vec![e(1)]);
        a.append(ReplyEvents::run(shared.clone()));
        a.push_run(Arc::new(EventRun::new(Vec::new())));
        a.append(ReplyEvents::from(vec![e(3)]));
        assert_eq!(revs(&a), vec![1, 2, 2, 3]);
        assert_eq!((a.len(), a.runs().count()), (4, 3));
        assert_eq!((a.first().map(|e| e.revision), a[3].revision), (Some(1), 3));
        assert_eq!(a.last().map(|e| e.revision), Some(3));
        assert_eq!(a, ReplyEvents::from(vec![e(1), e(2), e(2), e(3)]));
        assert_ne!(a, ReplyEvents::from(vec![e(1), e(2), e(3)]));
        assert!(ReplyEvents::default().is_empty());
        assert_eq!(Arc::strong_count(&shared), 2);
    }

    #[test]
    fn a_run_is_encoded_once() {
        let run = EventRun::new(vec![e(1)]);
        let mut calls = 0;
        for _ in 0..3 {
            let wire = run.wire(|events| {
                calls += 1;
                Bytes::from(vec![events.len() as u8])
            });
            assert_eq!(&wire[..], &[1]);
        }
        assert_eq!(calls, 1);
    }
}
