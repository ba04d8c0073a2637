//! Counters and histograms the node keeps for `/metrics`. Plain atomics,
//! updated where things happen, read without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fdatasync latency histogram's buckets.
pub const SYNC_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// A latency histogram: cumulative counts per bucket of `SYNC_BUCKETS`
/// (plus +Inf last), with a count and a sum.
#[derive(Default, Debug)]
pub struct Histogram {
    pub count: AtomicU64,
    pub sum_nanos: AtomicU64,
    pub buckets: [AtomicU64; SYNC_BUCKETS.len() + 1],
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = SYNC_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(SYNC_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default, Debug)]
pub struct Metrics {
    /// The current term, the leader (0 if none), and the commit and applied
    /// indexes, as of the driver's last turn: cheap to read for response
    /// headers and `/metrics`.
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    pub is_leader: AtomicU64,
    pub proposals: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub reads: AtomicU64,
    pub leader_changes: AtomicU64,
    pub peer_frames_refused: AtomicU64,
    /// The replica's lease figures, as of the driver's last turn: leases
    /// this member's lessor knows of, and what it did as leader (revokes of
    /// expired leases proposed, renewals, checkpoints proposed).
    pub leases: AtomicU64,
    pub lease_revokes_proposed: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub lease_checkpoints_proposed: AtomicU64,
    /// Heartbeat round trips from a leader to its peers.
    pub peer_rtt: Histogram,
    /// The WAL's group-commit fdatasync.
    pub sync: Histogram,
    /// Client requests as the front ends saw them, retries included.
    pub requests: Histogram,
    /// Fault injection: extra time added to every fdatasync (microseconds).
    pub disk_delay_micros: AtomicU64,
}

impl Metrics {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_land_in_their_bucket() {
        let m = Metrics::default();
        m.sync.record(Duration::from_micros(80));
        m.sync.record(Duration::from_millis(3));
        m.sync.record(Duration::from_secs(5));
        assert_eq!(Metrics::get(&m.sync.count), 3);
        assert_eq!(Metrics::get(&m.sync.buckets[0]), 1);
        assert_eq!(Metrics::get(&m.sync.buckets[5]), 1);
        assert_eq!(Metrics::get(&m.sync.buckets[SYNC_BUCKETS.len()]), 1);
    }
}
