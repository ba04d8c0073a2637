//! Snapshots taken here and what they make redundant: the snapshot file
//! (durable before anything names it), the `Compacted` marker, and the
//! deletion of whole segments and older snapshot files once the marker is
//! durable.

use ferrite_raft::Snapshot;
use tracing::{debug, warn};

use super::{check_value, Wal};
use crate::codec::{self, MarkKind, SnapshotMark};
use crate::disk::{join, Disk};
use crate::error::WalError;
use crate::record::{Framer, RecordType};
use crate::snapshot_file;

impl<D: Disk> Wal<D> {
    /// Records a snapshot taken locally at `snapshot.meta.index`: the
    /// snapshot file is made durable (temporary name, sync, rename, directory
    /// sync), then a `Compacted` marker that drops the entries up to the
    /// index is synced (together with anything written before), then
    /// segments holding nothing newer and older snapshot files are deleted.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        self.check_poisoned()?;
        check_snapshot_values(snapshot)?;
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if let Some((current, _)) = self.snapshot.filter(|(i, _)| index <= *i) {
            return Err(WalError::StaleSnapshot { index, current });
        }
        if let Some(log_term) = self.term_at(index).filter(|t| *t != term) {
            return Err(WalError::SnapshotConflict {
                index,
                term,
                log_term,
            });
        }
        let written = self.write_compaction(snapshot);
        written.map_err(|e| self.poison(e))?;
        self.sync()
    }

    pub(super) fn write_compaction(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        self.write_snapshot_file(snapshot)?;
        self.maybe_roll()?;
        let mark = SnapshotMark {
            kind: MarkKind::Compacted,
            index,
            term,
        };
        let seq = self.last_seq();
        let base = self.segments.get(&seq).map_or(0, |s| s.len);
        let mut buf = std::mem::take(&mut self.buf);
        let mut framer = Framer::new(&mut buf, base);
        framer.push(RecordType::SnapshotMark, |b| codec::encode_mark(b, &mark));
        framer.finish();
        let appended = self.append(seq, &buf);
        self.buf = buf;
        appended?;

        let covered =
            (index.distance_from(self.snapshot_index()) as usize).min(self.positions.len());
        self.positions.drain(..covered);
        self.snapshot = Some((index, term));
        self.cleanup_due = true;
        Ok(())
    }

    /// Writes a snapshot file durably under its final name.
    pub(super) fn write_snapshot_file(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        let (tmp, path) = snapshot_file::write_unsynced(&mut self.disk, &self.dir, snapshot)?;
        snapshot_file::publish(&mut self.disk, &tmp, &path)?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(WalError::io(&self.dir, "sync directory"))?;
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        self.snapshot_files
            .insert(snapshot_file::snapshot_name(index, term));
        Ok(())
    }

    /// Deletes what the durable snapshot made redundant: the oldest segments
    /// while every entry in them is covered (or they precede the latest
    /// installed snapshot), and every snapshot file but the latest. Called
    /// only right after a successful sync, so the records that make them
    /// redundant are durable. Deletions need not be durable: files that come
    /// back after a crash are redundant still. Failures are logged and
    /// retried after the next snapshot.
    pub(super) fn drop_obsolete(&mut self) {
        let Some((floor, term)) = self.snapshot else {
            self.cleanup_due = false;
            return;
        };
        let last = self.last_seq();
        let dead: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, info)| {
                **seq != last
                    && (info.entry_index_max <= floor
                        || self.installed_seq.is_some_and(|s| **seq < s))
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in dead {
            let path = self.segment_path(seq);
            if let Err(e) = self.disk.remove(&path) {
                warn!(file = %path, error = %e, "could not delete an obsolete segment");
                return;
            }
            debug!(file = %path, "deleted an obsolete segment");
            self.segments.remove(&seq);
        }
        let current = snapshot_file::snapshot_name(floor, term);
        let old: Vec<String> = self
            .snapshot_files
            .iter()
            .filter(|n| **n != current)
            .cloned()
            .collect();
        for name in old {
            let path = join(&self.dir, &name);
            if let Err(e) = self.disk.remove(&path) {
                warn!(file = %path, error = %e, "could not delete an old snapshot file");
                return;
            }
            self.snapshot_files.remove(&name);
        }
        self.cleanup_due = false;
    }
}

pub(super) fn check_snapshot_values(s: &Snapshot) -> Result<(), WalError> {
    check_value("snapshot index", s.meta.index.0)?;
    check_value("snapshot term", s.meta.term.0)?;
    s.meta
        .membership
        .members()
        .try_for_each(|id| check_value("node id", id.0))
}
