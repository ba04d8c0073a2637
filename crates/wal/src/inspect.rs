//! What `ferrite-wal inspect` and `ferrite-wal verify` print: a record-level
//! dump of a data directory, and a read-only recovery with a summary. Both
//! read through the same scanning code as recovery, so what they report is
//! what a node would see.

use std::fmt::{self, Write as _};

use ferrite_raft::{HardState, Index, Term};

use crate::codec::{self, MarkKind};
use crate::disk::{join, Disk};
use crate::error::WalError;
use crate::record::RecordType;
use crate::recovery::{self, Mode, RecoveryStats, TornTail};
use crate::segment;
use crate::snapshot_file;

/// A run of consecutive entry records, printed as one line.
struct EntryRun {
    offset: u64,
    first: Index,
    last: Index,
    term_first: Term,
    term_last: Term,
    count: u64,
    bytes: u64,
    batch_end: bool,
}

impl EntryRun {
    fn print(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  {:>12}  entries     {}..={} terms {}..={} ({} records, {} bytes){}",
            self.offset,
            self.first,
            self.last,
            self.term_first,
            self.term_last,
            self.count,
            self.bytes,
            if self.batch_end { "  [batch end]" } else { "" }
        );
    }
}

/// A human-readable dump of every segment and snapshot file in `dir`. Does
/// not take the directory lock and changes nothing; damage is reported in
/// the dump, not as an error.
pub fn inspect<D: Disk>(disk: &D, dir: &str) -> Result<String, WalError> {
    let mut out = String::new();
    let names = disk.list_dir(dir).map_err(WalError::io(dir, "list"))?;
    for name in &names {
        if let Some(seq) = segment::parse_segment_name(name) {
            inspect_segment(disk, dir, name, seq, &mut out)?;
        }
    }
    for name in &names {
        if snapshot_file::parse_snapshot_name(name).is_some() {
            let path = join(dir, name);
            match snapshot_file::read(disk, &path) {
                Ok(s) => {
                    let ids = |set: &std::collections::BTreeSet<ferrite_raft::NodeId>| {
                        set.iter()
                            .map(|id| id.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let _ = writeln!(
                        out,
                        "snapshot file {name}: index={} term={} voters=[{}] learners=[{}] data={} bytes, checksum ok",
                        s.meta.index,
                        s.meta.term,
                        ids(&s.meta.membership.voters),
                        ids(&s.meta.membership.learners),
                        s.data.len()
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "snapshot file {name}: BAD: {e}");
                }
            }
        } else if segment::parse_segment_name(name).is_none() {
            let _ = writeln!(out, "other file {name}");
        }
    }
    if out.is_empty() {
        out.push_str("empty directory: no segments, no snapshots\n");
    }
    Ok(out)
}

fn inspect_segment<D: Disk>(
    disk: &D,
    dir: &str,
    name: &str,
    seq: u64,
    out: &mut String,
) -> Result<(), WalError> {
    let path = join(dir, name);
    let buf = segment::read_whole(disk, &path)?;
    let len = buf.len() as u64;
    let scan = segment::scan(&buf, seq);
    let header = match &scan.header {
        Ok(()) => "header ok".to_string(),
        Err(e) => format!("BAD {e}"),
    };
    let _ = writeln!(out, "segment {name} ({len} bytes, {header})");
    let mut run: Option<EntryRun> = None;
    for &(offset, frame) in &scan.frames {
        let payload = frame.payload(&buf);
        let end = if frame.is_batch_end() {
            "  [batch end]"
        } else {
            ""
        };
        let line = match frame.rtype {
            RecordType::Entry => match codec::decode_entry(payload) {
                Ok(e) => {
                    let len = (frame.end as u64) - offset;
                    match run.as_mut() {
                        Some(r) if e.index == r.last.next() && !r.batch_end => {
                            r.last = e.index;
                            r.term_last = e.term;
                            r.count += 1;
                            r.bytes += len;
                            r.batch_end = frame.is_batch_end();
                        }
                        _ => {
                            if let Some(r) = run.take() {
                                r.print(out);
                            }
                            run = Some(EntryRun {
                                offset,
                                first: e.index,
                                last: e.index,
                                term_first: e.term,
                                term_last: e.term,
                                count: 1,
                                bytes: len,
                                batch_end: frame.is_batch_end(),
                            });
                        }
                    }
                    continue;
                }
                Err(e) => format!("entry       UNDECODABLE: {e}"),
            },
            RecordType::HardState => match codec::decode_hard_state(payload) {
                Ok(hs) => format!("hard-state  {}{end}", show_hard_state(&hs)),
                Err(e) => format!("hard-state  UNDECODABLE: {e}"),
            },
            RecordType::SnapshotMark => match codec::decode_mark(payload) {
                Ok(m) => {
                    let kind = match m.kind {
                        MarkKind::Installed => "installed",
                        MarkKind::Compacted => "compacted",
                        MarkKind::Carried => "carried",
                    };
                    format!("snapshot    {kind} index={} term={}{end}", m.index, m.term)
                }
                Err(e) => format!("snapshot    UNDECODABLE: {e}"),
            },
        };
        if let Some(r) = run.take() {
            r.print(out);
        }
        let _ = writeln!(out, "  {offset:>12}  {line}");
    }
    if let Some(r) = run.take() {
        r.print(out);
    }
    if let Some((offset, e)) = &scan.damage {
        let rest = len - offset;
        if buf[*offset as usize..].iter().all(|b| *b == 0) {
            let _ = writeln!(
                out,
                "  {offset:>12}  zeros       {rest} bytes of preallocated room"
            );
        } else {
            let _ = writeln!(out, "  {offset:>12}  DAMAGE      {e}; {rest} bytes follow");
        }
    }
    Ok(())
}

fn show_hard_state(hs: &HardState) -> String {
    let vote = hs.vote.map_or("-".to_string(), |v| v.to_string());
    format!("term={} vote={vote} commit={}", hs.term, hs.commit)
}

/// The summary of a successful read-only recovery.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub dir: String,
    pub stats: RecoveryStats,
    pub snapshot: Option<(Index, Term)>,
    pub first: Index,
    pub last: Index,
    pub hard_state: HardState,
    pub torn_tail: Option<TornTail>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "{}: ok", self.dir)?;
        writeln!(
            f,
            "  {} segments, {} bytes, {} records in {} batches, every checksum verified",
            s.segments, s.bytes, s.records, s.batches
        )?;
        match self.snapshot {
            Some((i, t)) => writeln!(
                f,
                "  snapshot: index={i} term={t} (file present, checksum ok)"
            )?,
            None => writeln!(f, "  snapshot: none")?,
        }
        if self.last >= self.first {
            writeln!(f, "  entries: {}..={}", self.first, self.last)?;
        } else {
            writeln!(f, "  entries: none")?;
        }
        writeln!(f, "  hard state: {}", show_hard_state(&self.hard_state))?;
        if let Some(t) = &self.torn_tail {
            writeln!(
                f,
                "  torn tail: {} bytes at {} offset {} (an interrupted write; the next open cuts it off)",
                t.bytes_cut, t.file, t.offset
            )?;
        }
        Ok(())
    }
}

/// Recovers `dir` read-only under its lock, checking every record's CRC and
/// the snapshot file; changes nothing on disk.
pub fn verify<D: Disk>(disk: &mut D, dir: &str) -> Result<VerifyReport, WalError> {
    let dir = crate::disk::normalize_dir(dir);
    match disk.lock_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(WalError::Locked { dir })
        }
        Err(e) => return Err(WalError::io(&dir, "lock")(e)),
    }
    let result = recovery::recover(disk, &dir, Mode::ReadOnly);
    disk.unlock_dir(&dir);
    let rec = result?;
    let snapshot_index = rec.snapshot_id.map_or(Index::ZERO, |(i, _)| i);
    Ok(VerifyReport {
        stats: rec.stats,
        snapshot: rec.snapshot_id,
        first: snapshot_index.next(),
        last: snapshot_index + rec.positions.len() as u64,
        hard_state: rec.durable.hard_state,
        torn_tail: rec.torn_tail,
        dir,
    })
}
