//! Segment files: the log is a sequence of files `{seq:016x}.wal`, so that
//! sorting names sorts by age and a whole old segment can be deleted once a
//! snapshot covers it. Each starts with a small header (magic, format
//! version, its own sequence number, CRC) followed by records.

use std::fmt;

use crate::codec::{CodecError, Reader};
use crate::disk::Disk;
use crate::error::WalError;
use crate::record::{self, Frame, FrameError};

pub const SEGMENT_MAGIC: [u8; 4] = *b"FWAL";
pub const SEGMENT_VERSION: u32 = 1;
/// magic, version u32, seq u64, crc u32.
pub const SEGMENT_HEADER_BYTES: usize = 20;

/// Reads a whole segment into memory. Segments are bounded by
/// `segment_bytes_max` (plus one oversized write), so this is bounded too.
pub fn read_whole<D: Disk>(disk: &D, path: &str) -> Result<Vec<u8>, WalError> {
    let len = disk.len(path).map_err(WalError::io(path, "stat"))?;
    let size = usize::try_from(len).map_err(|_| WalError::corrupt(path, 0, "segment too large"))?;
    let mut buf = vec![0u8; size];
    disk.read_at(path, 0, &mut buf)
        .map_err(WalError::io(path, "read"))?;
    Ok(buf)
}

pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// The sequence number of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Beyond `VALUE_MAX` it is not a name this WAL ever gives.
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|seq| *seq < crate::codec::VALUE_MAX)
}

pub fn encode_header(seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[0..4].copy_from_slice(&SEGMENT_MAGIC);
    out[4..8].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Why a segment header is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Short or failing its CRC: what a crash during creation leaves behind.
    Damaged(&'static str),
    /// Intact but not ours to read: never treated as a torn write.
    Foreign(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Damaged(why) => write!(f, "segment header {why}"),
            HeaderError::Foreign(why) => write!(f, "segment header {why}"),
        }
    }
}

pub fn check_header(buf: &[u8], seq: u64) -> Result<(), HeaderError> {
    let Some(header) = buf.get(..SEGMENT_HEADER_BYTES) else {
        return Err(HeaderError::Damaged("truncated"));
    };
    let Ok((magic, version, found_seq, crc)) = header_fields(header) else {
        return Err(HeaderError::Damaged("truncated"));
    };
    if crc32c::crc32c(&header[..16]) != crc {
        return Err(HeaderError::Damaged("checksum mismatch"));
    }
    if magic != SEGMENT_MAGIC {
        return Err(HeaderError::Foreign("has a wrong magic number".into()));
    }
    if version != SEGMENT_VERSION {
        return Err(HeaderError::Foreign(format!(
            "has format version {version}; this build reads version {SEGMENT_VERSION}"
        )));
    }
    if found_seq != seq {
        return Err(HeaderError::Foreign(format!(
            "names sequence {found_seq:#x}, not the file name's {seq:#x}"
        )));
    }
    Ok(())
}

fn header_fields(header: &[u8]) -> Result<([u8; 4], u32, u64, u32), CodecError> {
    let mut r = Reader::new(header, "segment header");
    Ok((r.array::<4>()?, r.u32()?, r.u64()?, r.u32()?))
}

/// Everything in one segment's bytes: intact records in order, then the
/// first damage, if any. Scanning stops at the damage: what follows it is
/// only examined to classify it.
#[derive(Debug)]
pub struct SegmentScan {
    pub header: Result<(), HeaderError>,
    /// Intact records, by file offset.
    pub frames: Vec<(u64, Frame)>,
    /// The first place that is not a record, and why.
    pub damage: Option<(u64, FrameError)>,
}

pub fn scan(buf: &[u8], seq: u64) -> SegmentScan {
    let header = check_header(buf, seq);
    let mut frames = Vec::new();
    let mut damage = None;
    if header.is_ok() {
        let mut pos = SEGMENT_HEADER_BYTES;
        while pos < buf.len() {
            match record::parse(buf, pos, 0) {
                Ok(frame) => {
                    frames.push((pos as u64, frame));
                    pos = frame.end;
                }
                Err(e) => {
                    damage = Some((pos as u64, e));
                    break;
                }
            }
        }
    }
    SegmentScan {
        header,
        frames,
        damage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_age() {
        assert_eq!(segment_name(0x1a), "000000000000001a.wal");
        assert_eq!(parse_segment_name("000000000000001a.wal"), Some(0x1a));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("1a.wal"), None);
        assert_eq!(parse_segment_name("000000000000001g.wal"), None);
        assert_eq!(parse_segment_name("000000000000001a.snap"), None);
    }

    #[test]
    fn header_checks() {
        let h = encode_header(5);
        assert_eq!(check_header(&h, 5), Ok(()));
        assert!(matches!(check_header(&h, 6), Err(HeaderError::Foreign(_))));
        assert!(matches!(
            check_header(&h[..19], 5),
            Err(HeaderError::Damaged(_))
        ));
        let mut bad = h;
        bad[9] ^= 4;
        assert!(matches!(
            check_header(&bad, 5),
            Err(HeaderError::Damaged(_))
        ));
        let mut future = h;
        future[4] = 2;
        let crc = crc32c::crc32c(&future[..16]);
        future[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&future, 5),
            Err(HeaderError::Foreign(_))
        ));
    }
}
