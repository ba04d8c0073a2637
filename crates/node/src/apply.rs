//! The apply thread: applies committed entries to the state machine in log
//! order, answers the clients waiting on them, serves reads once their read
//! index is applied, and takes snapshots. It never decides anything: what to
//! apply and when comes from the driver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    mut snapshot_index: Index,
) {
    let mut waiters: BTreeMap<Index, (Term, Reply)> = BTreeMap::new();
    // At most one snapshot is being made durable at a time.
    let snapshotting = Arc::new(AtomicBool::new(false));
    let mut reads: BTreeMap<Index, Vec<(Bytes, Reply)>> = BTreeMap::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ApplyMsg::Restore(snapshot) => {
                if let Err(e) = machine.install(&snapshot.data) {
                    tracing::error!("snapshot from the leader does not restore: {e}");
                    let _ = events.blocking_send(Event::StorageFailed(e));
                    return;
                }
                snapshot_index = snapshot.meta.index;
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
                        Payload::Normal(data) => match machine.apply(entry.index, data) {
                            Ok(reply) => reply,
                            Err(e) => {
                                tracing::error!(index = %entry.index, "apply failed: {e}");
                                let _ = events.blocking_send(Event::StorageFailed(e));
                                return;
                            }
                        },
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
                let busy = snapshotting.load(Ordering::Acquire);
                if !busy && last.distance_from(snapshot_index) >= snapshot_entries {
                    snapshot_index = last;
                    match machine.snapshot() {
                        Ok(snapshot) => finish_snapshot(last, snapshot, &events, &snapshotting),
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

/// Hands a snapshot to the driver once its state is durable: at once if it
/// is all in its bytes, otherwise after `make_durable` ran on a thread of its
/// own (syncing volume files can take long; applying goes on meanwhile).
fn finish_snapshot(
    index: Index,
    snapshot: MachineSnapshot,
    events: &mpsc::Sender<Event>,
    busy: &Arc<AtomicBool>,
) {
    let MachineSnapshot { data, make_durable } = snapshot;
    let Some(make_durable) = make_durable else {
        let _ = events.blocking_send(Event::SnapshotReady { index, data });
        return;
    };
    busy.store(true, Ordering::Release);
    let events = events.clone();
    let busy_done = busy.clone();
    let spawned = std::thread::Builder::new()
        .name("snapshot-sync".into())
        .spawn(move || {
            let event = match make_durable() {
                Ok(()) => Event::SnapshotReady { index, data },
                Err(e) => {
                    tracing::error!("snapshot at {index} cannot be made durable: {e}");
                    Event::StorageFailed(e)
                }
            };
            let _ = events.blocking_send(event);
            busy_done.store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        // Without the thread the snapshot is skipped; the next one retries.
        tracing::warn!("cannot start a snapshot thread: {e}");
        busy.store(false, Ordering::Release);
    }
}
