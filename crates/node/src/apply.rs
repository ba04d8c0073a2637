//! The apply thread: applies committed entries to the state machine in log
//! order, answers the clients waiting on them, serves reads once their read
//! index is applied, and takes snapshots. It never decides anything: what to
//! apply and when comes from the driver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferrite_raft::{Entry, Index, Payload, Snapshot, Term};
use tokio::sync::{mpsc, oneshot};

use crate::driver::Event;
use crate::error::NodeError;
use crate::machine::{MachineSnapshot, StateMachine};

pub type Reply = oneshot::Sender<Result<Bytes, NodeError>>;

/// The channel's volume is bounded by the core: committed entries come in
/// outputs of at most `apply_bytes_max`, waiters by `uncommitted_bytes_max`,
/// reads by `pending_reads_max`.
pub enum ApplyMsg {
    Restore(Snapshot),
    Entries(Vec<Entry>),
    /// Answer `reply` when the entry at `index` applies, if it has `term`.
    Wait {
        index: Index,
        term: Term,
        reply: Reply,
    },
    /// Answer `query` once everything up to `index` is applied.
    ReadAt {
        index: Index,
        query: Bytes,
        reply: Reply,
    },
    /// Answer `query` now (a serializable read).
    Query {
        query: Bytes,
        reply: Reply,
    },
}

pub fn run<M: StateMachine>(
    mut machine: M,
    mut rx: mpsc::UnboundedReceiver<ApplyMsg>,
    events: mpsc::Sender<Event>,
    snapshot_entries: u64,
    (snapshot_index, snapshot_bytes): (Index, usize),
) {
    let mut waiters: BTreeMap<Index, (Term, Reply)> = BTreeMap::new();
    let mut snapshots = Snapshots::new(snapshot_entries, snapshot_index, snapshot_bytes);
    let mut reads: BTreeMap<Index, Vec<(Bytes, Reply)>> = BTreeMap::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ApplyMsg::Restore(snapshot) => {
                if let Err(e) = machine.install(&snapshot.data) {
                    tracing::error!("snapshot from the leader does not restore: {e}");
                    let _ = events.blocking_send(Event::StorageFailed(e));
                    return;
                }
                snapshots.restored(snapshot.meta.index, snapshot.data.len());
                // Whatever waited at or below it can no longer be told apart.
                let later = waiters.split_off(&snapshot.meta.index.next());
                for (_, (_, reply)) in std::mem::replace(&mut waiters, later) {
                    let _ = reply.send(Err(NodeError::Lost));
                }
            }
            ApplyMsg::Entries(entries) => {
                let Some(last) = entries.last().map(|e| e.index) else {
                    continue;
                };
                for entry in entries {
                    let reply = match &entry.payload {
                        Payload::Normal(data) => {
                            snapshots.logged(data.len());
                            match machine.apply(entry.index, data) {
                                Ok(reply) => reply,
                                Err(e) => {
                                    tracing::error!(index = %entry.index, "apply failed: {e}");
                                    let _ = events.blocking_send(Event::StorageFailed(e));
                                    return;
                                }
                            }
                        }
                        _ => {
                            machine.apply_empty(entry.index);
                            Bytes::new()
                        }
                    };
                    if let Some((term, waiter)) = waiters.remove(&entry.index) {
                        let result = if term == entry.term {
                            Ok(reply)
                        } else {
                            Err(NodeError::Lost)
                        };
                        let _ = waiter.send(result);
                    }
                }
                if events
                    .blocking_send(Event::Applied { index: last })
                    .is_err()
                {
                    return;
                }
                if snapshots.due(last) {
                    match machine.snapshot() {
                        Ok(snapshot) => snapshots.start(last, snapshot, &events),
                        Err(e) => {
                            tracing::error!("snapshot failed: {e}");
                            let _ = events.blocking_send(Event::StorageFailed(e));
                            return;
                        }
                    }
                }
            }
            ApplyMsg::Wait { index, term, reply } => {
                if index <= machine.applied() {
                    let _ = reply.send(Err(NodeError::Lost));
                } else if let Some((_, old)) = waiters.insert(index, (term, reply)) {
                    let _ = old.send(Err(NodeError::Lost));
                }
            }
            ApplyMsg::ReadAt {
                index,
                query,
                reply,
            } => {
                if index <= machine.applied() {
                    let _ = reply.send(Ok(machine.query(&query)));
                } else {
                    reads.entry(index).or_default().push((query, reply));
                }
            }
            ApplyMsg::Query { query, reply } => {
                let _ = reply.send(Ok(machine.query(&query)));
            }
        }
        let applied = machine.applied();
        let later = reads.split_off(&applied.next());
        for (_, ready) in std::mem::replace(&mut reads, later) {
            for (query, reply) in ready {
                let _ = reply.send(Ok(machine.query(&query)));
            }
        }
    }
}

/// When to snapshot, and the one snapshot in the making.
///
/// A snapshot is due once `every` entries have been applied since the last
/// one *and* the commands applied since then add up to at least the last
/// snapshot's size. The second rule (the one LSM trees and Redis's log
/// rewrite follow) keeps the cost of encoding the state to at most one byte
/// per byte written however large the state grows, and the log on disk at
/// most about as large as the state.
struct Snapshots {
    every: u64,
    /// The index of the last snapshot taken (or being taken).
    index: Index,
    /// Command bytes applied since `index`.
    bytes_since: u64,
    /// The size of the last snapshot, once its encoding is done.
    last_size: Arc<AtomicU64>,
    /// At most one snapshot is being finished at a time.
    busy: Arc<AtomicBool>,
}

impl Snapshots {
    /// `index` and `size`: this node's own latest snapshot, at start.
    fn new(every: u64, index: Index, size: usize) -> Snapshots {
        Snapshots {
            every,
            index,
            bytes_since: 0,
            last_size: Arc::new(AtomicU64::new(size as u64)),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The state is now the leader's snapshot at `index`.
    fn restored(&mut self, index: Index, size: usize) {
        self.index = index;
        self.bytes_since = 0;
        self.last_size.store(size as u64, Ordering::Release);
    }

    fn logged(&mut self, bytes: usize) {
        self.bytes_since = self.bytes_since.saturating_add(bytes as u64);
    }

    fn due(&self, applied: Index) -> bool {
        !self.busy.load(Ordering::Acquire)
            && applied.distance_from(self.index) >= self.every
            && self.bytes_since >= self.last_size.load(Ordering::Acquire)
    }

    /// Finishes `snapshot` (taken at `index`) on a thread of its own and
    /// hands it to the driver once it is encoded and durable.
    fn start(&mut self, index: Index, snapshot: MachineSnapshot, events: &mpsc::Sender<Event>) {
        self.busy.store(true, Ordering::Release);
        let events = events.clone();
        let busy = self.busy.clone();
        let last_size = self.last_size.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let event = match (snapshot.finish)() {
                    Ok(data) => {
                        last_size.store(data.len() as u64, Ordering::Release);
                        Event::SnapshotReady { index, data }
                    }
                    Err(e) => {
                        tracing::error!("snapshot at {index} cannot be finished: {e}");
                        Event::StorageFailed(e)
                    }
                };
                let _ = events.blocking_send(event);
                busy.store(false, Ordering::Release);
            });
        match spawned {
            Ok(_) => {
                self.index = index;
                self.bytes_since = 0;
            }
            Err(e) => {
                // Without the thread the snapshot is skipped; the next one retries.
                tracing::warn!("cannot start a snapshot thread: {e}");
                self.busy.store(false, Ordering::Release);
            }
        }
    }
}
