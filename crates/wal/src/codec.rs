//! Byte encodings of the Raft types the WAL persists: entries, hard state,
//! snapshot markers and snapshot metadata. Little-endian, fixed-width
//! integers, explicit lengths; one canonical encoding per value, so that a
//! decoder can reject anything else. Decoders never trust a length before
//! checking it against the bytes that are really there.

use std::collections::BTreeSet;

use bytes::Bytes;
use ferrite_raft::{Entry, HardState, Index, Membership, NodeId, Payload, SnapshotMeta, Term};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{what}: truncated at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("{what}: {count} unexpected trailing bytes")]
    Trailing { what: &'static str, count: usize },
    #[error("{what}: unknown tag {tag}")]
    BadTag { what: &'static str, tag: u8 },
    #[error("{what}: {reason}")]
    Invalid {
        what: &'static str,
        reason: &'static str,
    },
}

/// Why the WAL wrote a snapshot marker; recovery treats them differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    /// A snapshot received from the leader replaced the whole log.
    Installed,
    /// A local snapshot made the entries up to its index redundant.
    Compacted,
    /// The latest snapshot, repeated at the head of a new segment so that
    /// older segments can be deleted without losing it.
    Carried,
}

/// A log record naming the snapshot in force; the data is in its own file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMark {
    pub kind: MarkKind,
    pub index: Index,
    pub term: Term,
}

// ---- Writing ---------------------------------------------------------------

pub(crate) fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}

pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Indices, terms and node ids on disk stay below this (as Raft's messages
/// do), so that arithmetic on values read from disk can never overflow.
pub const VALUE_MAX: u64 = 1 << 62;

const PAYLOAD_NOOP: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

/// The encoded size of an entry, to check limits before writing anything.
pub fn entry_len(entry: &Entry) -> u64 {
    let payload = match &entry.payload {
        Payload::Noop => 0,
        Payload::Normal(data) => 4 + data.len() as u64,
        Payload::Membership(m) => 8 + 8 * (m.voters.len() + m.learners.len()) as u64,
    };
    8 + 8 + 1 + payload
}

pub fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) {
    put_u64(buf, entry.index.0);
    put_u64(buf, entry.term.0);
    match &entry.payload {
        Payload::Noop => put_u8(buf, PAYLOAD_NOOP),
        Payload::Normal(data) => {
            put_u8(buf, PAYLOAD_NORMAL);
            // The record limit (far below 4 GiB) is checked before encoding.
            put_u32(buf, data.len() as u32);
            buf.extend_from_slice(data);
        }
        Payload::Membership(m) => {
            put_u8(buf, PAYLOAD_MEMBERSHIP);
            encode_membership(buf, m);
        }
    }
}

pub fn encode_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    put_u64(buf, hs.term.0);
    match hs.vote {
        None => put_u8(buf, 0),
        Some(id) => {
            put_u8(buf, 1);
            put_u64(buf, id.0);
        }
    }
    put_u64(buf, hs.commit.0);
}

pub fn encode_mark(buf: &mut Vec<u8>, mark: &SnapshotMark) {
    put_u8(
        buf,
        match mark.kind {
            MarkKind::Installed => 1,
            MarkKind::Compacted => 2,
            MarkKind::Carried => 3,
        },
    );
    put_u64(buf, mark.index.0);
    put_u64(buf, mark.term.0);
}

pub fn encode_membership(buf: &mut Vec<u8>, m: &Membership) {
    for set in [&m.voters, &m.learners] {
        put_u32(buf, set.len() as u32);
        for id in set {
            put_u64(buf, id.0);
        }
    }
}

pub fn encode_snapshot_meta(buf: &mut Vec<u8>, meta: &SnapshotMeta) {
    put_u64(buf, meta.index.0);
    put_u64(buf, meta.term.0);
    encode_membership(buf, &meta.membership);
}

// ---- Reading ---------------------------------------------------------------

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(CodecError::Truncated {
                what: self.what,
                at: self.pos,
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u64 that must stay below `VALUE_MAX`.
    pub fn value(&mut self) -> Result<u64, CodecError> {
        let v = self.u64()?;
        if v >= VALUE_MAX {
            return Err(self.invalid("value out of range"));
        }
        Ok(v)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn invalid(&self, reason: &'static str) -> CodecError {
        CodecError::Invalid {
            what: self.what,
            reason,
        }
    }

    pub fn finish(self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::Trailing {
                what: self.what,
                count,
            }),
        }
    }
}

pub fn decode_entry(buf: &[u8]) -> Result<Entry, CodecError> {
    let mut r = Reader::new(buf, "entry");
    let index = Index(r.value()?);
    let term = Term(r.value()?);
    let payload = match r.u8()? {
        PAYLOAD_NOOP => Payload::Noop,
        PAYLOAD_NORMAL => {
            let len = r.u32()? as usize;
            Payload::Normal(Bytes::copy_from_slice(r.bytes(len)?))
        }
        PAYLOAD_MEMBERSHIP => Payload::Membership(read_membership(&mut r)?),
        tag => return Err(CodecError::BadTag { what: "entry", tag }),
    };
    r.finish()?;
    if index == Index::ZERO {
        return Err(CodecError::Invalid {
            what: "entry",
            reason: "index 0 is never an entry",
        });
    }
    Ok(Entry {
        index,
        term,
        payload,
    })
}

pub fn decode_hard_state(buf: &[u8]) -> Result<HardState, CodecError> {
    let mut r = Reader::new(buf, "hard state");
    let term = Term(r.value()?);
    let vote = match r.u8()? {
        0 => None,
        1 => Some(NodeId(r.value()?)),
        tag => {
            return Err(CodecError::BadTag {
                what: "hard state vote",
                tag,
            })
        }
    };
    let commit = Index(r.value()?);
    r.finish()?;
    Ok(HardState { term, vote, commit })
}

pub fn decode_mark(buf: &[u8]) -> Result<SnapshotMark, CodecError> {
    let mut r = Reader::new(buf, "snapshot marker");
    let kind = match r.u8()? {
        1 => MarkKind::Installed,
        2 => MarkKind::Compacted,
        3 => MarkKind::Carried,
        tag => {
            return Err(CodecError::BadTag {
                what: "snapshot marker",
                tag,
            })
        }
    };
    let index = Index(r.value()?);
    let term = Term(r.value()?);
    r.finish()?;
    Ok(SnapshotMark { kind, index, term })
}

pub(crate) fn read_membership(r: &mut Reader<'_>) -> Result<Membership, CodecError> {
    let voters = read_id_set(r)?;
    let learners = read_id_set(r)?;
    if voters.intersection(&learners).next().is_some() {
        return Err(r.invalid("a node is both voter and learner"));
    }
    Ok(Membership { voters, learners })
}

fn read_id_set(r: &mut Reader<'_>) -> Result<BTreeSet<NodeId>, CodecError> {
    let count = r.u32()? as usize;
    // Check the count against the bytes present before trusting it.
    if count > r.remaining() / 8 {
        return Err(r.invalid("member count exceeds the record"));
    }
    let mut set = BTreeSet::new();
    let mut prev: Option<u64> = None;
    for _ in 0..count {
        let id = r.value()?;
        if prev.is_some_and(|p| id <= p) {
            return Err(r.invalid("members not in strictly increasing order"));
        }
        prev = Some(id);
        set.insert(NodeId(id));
    }
    Ok(set)
}

pub(crate) fn read_snapshot_meta(r: &mut Reader<'_>) -> Result<SnapshotMeta, CodecError> {
    let index = Index(r.value()?);
    let term = Term(r.value()?);
    let membership = read_membership(r)?;
    Ok(SnapshotMeta {
        index,
        term,
        membership,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let m = Membership {
            voters: [NodeId(1), NodeId(2), NodeId(9)].into(),
            learners: [NodeId(4)].into(),
        };
        vec![
            Entry {
                index: Index(1),
                term: Term(1),
                payload: Payload::Noop,
            },
            Entry {
                index: Index(2),
                term: Term(3),
                payload: Payload::Normal(Bytes::from_static(b"hello")),
            },
            Entry {
                index: Index(VALUE_MAX - 1),
                term: Term(VALUE_MAX - 1),
                payload: Payload::Normal(Bytes::new()),
            },
            Entry {
                index: Index(7),
                term: Term(2),
                payload: Payload::Membership(m),
            },
            Entry {
                index: Index(8),
                term: Term(2),
                payload: Payload::Membership(Membership::default()),
            },
        ]
    }

    #[test]
    fn entry_round_trip_and_length() {
        for e in entries() {
            let mut buf = Vec::new();
            encode_entry(&mut buf, &e);
            assert_eq!(buf.len() as u64, entry_len(&e), "{e:?}");
            assert_eq!(decode_entry(&buf).unwrap(), e);
        }
    }

    #[test]
    fn entry_rejects_every_truncation_and_trailing_bytes() {
        for e in entries() {
            let mut buf = Vec::new();
            encode_entry(&mut buf, &e);
            for cut in 0..buf.len() {
                assert!(decode_entry(&buf[..cut]).is_err(), "cut {cut} of {e:?}");
            }
            buf.push(0);
            assert!(matches!(
                decode_entry(&buf),
                Err(CodecError::Trailing { count: 1, .. })
            ));
        }
    }

    #[test]
    fn entry_rejects_garbage() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entries()[0]);
        buf[16] = 9;
        assert!(matches!(
            decode_entry(&buf),
            Err(CodecError::BadTag { tag: 9, .. })
        ));
        // Index 0 is the empty prefix, never an entry.
        let mut zero = vec![0u8; 16];
        zero.push(PAYLOAD_NOOP);
        assert!(decode_entry(&zero).is_err());
        // A huge length must not allocate or panic.
        let mut huge = Vec::new();
        put_u64(&mut huge, 1);
        put_u64(&mut huge, 1);
        put_u8(&mut huge, PAYLOAD_NORMAL);
        put_u32(&mut huge, u32::MAX);
        assert!(matches!(
            decode_entry(&huge),
            Err(CodecError::Truncated { .. })
        ));
        let mut members = Vec::new();
        put_u64(&mut members, 1);
        put_u64(&mut members, 1);
        put_u8(&mut members, PAYLOAD_MEMBERSHIP);
        put_u32(&mut members, u32::MAX);
        assert!(decode_entry(&members).is_err());
    }

    #[test]
    fn values_beyond_the_limit_are_refused() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entries()[0]);
        buf[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_entry(&buf),
            Err(CodecError::Invalid { .. })
        ));
        let mut hs = Vec::new();
        encode_hard_state(
            &mut hs,
            &HardState {
                term: Term(VALUE_MAX),
                vote: None,
                commit: Index(0),
            },
        );
        assert!(decode_hard_state(&hs).is_err());
    }

    #[test]
    fn membership_must_be_canonical() {
        let encode = |voters: &[u64], learners: &[u64]| {
            let mut buf = Vec::new();
            for set in [voters, learners] {
                put_u32(&mut buf, set.len() as u32);
                for id in set {
                    put_u64(&mut buf, *id);
                }
            }
            buf
        };
        let decode = |buf: &[u8]| {
            let mut r = Reader::new(buf, "membership");
            read_membership(&mut r)
        };
        assert!(decode(&encode(&[1, 2], &[3])).is_ok());
        assert!(decode(&encode(&[2, 1], &[])).is_err());
        assert!(decode(&encode(&[1, 1], &[])).is_err());
        assert!(decode(&encode(&[1, 2], &[2])).is_err());
    }

    #[test]
    fn hard_state_round_trip_and_garbage() {
        for hs in [
            HardState::default(),
            HardState {
                term: Term(5),
                vote: Some(NodeId(3)),
                commit: Index(17),
            },
            HardState {
                term: Term(VALUE_MAX - 1),
                vote: Some(NodeId(0)),
                commit: Index(VALUE_MAX - 1),
            },
        ] {
            let mut buf = Vec::new();
            encode_hard_state(&mut buf, &hs);
            assert_eq!(decode_hard_state(&buf).unwrap(), hs);
            for cut in 0..buf.len() {
                assert!(decode_hard_state(&buf[..cut]).is_err());
            }
            buf.push(1);
            assert!(decode_hard_state(&buf).is_err());
        }
        let mut bad = Vec::new();
        put_u64(&mut bad, 1);
        put_u8(&mut bad, 2);
        put_u64(&mut bad, 1);
        assert!(matches!(
            decode_hard_state(&bad),
            Err(CodecError::BadTag { tag: 2, .. })
        ));
    }

    #[test]
    fn mark_round_trip_and_garbage() {
        for kind in [MarkKind::Installed, MarkKind::Compacted, MarkKind::Carried] {
            let mark = SnapshotMark {
                kind,
                index: Index(10),
                term: Term(4),
            };
            let mut buf = Vec::new();
            encode_mark(&mut buf, &mark);
            assert_eq!(decode_mark(&buf).unwrap(), mark);
            for cut in 0..buf.len() {
                assert!(decode_mark(&buf[..cut]).is_err());
            }
            buf.push(0);
            assert!(decode_mark(&buf).is_err());
        }
        let mut bad = Vec::new();
        encode_mark(
            &mut bad,
            &SnapshotMark {
                kind: MarkKind::Carried,
                index: Index(1),
                term: Term(1),
            },
        );
        bad[0] = 0;
        assert!(decode_mark(&bad).is_err());
    }
}
