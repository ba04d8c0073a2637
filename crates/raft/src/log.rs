//! The in-memory view of the replicated log: the entries after the latest
//! snapshot. The node keeps the durable copy; this one is what the core
//! reasons about (matching, conflicts, what to send and to apply).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::membership::Membership;
use crate::types::{Index, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Appended by every new leader, so that it can commit an entry of its
    /// own term at once (Raft §8) and with it everything before.
    Noop,
    /// Opaque client data for the state machine.
    Normal(Bytes),
    /// The whole configuration from this index on (see `membership.rs`).
    Membership(Membership),
}

impl Entry {
    /// Bytes this entry counts for against message and queue limits.
    pub fn size(&self) -> usize {
        match &self.payload {
            Payload::Noop => 0,
            Payload::Normal(data) => data.len(),
            Payload::Membership(m) => 8 * (m.voters.len() + m.learners.len()),
        }
    }
}

/// Entries `(snapshot_index, last_index]`, preceded by the snapshot's
/// `(index, term)`.
///
/// Invariant: `entries[i].index == snapshot_index + 1 + i`, and terms never
/// decrease along the log.
#[derive(Clone, Debug, Default)]
pub struct Log {
    snapshot_index: Index,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    /// How many times entries were removed from the end (truncation or
    /// restore), so that observers can tell appends from rewrites.
    rewrites: u64,
}

impl Log {
    pub fn new(snapshot_index: Index, snapshot_term: Term) -> Log {
        Log {
            snapshot_index,
            snapshot_term,
            entries: VecDeque::new(),
            rewrites: 0,
        }
    }

    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    pub fn first_index(&self) -> Index {
        self.snapshot_index.next()
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`: known for the snapshot's index and
    /// every entry after it, `None` when compacted away or beyond the end.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries
            .get((index.0 - self.snapshot_index.0 - 1) as usize)
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as
    /// up-to-date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `lo` up to `hi` inclusive, at most `count_max` of them and
    /// at most `bytes_max` payload bytes (but at least one entry).
    pub fn slice(&self, lo: Index, hi: Index, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = lo;
        while index <= hi && out.len() < count_max {
            let Some(entry) = self.get(index) else { break };
            bytes += entry.size();
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// All entries after `index`, for inspection and tests.
    pub fn entries_after(&self, index: Index) -> impl Iterator<Item = &Entry> {
        let skip = index.distance_from(self.snapshot_index) as usize;
        self.entries.iter().skip(skip)
    }

    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "append out of order: entry={} last={}",
            entry.index,
            self.last_index()
        );
        assert!(
            entry.term >= self.last_term(),
            "term goes backwards: entry={} last={}",
            entry.term,
            self.last_term()
        );
        self.entries.push_back(entry);
    }

    /// Drops every entry at or after `index`. The caller asserts that nothing
    /// committed is dropped.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.snapshot_index,
            "truncate into the snapshot: {index}"
        );
        let keep = (index.0 - self.snapshot_index.0 - 1) as usize;
        self.entries.truncate(keep);
        self.rewrites += 1;
    }

    /// Drops the entries up to and including `index`, which a snapshot now
    /// covers.
    pub fn compact_to(&mut self, index: Index) {
        assert!(index > self.snapshot_index, "compact backwards: {index}");
        assert!(index <= self.last_index(), "compact past the end: {index}");
        let term = self.term_at(index).unwrap_or(self.snapshot_term);
        let drop = (index.0 - self.snapshot_index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log by a snapshot's position.
    pub fn restore(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.rewrites += 1;
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// The last index at or below `index` whose term is at most `term`; used
    /// for the fast back-off of rejected appends. Gives the snapshot index when
    /// the search reaches the compacted prefix.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term_at(index) {
                Some(t) if t <= term => return (index, t),
                Some(_) if index > self.snapshot_index => index = index.prev(),
                _ => return (self.snapshot_index, self.snapshot_term),
            }
        }
    }

    /// The latest configuration entry at or below `index`, if any remains.
    pub fn membership_at(&self, index: Index) -> Option<(Index, &Membership)> {
        let skip = index.distance_from(self.snapshot_index) as usize;
        self.entries
            .iter()
            .take(skip)
            .rev()
            .find_map(|e| match &e.payload {
                Payload::Membership(m) => Some((e.index, m)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(terms: &[u64]) -> Log {
        let mut log = Log::new(Index(0), Term(0));
        for (i, t) in terms.iter().enumerate() {
            log.append(Entry {
                index: Index(i as u64 + 1),
                term: Term(*t),
                payload: Payload::Noop,
            });
        }
        log
    }

    #[test]
    fn terms_and_bounds() {
        let log = log_of(&[1, 1, 2, 4]);
        assert_eq!(log.last_index(), Index(4));
        assert_eq!(log.last_term(), Term(4));
        assert_eq!(log.term_at(Index(0)), Some(Term(0)));
        assert_eq!(log.term_at(Index(3)), Some(Term(2)));
        assert_eq!(log.term_at(Index(5)), None);
        assert!(log.is_up_to_date(Index(1), Term(5)));
        assert!(!log.is_up_to_date(Index(9), Term(3)));
        assert!(log.is_up_to_date(Index(4), Term(4)));
    }

    #[test]
    fn conflict_search_skips_terms() {
        let log = log_of(&[1, 1, 3, 3, 3]);
        assert_eq!(
            log.find_conflict_by_term(Index(5), Term(2)),
            (Index(2), Term(1))
        );
        assert_eq!(
            log.find_conflict_by_term(Index(9), Term(3)),
            (Index(5), Term(3))
        );
        assert_eq!(
            log.find_conflict_by_term(Index(5), Term(0)),
            (Index(0), Term(0))
        );
    }

    #[test]
    fn compact_truncate_restore() {
        let mut log = log_of(&[1, 1, 2, 2, 3]);
        log.compact_to(Index(2));
        assert_eq!(log.first_index(), Index(3));
        assert_eq!(log.term_at(Index(2)), Some(Term(1)));
        assert_eq!(log.term_at(Index(1)), None);
        log.truncate_from(Index(4));
        assert_eq!(log.last_index(), Index(3));
        assert_eq!(log.slice(Index(3), Index(9), 10, 10).len(), 1);
        log.restore(Index(10), Term(7));
        assert_eq!(log.last_index(), Index(10));
        assert_eq!(log.last_term(), Term(7));
    }

    #[test]
    #[should_panic(expected = "append out of order")]
    fn append_gap_is_a_bug() {
        let mut log = log_of(&[1]);
        log.append(Entry {
            index: Index(3),
            term: Term(1),
            payload: Payload::Noop,
        });
    }
}
