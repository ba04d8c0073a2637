//! Target `wal_recovery`: the WAL's on-disk formats (record framing, the
//! entry, hard-state and snapshot-marker payloads, segment headers) and
//! recovery, `Wal::open` over a directory whose files the input describes.

use std::collections::BTreeSet;

use bytes::Bytes;
use ferrite_raft::{
    Config, Entry, HardState, Index, Membership, NodeId, Payload, Persist, Raft, Term,
};
use ferrite_wal::fuzzing::{
    decode_entry, decode_hard_state, decode_mark, encode_entry, encode_hard_state, encode_mark,
    encode_segment_header, parse_record, scan_segment, Framer, RecordType, VALUE_MAX,
};
use ferrite_wal::{segment_name, snapshot_name, Disk, MarkKind, MemDisk, SnapshotMark, Wal};
use ferrite_wal::{Recovered, WalOptions};

/// Where the files go on the `MemDisk`.
pub(crate) const DIR: &str = "/node/wal";
/// Small, so that the write after recovery may start a new segment.
pub(crate) const OPTIONS: WalOptions = WalOptions {
    segment_bytes_max: 2048,
};

/// The whole input goes through the payload decoders and the segment
/// scanner; then it is read as a directory of files, and `Wal::open` must
/// either refuse it with an error or recover a log that Raft accepts, that
/// reads back what was recovered, that reopens to the same state with nothing
/// left to repair, and that takes a new write.
///
/// ```text
/// input = file*                           (16 at most; the rest is ignored)
/// file  = tag:u8 | len:u16 LE | body      (a length beyond the input takes the rest)
/// tag & 7: 0  segment, raw bytes
///          1  segment, records described by `body` (see `structured_segment`)
///          2  snapshot file: index:u8 term:u8 (its name) | raw bytes
///          3  snapshot file as 2, with the file's CRC32C appended
///          4  a leftover temporary file (`.tmp`)
///          _  a file that is not the WAL's
/// tag >> 3: sequence numbers skipped before a segment (the first is 1)
/// ```
pub fn wal_recovery(data: &[u8]) {
    let _bound = crate::allocation::bound(data.len());
    payload_decoders(data);
    if let Ok((wal, recovered)) = Wal::open(disk(data), DIR, OPTIONS) {
        check_recovered(wal, recovered);
    }
}

/// A `MemDisk` holding the directory the input describes, all durable.
pub(crate) fn disk(data: &[u8]) -> MemDisk {
    let mut disk = MemDisk::new();
    disk.create_dir(DIR).expect("create the directory");
    for (name, bytes) in files(data) {
        let path = format!("{DIR}/{name}");
        disk.create(&path).expect("create a file");
        disk.append(&path, &bytes).expect("write a file");
        disk.sync_data(&path).expect("sync a file");
    }
    disk.sync_dir(DIR).expect("sync the directory");
    disk
}

/// Each payload has one encoding, which the decoders insist on.
fn payload_decoders(data: &[u8]) {
    let _ = parse_record(data, 0, 0);
    let _ = scan_segment(data, 1);
    let mut buf = Vec::new();
    if let Ok(entry) = decode_entry(data) {
        encode_entry(&mut buf, &entry);
        assert_eq!(
            buf, data,
            "an entry decoded from bytes it does not encode to"
        );
    }
    if let Ok(hs) = decode_hard_state(data) {
        buf.clear();
        encode_hard_state(&mut buf, &hs);
        assert_eq!(
            buf, data,
            "a hard state decoded from bytes it does not encode to"
        );
    }
    if let Ok(mark) = decode_mark(data) {
        buf.clear();
        encode_mark(&mut buf, &mark);
        assert_eq!(
            buf, data,
            "a marker decoded from bytes it does not encode to"
        );
    }
}

fn check_recovered(wal: Wal<MemDisk>, recovered: Recovered) {
    let durable = recovered.durable;
    // `Recovered::durable` is documented as exactly what `Raft::new` accepts.
    if let Err(e) = Raft::new(Config::new(NodeId(1)), durable.clone(), 1) {
        panic!("Raft refuses the recovered state: {e}");
    }
    let (first, last) = (wal.first_index(), wal.last_index());
    let read = wal
        .entries(first, last)
        .expect("the recovered entries read back");
    assert_eq!(read, durable.entries, "entries read back differ");

    // Recovery repaired what it had to: a second open changes nothing.
    let (mut wal, again) =
        Wal::open(wal.into_disk(), DIR, OPTIONS).expect("a recovered log reopens");
    assert_eq!(again.torn_tail, None, "a torn tail survived recovery");
    assert_eq!(again.durable.hard_state, durable.hard_state);
    assert_eq!(again.durable.snapshot, durable.snapshot);
    assert_eq!(again.durable.entries, durable.entries);

    // And the log goes on: one more entry, found after another reopen.
    let next = last.next();
    if next.0 >= VALUE_MAX {
        return;
    }
    let hs = wal.hard_state();
    let entry = Entry {
        index: next,
        term: hs.term,
        payload: Payload::Normal(Bytes::from_static(b"after recovery")),
    };
    let persist = Persist {
        hard_state: Some(hs),
        snapshot: None,
        entries: vec![entry.clone()],
    };
    wal.write(&persist).expect("a recovered log takes a write");
    wal.sync().expect("a recovered log syncs");
    let (_, after) = Wal::open(wal.into_disk(), DIR, OPTIONS).expect("reopens after a write");
    let mut expected = durable.entries;
    expected.push(entry);
    assert_eq!(
        after.durable.entries, expected,
        "the write after recovery was lost"
    );
}

/// Files in one directory at most: a log has a few, and `MemDisk` takes
/// time quadratic in their number to create them.
const FILES_MAX: usize = 16;

/// The directory the input describes: `(name, bytes)` in input order.
pub(crate) fn files(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut rest = data;
    while let Some((&tag, tail)) = rest.split_first().filter(|_| out.len() < FILES_MAX) {
        rest = tail;
        let body = match crate::chunk(&mut rest) {
            Some(body) => body,
            None => std::mem::take(&mut rest),
        };
        let file = match tag & 7 {
            0 | 1 => {
                seq += 1 + u64::from(tag >> 3);
                let bytes = if tag & 7 == 0 {
                    body.to_vec()
                } else {
                    structured_segment(seq, body)
                };
                (segment_name(seq), bytes)
            }
            2 | 3 => {
                let (name, bytes) = match body {
                    [index, term, bytes @ ..] => (snapshot_name_of(*index, *term), bytes),
                    _ => (snapshot_name_of(0, 0), &[][..]),
                };
                let mut bytes = bytes.to_vec();
                if tag & 7 == 3 {
                    let crc = crc32c::crc32c(&bytes);
                    bytes.extend_from_slice(&crc.to_le_bytes());
                }
                (name, bytes)
            }
            4 => (format!("{}.tmp", snapshot_name_of(tag, tag)), body.to_vec()),
            _ => (format!("notes-{}.txt", out.len()), body.to_vec()),
        };
        out.push(file);
    }
    out
}

fn snapshot_name_of(index: u8, term: u8) -> String {
    snapshot_name(Index(value(index)), Term(value(term)))
}

/// Small values are what make logs line up; the top two are the edges of
/// what the WAL stores.
fn value(v: u8) -> u64 {
    match v {
        0xff => VALUE_MAX - 1,
        0xfe => VALUE_MAX,
        v => u64::from(v),
    }
}

/// A segment: its header for `seq`, then what `body` describes, every record
/// framed with a valid CRC at its place, so that mutations reach recovery's
/// logic rather than stop at a checksum.
///
/// ```text
/// body   = record*
/// record = op:u8 | fields      op & 0x80: the record ends its batch
/// op & 0xf: 0  entry       index:v term:v kind:u8 (0 noop, 1 len:u8 data, 2 voters:u8 learners:u8 as bitmaps)
///           1  hard state  term:v vote:u8 (0 none, else node v) commit:v
///           2  marker      kind:u8 (mod 3: installed, compacted, carried) index:v term:v
///           3  any record  type:u8 (mod 3) len:u8 payload
///           4  garbage     len:u8 bytes, not framed
///           5  zeros       len:u8 (times 16) zero bytes, as preallocated room
///           _  end
/// v      = u8: small values as they are, 0xff and 0xfe the largest
/// ```
pub(crate) fn structured_segment(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut file = encode_segment_header(seq).to_vec();
    let mut r = Fields(body);
    while let Some(op) = r.u8() {
        let ends_batch = op & 0x80 != 0;
        match op & 0x0f {
            0 => {
                let entry = Entry {
                    index: Index(value(r.u8_or_0())),
                    term: Term(value(r.u8_or_0())),
                    payload: match r.u8_or_0() {
                        1 => Payload::Normal(Bytes::copy_from_slice(r.bytes())),
                        2 => Payload::Membership(Membership {
                            voters: ids(r.u8_or_0()),
                            learners: ids(r.u8_or_0()),
                        }),
                        _ => Payload::Noop,
                    },
                };
                push(&mut file, RecordType::Entry, ends_batch, |b| {
                    encode_entry(b, &entry)
                });
            }
            1 => {
                let hs = HardState {
                    term: Term(value(r.u8_or_0())),
                    vote: match r.u8_or_0() {
                        0 => None,
                        v => Some(NodeId(value(v))),
                    },
                    commit: Index(value(r.u8_or_0())),
                };
                push(&mut file, RecordType::HardState, ends_batch, |b| {
                    encode_hard_state(b, &hs)
                });
            }
            2 => {
                let mark = SnapshotMark {
                    kind: match r.u8_or_0() % 3 {
                        0 => MarkKind::Installed,
                        1 => MarkKind::Compacted,
                        _ => MarkKind::Carried,
                    },
                    index: Index(value(r.u8_or_0())),
                    term: Term(value(r.u8_or_0())),
                };
                push(&mut file, RecordType::SnapshotMark, ends_batch, |b| {
                    encode_mark(b, &mark)
                });
            }
            3 => {
                let rtype = match r.u8_or_0() % 3 {
                    0 => RecordType::Entry,
                    1 => RecordType::HardState,
                    _ => RecordType::SnapshotMark,
                };
                let payload = r.bytes();
                push(&mut file, rtype, ends_batch, |b| {
                    b.extend_from_slice(payload)
                });
            }
            4 => file.extend_from_slice(r.bytes()),
            5 => file.resize(file.len() + 16 * usize::from(r.u8_or_0()), 0),
            _ => break,
        }
    }
    file
}

/// Node ids `i + 1` for each bit `i` set.
fn ids(bitmap: u8) -> BTreeSet<NodeId> {
    (0..8)
        .filter(|i| bitmap & (1 << i) != 0)
        .map(|i| NodeId(i + 1))
        .collect()
}

/// Appends one record, framed for its offset in `file`.
fn push(
    file: &mut Vec<u8>,
    rtype: RecordType,
    ends_batch: bool,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let mut record = Vec::new();
    let mut framer = Framer::new(&mut record, file.len() as u64);
    framer.push(rtype, encode);
    if ends_batch {
        framer.finish();
    }
    file.extend_from_slice(&record);
}

/// A cursor over the fields of `structured_segment`'s description.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u8_or_0(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }

    /// `len:u8 | bytes`, cut short at the end of the input.
    fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.u8_or_0()).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        bytes
    }
}
