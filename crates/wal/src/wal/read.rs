//! Reading entries back: positions come from the in-memory index, bytes
//! from disk, with every record's CRC checked again after the read.

use ferrite_raft::{Entry, Index};

use super::Wal;
use crate::codec;
use crate::disk::Disk;
use crate::error::WalError;
use crate::record::{self, RecordType};
use crate::recovery::Position;

/// Reads of consecutive entries are merged up to this many bytes.
const READ_BYTES_MAX: u64 = 4 << 20;

impl<D: Disk> Wal<D> {
    /// Entries `lo..=hi`, read from disk and checked against their CRCs.
    pub fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, WalError> {
        self.check_poisoned()?;
        if lo > hi {
            return Ok(Vec::new());
        }
        let (first, last) = (self.first_index(), self.last_index());
        if lo < first || hi > last {
            return Err(WalError::OutOfRange {
                lo,
                hi,
                first,
                last,
            });
        }
        let start = lo.distance_from(self.snapshot_index()) as usize - 1;
        let count = hi.distance_from(lo) as usize + 1;
        let wanted: Vec<Position> = self
            .positions
            .range(start..start + count)
            .copied()
            .collect();
        let mut out = Vec::with_capacity(count);
        let mut rest = &wanted[..];
        while !rest.is_empty() {
            let n = contiguous_run(rest);
            self.read_run(&rest[..n], lo + out.len() as u64, &mut out)?;
            rest = &rest[n..];
        }
        Ok(out)
    }

    /// Reads entries that lie back to back in one segment with one read.
    pub(super) fn read_run(
        &self,
        run: &[Position],
        first: Index,
        out: &mut Vec<Entry>,
    ) -> Result<(), WalError> {
        let (seq, base) = (run[0].seq, run[0].offset);
        let path = self.segment_path(seq);
        let total: u64 = run.iter().map(|p| u64::from(p.len)).sum();
        let mut buf = vec![0u8; total as usize];
        self.disk
            .read_at(&path, base, &mut buf)
            .map_err(WalError::io(&path, "read"))?;
        let mut index = first;
        for p in run {
            let pos = (p.offset - base) as usize;
            let corrupt = |why: String| WalError::corrupt(&path, p.offset, why);
            let frame = record::parse(&buf, pos, base).map_err(|e| corrupt(e.to_string()))?;
            if frame.rtype != RecordType::Entry {
                return Err(corrupt(format!(
                    "expected an entry, found a {} record",
                    frame.rtype.name()
                )));
            }
            let entry =
                codec::decode_entry(frame.payload(&buf)).map_err(|e| corrupt(e.to_string()))?;
            if entry.index != index || entry.term != p.term {
                return Err(corrupt(format!(
                    "holds entry ({}, term {}), expected ({index}, term {})",
                    entry.index, entry.term, p.term
                )));
            }
            out.push(entry);
            index = index.next();
        }
        Ok(())
    }
}

/// How many positions from the start lie back to back in one segment and
/// fit one read.
fn contiguous_run(positions: &[Position]) -> usize {
    let mut n = 1;
    let mut bytes = u64::from(positions[0].len);
    while let Some(p) = positions.get(n) {
        let prev = &positions[n - 1];
        let adjacent = p.seq == prev.seq && p.offset == prev.offset + u64::from(prev.len);
        bytes += u64::from(p.len);
        if !adjacent || bytes > READ_BYTES_MAX {
            break;
        }
        n += 1;
    }
    n
}
