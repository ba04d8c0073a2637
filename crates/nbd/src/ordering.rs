//! Which in-flight requests of one connection a new request must wait for.
//!
//! NBD lets a server run requests concurrently and reply out of order, but a
//! client that sends a write and then a read of the same bytes expects the
//! read to see the write, and a FLUSH covers every write sent before it. So a
//! request waits for every earlier in-flight request it conflicts with, and
//! for nothing else:
//!
//! - two byte ranges conflict if they overlap and at least one of the two
//!   requests modifies data (write, trim, write-zeroes); reads never wait for
//!   reads;
//! - a flush conflicts with every earlier modification, whatever its range;
//!   nothing waits for a flush, since a flush changes no data.
//!
//! Every conflicting earlier request is waited for directly, so correctness
//! does not rest on chains of waits. Waits always point to earlier requests,
//! so they cannot form a cycle. An empty range conflicts with nothing.
//!
//! The tracker is pure: it stores an opaque waiter per request (the
//! transmission loop uses a channel that closes on completion) and scans the
//! in-flight list, which the connection bounds at `REQUESTS_INFLIGHT_MAX`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Modify,
    Flush,
}

#[derive(Debug)]
struct Entry<W> {
    seq: u64,
    access: Access,
    start: u64,
    /// Exclusive. Invariant: start <= end.
    end: u64,
    waiter: W,
}

/// The in-flight requests of one connection, in admission order by `seq`.
#[derive(Debug)]
pub(crate) struct Tracker<W> {
    seq_next: u64,
    inflight: Vec<Entry<W>>,
}

impl<W: Clone> Tracker<W> {
    pub(crate) fn new() -> Tracker<W> {
        Tracker {
            seq_next: 0,
            inflight: Vec::new(),
        }
    }

    /// Admits a request on [start, start+len) and returns its sequence number
    /// (to `retire` it with) and the waiters of the earlier requests it must
    /// wait for. The caller has checked that the range does not overflow.
    pub(crate) fn admit(
        &mut self,
        access: Access,
        start: u64,
        len: u64,
        waiter: W,
    ) -> (u64, Vec<W>) {
        let end = start.saturating_add(len);
        let waits = self
            .inflight
            .iter()
            .filter(|earlier| conflicts(earlier, access, start, end))
            .map(|earlier| earlier.waiter.clone())
            .collect();
        let seq = self.seq_next;
        self.seq_next += 1;
        self.inflight.push(Entry {
            seq,
            access,
            start,
            end,
            waiter,
        });
        (seq, waits)
    }

    /// Forgets a completed request.
    pub(crate) fn retire(&mut self, seq: u64) {
        if let Some(index) = self.inflight.iter().position(|entry| entry.seq == seq) {
            self.inflight.swap_remove(index);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inflight.len()
    }
}

fn conflicts<W>(earlier: &Entry<W>, access: Access, start: u64, end: u64) -> bool {
    match (earlier.access, access) {
        (_, Access::Flush) => earlier.access == Access::Modify,
        (Access::Flush, _) | (Access::Read, Access::Read) => false,
        _ => earlier.start.max(start) < earlier.end.min(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(tracker: &mut Tracker<u64>, access: Access, start: u64, len: u64) -> (u64, Vec<u64>) {
        let waiter = tracker.seq_next;
        let (seq, mut waits) = tracker.admit(access, start, len, waiter);
        waits.sort_unstable();
        (seq, waits)
    }

    #[test]
    fn reads_do_not_wait_for_reads() {
        let mut t = Tracker::new();
        admit(&mut t, Access::Read, 0, 100);
        assert_eq!(admit(&mut t, Access::Read, 50, 100).1, Vec::<u64>::new());
    }

    #[test]
    fn overlap_with_a_modification_waits() {
        let mut t = Tracker::new();
        admit(&mut t, Access::Modify, 100, 100); // 0: [100, 200)
        assert_eq!(admit(&mut t, Access::Read, 199, 1).1, vec![0]); // 1
        assert_eq!(admit(&mut t, Access::Modify, 150, 100).1, vec![0, 1]); // 2
        assert_eq!(admit(&mut t, Access::Read, 0, 100).1, Vec::<u64>::new()); // touches, no overlap
        assert_eq!(admit(&mut t, Access::Read, 200, 10).1, vec![2]);
    }

    #[test]
    fn flush_waits_for_every_earlier_modification_only() {
        let mut t = Tracker::new();
        admit(&mut t, Access::Modify, 0, 10); // 0
        admit(&mut t, Access::Read, 0, 10); // 1
        admit(&mut t, Access::Modify, 1 << 40, 10); // 2
        assert_eq!(admit(&mut t, Access::Flush, 0, 0).1, vec![0, 2]); // 3
                                                                      // Nothing waits for the flush itself.
        assert_eq!(admit(&mut t, Access::Modify, 0, 10).1, vec![0, 1]);
    }

    #[test]
    fn retired_requests_are_not_waited_for() {
        let mut t = Tracker::new();
        let (a, _) = admit(&mut t, Access::Modify, 0, 10);
        let (b, _) = admit(&mut t, Access::Modify, 5, 10);
        t.retire(a);
        assert_eq!(admit(&mut t, Access::Read, 0, 20).1, vec![b]);
        t.retire(b);
        t.retire(b);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn empty_ranges_conflict_with_nothing() {
        let mut t = Tracker::new();
        admit(&mut t, Access::Modify, 0, 10);
        assert_eq!(admit(&mut t, Access::Modify, 5, 0).1, Vec::<u64>::new());
        assert_eq!(
            admit(&mut t, Access::Read, u64::MAX, 0).1,
            Vec::<u64>::new()
        );
        assert_eq!(admit(&mut t, Access::Modify, 0, 10).1, vec![0]);
    }
}
