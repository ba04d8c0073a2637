//! The answer an applied command gives its client. Error results of
//! well-formed requests (`Reply::Error`) are replies too: deterministic, so
//! a session keeps them and a retry gets the same error.

use crate::error::StateError;
use crate::kv::{CompactResponse, DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Put(PutResponse),
    Range(RangeResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactResponse),
    /// Register get and add: the register's value now.
    Value(i64),
    /// Register set: the value it replaced.
    Set {
        previous: i64,
    },
    /// Register compare-and-set: whether it swapped, and the value now.
    Cas {
        swapped: bool,
        current: i64,
    },
    /// Registers with their values, in name order.
    Registers(Vec<(String, i64)>),
    /// The member table, after a publish or forget, or for a list.
    Members(Vec<crate::members::MemberInfo>),
    /// A volume after a create, resize or delete.
    Volume(crate::volumes::VolumeInfo),
    Volumes(Vec<crate::volumes::VolumeInfo>),
    /// A volume write or zero was applied.
    Done,
    /// A volume read's bytes.
    Data(bytes::Bytes),
    Error(StateError),
    /// A lease was granted: its id and TTL (raised to the minimum).
    LeaseGranted {
        id: i64,
        ttl: i64,
    },
    /// A lease was revoked; the store's revision after its keys went.
    LeaseRevoked {
        revision: i64,
    },
    Lease(crate::leases::LeaseInfo),
    /// Every lease id, ascending.
    Leases(Vec<i64>),
    Changes(crate::kv::ChangesResponse),
    /// What an auth request answers.
    Auth(crate::auth::AuthReply),
    /// The alarms an alarm request listed, raised or cleared.
    Alarms(Vec<crate::alarms::AlarmMember>),
    /// A hash of the whole state, at the store's `revision`.
    Hash {
        hash: u32,
        revision: i64,
    },
    /// etcd's HashKV: the hash of the history at `hash_revision`, the
    /// compaction revision it starts after, and the current `revision`.
    HashKv {
        hash: u32,
        compact_revision: i64,
        hash_revision: i64,
        revision: i64,
    },
    /// A defragmentation: version slots released, and the accounted bytes
    /// in use after it.
    Defragmented {
        released: u64,
        in_use: u64,
    },
}

impl Reply {
    /// The versioned binary form, for carrying a reply between nodes (a
    /// follower forwards a write; the leader answers with this).
    pub fn encode(&self) -> bytes::Bytes {
        crate::codec::encode_reply(self)
    }

    pub fn decode(data: &[u8]) -> Result<Reply, crate::error::DecodeError> {
        crate::codec::decode_reply(data)
    }
}
