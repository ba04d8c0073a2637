//! What goes into the log: a `Command` is one client request, with an
//! optional session for exactly-once retries. Writes are proposed as
//! commands; reads usually are not (the node serves them locally after
//! ReadIndex, or serializably), but `Range` and `RegisterGet` are commands
//! too, for a client that asks for a read through the log.
//!
//! Every command says who asks (a `Principal`): the state machine checks
//! its permission when the command applies, or when a read is answered
//! (see `auth/`).

use bytes::Bytes;

use crate::auth::{AuthRequest, Principal};
use crate::codec;
use crate::error::DecodeError;
use crate::kv::{CompactRequest, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

/// One request as proposed through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// `(client, seq)`: see `session.rs`. `None` applies the request
    /// unconditionally (at-least-once under retries).
    pub session: Option<(u64, u64)>,
    /// Who asks; `System` for the member's own work.
    pub principal: Principal,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
    Range(RangeRequest),
    RegisterGet {
        name: String,
    },
    RegisterSet {
        name: String,
        value: i64,
    },
    RegisterAdd {
        name: String,
        delta: i64,
    },
    RegisterCas {
        name: String,
        expected: i64,
        new: i64,
    },
    /// Read-only: the first `limit` registers in name order.
    RegisterList {
        limit: u64,
    },
    /// A member's name and addresses (see `members.rs`); replies with the
    /// whole table.
    MemberPublish(crate::members::MemberInfo),
    MemberForget {
        id: u64,
    },
    /// Reads the member table.
    MemberList,
    VolumeCreate {
        name: String,
        size: u64,
    },
    VolumeResize {
        name: String,
        size: u64,
    },
    VolumeDelete {
        name: String,
    },
    VolumeList,
    /// Writes `data` at `offset`; at most `VOLUME_WRITE_BYTES_MAX` bytes.
    VolumeWrite {
        name: String,
        offset: u64,
        data: Bytes,
    },
    /// Zeroes a range (trim, write-zeroes): it reads as zeros afterwards.
    VolumeZero {
        name: String,
        offset: u64,
        len: u64,
    },
    /// Read-only: `len` bytes at `offset`, at most `VOLUME_READ_BYTES_MAX`.
    VolumeRead {
        name: String,
        offset: u64,
        len: u64,
    },
    /// A new lease; the proposer chose the id (> 0) and raised the TTL to
    /// the minimum.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Deletes the lease's keys at one revision, then the lease: a client's
    /// revoke, or the leader's lessor carrying out an expiry.
    LeaseRevoke {
        id: i64,
    },
    /// Remaining TTLs measured by the leader, `(id, seconds)`; at most
    /// 1,000 per command.
    LeaseCheckpoint {
        checkpoints: Vec<(i64, i64)>,
    },
    /// Read-only: one lease, with its keys if asked.
    LeaseGet {
        id: i64,
        keys: bool,
    },
    /// Read-only: every lease id.
    LeaseList,
    /// Read-only: the changes to a key range since a revision (watch
    /// replay).
    Changes(crate::kv::ChangesRequest),
    /// etcd's Auth service: users, roles, enable and disable (reads too).
    Auth(AuthRequest),
    /// etcd's Maintenance.Alarm: raise, clear or list alarms (admin only;
    /// a GET is read-only). See `alarms.rs`.
    Alarm(crate::alarms::AlarmRequest),
    /// Read-only, member-local: a hash of the whole state
    /// (`Maintenance.Hash`).
    Hash,
    /// Read-only, member-local: etcd's `HashKV`, a hash of the key space's
    /// history at `revision` (0: the current one) since the compaction,
    /// equal on every member at the same revision.
    HashKv {
        revision: i64,
    },
    /// Member-local, never through the log: give memory back and reset the
    /// member's db size to what is in use (`Maintenance.Defragment`).
    Defragment,
}

impl Command {
    /// A command outside any session, from the member itself
    /// (`Principal::System`: never checked). Requests from clients say who
    /// asks with [`Command::by`].
    pub fn new(op: Op) -> Command {
        Command {
            session: None,
            principal: Principal::System,
            op,
        }
    }

    /// A command that is applied at most once per `(client, seq)`, from the
    /// member itself until [`Command::by`] says otherwise.
    pub fn with_session(client: u64, seq: u64, op: Op) -> Command {
        Command {
            session: Some((client, seq)),
            principal: Principal::System,
            op,
        }
    }

    /// The same command, asked by `principal`.
    pub fn by(self, principal: Principal) -> Command {
        Command { principal, ..self }
    }

    /// The versioned binary form, as proposed. A command over the limits of
    /// `limits.rs` encodes, but its entry will apply as a decode error; check
    /// with `decode(&encode())` before proposing to refuse it up front.
    pub fn encode(&self) -> Bytes {
        codec::encode_command(self)
    }

    /// Parses an entry's data; refuses truncation, unknown tags, another
    /// version, lengths over the limits and trailing bytes.
    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        codec::decode_command(data)
    }
}
