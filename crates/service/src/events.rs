//! The one event stream: every change an applied entry makes, published in
//! apply order on a bounded in-process broadcast. etcd's Watch (`watch/`)
//! and the dashboard's live view are views of it.
//!
//! The apply thread publishes and never waits: the broadcast keeps the last
//! `EVENT_STREAM_ENTRIES` entries, and a reader that falls further behind is
//! told it lagged (tokio's `RecvError::Lagged`) and catches up from the
//! MVCC history instead (etcd's unsynced watchers), so a slow reader costs
//! no memory beyond the ring.
//!
//! Memory: an entry holds its events (keys and values are shared `Bytes`,
//! not copies). Volume writes are left out: their data would make the ring
//! hold up to `EVENT_STREAM_ENTRIES` MiB, and no view needs the bytes.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use ferrite_state::{Event, Published, VolumeEvent};
use tokio::sync::broadcast;

/// Entries the ring keeps for readers that are behind.
pub const EVENT_STREAM_ENTRIES: usize = 4096;

#[derive(Clone)]
pub struct EventStream {
    tx: broadcast::Sender<Arc<Published>>,
    /// The revision of the last entry published (1: none yet, as an empty
    /// store). Readers use it as "now" for a watch that starts now.
    revision: Arc<AtomicI64>,
    published: Arc<AtomicU64>,
}

impl Default for EventStream {
    fn default() -> EventStream {
        EventStream::new()
    }
}

impl EventStream {
    pub fn new() -> EventStream {
        let (tx, _) = broadcast::channel(EVENT_STREAM_ENTRIES);
        EventStream {
            tx,
            revision: Arc::new(AtomicI64::new(1)),
            published: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A reader that sees every entry published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// The revision of the last entry published.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Entries published since start (a metric).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Readers subscribed now (a metric: one per watch stream and view).
    pub fn readers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Tells readers the state was replaced by a snapshot (at start, or
    /// from the leader): its changes were never published.
    pub fn publish_restore(&self, index: u64, revision: i64) {
        self.revision.store(revision, Ordering::Release);
        let _ = self.tx.send(Arc::new(Published {
            index,
            revision,
            events: Vec::new(),
            restored: true,
        }));
    }

    /// Publishes an applied entry's events (nothing if it made none).
    /// Never blocks.
    pub fn publish(&self, index: u64, revision: i64, events: &[Event]) {
        let events: Vec<Event> = events
            .iter()
            .filter(|e| {
                !matches!(
                    e,
                    Event::Volume(VolumeEvent::Written { .. } | VolumeEvent::Zeroed { .. })
                )
            })
            .cloned()
            .collect();
        // Store the revision first: a reader that sees the entry must not
        // then read an older "now".
        self.revision.store(revision, Ordering::Release);
        if events.is_empty() {
            return;
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        // No reader is not an error: nobody watches.
        let _ = self.tx.send(Arc::new(Published {
            index,
            revision,
            events,
            restored: false,
        }));
    }
}
