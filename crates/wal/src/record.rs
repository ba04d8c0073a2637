//! Record framing: how one record sits in a segment file.
//!
//! ```text
//! +---------+---------+------+-------+-----------------+
//! | crc u32 | len u32 | type | flags | payload (len B) |
//! +---------+---------+------+-------+-----------------+
//! ```
//!
//! The CRC32C covers the record's own file offset, then `len`, `type`,
//! `flags` and the payload. Covering the length means a flipped length bit
//! is caught instead of making the reader skip to a wrong place; covering the
//! offset means a record is valid only where it was written, so stale or
//! misplaced bytes (and record-shaped bytes inside an entry's data) are not
//! mistaken for records when recovery scans past damage.
//!
//! `flags` has one bit, `BATCH_END`, on the last record of each `write`:
//! recovery applies records batch by batch, so a crash never leaves half of
//! one `Persist` (for example entries of a new term without the hard state
//! that raised the term).

use std::fmt;

/// Bytes before a record's payload.
pub const HEADER_BYTES: usize = 10;
/// The largest payload a record may carry. Far below `u32::MAX` so that a
/// corrupt length can never make a reader allocate gigabytes.
pub const PAYLOAD_BYTES_MAX: u64 = 256 << 20;
/// Marks the last record of a batch (one `Wal::write` or one internal step).
pub const FLAG_BATCH_END: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    Entry = 1,
    HardState = 2,
    SnapshotMark = 3,
}

impl RecordType {
    fn from_u8(v: u8) -> Option<RecordType> {
        match v {
            1 => Some(RecordType::Entry),
            2 => Some(RecordType::HardState),
            3 => Some(RecordType::SnapshotMark),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordType::Entry => "entry",
            RecordType::HardState => "hard-state",
            RecordType::SnapshotMark => "snapshot",
        }
    }
}

/// A record found intact in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub rtype: RecordType,
    pub flags: u8,
    /// Position of the payload in the buffer.
    pub payload_start: usize,
    /// Position just after the record in the buffer.
    pub end: usize,
}

impl Frame {
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.payload_start..self.end]
    }

    pub fn is_batch_end(&self) -> bool {
        self.flags & FLAG_BATCH_END != 0
    }
}

/// Why the bytes at some position are not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header or payload runs past the end of the bytes present.
    Truncated {
        needed: u64,
        present: u64,
    },
    BadType(u8),
    BadFlags(u8),
    TooLarge(u64),
    BadChecksum,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { needed, present } => write!(
                f,
                "record needs {needed} bytes but only {present} remain in the file"
            ),
            FrameError::BadType(t) => write!(f, "unknown record type {t}"),
            FrameError::BadFlags(x) => write!(f, "unknown record flags {x:#04x}"),
            FrameError::TooLarge(n) => write!(f, "record length {n} exceeds the limit"),
            FrameError::BadChecksum => write!(f, "checksum mismatch"),
        }
    }
}

fn checksum(file_offset: u64, covered: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&file_offset.to_le_bytes()), covered)
}

/// Encodes records into a buffer that will be appended at `base` (the
/// file's length when the buffer is written).
pub struct Framer<'a> {
    buf: &'a mut Vec<u8>,
    base: u64,
    last_start: Option<usize>,
}

impl<'a> Framer<'a> {
    /// `buf` must be empty: positions in it are file offsets minus `base`.
    pub fn new(buf: &'a mut Vec<u8>, base: u64) -> Framer<'a> {
        buf.clear();
        Framer {
            buf,
            base,
            last_start: None,
        }
    }

    /// Appends one record whose payload `encode` writes; returns its file
    /// offset and total length. The caller has checked the payload limit.
    pub fn push(&mut self, rtype: RecordType, encode: impl FnOnce(&mut Vec<u8>)) -> (u64, u32) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; HEADER_BYTES]);
        self.buf[start + 8] = rtype as u8;
        encode(self.buf);
        let len = self.buf.len() - start - HEADER_BYTES;
        assert!(len as u64 <= PAYLOAD_BYTES_MAX, "record of {len} bytes");
        self.buf[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
        self.seal(start);
        self.last_start = Some(start);
        (self.base + start as u64, (self.buf.len() - start) as u32)
    }

    /// Marks the last record as the end of the batch.
    pub fn finish(mut self) {
        if let Some(start) = self.last_start {
            self.buf[start + 9] |= FLAG_BATCH_END;
            self.seal(start);
        }
    }

    fn seal(&mut self, start: usize) {
        let offset = self.base + start as u64;
        let crc = checksum(offset, &self.buf[start + 4..]);
        self.buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Parses the record at `pos` of `buf`, whose first byte is at file offset
/// `base`. Checks everything cheap (type, flags, length) before the CRC, so
/// scanning garbage byte by byte stays fast.
pub fn parse(buf: &[u8], pos: usize, base: u64) -> Result<Frame, FrameError> {
    let present = buf.len().saturating_sub(pos) as u64;
    let Some(header) = buf.get(pos..pos + HEADER_BYTES) else {
        return Err(FrameError::Truncated {
            needed: HEADER_BYTES as u64,
            present,
        });
    };
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (crc, len) = (word(0), u64::from(word(4)));
    let Some(rtype) = RecordType::from_u8(header[8]) else {
        return Err(FrameError::BadType(header[8]));
    };
    if header[9] & !FLAG_BATCH_END != 0 {
        return Err(FrameError::BadFlags(header[9]));
    }
    if len > PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge(len));
    }
    let needed = HEADER_BYTES as u64 + len;
    if needed > present {
        return Err(FrameError::Truncated { needed, present });
    }
    let end = pos + needed as usize;
    if checksum(base + pos as u64, &buf[pos + 4..end]) != crc {
        return Err(FrameError::BadChecksum);
    }
    Ok(Frame {
        rtype,
        flags: header[9],
        payload_start: pos + HEADER_BYTES,
        end,
    })
}

/// The first position after `pos` where an intact record starts, if any.
/// Recovery uses it to tell a torn tail (nothing valid follows the damage)
/// from corruption in the middle of the log (something valid does).
pub fn find_valid_after(buf: &[u8], pos: usize, base: u64) -> Option<usize> {
    let last = buf.len().checked_sub(HEADER_BYTES)?;
    (pos + 1..=last).find(|&p| parse(buf, p, base).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut f = Framer::new(&mut buf, base);
        f.push(RecordType::Entry, |b| b.extend_from_slice(b"first"));
        f.push(RecordType::HardState, |b| b.extend_from_slice(b""));
        f.push(RecordType::SnapshotMark, |b| b.extend_from_slice(&[7; 40]));
        f.finish();
        buf
    }

    #[test]
    fn round_trip_with_batch_end_on_last() {
        let buf = sample(100);
        let a = parse(&buf, 0, 100).unwrap();
        assert_eq!(
            (a.rtype, a.payload(&buf)),
            (RecordType::Entry, &b"first"[..])
        );
        assert!(!a.is_batch_end());
        let b = parse(&buf, a.end, 100).unwrap();
        assert_eq!(b.rtype, RecordType::HardState);
        assert!(!b.is_batch_end());
        let c = parse(&buf, b.end, 100).unwrap();
        assert_eq!(c.payload(&buf), &[7; 40][..]);
        assert!(c.is_batch_end());
        assert_eq!(c.end, buf.len());
    }

    #[test]
    fn offset_is_part_of_the_checksum() {
        let buf = sample(100);
        assert_eq!(parse(&buf, 0, 101), Err(FrameError::BadChecksum));
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let buf = sample(0);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let mut pos = 0;
                let mut ok = 0;
                while let Ok(f) = parse(&bad, pos, 0) {
                    pos = f.end;
                    ok += 1;
                }
                assert!(ok < 3, "flip at byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn truncations_and_garbage() {
        let buf = sample(0);
        let first = parse(&buf, 0, 0).unwrap();
        for cut in 0..first.end {
            assert!(matches!(
                parse(&buf[..cut], 0, 0),
                Err(FrameError::Truncated { .. })
            ));
        }
        assert_eq!(parse(&[0u8; 32], 0, 0), Err(FrameError::BadType(0)));
        let mut huge = buf.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&huge, 0, 0), Err(FrameError::TooLarge(_))));
        let mut flags = buf.clone();
        flags[9] = 0x80;
        assert_eq!(parse(&flags, 0, 0), Err(FrameError::BadFlags(0x80)));
    }

    #[test]
    fn scan_finds_the_next_record_after_damage() {
        let mut buf = sample(0);
        let second = parse(&buf, 0, 0).unwrap().end;
        buf[3] ^= 1;
        assert_eq!(find_valid_after(&buf, 0, 0), Some(second));
        assert_eq!(find_valid_after(&buf[..second + 5], 0, 0), None);
        assert_eq!(find_valid_after(&[], 0, 0), None);
    }
}
