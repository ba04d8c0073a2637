//! Log compaction and InstallSnapshot (Raft §7): the caller's snapshot
//! replaces the log prefix; a follower too far behind receives the snapshot
//! in chunks, one in flight at a time, resent on the heartbeat if lost.

use bytes::{Bytes, BytesMut};

use crate::core::{Raft, Role};
use crate::error::{CompactError, StepError};
use crate::message::Body;
use crate::progress::ProgressState;
use crate::snapshot::{Incoming, Snapshot, SnapshotMeta};
use crate::types::{Index, NodeId};

impl Raft {
    /// The caller has a snapshot of its state machine at `index` (applied):
    /// the log prefix up to it is dropped here, and the snapshot is kept to
    /// send to followers that need it. Returns the metadata to store beside
    /// the data; the caller may drop its durable log prefix once both are
    /// durable.
    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<SnapshotMeta, CompactError> {
        if index > self.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied,
            });
        }
        if index <= self.log.snapshot_index() {
            return Err(CompactError::AlreadyCompacted {
                snapshot_index: self.log.snapshot_index(),
            });
        }
        let Some(term) = self.log.term_at(index) else {
            return Err(CompactError::Unavailable { index, term: None });
        };
        let membership = match self.log.membership_at(index) {
            Some((_, m)) => m.clone(),
            None => self.snapshot_membership.clone(),
        };
        self.log.compact_to(index);
        self.snapshot_membership = membership.clone();
        let meta = SnapshotMeta {
            index,
            term,
            membership,
        };
        self.snapshot = Some(Snapshot {
            meta: meta.clone(),
            data,
        });
        self.check_invariants();
        Ok(meta)
    }

    /// The same snapshot's bytes from elsewhere (the node's durable copy,
    /// memory-mapped from its file), to hold instead of the copy handed to
    /// `compact` or installed. Ignored unless the snapshot at `index` is
    /// still the current one and `data` has its length: the bytes must be
    /// the same, only where they live changes.
    pub fn use_snapshot_data(&mut self, index: Index, data: Bytes) -> bool {
        match &mut self.snapshot {
            Some(s) if s.meta.index == index && s.data.len() == data.len() => {
                debug_assert!(s.data == data, "snapshot {index}: other bytes offered");
                s.data = data;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn start_snapshot_transfer(&mut self, to: NodeId) {
        let Some(index) = self.snapshot.as_ref().map(|s| s.meta.index) else {
            return;
        };
        if let Some(p) = self.progress.get_mut(&to) {
            p.become_snapshot(index);
        }
        self.send_snapshot_chunk(to);
    }

    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, offset } = p.state else {
            return;
        };
        let offset = if index == snapshot.meta.index {
            offset
        } else {
            // A newer snapshot replaced the one being sent: start over.
            p.become_snapshot(snapshot.meta.index);
            0
        };
        let total = snapshot.data.len() as u64;
        let start = offset.min(total) as usize;
        let end = (start + self.cfg.snapshot_chunk_bytes).min(snapshot.data.len());
        self.send(
            to,
            Body::Snapshot {
                meta: snapshot.meta,
                offset: start as u64,
                total_bytes: total,
                data: snapshot.data.slice(start..end),
            },
        );
    }

    pub(crate) fn on_snapshot_response(
        &mut self,
        from: NodeId,
        index: Index,
        next_offset: u64,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        if done {
            if index <= last && p.maybe_update(index) {
                self.maybe_commit();
            }
            if let Some(p) = self.progress.get_mut(&from) {
                if matches!(p.state, ProgressState::Snapshot { .. }) {
                    p.become_probe();
                }
            }
            return;
        }
        if let ProgressState::Snapshot {
            index: sending,
            offset,
        } = &mut p.state
        {
            // One chunk in flight: send the next one when the follower says
            // it needs a different offset than the chunk in flight (it got
            // that chunk, or it lost what it had). A duplicated answer to the
            // previous chunk names the chunk in flight and changes nothing; a
            // lost chunk is resent at the next heartbeat interval
            // (`Progress::snapshot_stalled`).
            let progressed = next_offset != *offset;
            if *sending == index && progressed {
                *offset = next_offset;
                self.send_snapshot_chunk(from);
            }
        }
    }

    pub(crate) fn on_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
    ) -> Result<(), StepError> {
        self.follow(from)?;
        let index = meta.index;
        if index <= self.commit {
            // We already hold all of it.
            self.incoming = None;
            self.send_snapshot_done(from, index, total_bytes);
            return Ok(());
        }
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.meta == meta && i.total_bytes == total_bytes);
        // A chunk at offset 0 starts a transfer, unless it is a duplicate of
        // the one already under way (then we keep what we have).
        if offset == 0 && !same {
            self.incoming = Some(Incoming {
                meta: meta.clone(),
                total_bytes,
                data: BytesMut::new(),
            });
        } else if !same {
            self.send(
                from,
                Body::SnapshotResponse {
                    index,
                    next_offset: 0,
                    done: false,
                },
            );
            return Ok(());
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return Ok(());
        };
        if offset == incoming.received() {
            incoming.data.extend_from_slice(&data);
        }
        if incoming.received() < incoming.total_bytes {
            let next_offset = incoming.received();
            self.send(
                from,
                Body::SnapshotResponse {
                    index,
                    next_offset,
                    done: false,
                },
            );
            return Ok(());
        }
        let Some(incoming) = self.incoming.take() else {
            return Ok(());
        };
        self.install_snapshot(Snapshot {
            meta: incoming.meta,
            data: incoming.data.freeze(),
        });
        self.send_snapshot_done(from, index, total_bytes);
        Ok(())
    }

    /// Tells the leader the snapshot at `index` is held (durably, since this
    /// waits for the persist).
    fn send_snapshot_done(&mut self, to: NodeId, index: Index, total_bytes: u64) {
        self.send(
            to,
            Body::SnapshotResponse {
                index,
                next_offset: total_bytes,
                done: true,
            },
        );
    }

    /// Raft §7: if the log already holds the snapshot's last entry, keep the
    /// log and just commit up to it; otherwise the snapshot replaces the
    /// whole log and the state machine.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        assert!(
            meta.index > self.commit,
            "installing below commit: {} <= {}",
            meta.index,
            self.commit
        );
        if self.log.term_at(meta.index) == Some(meta.term) {
            self.commit = meta.index;
            return;
        }
        self.log.restore(meta.index, meta.term);
        self.snapshot_membership = meta.membership.clone();
        self.commit = meta.index;
        self.handed = meta.index;
        self.applied = meta.index;
        // What was handed out before is superseded by the snapshot.
        self.applying.clear();
        self.applying_bytes = 0;
        self.persisted = self.persisted.min(meta.index.prev());
        self.recompute_membership();
        self.out.persist.entries.clear();
        self.out.persist.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }
}
