//! A simulated disk: writes complete in order after a random latency, and a
//! crash loses every write that has not completed. (The storage issue swaps
//! this for `ferrite-wal` on its in-memory disk.)

use std::collections::VecDeque;

use ferrite_raft::{DurableState, Message, Persist, Snapshot};

use crate::options::Micros;

/// One write in flight.
pub struct Write {
    pub persist: Persist,
    /// Messages that may leave only once this write is durable.
    pub after: Vec<Message>,
    /// A snapshot taken by this node, which also drops the log prefix.
    pub compaction: Option<Snapshot>,
}

#[derive(Default)]
pub struct Disk {
    pub durable: DurableState,
    pub pending: VecDeque<Write>,
    /// When the last queued write completes.
    pub busy_until: Micros,
}

impl Disk {
    /// Makes the oldest pending write durable and returns it.
    pub fn complete(&mut self) -> Option<Write> {
        let write = self.pending.pop_front()?;
        let d = &mut self.durable;
        if let Some(s) = &write.compaction {
            d.entries.retain(|e| e.index > s.meta.index);
            d.snapshot = Some(s.clone());
        }
        if let Some(s) = &write.persist.snapshot {
            d.entries.clear();
            d.snapshot = Some(s.clone());
        }
        if let Some(first) = write.persist.entries.first() {
            d.entries.retain(|e| e.index < first.index);
            d.entries.extend(write.persist.entries.iter().cloned());
        }
        if let Some(hs) = write.persist.hard_state {
            d.hard_state = hs;
        }
        Some(write)
    }

    /// A crash: whatever was not durable is gone.
    pub fn crash(&mut self) {
        self.pending.clear();
    }
}
