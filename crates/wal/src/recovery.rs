//! Recovery: from the files in a data directory back to the durable Raft
//! state, exactly as it was last made durable (plus, possibly, batches that
//! were written but not yet synced when the process died).
//!
//! Each segment is scanned record by record. Records are grouped into
//! batches (see `record.rs`); only complete batches count. Then:
//!
//! - A damaged record, or an unfinished batch, at the end of the **last**
//!   segment is a torn tail, the normal result of a crash during a write: it
//!   is cut off (the file is truncated) and logged. It is a torn tail only if
//!   no intact record follows the damage anywhere in the file; otherwise the
//!   damage is in the middle of data that was once written completely, and
//!   recovery refuses with an error naming the file and offset.
//! - Damage in any other segment is always an error: segments before the
//!   last were synced before the next one was created.
//!
//! Zeros after the last complete batch are preallocated room, not damage.
//! Replay then rebuilds the log from the batches (see `replay`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ferrite_raft::{DurableState, Entry, HardState, Index, Term};
use tracing::{info, warn};

use crate::codec::{self, MarkKind, SnapshotMark};
use crate::disk::{join, Disk};
use crate::error::WalError;
use crate::record::{self, RecordType};
use crate::segment::{self, HeaderError, SEGMENT_HEADER_BYTES};
use crate::snapshot_file::{self, TMP_SUFFIX};

/// Where the bytes of a crash-interrupted write were cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    /// The new length of the file: everything from here on was dropped.
    pub offset: u64,
    pub bytes_cut: u64,
}

/// Where one entry's record lives on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub term: Term,
    pub seq: u64,
    pub offset: u64,
    /// The whole record, header included.
    pub len: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub len: u64,
    /// The highest entry index ever written to this segment (0 if none):
    /// once the snapshot covers it, nothing in the segment is needed.
    pub entry_index_max: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Cut torn tails and remove leftover files: what `Wal::open` does.
    Repair,
    /// Change nothing: what `ferrite-wal verify` does.
    ReadOnly,
}

/// Counts for `ferrite-wal verify`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    pub segments: usize,
    pub records: u64,
    pub batches: u64,
    pub bytes: u64,
}

pub(crate) struct Recovery {
    pub segments: BTreeMap<u64, SegmentInfo>,
    pub positions: VecDeque<Position>,
    pub snapshot_id: Option<(Index, Term)>,
    /// The segment holding the latest `Installed` marker still on disk.
    pub installed_seq: Option<u64>,
    pub durable: DurableState,
    pub torn_tail: Option<TornTail>,
    /// The last segment holds no complete batch (not even its head), so it
    /// must be rewritten before use.
    pub last_needs_head: bool,
    /// Snapshot file names present after recovery.
    pub snapshot_files: BTreeSet<String>,
    pub stats: RecoveryStats,
}

enum Event {
    Entry(Entry, Position),
    HardState(HardState),
    Mark(SnapshotMark, u64),
}

struct Scanned {
    events: Vec<Event>,
    segments: BTreeMap<u64, SegmentInfo>,
    torn_tail: Option<TornTail>,
    last_needs_head: bool,
    stats: RecoveryStats,
}

pub(crate) fn recover<D: Disk>(disk: &mut D, dir: &str, mode: Mode) -> Result<Recovery, WalError> {
    let names = disk.list_dir(dir).map_err(WalError::io(dir, "list"))?;
    let mut seqs = Vec::new();
    let mut snapshots: BTreeMap<String, (Index, Term)> = BTreeMap::new();
    for name in names {
        if let Some(seq) = segment::parse_segment_name(&name) {
            seqs.push(seq);
        } else if let Some(id) = snapshot_file::parse_snapshot_name(&name) {
            snapshots.insert(name, id);
        } else if name.ends_with(TMP_SUFFIX) && mode == Mode::Repair {
            // A snapshot that was being written when the process died.
            let path = join(dir, &name);
            disk.remove(&path).map_err(WalError::io(&path, "remove"))?;
        }
    }
    seqs.sort_unstable();
    if seqs.is_empty() {
        if !snapshots.is_empty() {
            return Err(WalError::inconsistent(
                dir,
                "snapshot files but no log segments",
            ));
        }
        return Ok(empty());
    }
    for pair in seqs.windows(2) {
        if pair[0].checked_add(1) != Some(pair[1]) {
            return Err(WalError::inconsistent(
                dir,
                format!(
                    "segment {} is missing",
                    segment::segment_name(pair[0].saturating_add(1))
                ),
            ));
        }
    }

    let scanned = scan_segments(disk, dir, &seqs, mode)?;
    let mut rec = replay(dir, scanned)?;

    if let Some((index, term)) = rec.snapshot_id {
        let name = snapshot_file::snapshot_name(index, term);
        if !snapshots.contains_key(&name) {
            return Err(WalError::inconsistent(
                dir,
                format!("the log names snapshot file {name}, which is missing"),
            ));
        }
        let path = join(dir, &name);
        let snapshot = snapshot_file::read(disk, &path)?;
        if (snapshot.meta.index, snapshot.meta.term) != (index, term) {
            return Err(WalError::corrupt(
                &path,
                0,
                format!(
                    "holds the snapshot at ({}, term {}), not the one its name says",
                    snapshot.meta.index, snapshot.meta.term
                ),
            ));
        }
        rec.durable.snapshot = Some(snapshot);
    }
    // Files of older snapshots (their removal was not durable yet) and of
    // newer ones whose log record never became durable.
    let current = rec
        .snapshot_id
        .map(|(i, t)| snapshot_file::snapshot_name(i, t));
    for name in snapshots.into_keys() {
        if Some(&name) == current.as_ref() {
            rec.snapshot_files.insert(name);
        } else if mode == Mode::Repair {
            let path = join(dir, &name);
            disk.remove(&path).map_err(WalError::io(&path, "remove"))?;
        } else {
            rec.snapshot_files.insert(name);
        }
    }
    info!(
        dir,
        segments = rec.stats.segments,
        records = rec.stats.records,
        snapshot = rec.snapshot_id.map(|(i, _)| i.0),
        entries = rec.durable.entries.len(),
        "recovered the log"
    );
    Ok(rec)
}

fn empty() -> Recovery {
    Recovery {
        segments: BTreeMap::new(),
        positions: VecDeque::new(),
        snapshot_id: None,
        installed_seq: None,
        durable: DurableState::default(),
        torn_tail: None,
        last_needs_head: false,
        snapshot_files: BTreeSet::new(),
        stats: RecoveryStats::default(),
    }
}

fn scan_segments<D: Disk>(
    disk: &mut D,
    dir: &str,
    seqs: &[u64],
    mode: Mode,
) -> Result<Scanned, WalError> {
    let mut out = Scanned {
        events: Vec::new(),
        segments: BTreeMap::new(),
        torn_tail: None,
        last_needs_head: false,
        stats: RecoveryStats::default(),
    };
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        scan_segment(disk, dir, seq, is_last, mode, &mut out)?;
    }
    Ok(out)
}

fn scan_segment<D: Disk>(
    disk: &mut D,
    dir: &str,
    seq: u64,
    is_last: bool,
    mode: Mode,
    out: &mut Scanned,
) -> Result<(), WalError> {
    let path = join(dir, &segment::segment_name(seq));
    let buf = segment::read_whole(disk, &path)?;
    let len = buf.len() as u64;
    let scan = segment::scan(&buf, seq);

    let damage = match scan.header {
        Err(HeaderError::Foreign(why)) => return Err(WalError::corrupt(&path, 0, why)),
        Err(HeaderError::Damaged(why)) => Some((0, format!("segment header {why}"))),
        Ok(()) => scan.damage.map(|(offset, e)| (offset, e.to_string())),
    };

    let mut info = SegmentInfo::default();
    let mut batch = Vec::new();
    let mut batch_start = SEGMENT_HEADER_BYTES as u64;
    let mut committed_end = if damage.as_ref().is_some_and(|d| d.0 == 0) {
        0
    } else {
        SEGMENT_HEADER_BYTES as u64
    };
    let mut batches = 0u64;
    for &(offset, frame) in &scan.frames {
        if batch.is_empty() {
            batch_start = offset;
        }
        let payload = frame.payload(&buf);
        let undecodable = |e: codec::CodecError| {
            WalError::corrupt(&path, offset, format!("intact record does not decode: {e}"))
        };
        batch.push(match frame.rtype {
            RecordType::Entry => {
                let entry = codec::decode_entry(payload).map_err(undecodable)?;
                let position = Position {
                    term: entry.term,
                    seq,
                    offset,
                    len: (frame.end - offset as usize) as u32,
                };
                Event::Entry(entry, position)
            }
            RecordType::HardState => {
                Event::HardState(codec::decode_hard_state(payload).map_err(undecodable)?)
            }
            RecordType::SnapshotMark => {
                Event::Mark(codec::decode_mark(payload).map_err(undecodable)?, seq)
            }
        });
        out.stats.records += 1;
        if frame.is_batch_end() {
            for event in batch.drain(..) {
                if let Event::Entry(e, _) = &event {
                    info.entry_index_max = info.entry_index_max.max(e.index);
                }
                out.events.push(event);
            }
            committed_end = frame.end as u64;
            batches += 1;
        }
    }

    // Preallocated space: zeros from the end of the last complete batch to
    // the end of the file are unused room, not damage. (A segment that is
    // not the last always has its header.)
    let zero_tail = damage.as_ref().is_some_and(|(offset, _)| {
        *offset == committed_end
            && batch.is_empty()
            && (committed_end > 0 || is_last)
            && buf[*offset as usize..].iter().all(|b| *b == 0)
    });
    let damage = if zero_tail { None } else { damage };
    let logical_len = if zero_tail { committed_end } else { len };

    let tail_start = match (damage, batch.is_empty()) {
        (None, true) => None,
        (Some((offset, why)), _) if !is_last => {
            return Err(WalError::corrupt(
                &path,
                offset,
                format!("{why} (not the last segment, so this is not a torn write)"),
            ));
        }
        (None, false) if !is_last => {
            return Err(WalError::corrupt(
                &path,
                batch_start,
                "batch without its end in a segment that is not the last",
            ));
        }
        (Some((offset, why)), _) => {
            if let Some(valid) = record::find_valid_after(&buf, offset as usize, 0) {
                return Err(WalError::corrupt(
                    &path,
                    offset,
                    format!(
                        "{why}; an intact record follows at offset {valid}, so this is \
                         damage in the middle of the log, not a torn write"
                    ),
                ));
            }
            Some(committed_end)
        }
        (None, false) => Some(committed_end),
    };
    // A last segment without even its head batch was cut short while being
    // created: also a torn write, if an empty one.
    let tail_start = tail_start.or((is_last && batches == 0).then_some(committed_end));
    info.len = logical_len;
    if let Some(cut) = tail_start {
        let torn = TornTail {
            file: path.clone(),
            offset: cut,
            bytes_cut: logical_len - cut,
        };
        warn!(
            file = %torn.file,
            offset = torn.offset,
            bytes_cut = torn.bytes_cut,
            "cutting off a torn tail: a write was interrupted by a crash before it was synced"
        );
        if mode == Mode::Repair {
            disk.truncate(&path, cut)
                .map_err(WalError::io(&path, "truncate"))?;
            disk.sync_data(&path)
                .map_err(WalError::io(&path, "fdatasync"))?;
        }
        info.len = cut;
        out.torn_tail = Some(torn);
    }
    out.last_needs_head = is_last && batches == 0;
    out.stats.segments += 1;
    out.stats.batches += batches;
    out.stats.bytes += info.len;
    out.segments.insert(seq, info);
    Ok(())
}

/// Rebuilds the log from the batches, in order.
///
/// Entries are appended, and an entry at an index already in the log
/// replaces it and everything after (a conflicting suffix was truncated).
/// `Installed` drops every entry; `Compacted` and `Carried` drop the entries
/// up to their index.
///
/// Old segments may have been deleted, so the replay cannot start from an
/// empty log at index 1. It uses the final snapshot index `floor` instead:
/// entries at or below it are covered by the snapshot, so such a record only
/// means "everything after the floor is gone" (it would have truncated them),
/// and entries above it must continue the run that starts at `floor + 1`.
/// Segments are deleted only while every entry in them is at or below the
/// snapshot (or they precede the latest `Installed` marker, where replay
/// starts), so the deleted records could only have had that same effect.
fn replay(dir: &str, scanned: Scanned) -> Result<Recovery, WalError> {
    let Scanned {
        events,
        segments,
        torn_tail,
        last_needs_head,
        stats,
    } = scanned;
    let final_mark = events.iter().rev().find_map(|e| match e {
        Event::Mark(m, _) => Some(*m),
        _ => None,
    });
    let hard_state = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::HardState(hs) => Some(*hs),
            _ => None,
        })
        .unwrap_or_default();
    let start = events
        .iter()
        .rposition(|e| matches!(e, Event::Mark(m, _) if m.kind == MarkKind::Installed));
    let installed_seq = start.and_then(|i| match &events[i] {
        Event::Mark(_, seq) => Some(*seq),
        _ => None,
    });
    let floor = final_mark.map_or(Index::ZERO, |m| m.index);

    let mut run: Vec<(Entry, Position)> = Vec::new();
    for event in events.into_iter().skip(start.unwrap_or(0)) {
        match event {
            Event::Entry(entry, _) if entry.index <= floor => run.clear(),
            Event::Entry(entry, pos) => {
                let last = floor + run.len() as u64;
                if entry.index > last.next() {
                    let file = join(dir, &segment::segment_name(pos.seq));
                    return Err(WalError::corrupt(
                        &file,
                        pos.offset,
                        format!("entry {} leaves a gap after entry {last}", entry.index),
                    ));
                }
                run.truncate(entry.index.distance_from(floor) as usize - 1);
                run.push((entry, pos));
            }
            Event::Mark(mark, _) if mark.kind == MarkKind::Installed => run.clear(),
            Event::Mark(..) | Event::HardState(_) => {}
        }
    }

    let snapshot_term = final_mark.map_or(Term::ZERO, |m| m.term);
    check_consistent(dir, &run, floor, snapshot_term, &hard_state)?;
    let (entries, positions): (Vec<Entry>, VecDeque<Position>) = run.into_iter().unzip();
    Ok(Recovery {
        segments,
        positions,
        snapshot_id: final_mark.map(|m| (m.index, m.term)),
        installed_seq,
        durable: DurableState {
            hard_state,
            snapshot: None,
            entries,
        },
        torn_tail,
        last_needs_head,
        snapshot_files: BTreeSet::new(),
        stats,
    })
}

/// What `Raft::new` will demand of the durable state, checked here so that
/// the error names the directory rather than surfacing as a Raft error.
fn check_consistent(
    dir: &str,
    run: &[(Entry, Position)],
    floor: Index,
    snapshot_term: Term,
    hs: &HardState,
) -> Result<(), WalError> {
    let mut term = snapshot_term;
    for (entry, _) in run {
        if entry.term < term {
            return Err(WalError::inconsistent(
                dir,
                format!(
                    "term goes backwards at entry {} ({} after {term})",
                    entry.index, entry.term
                ),
            ));
        }
        term = entry.term;
    }
    let last = floor + run.len() as u64;
    if hs.term < term {
        return Err(WalError::inconsistent(
            dir,
            format!(
                "hard state term {} is older than the log's last term {term}",
                hs.term
            ),
        ));
    }
    if hs.commit > last {
        return Err(WalError::inconsistent(
            dir,
            format!("commit index {} is beyond the last entry {last}", hs.commit),
        ));
    }
    Ok(())
}
