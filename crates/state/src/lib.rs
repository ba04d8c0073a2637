//! Ferrite's replicated state machines: the etcd-style MVCC key-value store,
//! etcd's users, roles and permissions (`auth/`), named integer registers, the block volume table (with the sparse files
//! that hold volume bytes, `block_store.rs`), and client sessions that make retried requests
//! exactly-once, behind one [`StateMachine`] that every replica applies in
//! log order.
//!
//! Determinism is the contract: the same entries applied from the same
//! snapshot give the same replies, events and snapshots on every replica. So
//! nothing here reads a clock or draws a random number, and every collection
//! that is iterated is a `BTreeMap`, never a hash map.
//!
//! Bytes come in from the log and from snapshots, which a bug or a damaged
//! disk can corrupt; both decoders return typed errors, never panic, and an
//! undecodable entry is a deterministic error reply.

pub mod alarms;
pub mod auth;
pub mod backup;
pub mod block_store;
mod codec;
pub mod command;
mod crc32;
pub mod error;
pub mod event;
pub mod kv;
pub mod leases;
pub mod limits;
pub mod machine;
pub mod members;
pub mod registers;
pub mod reply;
pub mod session;
mod snapshot;
pub mod space;
pub mod volumes;
pub mod watch;

pub use crate::alarms::{AlarmAction, AlarmCanary, AlarmMember, AlarmRequest, AlarmType, Alarms};
pub use crate::auth::{AuthReply, AuthRequest, AuthStore, Principal};
pub use crate::block_store::{BlockStore, StoreError};
pub use crate::command::{Command, Op};
pub use crate::error::{ApplyError, DecodeError, StateError};
pub use crate::event::{Event, KvEvent, LeaseEvent, Published, RegisterEvent, VolumeEvent};
pub use crate::kv::{
    ChangesRequest, ChangesResponse, CompactRequest, CompactResponse, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue, KvStore, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};
pub use crate::leases::{LeaseId, LeaseInfo, Leases, LEASE_TTL_MAX};
pub use crate::machine::{Applied, StateMachine};
pub use crate::members::{MemberInfo, Members};
pub use crate::registers::Registers;
pub use crate::reply::Reply;
pub use crate::session::SessionLimits;
pub use crate::volumes::{VolumeInfo, Volumes};

/// Public only for the fuzz targets (`fuzz/`, and their corpus replay in
/// `ferrite-fuzzing`), which seal arbitrary snapshot bodies with a valid
/// checksum so that mutations reach the body's decoder. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::crc32::crc32;
}
