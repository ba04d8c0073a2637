//! The apply side of the replica, sans IO: applies committed entries to the
//! state machine in log order, answers the waiters the replica attached to
//! them, serves linearizable reads once the state has reached their read
//! index, and says when a snapshot is due. The real node runs it on the
//! apply thread (`apply.rs`); the simulator calls it directly. It never
//! decides what to apply: that comes from the replica.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferrite_raft::{Canary, Index, Payload};

use crate::lessor::LeaseChange;
use crate::machine::{MachineError, MachineSnapshot, StateMachine};
use crate::replica::{Answer, ApplyTask, Requester};

/// What handling one task produced.
#[derive(Default)]
pub struct Applied {
    pub answers: Vec<(Requester, Answer)>,
    /// Entries up to here are applied (report `Replica::on_applied`).
    pub upto: Option<Index>,
    /// Changes to the lease table, in log order, made at or below `upto`:
    /// give them to `Replica::on_lease_changes` before `on_applied`.
    pub leases: Vec<LeaseChange>,
    /// A snapshot to finish (`MachineSnapshot::finish`), then hand to
    /// `Replica::on_snapshot_ready` and `Applier::snapshot_done`.
    pub snapshot: Option<(Index, MachineSnapshot)>,
}

pub struct Applier<M: StateMachine> {
    machine: M,
    /// Linearizable reads waiting for the state to reach their index.
    reads: BTreeMap<Index, Vec<(Bytes, Requester)>>,
    snapshots: SnapshotPolicy,
    canary: Canary,
}

impl<M: StateMachine> Applier<M> {
    /// `last_snapshot`: index and size of this member's latest snapshot.
    pub fn new(
        machine: M,
        snapshot_entries: u64,
        last_snapshot: (Index, usize),
        canary: Canary,
    ) -> Applier<M> {
        Applier {
            machine,
            reads: BTreeMap::new(),
            snapshots: SnapshotPolicy::new(snapshot_entries, last_snapshot.0, last_snapshot.1),
            canary,
        }
    }

    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, for a host that collects what it recorded while
    /// applying (the simulator's published entries).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    pub fn applied(&self) -> Index {
        self.machine.applied()
    }

    /// Reads waiting for apply to reach their index.
    pub fn reads_waiting(&self) -> usize {
        self.reads.values().map(Vec::len).sum()
    }

    /// The policy's view of snapshots in progress, for the thread that
    /// finishes them.
    pub fn snapshot_policy(&self) -> &SnapshotPolicy {
        &self.snapshots
    }

    /// Does `task`. An error is a state machine failure: the member must
    /// stop serving.
    pub fn handle(&mut self, task: ApplyTask, out: &mut Applied) -> Result<(), MachineError> {
        match task {
            ApplyTask::Restore(snapshot) => {
                self.machine.install(&snapshot.data)?;
                // Read once: its pages (a file's, when mapped) need not stay.
                ferrite_wal::page_out(&snapshot.data);
                // A snapshot whose state does not end where its metadata says
                // would make the next entry's apply go out of order.
                let (index, applied) = (snapshot.meta.index, self.machine.applied());
                if applied != index {
                    return Err(MachineError::Restore(format!(
                        "the snapshot at {index} holds state applied to {applied}"
                    )));
                }
                self.snapshots
                    .restored(snapshot.meta.index, snapshot.data.len());
                out.leases.extend(self.machine.take_lease_changes());
                out.upto = Some(snapshot.meta.index);
            }
            ApplyTask::Entries { entries, waiters } => {
                let mut waiters = waiters.into_iter().peekable();
                for entry in &entries {
                    let applied = self.machine.applied();
                    if entry.index <= applied {
                        // Already in the state (a snapshot restored past
                        // it): its reply is gone, and nobody waits for it
                        // (the replica answered those when the snapshot came).
                        continue;
                    }
                    assert_eq!(
                        entry.index,
                        applied.next(),
                        "entries out of order: {} after {applied}",
                        entry.index
                    );
                    let reply = match &entry.payload {
                        Payload::Normal(data) => {
                            self.snapshots.logged(data.len());
                            self.machine.apply(entry.index, data)?
                        }
                        _ => {
                            self.machine.apply_empty(entry.index);
                            Bytes::new()
                        }
                    };
                    assert_eq!(self.machine.applied(), entry.index, "apply did not advance");
                    out.leases.extend(self.machine.take_lease_changes());
                    while let Some((index, _)) = waiters.peek() {
                        if *index > entry.index {
                            break;
                        }
                        if let Some((index, requester)) = waiters.next() {
                            if index == entry.index {
                                out.answers.push((requester, Ok(reply.clone())));
                            }
                        }
                    }
                }
                if let Some(last) = entries.last() {
                    out.upto = Some(last.index.max(self.machine.applied()));
                    if self.snapshots.due(self.machine.applied()) {
                        let index = self.machine.applied();
                        let snapshot = self.machine.snapshot()?;
                        self.snapshots.started(index);
                        out.snapshot = Some((index, snapshot));
                    }
                }
            }
            ApplyTask::ReadAt {
                index,
                query,
                requester,
            } => {
                if index <= self.machine.applied() || self.canary.reads_before_applied() {
                    out.answers
                        .push((requester, Ok(self.machine.query(&query))));
                } else {
                    self.reads
                        .entry(index)
                        .or_default()
                        .push((query, requester));
                }
            }
            ApplyTask::Query { query, requester } => {
                out.answers
                    .push((requester, Ok(self.machine.query(&query))));
            }
        }
        self.serve_reads(out);
        Ok(())
    }

    fn serve_reads(&mut self, out: &mut Applied) {
        let applied = self.machine.applied();
        let later = self.reads.split_off(&applied.next());
        for (index, ready) in std::mem::replace(&mut self.reads, later) {
            assert!(index <= applied, "read at {index} served at {applied}");
            for (query, requester) in ready {
                out.answers
                    .push((requester, Ok(self.machine.query(&query))));
            }
        }
    }

    /// The snapshot started at some index finished (`size` bytes), or
    /// failed (`None`): the next may start.
    pub fn snapshot_done(&self, size: Option<usize>) {
        self.snapshots.done.finished(size);
    }
}

/// When to snapshot.
///
/// A snapshot is due once `every` entries have been applied since the last
/// one *and* the commands applied since then add up to at least the last
/// snapshot's size. The second rule (the one LSM trees and Redis's log
/// rewrite follow) keeps the cost of encoding the state to at most one byte
/// per byte written however large the state grows, and the log on disk at
/// most about as large as the state. At most one snapshot is in the making.
pub struct SnapshotPolicy {
    every: u64,
    /// The index of the last snapshot taken (or being taken).
    index: Index,
    /// Command bytes applied since `index`.
    bytes_since: u64,
    /// What the thread that finishes a snapshot reports back.
    done: SnapshotDone,
}

impl SnapshotPolicy {
    fn new(every: u64, index: Index, size: usize) -> SnapshotPolicy {
        SnapshotPolicy {
            every,
            index,
            bytes_since: 0,
            done: SnapshotDone {
                last_size: Arc::new(AtomicU64::new(size as u64)),
                busy: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    fn restored(&mut self, index: Index, size: usize) {
        self.index = index;
        self.bytes_since = 0;
        self.done.last_size.store(size as u64, Ordering::Release);
    }

    fn logged(&mut self, bytes: usize) {
        self.bytes_since = self.bytes_since.saturating_add(bytes as u64);
    }

    fn due(&self, applied: Index) -> bool {
        !self.done.busy.load(Ordering::Acquire)
            && applied.distance_from(self.index) >= self.every
            && self.bytes_since >= self.done.last_size.load(Ordering::Acquire)
    }

    fn started(&mut self, index: Index) {
        self.done.busy.store(true, Ordering::Release);
        self.index = index;
        self.bytes_since = 0;
    }

    /// A handle for the thread that finishes a snapshot.
    pub fn handle(&self) -> SnapshotDone {
        self.done.clone()
    }
}

/// Lets the thread that finishes a snapshot report it done: its size (the
/// next one waits until as many bytes were written), or `None` if it failed.
#[derive(Clone)]
pub struct SnapshotDone {
    /// The size of the last snapshot, once its encoding is done.
    last_size: Arc<AtomicU64>,
    /// At most one snapshot is in the making.
    busy: Arc<AtomicBool>,
}

impl SnapshotDone {
    pub fn finished(&self, size: Option<usize>) {
        if let Some(size) = size {
            self.last_size.store(size as u64, Ordering::Release);
        }
        self.busy.store(false, Ordering::Release);
    }
}
