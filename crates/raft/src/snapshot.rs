//! Snapshots: the state machine at an index, which replaces the log prefix up
//! to it (Raft §7), and the follower-side assembly of one sent in chunks.

use bytes::{Bytes, BytesMut};

use crate::membership::Membership;
use crate::types::{Index, Term};

/// What a snapshot covers: everything up to and including `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    /// The configuration in force at `index`.
    pub membership: Membership,
}

/// A snapshot with its data, which is opaque to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// A snapshot being received chunk by chunk. Chunks must arrive in order; a
/// duplicate or a gap is answered with the offset we need, so the leader can
/// resend. Bounded by the snapshot's declared size.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub meta: SnapshotMeta,
    pub total_bytes: u64,
    pub data: BytesMut,
}

impl Incoming {
    pub fn received(&self) -> u64 {
        self.data.len() as u64
    }
}
