//! The binary encoding of commands and replies (replies travel inside
//! snapshots, in the session table). Little-endian fixed-width integers,
//! u64 lengths, one tag byte per variant; a command starts with a version
//! byte so the format can change without misreading old entries.
//!
//! Every decoder refuses what it cannot read with a `DecodeError`: bytes
//! come from the log and the disk, which bugs and damage can corrupt.

pub(crate) mod auth;
mod kv;
mod reply;
mod wire;

use bytes::Bytes;

use crate::command::{Command, Op};
use crate::error::DecodeError;
use crate::limits::{REGISTER_NAME_BYTES_MAX, VOLUME_NAME_BYTES_MAX, VOLUME_WRITE_BYTES_MAX};

pub(crate) use kv::{get_version, put_version};
pub(crate) use reply::{get_reply, put_reply};
pub(crate) use wire::{Reader, Writer};

/// The command format version this code writes and reads.
pub(crate) const COMMAND_VERSION: u8 = 4;
/// Version 4 without the alarm, hash and defragment ops and replies (the
/// same layout): still read.
pub(crate) const COMMAND_VERSION_NO_ALARMS: u8 = 3;
/// Version 3 without the principal: still read (as `Principal::System`,
/// what every command was before auth existed). Its replies are version 3's.
pub(crate) const COMMAND_VERSION_NO_PRINCIPAL: u8 = 2;
/// The first format, without lease fields: still read (as lease 0).
pub(crate) const COMMAND_VERSION_NO_LEASES: u8 = 1;

const OP_PUT: u8 = 1;
const OP_DELETE_RANGE: u8 = 2;
const OP_TXN: u8 = 3;
const OP_COMPACT: u8 = 4;
const OP_RANGE: u8 = 5;
const OP_REGISTER_GET: u8 = 16;
const OP_REGISTER_SET: u8 = 17;
const OP_REGISTER_ADD: u8 = 18;
const OP_REGISTER_CAS: u8 = 19;
const OP_REGISTER_LIST: u8 = 20;
const OP_MEMBER_PUBLISH: u8 = 32;
const OP_MEMBER_FORGET: u8 = 33;
const OP_MEMBER_LIST: u8 = 34;
const OP_VOLUME_CREATE: u8 = 48;
const OP_VOLUME_RESIZE: u8 = 49;
const OP_VOLUME_DELETE: u8 = 50;
const OP_VOLUME_LIST: u8 = 51;
const OP_VOLUME_WRITE: u8 = 52;
const OP_VOLUME_ZERO: u8 = 53;
const OP_VOLUME_READ: u8 = 54;
const OP_LEASE_GRANT: u8 = 64;
const OP_LEASE_REVOKE: u8 = 65;
const OP_LEASE_CHECKPOINT: u8 = 66;
const OP_LEASE_GET: u8 = 67;
const OP_LEASE_LIST: u8 = 68;
const OP_CHANGES: u8 = 69;
const OP_AUTH: u8 = 80;
const OP_ALARM: u8 = 96;
const OP_HASH: u8 = 97;
const OP_HASH_KV: u8 = 98;
const OP_DEFRAGMENT: u8 = 99;
/// At most this many leases in one checkpoint (etcd's batch limit).
pub(crate) const CHECKPOINTS_MAX: usize = 1000;

/// Bounds on a member entry: names and addresses are short.
const MEMBER_TEXT_BYTES_MAX: usize = 1024;
const MEMBER_URLS_MAX: usize = 16;

pub(crate) fn put_member(w: &mut Writer, m: &crate::members::MemberInfo) {
    w.u64(m.id);
    w.str(&m.name);
    for urls in [&m.peer_urls, &m.client_urls] {
        w.len(urls.len());
        for u in urls {
            w.str(u);
        }
    }
}

pub(crate) fn get_member(r: &mut Reader<'_>) -> Result<crate::members::MemberInfo, DecodeError> {
    let id = r.u64()?;
    let name = r.string("member name", MEMBER_TEXT_BYTES_MAX)?;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        for _ in 0..r.len("member urls", MEMBER_URLS_MAX)? {
            list.push(r.string("member url", MEMBER_TEXT_BYTES_MAX)?);
        }
    }
    let [peer_urls, client_urls] = lists;
    Ok(crate::members::MemberInfo {
        id,
        name,
        peer_urls,
        client_urls,
    })
}

pub(crate) fn put_volume(w: &mut Writer, v: &crate::volumes::VolumeInfo) {
    w.str(&v.name);
    w.u64(v.id);
    w.u64(v.size);
}

pub(crate) fn get_volume(r: &mut Reader<'_>) -> Result<crate::volumes::VolumeInfo, DecodeError> {
    Ok(crate::volumes::VolumeInfo {
        name: r.string("volume name", VOLUME_NAME_BYTES_MAX)?,
        id: r.u64()?,
        size: r.u64()?,
    })
}

pub(crate) fn encode_reply(reply: &crate::reply::Reply) -> Bytes {
    let mut w = Writer::new();
    w.u8(COMMAND_VERSION);
    put_reply(&mut w, reply);
    w.finish()
}

pub(crate) fn decode_reply(data: &[u8]) -> Result<crate::reply::Reply, DecodeError> {
    let (mut r, _) = versioned(data)?;
    let reply = get_reply(&mut r)?;
    r.finish()?;
    Ok(reply)
}

/// A reader past the version byte, in the format it names, and the version.
fn versioned(data: &[u8]) -> Result<(Reader<'_>, u8), DecodeError> {
    let mut r = Reader::new(data);
    let version = r.u8()?;
    match version {
        COMMAND_VERSION | COMMAND_VERSION_NO_ALARMS | COMMAND_VERSION_NO_PRINCIPAL => {}
        COMMAND_VERSION_NO_LEASES => r.legacy = true,
        found => {
            return Err(DecodeError::Version {
                found,
                expected: COMMAND_VERSION,
            })
        }
    }
    Ok((r, version))
}

pub(crate) fn encode_command(cmd: &Command) -> Bytes {
    let mut w = Writer::new();
    w.u8(COMMAND_VERSION);
    match cmd.session {
        None => w.u8(0),
        Some((client, seq)) => {
            w.u8(1);
            w.u64(client);
            w.u64(seq);
        }
    }
    auth::put_principal(&mut w, &cmd.principal);
    put_op(&mut w, &cmd.op);
    w.finish()
}

pub(crate) fn decode_command(data: &[u8]) -> Result<Command, DecodeError> {
    let (mut r, version) = versioned(data)?;
    let session = match r.u8()? {
        0 => None,
        1 => Some((r.u64()?, r.u64()?)),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "session",
                tag,
            })
        }
    };
    let principal = if version >= COMMAND_VERSION_NO_ALARMS {
        auth::get_principal(&mut r)?
    } else {
        crate::auth::Principal::System
    };
    let op = get_op(&mut r)?;
    r.finish()?;
    Ok(Command {
        session,
        principal,
        op,
    })
}

fn put_op(w: &mut Writer, op: &Op) {
    match op {
        Op::Put(p) => {
            w.u8(OP_PUT);
            kv::put_put(w, p);
        }
        Op::DeleteRange(d) => {
            w.u8(OP_DELETE_RANGE);
            kv::put_delete(w, d);
        }
        Op::Txn(t) => {
            w.u8(OP_TXN);
            kv::put_txn(w, t);
        }
        Op::Compact(c) => {
            w.u8(OP_COMPACT);
            w.i64(c.revision);
            w.bool(c.physical);
        }
        Op::Range(r) => {
            w.u8(OP_RANGE);
            kv::put_range(w, r);
        }
        Op::RegisterGet { name } => {
            w.u8(OP_REGISTER_GET);
            w.str(name);
        }
        Op::RegisterSet { name, value } => {
            w.u8(OP_REGISTER_SET);
            w.str(name);
            w.i64(*value);
        }
        Op::RegisterAdd { name, delta } => {
            w.u8(OP_REGISTER_ADD);
            w.str(name);
            w.i64(*delta);
        }
        Op::RegisterCas {
            name,
            expected,
            new,
        } => {
            w.u8(OP_REGISTER_CAS);
            w.str(name);
            w.i64(*expected);
            w.i64(*new);
        }
        Op::RegisterList { limit } => {
            w.u8(OP_REGISTER_LIST);
            w.u64(*limit);
        }
        Op::MemberPublish(m) => {
            w.u8(OP_MEMBER_PUBLISH);
            put_member(w, m);
        }
        Op::MemberForget { id } => {
            w.u8(OP_MEMBER_FORGET);
            w.u64(*id);
        }
        Op::MemberList => w.u8(OP_MEMBER_LIST),
        Op::VolumeCreate { name, size } => {
            w.u8(OP_VOLUME_CREATE);
            w.str(name);
            w.u64(*size);
        }
        Op::VolumeResize { name, size } => {
            w.u8(OP_VOLUME_RESIZE);
            w.str(name);
            w.u64(*size);
        }
        Op::VolumeDelete { name } => {
            w.u8(OP_VOLUME_DELETE);
            w.str(name);
        }
        Op::VolumeList => w.u8(OP_VOLUME_LIST),
        Op::VolumeWrite { name, offset, data } => {
            w.u8(OP_VOLUME_WRITE);
            w.str(name);
            w.u64(*offset);
            w.bytes(data);
        }
        Op::VolumeZero { name, offset, len } => {
            w.u8(OP_VOLUME_ZERO);
            w.str(name);
            w.u64(*offset);
            w.u64(*len);
        }
        Op::VolumeRead { name, offset, len } => {
            w.u8(OP_VOLUME_READ);
            w.str(name);
            w.u64(*offset);
            w.u64(*len);
        }
        Op::LeaseGrant { id, ttl } => {
            w.u8(OP_LEASE_GRANT);
            w.i64(*id);
            w.i64(*ttl);
        }
        Op::LeaseRevoke { id } => {
            w.u8(OP_LEASE_REVOKE);
            w.i64(*id);
        }
        Op::LeaseCheckpoint { checkpoints } => {
            w.u8(OP_LEASE_CHECKPOINT);
            w.len(checkpoints.len());
            for (id, remaining) in checkpoints {
                w.i64(*id);
                w.i64(*remaining);
            }
        }
        Op::LeaseGet { id, keys } => {
            w.u8(OP_LEASE_GET);
            w.i64(*id);
            w.bool(*keys);
        }
        Op::LeaseList => w.u8(OP_LEASE_LIST),
        Op::Changes(c) => {
            w.u8(OP_CHANGES);
            kv::put_changes_request(w, c);
        }
        Op::Auth(a) => {
            w.u8(OP_AUTH);
            auth::put_request(w, a);
        }
        Op::Alarm(a) => {
            w.u8(OP_ALARM);
            w.u8(a.action as u8);
            w.u64(a.member_id);
            w.u8(a.alarm as u8);
        }
        Op::Hash => w.u8(OP_HASH),
        Op::HashKv { revision } => {
            w.u8(OP_HASH_KV);
            w.i64(*revision);
        }
        Op::Defragment => w.u8(OP_DEFRAGMENT),
    }
}

pub(crate) fn put_alarm_member(w: &mut Writer, a: &crate::alarms::AlarmMember) {
    w.u64(a.member_id);
    w.u8(a.alarm as u8);
}

pub(crate) fn get_alarm_member(
    r: &mut Reader<'_>,
) -> Result<crate::alarms::AlarmMember, DecodeError> {
    Ok(crate::alarms::AlarmMember {
        member_id: r.u64()?,
        alarm: get_alarm_type(r)?,
    })
}

fn get_alarm_type(r: &mut Reader<'_>) -> Result<crate::alarms::AlarmType, DecodeError> {
    let tag = r.u8()?;
    crate::alarms::AlarmType::from_wire(i32::from(tag))
        .ok_or(DecodeError::UnknownTag { what: "alarm", tag })
}

fn get_op(r: &mut Reader<'_>) -> Result<Op, DecodeError> {
    let name = |r: &mut Reader<'_>| r.string("register name", REGISTER_NAME_BYTES_MAX);
    let volume = |r: &mut Reader<'_>| r.string("volume name", VOLUME_NAME_BYTES_MAX);
    Ok(match r.u8()? {
        OP_PUT => Op::Put(kv::get_put(r)?),
        OP_DELETE_RANGE => Op::DeleteRange(kv::get_delete(r)?),
        OP_TXN => Op::Txn(kv::get_txn(r, 0)?),
        OP_COMPACT => Op::Compact(crate::kv::CompactRequest {
            revision: r.i64()?,
            physical: r.bool()?,
        }),
        OP_RANGE => Op::Range(kv::get_range(r)?),
        OP_REGISTER_GET => Op::RegisterGet { name: name(r)? },
        OP_REGISTER_SET => Op::RegisterSet {
            name: name(r)?,
            value: r.i64()?,
        },
        OP_REGISTER_ADD => Op::RegisterAdd {
            name: name(r)?,
            delta: r.i64()?,
        },
        OP_REGISTER_CAS => Op::RegisterCas {
            name: name(r)?,
            expected: r.i64()?,
            new: r.i64()?,
        },
        OP_REGISTER_LIST => Op::RegisterList { limit: r.u64()? },
        OP_MEMBER_PUBLISH => Op::MemberPublish(get_member(r)?),
        OP_MEMBER_FORGET => Op::MemberForget { id: r.u64()? },
        OP_MEMBER_LIST => Op::MemberList,
        OP_VOLUME_CREATE => Op::VolumeCreate {
            name: volume(r)?,
            size: r.u64()?,
        },
        OP_VOLUME_RESIZE => Op::VolumeResize {
            name: volume(r)?,
            size: r.u64()?,
        },
        OP_VOLUME_DELETE => Op::VolumeDelete { name: volume(r)? },
        OP_VOLUME_LIST => Op::VolumeList,
        OP_VOLUME_WRITE => Op::VolumeWrite {
            name: volume(r)?,
            offset: r.u64()?,
            data: r.bytes("volume write", VOLUME_WRITE_BYTES_MAX)?,
        },
        OP_VOLUME_ZERO => Op::VolumeZero {
            name: volume(r)?,
            offset: r.u64()?,
            len: r.u64()?,
        },
        OP_VOLUME_READ => Op::VolumeRead {
            name: volume(r)?,
            offset: r.u64()?,
            len: r.u64()?,
        },
        OP_LEASE_GRANT => Op::LeaseGrant {
            id: r.i64()?,
            ttl: r.i64()?,
        },
        OP_LEASE_REVOKE => Op::LeaseRevoke { id: r.i64()? },
        OP_LEASE_CHECKPOINT => {
            let n = r.len("lease checkpoints", CHECKPOINTS_MAX)?;
            let mut checkpoints = r.vec_for(n);
            for _ in 0..n {
                checkpoints.push((r.i64()?, r.i64()?));
            }
            Op::LeaseCheckpoint { checkpoints }
        }
        OP_LEASE_GET => Op::LeaseGet {
            id: r.i64()?,
            keys: r.bool()?,
        },
        OP_LEASE_LIST => Op::LeaseList,
        OP_CHANGES => Op::Changes(kv::get_changes_request(r)?),
        OP_AUTH => Op::Auth(auth::get_request(r)?),
        OP_ALARM => {
            let tag = r.u8()?;
            let action = crate::alarms::AlarmAction::from_wire(i32::from(tag)).ok_or(
                DecodeError::UnknownTag {
                    what: "alarm action",
                    tag,
                },
            )?;
            Op::Alarm(crate::alarms::AlarmRequest {
                action,
                member_id: r.u64()?,
                alarm: get_alarm_type(r)?,
            })
        }
        OP_HASH => Op::Hash,
        OP_HASH_KV => Op::HashKv { revision: r.i64()? },
        OP_DEFRAGMENT => Op::Defragment,
        tag => return Err(DecodeError::UnknownTag { what: "op", tag }),
    })
}

#[cfg(test)]
mod tests;
