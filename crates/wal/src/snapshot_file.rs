//! Snapshot files: `snap-{index:016x}-{term:016x}.snap`, one per snapshot,
//! named so that sorting by name sorts by age. A file holds the metadata
//! (index, term, membership) and the state machine's data, closed by a
//! CRC32C over everything before it.
//!
//! A snapshot file is always complete before the log refers to it: it is
//! written under a temporary name, synced, renamed, and the directory is
//! synced, and only then may the log record naming it become durable. A crash
//! at any point leaves either no file under the final name or a complete one.

use ferrite_raft::{Index, Snapshot, SnapshotMeta, Term};

use crate::codec::{self, put_u32, put_u64, Reader};
use crate::disk::{join, Disk};
use crate::error::WalError;

pub const SNAPSHOT_MAGIC: [u8; 4] = *b"FSNP";
pub const SNAPSHOT_VERSION: u32 = 1;
/// Suffix of a snapshot being written; such files are removed on open.
pub const TMP_SUFFIX: &str = ".tmp";

pub fn snapshot_name(index: Index, term: Term) -> String {
    format!("snap-{:016x}-{:016x}.snap", index.0, term.0)
}

/// The `(index, term)` of a snapshot file name, if it is one.
pub fn parse_snapshot_name(name: &str) -> Option<(Index, Term)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    let hex = |s: &str| {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((Index(hex(index)?), Term(hex(term)?)))
}

/// Everything before the data: magic, version, metadata, data length.
fn encode_prefix(snapshot: &Snapshot) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&SNAPSHOT_MAGIC);
    put_u32(&mut buf, SNAPSHOT_VERSION);
    codec::encode_snapshot_meta(&mut buf, &snapshot.meta);
    put_u64(&mut buf, snapshot.data.len() as u64);
    buf
}

/// The whole file's bytes (the WAL streams them instead).
#[cfg(test)]
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut buf = encode_prefix(snapshot);
    buf.extend_from_slice(&snapshot.data);
    let crc = crc32c::crc32c(&buf);
    put_u32(&mut buf, crc);
    buf
}

/// Decodes a whole snapshot file; `file` names it in errors.
pub fn decode(buf: &[u8], file: &str) -> Result<Snapshot, WalError> {
    let (meta, data) = parse(buf, file)?;
    Ok(Snapshot {
        meta,
        data: bytes::Bytes::copy_from_slice(&buf[data]),
    })
}

/// `decode` without a copy: the snapshot's data is a slice of `buf`.
pub fn decode_bytes(buf: bytes::Bytes, file: &str) -> Result<Snapshot, WalError> {
    let (meta, data) = parse(&buf, file)?;
    Ok(Snapshot {
        meta,
        data: buf.slice(data),
    })
}

/// Checks a whole snapshot file: its metadata and where its data lies.
fn parse(buf: &[u8], file: &str) -> Result<(SnapshotMeta, std::ops::Range<usize>), WalError> {
    let Some(body_len) = buf.len().checked_sub(4) else {
        return Err(WalError::corrupt(
            file,
            0,
            "snapshot file shorter than its checksum",
        ));
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&buf[body_len..]);
    if crc32c::crc32c(&buf[..body_len]) != u32::from_le_bytes(crc) {
        return Err(WalError::corrupt(
            file,
            body_len as u64,
            "snapshot checksum mismatch",
        ));
    }
    let mut r = Reader::new(&buf[..body_len], "snapshot file");
    let bad = |e: codec::CodecError| WalError::corrupt(file, 0, e);
    if r.array::<4>().map_err(bad)? != SNAPSHOT_MAGIC {
        return Err(WalError::corrupt(
            file,
            0,
            "not a snapshot file (wrong magic)",
        ));
    }
    let version = r.u32().map_err(bad)?;
    if version != SNAPSHOT_VERSION {
        return Err(WalError::corrupt(
            file,
            4,
            format!("snapshot format version {version}; this build reads {SNAPSHOT_VERSION}"),
        ));
    }
    let meta = codec::read_snapshot_meta(&mut r).map_err(bad)?;
    let data_len = r.u64().map_err(bad)?;
    if data_len != r.remaining() as u64 {
        return Err(WalError::corrupt(
            file,
            0,
            format!(
                "snapshot declares {data_len} data bytes but holds {}",
                r.remaining()
            ),
        ));
    }
    let start = body_len - r.remaining();
    Ok((meta, start..body_len))
}

/// Reads and checks the snapshot file at `path`. On real files its data is
/// a memory map of the file, not a copy on the heap (`Disk::map`); its
/// pages are let go once checked, to be read again when used.
pub fn read<D: Disk>(disk: &D, path: &str) -> Result<Snapshot, WalError> {
    let buf = disk.map(path).map_err(WalError::io(path, "read"))?;
    let snapshot = decode_bytes(buf, path)?;
    crate::disk::page_out(&snapshot.data);
    Ok(snapshot)
}

/// Writes the snapshot under its temporary name without syncing; returns
/// `(temporary path, final path)`. The caller syncs and renames.
pub fn write_unsynced<D: Disk>(
    disk: &mut D,
    dir: &str,
    snapshot: &Snapshot,
) -> Result<(String, String), WalError> {
    let path = join(dir, &snapshot_name(snapshot.meta.index, snapshot.meta.term));
    let tmp = format!("{path}{TMP_SUFFIX}");
    let prefix = encode_prefix(snapshot);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&prefix), &snapshot.data);
    let io = |op| WalError::io(&tmp, op);
    disk.create(&tmp).map_err(io("create"))?;
    disk.append(&tmp, &prefix).map_err(io("write"))?;
    disk.append(&tmp, &snapshot.data).map_err(io("write"))?;
    disk.append(&tmp, &crc.to_le_bytes()).map_err(io("write"))?;
    Ok((tmp, path))
}

/// Makes a written temporary snapshot file durable under its final name
/// (but leaves the directory sync to the caller, who may batch it).
pub fn publish<D: Disk>(disk: &mut D, tmp: &str, path: &str) -> Result<(), WalError> {
    disk.sync_data(tmp)
        .map_err(WalError::io(tmp, "fdatasync"))?;
    disk.rename(tmp, path).map_err(WalError::io(tmp, "rename"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferrite_raft::{Membership, NodeId, SnapshotMeta};

    fn sample() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: Index(42),
                term: Term(7),
                membership: Membership {
                    voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
                    learners: [NodeId(5)].into(),
                },
            },
            data: Bytes::from_static(b"state machine bytes"),
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            snapshot_name(Index(0x2a), Term(7)),
            "snap-000000000000002a-0000000000000007.snap"
        );
        assert_eq!(
            parse_snapshot_name(&snapshot_name(Index(9), Term(3))),
            Some((Index(9), Term(3)))
        );
        assert_eq!(parse_snapshot_name("snap-1-2.snap"), None);
        assert_eq!(
            parse_snapshot_name("snap-000000000000002a-0000000000000007.snap.tmp"),
            None
        );
        assert!(snapshot_name(Index(9), Term(9)) < snapshot_name(Index(10), Term(1)));
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(decode(&encode(&s), "f").unwrap(), s);
        let empty = Snapshot {
            meta: SnapshotMeta {
                index: Index(0),
                term: Term(0),
                membership: Membership::default(),
            },
            data: Bytes::new(),
        };
        assert_eq!(decode(&encode(&empty), "f").unwrap(), empty);
    }

    #[test]
    fn garbage_is_rejected_with_the_file_name() {
        let good = encode(&sample());
        for cut in 0..good.len() {
            let e = decode(&good[..cut], "dir/snap-x").unwrap_err();
            assert!(e.to_string().contains("dir/snap-x"), "{e}");
        }
        for byte in 0..good.len() {
            let mut bad = good.clone();
            bad[byte] ^= 0x10;
            assert!(decode(&bad, "f").is_err(), "flip at {byte}");
        }
    }

    #[test]
    fn a_valid_checksum_over_bad_contents_is_still_rejected() {
        let mut body = encode(&sample());
        body.truncate(body.len() - 4);
        body.push(0); // one byte more than the declared data length
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&body, "f"), Err(WalError::Corrupt { .. })));
    }
}
