//! The storage thread: owns the WAL, makes the core's writes durable with
//! group commit (everything queued while the previous fdatasync ran goes
//! into the next one), then releases the messages that waited for it and
//! tells the driver how far the log is durable. A storage error is fatal for
//! the node: it must not go on as if unsynced data were durable.
//!
//! A batch that only moves the commit index (term and vote as last written,
//! no entries, no snapshot) is written but not synced: nothing depends on
//! the commit index being durable (a restarted node learns it again from
//! the leader), and the WAL is append-only, so a commit index that survives
//! a crash never points past the entries that survived with it. Without
//! this every put cost each member two fdatasyncs: one for the entry and
//! one for the commit index the next heartbeat carried.

use ferrite_raft::{Message, NodeId, Persist, Snapshot, Term};
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
    // The term and vote last written; `None` until the first hard state.
    let mut written: Option<(Term, Option<NodeId>)> = None;
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
        let mut must_sync = false;
        for msg in batch {
            result = match msg {
                StorageMsg::Persist { persist, after: a } => {
                    last = persist.last().or(last);
                    after.extend(a);
                    must_sync |= needs_sync(&persist, &mut written);
                    wal.write(&persist)
                }
                StorageMsg::Snapshot(s) => {
                    must_sync = true;
                    wal.save_snapshot(&s)
                }
            };
            if result.is_err() {
                break;
            }
        }
        // How long the fdatasync took; None when the batch needed none.
        let mut sync = None;
        if must_sync && result.is_ok() {
            let started = std::time::Instant::now();
            let delay = Metrics::get(&metrics.disk_delay_micros);
            if delay > 0 {
                // Fault injection: a slow disk.
                std::thread::sleep(std::time::Duration::from_micros(delay));
            }
            result = wal.sync();
            let elapsed = started.elapsed();
            metrics.sync.record(elapsed);
            sync = Some(elapsed);
        }
        if let Err(e) = result {
            tracing::error!("storage failed, stopping the node: {e}");
            let _ = events.blocking_send(Event::StorageFailed(e.to_string()));
            return;
        }
        for msg in after {
            transport.send(msg.to, &Frame::Raft(msg));
        }
        if events
            .blocking_send(Event::Persisted { last, sync })
            .is_err()
        {
            return;
        }
    }
}

/// Whether `persist` must be synced before what waits for it may go: it
/// carries entries, or a term or vote not yet written (a vote must be
/// durable before it is sent). Notes the term and vote it writes.
fn needs_sync(persist: &Persist, written: &mut Option<(Term, Option<NodeId>)>) -> bool {
    let mut sync = !persist.entries.is_empty() || persist.snapshot.is_some();
    if let Some(hs) = &persist.hard_state {
        let now = (hs.term, hs.vote);
        if *written != Some(now) {
            *written = Some(now);
            sync = true;
        }
    }
    sync
}

#[cfg(test)]
mod tests {
    use ferrite_raft::{Entry, HardState, Index, NodeId, Payload, Persist, Term};

    use super::needs_sync;

    fn hs(term: u64, vote: Option<u64>, commit: u64) -> Option<HardState> {
        Some(HardState {
            term: Term(term),
            vote: vote.map(NodeId),
            commit: Index(commit),
        })
    }

    #[test]
    fn only_commit_index_moves_go_unsynced() {
        let mut written = None;
        let first = Persist {
            hard_state: hs(1, Some(2), 0),
            ..Persist::default()
        };
        assert!(needs_sync(&first, &mut written), "the first vote");
        let commit = Persist {
            hard_state: hs(1, Some(2), 5),
            ..Persist::default()
        };
        assert!(!needs_sync(&commit, &mut written), "a commit index alone");
        let entries = Persist {
            hard_state: hs(1, Some(2), 6),
            entries: vec![Entry {
                index: Index(7),
                term: Term(1),
                payload: Payload::Normal(bytes::Bytes::from_static(b"x")),
            }],
            ..Persist::default()
        };
        assert!(needs_sync(&entries, &mut written), "entries");
        let new_term = Persist {
            hard_state: hs(2, None, 6),
            ..Persist::default()
        };
        assert!(needs_sync(&new_term, &mut written), "a new term");
        let vote = Persist {
            hard_state: hs(2, Some(3), 6),
            ..Persist::default()
        };
        assert!(needs_sync(&vote, &mut written), "a vote");
        assert!(!needs_sync(&Persist::default(), &mut written), "nothing");
    }
}
