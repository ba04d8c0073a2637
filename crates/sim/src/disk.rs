//! A simulated node's storage: the real `ferrite-wal` on its in-memory disk.
//! Writes reach the WAL at once but become durable only when their simulated
//! fdatasync completes, after a random latency; a crash tears whatever was
//! not synced at a random byte, and the restarted node recovers through the
//! WAL's real recovery code.

use std::collections::VecDeque;

use ferrite_raft::{DurableState, HardState, Index, Message, Term};
use ferrite_wal::{MemDisk, Recovered, Wal, WalError, WalOptions};

use crate::options::Micros;

/// The WAL's directory on the node's disk.
pub const DATA_DIR: &str = "/data";

/// A write waiting for its fdatasync to complete.
pub struct Pending {
    /// Messages that may leave only once this write is durable.
    pub after: Vec<Message>,
    /// What to report to `Raft::on_persisted`.
    pub last: Option<(Index, Term)>,
}

pub enum Store {
    Open(Box<Wal<MemDisk>>),
    /// The node is down; this is what its disk holds.
    Closed(MemDisk),
    /// Only while switching between the two.
    Switching,
}

pub struct Disk {
    pub store: Store,
    pub pending: VecDeque<Pending>,
    /// When the last queued sync completes.
    pub busy_until: Micros,
    pub options: WalOptions,
}

impl Disk {
    pub fn new(options: WalOptions) -> Disk {
        Disk {
            store: Store::Closed(MemDisk::new()),
            pending: VecDeque::new(),
            busy_until: 0,
            options,
        }
    }

    pub fn wal(&mut self) -> Option<&mut Wal<MemDisk>> {
        match &mut self.store {
            Store::Open(wal) => Some(wal),
            _ => None,
        }
    }

    /// Opens the WAL and recovers, as a node does at start.
    pub fn open(&mut self) -> Result<Recovered, WalError> {
        let disk = match std::mem::replace(&mut self.store, Store::Switching) {
            Store::Closed(disk) => disk,
            Store::Open(wal) => wal.into_disk(),
            Store::Switching => MemDisk::new(),
        };
        let (wal, recovered) = Wal::open(disk, DATA_DIR, self.options)?;
        self.store = Store::Open(Box::new(wal));
        Ok(recovered)
    }

    /// A founding member writes its bootstrap state once, so that the initial
    /// configuration survives a crash before anything else was written.
    pub fn bootstrap(&mut self, durable: &DurableState) -> Result<(), WalError> {
        let Some(wal) = self.wal() else { return Ok(()) };
        if let Some(snapshot) = &durable.snapshot {
            wal.save_snapshot(snapshot)?;
        }
        Ok(())
    }

    /// A crash: every write not yet synced may be torn or lost.
    pub fn crash(&mut self, rng: &mut dyn FnMut() -> u64) {
        let mut disk = match std::mem::replace(&mut self.store, Store::Switching) {
            Store::Open(wal) => wal.into_disk(),
            Store::Closed(disk) => disk,
            Store::Switching => MemDisk::new(),
        };
        disk.crash(rng);
        self.store = Store::Closed(disk);
        self.pending.clear();
    }

    /// The hard state that the last sync made durable.
    pub fn durable_hard_state(&mut self) -> Option<HardState> {
        self.wal().map(|w| w.hard_state())
    }
}
