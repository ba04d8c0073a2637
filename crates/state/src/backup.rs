//! The backup file: what etcd's `Maintenance.Snapshot` streams and
//! `etcdctl snapshot save` writes, and what `ferrite snapshot status` and
//! `ferrite snapshot restore` read. It carries the whole replicated state of
//! one member at one applied index (the state machine snapshot of
//! `snapshot.rs`: KV with its history and revision, leases, auth, registers,
//! sessions, the member and volume tables), but not volume contents.
//!
//! ```text
//! magic "FERRBKUP" | version u32 | header length u32 (= 80)
//! cluster id u64 | member id u64 | raft index u64 | raft term u64
//! revision i64 | compact revision i64 | live keys u64 | created (unix ms) u64
//! state length u64 | state bytes (an "FSSM" state machine snapshot)
//! zeros up to the next multiple of 512 bytes
//! SHA-256 of everything before it (32 bytes)
//! ```
//!
//! All integers little-endian. The padding makes the file's size 32 more
//! than a multiple of 512, which is how etcdctl 3.4's `snapshot save` tells
//! that a stream ended with its SHA-256 (it refuses a stream that does not),
//! and how etcd itself recognises a hashed snapshot.
//!
//! Readers never trust a length: the header's state length must agree with
//! the file's size before anything is allocated, the padding must be zeros,
//! and the hash covers every byte. `decode` (whole file in memory, for tests
//! and the fuzz target) and `read` (a stream, never more in memory than the
//! state itself) apply the same checks.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::machine::StateMachine;

pub const MAGIC: [u8; 8] = *b"FERRBKUP";
pub const VERSION: u32 = 1;
/// Magic, version, header length and the fixed fields.
pub const HEADER_BYTES: usize = 8 + 4 + 4 + 9 * 8;
/// The file's size before the hash is a multiple of this (etcd's rule).
pub const ALIGN: u64 = 512;
pub const HASH_BYTES: usize = 32;
/// Bytes of one streamed piece (one `SnapshotResponse.blob`).
pub const CHUNK_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} bytes is too short for a Ferrite snapshot file (truncated?)")]
    TooShort(u64),
    #[error("not a Ferrite snapshot file (bad magic; an etcd bbolt snapshot cannot be restored into Ferrite)")]
    BadMagic,
    #[error("snapshot file format version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error("snapshot header length {0}; this build reads {HEADER_BYTES}")]
    HeaderLength(u32),
    #[error(
        "the file is {actual} bytes but its header describes {expected} (truncated or damaged)"
    )]
    Size { expected: u64, actual: u64 },
    #[error("the padding before the hash is not zeros (damaged)")]
    Padding,
    #[error("sha256 mismatch: stored {stored}, computed {computed} (the file is corrupt)")]
    Hash { stored: String, computed: String },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// What the header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupMeta {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The Raft index the state is applied to.
    pub raft_index: u64,
    pub raft_term: u64,
    pub revision: i64,
    pub compact_revision: i64,
    /// Keys with a live value at `revision`.
    pub keys: u64,
    pub created_unix_ms: u64,
    pub state_len: u64,
}

impl BackupMeta {
    /// The header for `sm`'s snapshot of `state_len` bytes.
    pub fn of(sm: &StateMachine, state_len: u64) -> BackupMeta {
        let kv = sm.kv();
        let keys = kv
            .keys
            .iter()
            .filter(|(k, h)| h.live_at(k, kv.revision).is_some())
            .count() as u64;
        BackupMeta {
            cluster_id: 0,
            member_id: 0,
            raft_index: sm.applied_index(),
            raft_term: 0,
            revision: kv.revision,
            compact_revision: kv.compact_revision,
            keys,
            created_unix_ms: 0,
            state_len,
        }
    }

    /// Zero bytes between the state and the hash.
    pub fn padding(&self) -> u64 {
        let body = HEADER_BYTES as u64 + self.state_len;
        (ALIGN - body % ALIGN) % ALIGN
    }

    /// The whole file's size; None if it would not fit in a u64.
    pub fn total_len(&self) -> Option<u64> {
        (HEADER_BYTES as u64)
            .checked_add(self.state_len)?
            .checked_add(ALIGN)?
            .checked_add(HASH_BYTES as u64)
            .map(|n| n - ALIGN + self.padding())
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        let fields = [
            self.cluster_id,
            self.member_id,
            self.raft_index,
            self.raft_term,
            self.revision as u64,
            self.compact_revision as u64,
            self.keys,
            self.created_unix_ms,
            self.state_len,
        ];
        for (i, f) in fields.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&f.to_le_bytes());
        }
        b
    }

    /// Parses a header (the first `HEADER_BYTES` of `b`).
    pub fn decode(b: &[u8]) -> Result<BackupMeta, BackupError> {
        let Some(b) = b.get(..HEADER_BYTES) else {
            return Err(BackupError::TooShort(b.len() as u64));
        };
        if b[..8] != MAGIC {
            return Err(BackupError::BadMagic);
        }
        let u32_at = |at: usize| {
            let mut x = [0u8; 4];
            x.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(x)
        };
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[16 + 8 * i..24 + 8 * i]);
            u64::from_le_bytes(x)
        };
        let version = u32_at(8);
        if version != VERSION {
            return Err(BackupError::Version(version));
        }
        let header_len = u32_at(12);
        if header_len as usize != HEADER_BYTES {
            return Err(BackupError::HeaderLength(header_len));
        }
        Ok(BackupMeta {
            cluster_id: u64_at(0),
            member_id: u64_at(1),
            raft_index: u64_at(2),
            raft_term: u64_at(3),
            revision: u64_at(4) as i64,
            compact_revision: u64_at(5) as i64,
            keys: u64_at(6),
            created_unix_ms: u64_at(7),
            state_len: u64_at(8),
        })
    }
}

/// Produces a backup file's bytes in pieces of at most `CHUNK_BYTES`, from
/// the header and the state's bytes (shared, never copied whole), hashing
/// as it goes.
pub struct BackupWriter {
    header: [u8; HEADER_BYTES],
    state: Bytes,
    padding: u64,
    total: u64,
    sent: u64,
    hasher: Sha256,
}

impl BackupWriter {
    /// `meta.state_len` is set from `state`.
    pub fn new(mut meta: BackupMeta, state: Bytes) -> BackupWriter {
        meta.state_len = state.len() as u64;
        let padding = meta.padding();
        let total = HEADER_BYTES as u64 + meta.state_len + padding + HASH_BYTES as u64;
        BackupWriter {
            header: meta.encode(),
            state,
            padding,
            total,
            sent: 0,
            hasher: Sha256::new(),
        }
    }

    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// Bytes not yet returned by `next_chunk`.
    pub fn remaining(&self) -> u64 {
        self.total - self.sent
    }

    /// The next piece, or None once the hash has been returned.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.sent == self.total {
            return None;
        }
        let mut out = BytesMut::with_capacity(CHUNK_BYTES);
        let header_end = HEADER_BYTES as u64;
        let state_end = header_end + self.state.len() as u64;
        let padding_end = state_end + self.padding;
        while out.len() < CHUNK_BYTES && self.sent < padding_end {
            let room = (CHUNK_BYTES - out.len()) as u64;
            let (piece_end, piece): (u64, &[u8]) = if self.sent < header_end {
                let end = header_end.min(self.sent + room);
                (end, &self.header[self.sent as usize..end as usize])
            } else if self.sent < state_end {
                let end = state_end.min(self.sent + room);
                let from = (self.sent - header_end) as usize;
                let to = (end - header_end) as usize;
                (end, &self.state[from..to])
            } else {
                let end = padding_end.min(self.sent + room);
                (end, &[0u8; ALIGN as usize][..(end - self.sent) as usize])
            };
            self.hasher.update(piece);
            out.extend_from_slice(piece);
            self.sent = piece_end;
        }
        if self.sent == padding_end && out.len() + HASH_BYTES <= CHUNK_BYTES {
            let hash = std::mem::take(&mut self.hasher).finalize();
            out.extend_from_slice(&hash);
            self.sent = self.total;
        }
        Some(out.freeze())
    }
}

/// A whole backup file's bytes (for tests and small states; the server
/// streams with `BackupWriter`).
pub fn encode(meta: BackupMeta, state: Bytes) -> Vec<u8> {
    let mut w = BackupWriter::new(meta, state);
    let mut out = Vec::with_capacity(w.total_len() as usize);
    while let Some(c) = w.next_chunk() {
        out.extend_from_slice(&c);
    }
    out
}

/// Checks a whole file in memory and returns its header and state bytes.
/// Never panics, whatever `file` holds.
pub fn decode(file: &[u8]) -> Result<(BackupMeta, &[u8]), BackupError> {
    let actual = file.len() as u64;
    if file.len() < HEADER_BYTES + HASH_BYTES {
        return Err(BackupError::TooShort(actual));
    }
    let meta = BackupMeta::decode(file)?;
    check_size(&meta, actual)?;
    let hash_at = file.len() - HASH_BYTES;
    let state_end = HEADER_BYTES + meta.state_len as usize;
    if file[state_end..hash_at].iter().any(|b| *b != 0) {
        return Err(BackupError::Padding);
    }
    let computed = Sha256::digest(&file[..hash_at]);
    check_hash(&file[hash_at..], &computed)?;
    Ok((meta, &file[HEADER_BYTES..state_end]))
}

fn check_size(meta: &BackupMeta, actual: u64) -> Result<(), BackupError> {
    match meta.total_len() {
        Some(expected) if expected == actual => Ok(()),
        Some(expected) => Err(BackupError::Size { expected, actual }),
        None => Err(BackupError::Size {
            expected: u64::MAX,
            actual,
        }),
    }
}

fn check_hash(stored: &[u8], computed: &[u8]) -> Result<(), BackupError> {
    if stored == computed {
        Ok(())
    } else {
        Err(BackupError::Hash {
            stored: hex(stored),
            computed: hex(computed),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `read` found in a file that checked out.
#[derive(Debug)]
pub struct Verified {
    pub meta: BackupMeta,
    /// The state bytes, if asked for.
    pub state: Option<Vec<u8>>,
    /// The SHA-256 the file ends with (verified).
    pub hash: [u8; HASH_BYTES],
    pub total_len: u64,
}

/// Reads a backup file of `len` bytes from `r` in one pass, checking its
/// size, padding and hash; keeps the state bytes only if `keep_state`.
/// Memory: the state (when kept) and a 64 KiB buffer, whatever the header
/// claims (the claim is checked against `len` first).
pub fn read(mut r: impl Read, len: u64, keep_state: bool) -> Result<Verified, BackupError> {
    let io = |what| move |source| BackupError::Io { what, source };
    if len < (HEADER_BYTES + HASH_BYTES) as u64 {
        return Err(BackupError::TooShort(len));
    }
    let mut header = [0u8; HEADER_BYTES];
    r.read_exact(&mut header).map_err(io("read the header"))?;
    let meta = BackupMeta::decode(&header)?;
    check_size(&meta, len)?;
    let mut hasher = Sha256::new();
    hasher.update(header);
    let mut state = if keep_state {
        // Bounded: the state length was checked against the file's size.
        Some(Vec::with_capacity(meta.state_len as usize))
    } else {
        None
    };
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut left = meta.state_len;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        r.read_exact(&mut buf[..n]).map_err(io("read the state"))?;
        hasher.update(&buf[..n]);
        if let Some(s) = &mut state {
            s.extend_from_slice(&buf[..n]);
        }
        left -= n as u64;
    }
    let padding = meta.padding() as usize;
    r.read_exact(&mut buf[..padding])
        .map_err(io("read the padding"))?;
    if buf[..padding].iter().any(|b| *b != 0) {
        return Err(BackupError::Padding);
    }
    hasher.update(&buf[..padding]);
    let mut hash = [0u8; HASH_BYTES];
    r.read_exact(&mut hash).map_err(io("read the hash"))?;
    check_hash(&hash, &hasher.finalize())?;
    Ok(Verified {
        total_len: len,
        meta,
        state,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Op, PutRequest};

    fn machine(keys: usize) -> StateMachine {
        let mut sm = StateMachine::new();
        for i in 0..keys {
            let put = Op::Put(PutRequest {
                key: format!("key{i}").into_bytes().into(),
                value: vec![b'v'; 100].into(),
                ..Default::default()
            });
            sm.apply(i as u64 + 1, &Command::new(put).encode());
        }
        sm
    }

    fn file(keys: usize) -> (BackupMeta, Vec<u8>) {
        let sm = machine(keys);
        let state = sm.snapshot();
        let mut meta = BackupMeta::of(&sm, state.len() as u64);
        meta.cluster_id = 7;
        meta.member_id = 9;
        meta.raft_term = 3;
        let bytes = encode(meta.clone(), state);
        (meta, bytes)
    }

    #[test]
    fn round_trip_in_memory_and_streamed() {
        for keys in [0, 1, 3, 2000] {
            let (meta, bytes) = file(keys);
            assert_eq!(
                bytes.len() as u64 % ALIGN,
                HASH_BYTES as u64,
                "etcdctl's rule"
            );
            assert_eq!(Some(bytes.len() as u64), meta.total_len());
            let (got, state) = decode(&bytes).unwrap();
            assert_eq!(got, meta);
            assert_eq!(got.keys, keys as u64);
            let sm = StateMachine::restore(state).unwrap();
            assert_eq!(sm.kv().key_count(), keys);
            let v = read(&bytes[..], bytes.len() as u64, true).unwrap();
            assert_eq!(v.meta, meta);
            assert_eq!(v.state.as_deref(), Some(state));
            assert_eq!(v.hash[..], bytes[bytes.len() - 32..]);
            assert!(read(&bytes[..], bytes.len() as u64, false)
                .unwrap()
                .state
                .is_none());
        }
    }

    #[test]
    fn chunks_are_bounded_and_count_down() {
        let sm = machine(2000);
        let state = sm.snapshot();
        let mut w = BackupWriter::new(BackupMeta::of(&sm, 0), state);
        let total = w.total_len();
        assert!(total > 3 * CHUNK_BYTES as u64);
        let mut seen = 0;
        while let Some(c) = w.next_chunk() {
            assert!(!c.is_empty() && c.len() <= CHUNK_BYTES);
            seen += c.len() as u64;
            assert_eq!(w.remaining(), total - seen);
        }
        assert_eq!(seen, total);
    }

    #[test]
    fn bad_magic_version_hash_and_truncation_are_refused() {
        let (_, good) = file(5);
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(matches!(decode(&bad), Err(BackupError::BadMagic)));
        let mut bad = good.clone();
        bad[8] = 2;
        assert!(matches!(decode(&bad), Err(BackupError::Version(2))));
        let mut bad = good.clone();
        let mid = HEADER_BYTES + 10;
        bad[mid] ^= 0x40;
        let e = decode(&bad).unwrap_err();
        assert!(matches!(e, BackupError::Hash { .. }), "{e}");
        assert!(matches!(
            read(&bad[..], bad.len() as u64, true),
            Err(BackupError::Hash { .. })
        ));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(decode(&bad), Err(BackupError::Hash { .. })));
        let mut bad = good.clone();
        let pad = bad.len() - HASH_BYTES - 1;
        bad[pad] = 1;
        assert!(matches!(decode(&bad), Err(BackupError::Padding)));
        for cut in [0, 10, HEADER_BYTES, good.len() - 512, good.len() - 1] {
            let short = &good[..cut];
            assert!(decode(short).is_err(), "cut at {cut}");
            assert!(
                read(short, short.len() as u64, true).is_err(),
                "cut at {cut}"
            );
        }
        // A reader that ends before the length it was promised.
        let e = read(&good[..good.len() - 40], good.len() as u64, true).unwrap_err();
        assert!(matches!(e, BackupError::Io { .. }), "{e}");
    }

    #[test]
    fn a_huge_declared_state_length_allocates_nothing() {
        let (mut meta, _) = file(1);
        meta.state_len = u64::MAX - 10;
        let mut bytes = meta.encode().to_vec();
        bytes.resize(4096 + 32, 0);
        assert!(matches!(decode(&bytes), Err(BackupError::Size { .. })));
        assert!(matches!(
            read(&bytes[..], bytes.len() as u64, true),
            Err(BackupError::Size { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let (_, good) = file(3);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = good.clone();
            let at = (seed as usize) % bad.len();
            bad[at] = (seed >> 32) as u8;
            bad.truncate(bad.len() - (i % 3) * (seed as usize % 64));
            let _ = decode(&bad);
            let _ = read(&bad[..], bad.len() as u64, true);
        }
    }
}
