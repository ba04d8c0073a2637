//! The storage thread: owns the WAL, makes the core's writes durable with
//! group commit (everything queued while the previous fdatasync ran goes
//! into the next one), then releases the messages that waited for it and
//! tells the driver how far the log is durable. A storage error is fatal for
//! the node: it must not go on as if unsynced data were durable.
//!
//! Whether a write needs an fdatasync is the core's decision (its output's
//! `must_sync`, as etcd's `MustSync`): a batch that only moves the commit
//! index is written but not synced. Nothing depends on the commit index
//! being durable (a restarted node learns it again from the leader), and the
//! WAL is append-only, so a commit index that survives a crash never points
//! past the entries that survived with it. Without this every put cost each
//! member two fdatasyncs: one for the entry and one for the commit index the
//! next heartbeat carried. `write_batch` is the rule; the simulator runs it
//! too, on its in-memory disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_raft::{Index, Message, Snapshot, Term};
use ferrite_wal::{Disk, Wal, WalError};
use tokio::sync::mpsc;

use crate::codec::Frame;
use crate::driver::Ack;
use crate::metrics::Metrics;
use crate::replica::StorageTask;
use crate::transport::Transport;

/// Tasks taken into one group commit at most.
pub const BATCH_TASKS_MAX: usize = 1024;

/// What one group commit made durable.
#[derive(Debug, Default)]
pub struct Committed {
    /// Report to `Replica::on_persisted`.
    pub last: Option<(Index, Term)>,
    /// Messages that may leave now.
    pub after: Vec<Message>,
    /// Whether an fdatasync ran.
    pub synced: bool,
    /// The snapshot this batch saved, read back from its file: for
    /// `Replica::on_snapshot_saved`, so that the core holds the file's
    /// memory map instead of the heap copy it was given.
    pub snapshot: Option<Snapshot>,
}

/// Writes `batch` to the WAL in order and syncs once if any task must be
/// synced (the core's `must_sync`; a snapshot always). The one group-commit
/// rule, shared by the storage thread and the simulator. `before_sync` runs
/// just before the fdatasync (fault injection, timing).
pub fn write_batch<D: Disk>(
    wal: &mut Wal<D>,
    batch: Vec<StorageTask>,
    before_sync: impl FnOnce(),
) -> Result<Committed, WalError> {
    let mut done = Committed::default();
    let mut must_sync = false;
    let mut saved_snapshot = false;
    for task in batch {
        match task {
            StorageTask::Persist {
                persist,
                must_sync: sync,
                after,
            } => {
                done.last = persist.last().or(done.last);
                done.after.extend(after);
                must_sync |= sync;
                saved_snapshot |= persist.snapshot.is_some();
                wal.write(&persist)?;
            }
            StorageTask::Snapshot(s) => {
                must_sync = true;
                saved_snapshot = true;
                wal.save_snapshot(&s)?;
            }
        }
    }
    if must_sync {
        before_sync();
        wal.sync()?;
        done.synced = true;
    }
    if saved_snapshot {
        // Only memory is at stake: if the file cannot be mapped, the core
        // keeps the copy it has.
        match wal.map_snapshot() {
            Ok(snapshot) => done.snapshot = snapshot,
            Err(e) => tracing::warn!("saved snapshot not mapped, kept in memory: {e}"),
        }
    }
    Ok(done)
}

pub fn run<D: Disk>(
    mut wal: Wal<D>,
    mut rx: mpsc::Receiver<StorageTask>,
    acks: mpsc::Sender<Ack>,
    transport: Transport,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_TASKS_MAX {
            match rx.try_recv() {
                Ok(task) => batch.push(task),
                Err(_) => break,
            }
        }
        let tasks = batch.len();
        let started = Instant::now();
        let delay = Metrics::get(&metrics.disk_delay_micros);
        let mut sync_started = None;
        let result = write_batch(&mut wal, batch, || {
            if delay > 0 {
                // Fault injection: a slow disk.
                std::thread::sleep(Duration::from_micros(delay));
            }
            sync_started = Some(Instant::now());
        });
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("storage failed, stopping the node: {e}");
                let _ = acks.blocking_send(Ack::StorageFailed(e.to_string()));
                return;
            }
        };
        // How long the fdatasync took (with an injected delay); None when
        // the batch needed none.
        let sync = done
            .synced
            .then(|| sync_started.unwrap_or(started).elapsed());
        if let Some(elapsed) = sync {
            metrics.sync.record(elapsed);
        }
        for msg in done.after {
            transport.send(msg.to, &Frame::Raft(msg));
        }
        let ack = Ack::Persisted {
            tasks,
            last: done.last,
            sync,
            snapshot: done.snapshot,
        };
        if acks.blocking_send(ack).is_err() {
            return;
        }
    }
    // The driver is gone: everything written is made durable before exit.
    if let Err(e) = wal.sync() {
        tracing::error!("final sync failed: {e}");
    }
}
