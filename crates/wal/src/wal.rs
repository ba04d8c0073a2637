//! The write-ahead log: the durable copy of a Raft node's log, hard state
//! and latest snapshot.
//!
//! Writes append records to the last segment and are made durable together
//! by one `fdatasync` in `sync` (group commit). Truncation of a conflicting
//! suffix is itself an append (an entry at an index already in the log
//! replaces it and everything after on replay), so the files are never
//! rewritten in place. Entries stay on disk; memory holds only where each
//! one is. Old segments are deleted once a snapshot covers them.
//!
//! Durability order, which recovery relies on:
//! - a snapshot file is complete and durable under its final name before any
//!   record naming it is durable;
//! - a segment is synced before the next one is created, so only the last
//!   segment can have a torn tail;
//! - every segment starts with the hard state and the snapshot marker in
//!   force, so the last segment alone knows both and older ones can go.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;

use ferrite_raft::{Entry, HardState, Index, Persist, Term};
use tracing::{debug, error, info};

use crate::codec::{self, MarkKind, SnapshotMark};
use crate::disk::{join, normalize_dir, Disk};
use crate::error::WalError;
use crate::record::{Framer, RecordType, PAYLOAD_BYTES_MAX};
use crate::recovery::{self, Mode, Position, SegmentInfo, TornTail};
use crate::segment::{self, SEGMENT_HEADER_BYTES};

mod compaction;
mod read;
mod spare;

use compaction::check_snapshot_values;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment that has reached this size is closed and a new one started
    /// at the next write. Smaller segments let compaction free space sooner;
    /// larger ones mean fewer files. A single write may exceed it.
    pub segment_bytes_max: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes_max: 64 << 20,
        }
    }
}

/// What `Wal::open` found.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Exactly what `ferrite_raft::Raft::new` accepts: the latest snapshot
    /// with its data, and every entry after it, contiguous.
    pub durable: ferrite_raft::DurableState,
    /// Set when the end of the last segment was a crash-interrupted write
    /// and was cut off. Normal after a crash; worth a log line.
    pub torn_tail: Option<TornTail>,
}

pub struct Wal<D: Disk> {
    disk: D,
    dir: String,
    options: WalOptions,
    /// Invariant: never empty after `open`; appends go to the last one.
    segments: BTreeMap<u64, SegmentInfo>,
    /// Invariant: `positions[i]` locates entry `snapshot_index + 1 + i`.
    positions: VecDeque<Position>,
    snapshot: Option<(Index, Term)>,
    /// The segment with the latest `Installed` marker: every segment before
    /// it is dead once that marker is durable.
    installed_seq: Option<u64>,
    hard_state: HardState,
    /// Segments with appends not yet synced.
    unsynced: BTreeSet<u64>,
    /// A segment was created since the last directory sync.
    dir_dirty: bool,
    /// The disk was asked to preallocate the next segment.
    spare_requested: bool,
    /// A newer snapshot exists: once it is durable, older segments and
    /// snapshot files can be deleted.
    cleanup_due: bool,
    snapshot_files: BTreeSet<String>,
    poisoned: Option<String>,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

impl<D: Disk> Wal<D> {
    /// Opens (creating if empty) the WAL in `dir`, takes the directory lock,
    /// and recovers. Whatever is returned is durable: the last segment is
    /// synced before `open` returns, in case the previous process died
    /// before syncing what it wrote.
    pub fn open(
        mut disk: D,
        dir: &str,
        options: WalOptions,
    ) -> Result<(Wal<D>, Recovered), WalError> {
        let dir = normalize_dir(dir);
        disk.create_dir(&dir)
            .map_err(WalError::io(&dir, "create directory"))?;
        match disk.lock_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(WalError::Locked { dir })
            }
            Err(e) => return Err(WalError::io(&dir, "lock")(e)),
        }
        let rec = match recovery::recover(&mut disk, &dir, Mode::Repair) {
            Ok(rec) => rec,
            Err(e) => {
                disk.unlock_dir(&dir);
                return Err(e);
            }
        };
        let mut wal = Wal {
            disk,
            dir,
            options,
            segments: rec.segments,
            positions: rec.positions,
            snapshot: rec.snapshot_id,
            installed_seq: rec.installed_seq,
            hard_state: rec.durable.hard_state,
            unsynced: BTreeSet::new(),
            dir_dirty: false,
            spare_requested: false,
            cleanup_due: true,
            snapshot_files: rec.snapshot_files,
            poisoned: None,
            buf: Vec::new(),
        };
        if let Err(e) = wal.finish_open(rec.last_needs_head) {
            let dir = wal.dir.clone();
            wal.disk.unlock_dir(&dir);
            return Err(e);
        }
        info!(
            dir = %wal.dir,
            first = wal.first_index().0,
            last = wal.last_index().0,
            segments = wal.segments.len(),
            "wal open"
        );
        let recovered = Recovered {
            durable: rec.durable,
            torn_tail: rec.torn_tail,
        };
        Ok((wal, recovered))
    }

    fn finish_open(&mut self, last_needs_head: bool) -> Result<(), WalError> {
        match self.segments.last_key_value().map(|(seq, _)| *seq) {
            None => {
                // A new log: its first segment is preallocated too (waiting
                // for it here, at startup, rather than in the write path).
                self.request_spare();
                self.start_segment(1)?;
            }
            Some(seq) if last_needs_head => {
                // Nothing complete survived in it, not even its head: rewrite.
                self.segments.remove(&seq);
                self.start_segment(seq)?;
            }
            Some(seq) => {
                let path = self.segment_path(seq);
                self.disk.open(&path).map_err(WalError::io(&path, "open"))?;
                self.unsynced.insert(seq);
            }
        }
        self.dir_dirty = true;
        self.sync()
    }

    /// Queues the records of one `Persist` in the order the Raft contract
    /// gives (installed snapshot, entries, hard state) without syncing; call
    /// `sync` to make them durable. Several writes form one batch.
    ///
    /// An installed snapshot drops every entry. Its file is made durable
    /// here (temporary name, sync, rename, directory sync) before the record
    /// naming it is appended: unsynced appends can reach the disk at any
    /// time, and a log that names a missing snapshot file is unrecoverable.
    /// Installs are rare, so the extra syncs do not matter.
    ///
    /// Entries replace any entries at or after `entries[0].index`; entries
    /// at or below the snapshot index are already covered by it and skipped.
    /// Recovery applies a write entirely or not at all. Starting a new
    /// segment syncs the one before it.
    pub fn write(&mut self, persist: &Persist) -> Result<(), WalError> {
        self.check_poisoned()?;
        if persist.is_empty() {
            return Ok(());
        }
        let entries = self.entries_to_write(persist)?;
        self.maybe_roll()?;
        let result = self.append_persist(persist, entries);
        result.map_err(|e| self.poison(e))
    }

    /// Validates the entries of a persist before anything touches the disk
    /// and returns those not covered by the snapshot.
    fn entries_to_write<'p>(&self, persist: &'p Persist) -> Result<&'p [Entry], WalError> {
        let (snapshot_index, last) = match &persist.snapshot {
            // Snapshots only move forward; recovery and compaction rely on it.
            Some(s) if self.snapshot.is_some() && s.meta.index <= self.snapshot_index() => {
                return Err(WalError::StaleSnapshot {
                    index: s.meta.index,
                    current: self.snapshot_index(),
                });
            }
            Some(s) => (s.meta.index, s.meta.index),
            None => (self.snapshot_index(), self.last_index()),
        };
        check_value(
            "hard state term",
            persist.hard_state.map_or(0, |h| h.term.0),
        )?;
        check_value("commit index", persist.hard_state.map_or(0, |h| h.commit.0))?;
        check_value(
            "vote",
            persist.hard_state.and_then(|h| h.vote).map_or(0, |v| v.0),
        )?;
        if let Some(s) = &persist.snapshot {
            check_snapshot_values(s)?;
        }
        let mut prev: Option<Index> = None;
        for e in &persist.entries {
            check_value("entry index", e.index.0)?;
            check_value("entry term", e.term.0)?;
            if let Some(p) = prev.filter(|p| e.index != p.next()) {
                return Err(WalError::NotContiguous {
                    index: e.index,
                    prev: p,
                });
            }
            prev = Some(e.index);
            let bytes = codec::entry_len(e);
            if bytes > PAYLOAD_BYTES_MAX {
                return Err(WalError::TooLarge {
                    what: "entry",
                    bytes,
                    limit: PAYLOAD_BYTES_MAX,
                });
            }
        }
        let skip = persist
            .entries
            .iter()
            .take_while(|e| e.index <= snapshot_index)
            .count();
        let entries = &persist.entries[skip..];
        if let Some(first) = entries.first().filter(|f| f.index > last.next()) {
            return Err(WalError::Gap {
                index: first.index,
                last,
            });
        }
        Ok(entries)
    }

    fn append_persist(&mut self, persist: &Persist, entries: &[Entry]) -> Result<(), WalError> {
        if let Some(s) = &persist.snapshot {
            self.write_snapshot_file(s)?;
        }
        let seq = self.last_seq();
        let base = self.segments.get(&seq).map_or(0, |s| s.len);
        let mut buf = std::mem::take(&mut self.buf);
        let mut framer = Framer::new(&mut buf, base);
        let mut positions = Vec::with_capacity(entries.len());
        if let Some(s) = &persist.snapshot {
            let mark = SnapshotMark {
                kind: MarkKind::Installed,
                index: s.meta.index,
                term: s.meta.term,
            };
            framer.push(RecordType::SnapshotMark, |b| codec::encode_mark(b, &mark));
        }
        for e in entries {
            let (offset, len) = framer.push(RecordType::Entry, |b| codec::encode_entry(b, e));
            positions.push(Position {
                term: e.term,
                seq,
                offset,
                len,
            });
        }
        if let Some(hs) = &persist.hard_state {
            framer.push(RecordType::HardState, |b| codec::encode_hard_state(b, hs));
        }
        framer.finish();
        let appended = self.append(seq, &buf);
        self.buf = buf;
        appended?;

        if let Some(s) = &persist.snapshot {
            self.positions.clear();
            self.snapshot = Some((s.meta.index, s.meta.term));
            self.installed_seq = Some(seq);
            self.cleanup_due = true;
        }
        if let Some(first) = entries.first() {
            let keep = first.index.distance_from(self.snapshot_index()) as usize - 1;
            self.positions.truncate(keep);
            self.positions.extend(positions);
            if let (Some(info), Some(last)) = (self.segments.get_mut(&seq), entries.last()) {
                info.entry_index_max = info.entry_index_max.max(last.index);
            }
        }
        if let Some(hs) = persist.hard_state {
            self.hard_state = hs;
        }
        Ok(())
    }

    /// Makes everything written since the last sync durable with one
    /// `fdatasync` of the last segment (plus a directory sync after a new
    /// segment was started). On failure the Wal is poisoned:
    /// after a failed `fdatasync` the kernel may have dropped the data, and
    /// retrying would report success for writes that are gone.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        if self.unsynced.is_empty() && !self.dir_dirty {
            return Ok(());
        }
        self.sync_all().map_err(|e| self.poison(e))?;
        if self.cleanup_due {
            self.drop_obsolete();
        }
        Ok(())
    }

    fn sync_all(&mut self) -> Result<(), WalError> {
        if self.dir_dirty {
            self.disk
                .sync_dir(&self.dir)
                .map_err(WalError::io(&self.dir, "sync directory"))?;
            self.dir_dirty = false;
        }
        while let Some(seq) = self.unsynced.pop_first() {
            let path = self.segment_path(seq);
            self.disk
                .sync_data(&path)
                .map_err(WalError::io(&path, "fdatasync"))?;
        }
        Ok(())
    }

    /// The first index the log holds (one past the snapshot), even when the
    /// log is empty.
    pub fn first_index(&self) -> Index {
        self.snapshot_index().next()
    }

    /// The last entry's index, or the snapshot's when there is no entry.
    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.positions.len() as u64
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The latest snapshot's `(index, term)`, if any was ever written.
    /// The current snapshot, read back from its file: on real files a
    /// memory map (`Disk::map`), so that whoever holds it (the Raft core,
    /// to send it to followers) holds page cache, not heap.
    pub fn map_snapshot(&self) -> Result<Option<ferrite_raft::Snapshot>, WalError> {
        let Some((index, term)) = self.snapshot else {
            return Ok(None);
        };
        let path = crate::disk::join(&self.dir, &crate::snapshot_file::snapshot_name(index, term));
        crate::snapshot_file::read(&self.disk, &path).map(Some)
    }

    pub fn snapshot_id(&self) -> Option<(Index, Term)> {
        self.snapshot
    }

    /// The term of the entry at `index`, or of the snapshot at its index.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        match self.snapshot {
            Some((i, t)) if i == index => return Some(t),
            _ => {}
        }
        if index < self.first_index() {
            return None;
        }
        let offset = index.distance_from(self.snapshot_index()) as usize - 1;
        self.positions.get(offset).map(|p| p.term)
    }

    /// The segment that takes appends and its logical length (the file may
    /// be longer: preallocated zeros). For tests and tools.
    pub fn write_position(&self) -> (String, u64) {
        let seq = self.last_seq();
        let len = self.segments.get(&seq).map_or(0, |s| s.len);
        (self.segment_path(seq), len)
    }

    /// How many segment files the log spans (for tests and status pages).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The disk, for inspection (tests, the simulator's bookkeeping).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The disk, for fault injection (`MemDisk::fail_next_sync`). Changing
    /// files behind the Wal's back corrupts the log.
    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }

    /// The data directory, as normalized by `open`.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Gives the disk back and releases the directory lock; the simulator
    /// keeps its `MemDisk` across crashes this way. Unsynced writes stay
    /// unsynced: a crash of the disk may still lose them.
    pub fn into_disk(mut self) -> D {
        self.disk.unlock_dir(&self.dir);
        self.disk
    }

    // ---- Internals -------------------------------------------------------

    fn snapshot_index(&self) -> Index {
        self.snapshot.map_or(Index::ZERO, |(i, _)| i)
    }

    fn last_seq(&self) -> u64 {
        self.segments.last_key_value().map_or(0, |(seq, _)| *seq)
    }

    fn segment_path(&self, seq: u64) -> String {
        join(&self.dir, &segment::segment_name(seq))
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(reason) => Err(WalError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: WalError) -> WalError {
        error!(dir = %self.dir, error = %e, "wal poisoned: refusing all further calls");
        self.poisoned = Some(e.to_string());
        e
    }

    /// Writes at the segment's logical end, which may lie inside
    /// preallocated zeros.
    fn append(&mut self, seq: u64, bytes: &[u8]) -> Result<(), WalError> {
        let path = self.segment_path(seq);
        let end = self.segments.get(&seq).map_or(0, |s| s.len);
        self.disk
            .write_at(&path, end, bytes)
            .map_err(WalError::io(&path, "write"))?;
        if let Some(info) = self.segments.get_mut(&seq) {
            info.len += bytes.len() as u64;
        }
        self.unsynced.insert(seq);
        if end + bytes.len() as u64 >= self.options.segment_bytes_max / 2 {
            self.request_spare();
        }
        Ok(())
    }

    /// Starts a new segment once the current one is full. The full one is
    /// synced first, so that no segment but the last can ever be torn.
    fn maybe_roll(&mut self) -> Result<(), WalError> {
        let seq = self.last_seq();
        let full = self
            .segments
            .get(&seq)
            .is_some_and(|s| s.len >= self.options.segment_bytes_max);
        if !full {
            return Ok(());
        }
        let result = self.roll(seq);
        result.map_err(|e| self.poison(e))
    }

    fn roll(&mut self, seq: u64) -> Result<(), WalError> {
        if self.unsynced.remove(&seq) {
            let path = self.segment_path(seq);
            self.disk
                .sync_data(&path)
                .map_err(WalError::io(&path, "fdatasync"))?;
        }
        // Sequence numbers on disk stay below `VALUE_MAX`.
        let next = seq + 1;
        debug!(dir = %self.dir, seq = next, "starting a new segment");
        self.start_segment(next)
    }

    /// Creates segment `seq` with its header and head batch: the hard state
    /// and the snapshot marker in force, so that this segment alone carries
    /// them once older segments are deleted.
    fn start_segment(&mut self, seq: u64) -> Result<(), WalError> {
        let path = self.segment_path(seq);
        if !self.take_spare(&path)? {
            self.disk
                .create(&path)
                .map_err(WalError::io(&path, "create"))?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut head = Vec::new();
        let mut framer = Framer::new(&mut head, SEGMENT_HEADER_BYTES as u64);
        let hs = self.hard_state;
        framer.push(RecordType::HardState, |b| codec::encode_hard_state(b, &hs));
        if let Some((index, term)) = self.snapshot {
            let mark = SnapshotMark {
                kind: MarkKind::Carried,
                index,
                term,
            };
            framer.push(RecordType::SnapshotMark, |b| codec::encode_mark(b, &mark));
        }
        framer.finish();
        buf.extend_from_slice(&segment::encode_header(seq));
        buf.extend_from_slice(&head);
        self.segments.insert(seq, SegmentInfo::default());
        self.dir_dirty = true;
        let appended = self.append(seq, &buf);
        self.buf = buf;
        appended
    }
}

fn check_value(what: &'static str, value: u64) -> Result<(), WalError> {
    if value >= codec::VALUE_MAX {
        return Err(WalError::ValueOutOfRange { what, value });
    }
    Ok(())
}
