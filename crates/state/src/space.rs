//! What the space quota measures: the state's *accounted bytes*, a
//! deterministic size of everything the replicated state holds, computed
//! the same way on every member. It stands in for etcd's bbolt file, whose
//! size `--quota-backend-bytes` bounds:
//!
//! - every version a key's history keeps (a put or a tombstone) costs
//!   `VERSION_BYTES` plus its key and value: the history grows with every
//!   write and shrinks only by compaction, as etcd's key bucket;
//! - every lease, register, volume (its table entry; the bytes are in the
//!   volume files, sized when the volume is created), member, user, role,
//!   alarm and client session costs a fixed amount.
//!
//! A member's "db size" (`Status.db_size`) is the high-water mark of this
//! figure since it last defragmented (or started): like bbolt's file, it
//! grows with the data and does not shrink when data goes, only on
//! defragment. "In use" (`db_size_in_use`) is the figure itself. Both are
//! kept by the member (`ferrite-service`), not replicated: only the
//! alarms they raise are.

/// The bookkeeping of one version of a key (revisions, version, lease),
/// as bbolt's revision key and the encoded `KeyValue` cost in etcd.
pub const VERSION_BYTES: u64 = 64;
pub const LEASE_BYTES: u64 = 64;
pub const REGISTER_BYTES: u64 = 128;
pub const VOLUME_BYTES: u64 = 256;
pub const MEMBER_BYTES: u64 = 256;
pub const AUTH_ENTRY_BYTES: u64 = 256;
pub const ALARM_BYTES: u64 = 16;
pub const SESSION_BYTES: u64 = 64;

/// The accounted bytes of one version of `key` holding `value` (0 bytes
/// for a tombstone).
pub fn version_bytes(key: usize, value: usize) -> u64 {
    VERSION_BYTES
        .saturating_add(key as u64)
        .saturating_add(value as u64)
}

/// What a request would add to the accounted bytes if it applied (etcd's
/// quota `Cost`): a put its version, a transaction all the puts of both
/// branches, a lease grant a lease, a volume creation its table entry.
/// Requests that cannot grow the state cost 0.
pub fn cost(op: &crate::Op) -> u64 {
    use crate::Op;
    match op {
        Op::Put(p) => version_bytes(p.key.len(), p.value.len()),
        Op::Txn(t) => txn_cost(t),
        Op::LeaseGrant { .. } => LEASE_BYTES,
        Op::VolumeCreate { .. } => VOLUME_BYTES,
        _ => 0,
    }
}

fn txn_cost(t: &crate::TxnRequest) -> u64 {
    t.success
        .iter()
        .chain(&t.failure)
        .map(|op| match op {
            crate::RequestOp::Put(p) => version_bytes(p.key.len(), p.value.len()),
            crate::RequestOp::Txn(inner) => txn_cost(inner),
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}
