//! The storage thread: owns the WAL, makes the core's writes durable with
//! group commit (everything queued while the previous fdatasync ran goes
//! into the next one), then releases the messages that waited for it and
//! tells the driver how far the log is durable. A storage error is fatal for
//! the node: it must not go on as if unsynced data were durable.

use ferrite_raft::{Message, Persist, Snapshot};
use ferrite_wal::{FileDisk, Wal};
use tokio::sync::mpsc;

use crate::codec::Frame;
use std::sync::Arc;

use crate::driver::Event;
use crate::metrics::Metrics;
use crate::transport::Transport;

/// Writes taken into one group commit at most.
const BATCH_WRITES_MAX: usize = 1024;

pub enum StorageMsg {
    Persist {
        persist: Persist,
        after: Vec<Message>,
    },
    /// A snapshot this node took: durable before the log prefix goes.
    Snapshot(Snapshot),
}

pub fn run(
    mut wal: Wal<FileDisk>,
    mut rx: mpsc::UnboundedReceiver<StorageMsg>,
    events: mpsc::Sender<Event>,
    transport: Transport,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_WRITES_MAX {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        let mut last = None;
        let mut after = Vec::new();
        let mut result = Ok(());
        for msg in batch {
            result = match msg {
                StorageMsg::Persist { persist, after: a } => {
                    last = persist.last().or(last);
                    after.extend(a);
                    wal.write(&persist)
                }
                StorageMsg::Snapshot(s) => wal.save_snapshot(&s),
            };
            if result.is_err() {
                break;
            }
        }
        let started = std::time::Instant::now();
        let delay = Metrics::get(&metrics.disk_delay_micros);
        if delay > 0 {
            // Fault injection: a slow disk.
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        let result = result.and_then(|()| wal.sync());
        if let Err(e) = result {
            tracing::error!("storage failed, stopping the node: {e}");
            let _ = events.blocking_send(Event::StorageFailed(e.to_string()));
            return;
        }
        let elapsed = started.elapsed();
        metrics.sync.record(elapsed);
        for msg in after {
            transport.send(msg.to, &Frame::Raft(msg));
        }
        if events
            .blocking_send(Event::Persisted {
                last,
                sync: elapsed,
            })
            .is_err()
        {
            return;
        }
    }
}
