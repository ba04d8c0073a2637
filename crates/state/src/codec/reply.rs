//! Encoding of replies and their errors: sessions keep a reply per client,
//! and snapshots carry the sessions.

use crate::codec::kv;
use crate::codec::wire::{Reader, Writer};
use crate::error::{DecodeError, StateError};
use crate::reply::Reply;

const REPLY_PUT: u8 = 1;
const REPLY_RANGE: u8 = 2;
const REPLY_DELETE_RANGE: u8 = 3;
const REPLY_TXN: u8 = 4;
const REPLY_COMPACT: u8 = 5;
const REPLY_VALUE: u8 = 16;
const REPLY_SET: u8 = 17;
const REPLY_CAS: u8 = 18;
const REPLY_MEMBERS: u8 = 19;
const REPLY_REGISTERS: u8 = 20;
/// At most this many registers in a reply.
const REGISTERS_MAX: usize = 1 << 20;
/// At most this many members in a reply.
const MEMBERS_MAX: usize = 1024;
const REPLY_ERROR: u8 = 32;
const REPLY_VOLUME: u8 = 48;
const REPLY_VOLUMES: u8 = 49;
const REPLY_DONE: u8 = 50;
const REPLY_DATA: u8 = 51;
const REPLY_LEASE_GRANTED: u8 = 64;
const REPLY_LEASE_REVOKED: u8 = 65;
const REPLY_LEASE: u8 = 66;
const REPLY_LEASES: u8 = 67;
const REPLY_CHANGES: u8 = 68;
const REPLY_AUTH: u8 = 80;
const REPLY_ALARMS: u8 = 96;
const REPLY_HASH: u8 = 97;
const REPLY_HASH_KV: u8 = 98;
const REPLY_DEFRAGMENTED: u8 = 99;
/// At most this many alarms in a reply (two types per member).
const ALARMS_MAX: usize = 2 * MEMBERS_MAX;
/// At most this many leases (or keys of one lease) in a reply.
const LEASES_MAX: usize = 1 << 24;
/// At most this many volumes in a reply.
const VOLUMES_MAX: usize = crate::limits::VOLUMES_MAX;

pub(crate) fn put_reply(w: &mut Writer, reply: &Reply) {
    match reply {
        Reply::Put(p) => {
            w.u8(REPLY_PUT);
            kv::put_put_response(w, p);
        }
        Reply::Range(q) => {
            w.u8(REPLY_RANGE);
            kv::put_range_response(w, q);
        }
        Reply::DeleteRange(d) => {
            w.u8(REPLY_DELETE_RANGE);
            kv::put_delete_response(w, d);
        }
        Reply::Txn(t) => {
            w.u8(REPLY_TXN);
            kv::put_txn_response(w, t);
        }
        Reply::Compact(c) => {
            w.u8(REPLY_COMPACT);
            kv::put_compact_response(w, c);
        }
        Reply::Value(v) => {
            w.u8(REPLY_VALUE);
            w.i64(*v);
        }
        Reply::Set { previous } => {
            w.u8(REPLY_SET);
            w.i64(*previous);
        }
        Reply::Cas { swapped, current } => {
            w.u8(REPLY_CAS);
            w.bool(*swapped);
            w.i64(*current);
        }
        Reply::Registers(list) => {
            w.u8(REPLY_REGISTERS);
            w.len(list.len());
            for (name, value) in list {
                w.str(name);
                w.i64(*value);
            }
        }
        Reply::Members(members) => {
            w.u8(REPLY_MEMBERS);
            w.len(members.len());
            for m in members {
                crate::codec::put_member(w, m);
            }
        }
        Reply::Volume(v) => {
            w.u8(REPLY_VOLUME);
            crate::codec::put_volume(w, v);
        }
        Reply::Volumes(list) => {
            w.u8(REPLY_VOLUMES);
            w.len(list.len());
            for v in list {
                crate::codec::put_volume(w, v);
            }
        }
        Reply::Done => w.u8(REPLY_DONE),
        Reply::Data(data) => {
            w.u8(REPLY_DATA);
            w.bytes(data);
        }
        Reply::Error(e) => {
            w.u8(REPLY_ERROR);
            put_error(w, e);
        }
        Reply::LeaseGranted { id, ttl } => {
            w.u8(REPLY_LEASE_GRANTED);
            w.i64(*id);
            w.i64(*ttl);
        }
        Reply::LeaseRevoked { revision } => {
            w.u8(REPLY_LEASE_REVOKED);
            w.i64(*revision);
        }
        Reply::Lease(l) => {
            w.u8(REPLY_LEASE);
            w.i64(l.id);
            w.i64(l.ttl);
            w.i64(l.remaining);
            w.len(l.keys.len());
            for k in &l.keys {
                w.bytes(k);
            }
        }
        Reply::Leases(ids) => {
            w.u8(REPLY_LEASES);
            w.len(ids.len());
            for id in ids {
                w.i64(*id);
            }
        }
        Reply::Changes(c) => {
            w.u8(REPLY_CHANGES);
            kv::put_changes_response(w, c);
        }
        Reply::Auth(a) => {
            w.u8(REPLY_AUTH);
            crate::codec::auth::put_reply(w, a);
        }
        Reply::Alarms(list) => {
            w.u8(REPLY_ALARMS);
            w.len(list.len());
            for a in list {
                crate::codec::put_alarm_member(w, a);
            }
        }
        Reply::Hash { hash, revision } => {
            w.u8(REPLY_HASH);
            w.u32(*hash);
            w.i64(*revision);
        }
        Reply::HashKv {
            hash,
            compact_revision,
            hash_revision,
            revision,
        } => {
            w.u8(REPLY_HASH_KV);
            w.u32(*hash);
            w.i64(*compact_revision);
            w.i64(*hash_revision);
            w.i64(*revision);
        }
        Reply::Defragmented { released, in_use } => {
            w.u8(REPLY_DEFRAGMENTED);
            w.u64(*released);
            w.u64(*in_use);
        }
    }
}

pub(crate) fn get_reply(r: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    Ok(match r.u8()? {
        REPLY_PUT => Reply::Put(kv::get_put_response(r)?),
        REPLY_RANGE => Reply::Range(kv::get_range_response(r)?),
        REPLY_DELETE_RANGE => Reply::DeleteRange(kv::get_delete_response(r)?),
        REPLY_TXN => Reply::Txn(kv::get_txn_response(r, 0)?),
        REPLY_COMPACT => Reply::Compact(kv::get_compact_response(r)?),
        REPLY_VALUE => Reply::Value(r.i64()?),
        REPLY_SET => Reply::Set { previous: r.i64()? },
        REPLY_MEMBERS => {
            let n = r.len("members", MEMBERS_MAX)?;
            let mut members = r.vec_for(n);
            for _ in 0..n {
                members.push(crate::codec::get_member(r)?);
            }
            Reply::Members(members)
        }
        REPLY_REGISTERS => {
            let n = r.len("registers", REGISTERS_MAX)?;
            let mut list = r.vec_for(n);
            for _ in 0..n {
                let name = r.string("register name", crate::limits::REGISTER_NAME_BYTES_MAX)?;
                list.push((name, r.i64()?));
            }
            Reply::Registers(list)
        }
        REPLY_CAS => Reply::Cas {
            swapped: r.bool()?,
            current: r.i64()?,
        },
        REPLY_VOLUME => Reply::Volume(crate::codec::get_volume(r)?),
        REPLY_VOLUMES => {
            let n = r.len("volumes", VOLUMES_MAX)?;
            let mut list = r.vec_for(n);
            for _ in 0..n {
                list.push(crate::codec::get_volume(r)?);
            }
            Reply::Volumes(list)
        }
        REPLY_DONE => Reply::Done,
        REPLY_DATA => {
            Reply::Data(r.bytes("volume data", crate::limits::VOLUME_READ_BYTES_MAX as usize)?)
        }
        REPLY_ERROR => Reply::Error(get_error(r)?),
        REPLY_LEASE_GRANTED => Reply::LeaseGranted {
            id: r.i64()?,
            ttl: r.i64()?,
        },
        REPLY_LEASE_REVOKED => Reply::LeaseRevoked { revision: r.i64()? },
        REPLY_LEASE => {
            let (id, ttl, remaining) = (r.i64()?, r.i64()?, r.i64()?);
            let n = r.len("lease keys", LEASES_MAX)?;
            let mut keys = r.vec_for(n);
            for _ in 0..n {
                keys.push(r.bytes("key", crate::limits::KEY_BYTES_MAX)?);
            }
            Reply::Lease(crate::leases::LeaseInfo {
                id,
                ttl,
                remaining,
                keys,
            })
        }
        REPLY_LEASES => {
            let n = r.len("leases", LEASES_MAX)?;
            let mut ids = r.vec_for(n);
            for _ in 0..n {
                ids.push(r.i64()?);
            }
            Reply::Leases(ids)
        }
        REPLY_CHANGES => Reply::Changes(kv::get_changes_response(r)?),
        REPLY_AUTH => Reply::Auth(crate::codec::auth::get_reply(r)?),
        REPLY_ALARMS => {
            let n = r.len("alarms", ALARMS_MAX)?;
            let mut list = r.vec_for(n);
            for _ in 0..n {
                list.push(crate::codec::get_alarm_member(r)?);
            }
            Reply::Alarms(list)
        }
        REPLY_HASH => Reply::Hash {
            hash: r.u32()?,
            revision: r.i64()?,
        },
        REPLY_HASH_KV => Reply::HashKv {
            hash: r.u32()?,
            compact_revision: r.i64()?,
            hash_revision: r.i64()?,
            revision: r.i64()?,
        },
        REPLY_DEFRAGMENTED => Reply::Defragmented {
            released: r.u64()?,
            in_use: r.u64()?,
        },
        tag => return Err(DecodeError::UnknownTag { what: "reply", tag }),
    })
}

fn put_error(w: &mut Writer, e: &StateError) {
    match e {
        StateError::Compacted => w.u8(1),
        StateError::FutureRevision => w.u8(2),
        StateError::DuplicateKey => w.u8(3),
        StateError::EmptyKey => w.u8(4),
        StateError::KeyNotFound => w.u8(5),
        StateError::ValueProvided => w.u8(6),
        StateError::Overflow { value, delta } => {
            w.u8(7);
            w.i64(*value);
            w.i64(*delta);
        }
        StateError::VolumeExists(name) => {
            w.u8(8);
            w.str(name);
        }
        StateError::NoSuchVolume(name) => {
            w.u8(9);
            w.str(name);
        }
        StateError::VolumeName(name) => {
            w.u8(10);
            w.str(name);
        }
        StateError::VolumeSize { size, max } => {
            w.u8(11);
            w.u64(*size);
            w.u64(*max);
        }
        StateError::TooManyVolumes { max } => {
            w.u8(12);
            w.len(*max);
        }
        StateError::LocalReadOnly => w.u8(14),
        StateError::LeaseNotFound => w.u8(15),
        StateError::LeaseExists => w.u8(16),
        StateError::LeaseProvided => w.u8(17),
        StateError::LeaseTtlTooLarge => w.u8(18),
        StateError::RootUserNotExist => w.u8(32),
        StateError::RootRoleNotExist => w.u8(33),
        StateError::UserAlreadyExist => w.u8(34),
        StateError::UserEmpty => w.u8(35),
        StateError::UserNotFound => w.u8(36),
        StateError::RoleAlreadyExist => w.u8(37),
        StateError::RoleNotFound => w.u8(38),
        StateError::RoleEmpty => w.u8(39),
        StateError::AuthFailed => w.u8(40),
        StateError::PermissionNotGiven => w.u8(41),
        StateError::PermissionDenied => w.u8(42),
        StateError::RoleNotGranted => w.u8(43),
        StateError::PermissionNotGranted => w.u8(44),
        StateError::AuthNotEnabled => w.u8(45),
        StateError::InvalidAuthToken => w.u8(46),
        StateError::InvalidAuthMgmt => w.u8(47),
        StateError::AuthOldRevision => w.u8(48),
        StateError::NoSpace => w.u8(64),
        StateError::Corrupt => w.u8(65),
        StateError::VolumeRange { offset, len, size } => {
            w.u8(13);
            w.u64(*offset);
            w.u64(*len);
            w.u64(*size);
        }
    }
}

fn get_error(r: &mut Reader<'_>) -> Result<StateError, DecodeError> {
    // Names in errors echo what a client sent, which may be invalid: any
    // short text.
    let text = |r: &mut Reader<'_>| r.string("error text", 4096);
    Ok(match r.u8()? {
        1 => StateError::Compacted,
        2 => StateError::FutureRevision,
        3 => StateError::DuplicateKey,
        4 => StateError::EmptyKey,
        5 => StateError::KeyNotFound,
        6 => StateError::ValueProvided,
        7 => StateError::Overflow {
            value: r.i64()?,
            delta: r.i64()?,
        },
        8 => StateError::VolumeExists(text(r)?),
        9 => StateError::NoSuchVolume(text(r)?),
        10 => StateError::VolumeName(text(r)?),
        11 => StateError::VolumeSize {
            size: r.u64()?,
            max: r.u64()?,
        },
        12 => StateError::TooManyVolumes {
            max: r.len("volume limit", usize::MAX)?,
        },
        14 => StateError::LocalReadOnly,
        15 => StateError::LeaseNotFound,
        16 => StateError::LeaseExists,
        17 => StateError::LeaseProvided,
        18 => StateError::LeaseTtlTooLarge,
        32 => StateError::RootUserNotExist,
        33 => StateError::RootRoleNotExist,
        34 => StateError::UserAlreadyExist,
        35 => StateError::UserEmpty,
        36 => StateError::UserNotFound,
        37 => StateError::RoleAlreadyExist,
        38 => StateError::RoleNotFound,
        39 => StateError::RoleEmpty,
        40 => StateError::AuthFailed,
        41 => StateError::PermissionNotGiven,
        42 => StateError::PermissionDenied,
        43 => StateError::RoleNotGranted,
        44 => StateError::PermissionNotGranted,
        45 => StateError::AuthNotEnabled,
        46 => StateError::InvalidAuthToken,
        47 => StateError::InvalidAuthMgmt,
        48 => StateError::AuthOldRevision,
        64 => StateError::NoSpace,
        65 => StateError::Corrupt,
        13 => StateError::VolumeRange {
            offset: r.u64()?,
            len: r.u64()?,
            size: r.u64()?,
        },
        tag => return Err(DecodeError::UnknownTag { what: "error", tag }),
    })
}
