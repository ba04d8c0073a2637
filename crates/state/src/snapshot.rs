//! Snapshot encoding of a whole `StateMachine`: the KV history (so reads at
//! old revisions still work after a restore), revisions, registers, the
//! session table with its kept replies and limits, the members, volumes,
//! leases, the auth store (users, roles, the token secret), the raised
//! alarms and the applied index.
//!
//! ```text
//! magic "FSSM" | version u8 | body length u64 | body | CRC-32 of body u32
//! ```
//!
//! The checksum catches damage; the length catches truncation before the
//! body is parsed; and the decoded state must pass `StateMachine::validate`,
//! so a snapshot that is intact but describes an impossible state (a bug in
//! whoever wrote it) is refused rather than crashing a later apply.
//! Empty data is the empty machine: the bootstrap snapshot is empty.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::{
    get_member, get_reply, get_version, get_volume, put_member, put_reply, put_version, put_volume,
    Reader, Writer,
};
use crate::crc32::crc32;
use crate::error::DecodeError;
use crate::kv::{History, KvStore};
use crate::leases::Leases;
use crate::limits::{KEY_BYTES_MAX, REGISTER_NAME_BYTES_MAX, VOLUMES_MAX, VOLUME_BYTES_MAX};
use crate::machine::StateMachine;
use crate::registers::Registers;
use crate::session::{Session, SessionLimits, Sessions};
use crate::volumes::{VolumeInfo, Volumes};

const MAGIC: &[u8; 4] = b"FSSM";
const SNAPSHOT_VERSION: u8 = 6;
/// Version 5 is version 6 without the alarms: still read, as none raised.
const SNAPSHOT_VERSION_NO_ALARMS: u8 = 5;
/// Version 4 is version 5 without the auth store (users, roles, enabled):
/// still read, as auth never set up.
const SNAPSHOT_VERSION_NO_AUTH: u8 = 4;
/// Version 3 is version 4 without leases (no lease table, no lease or
/// sub-revision in versions, version-1 replies); still read.
const SNAPSHOT_VERSION_NO_LEASES: u8 = 3;
/// Version 2 is version 3 without the volume table; still read.
const SNAPSHOT_VERSION_NO_VOLUMES: u8 = 2;

/// At most this many alarms (two types for each of many members).
const ALARMS_MAX: usize = 1 << 16;

/// Encodes in one buffer (a snapshot can be large): the body's length is
/// filled in once the body is written.
pub(crate) fn encode(sm: &StateMachine) -> Bytes {
    let mut w = Writer::new();
    w.raw(MAGIC);
    w.u8(SNAPSHOT_VERSION);
    let length_at = w.position();
    w.len(0);
    let body_at = w.position();
    encode_body(sm, &mut w);
    let body_len = w.position() - body_at;
    w.set_u64_at(length_at, body_len as u64);
    let crc = crc32(w.written_since(body_at));
    w.u32(crc);
    w.finish()
}

fn encode_body(sm: &StateMachine, w: &mut Writer) {
    w.u64(sm.applied_index);
    w.i64(sm.kv.revision);
    w.i64(sm.kv.compact_revision);
    w.len(sm.kv.keys.len());
    for (key, history) in &sm.kv.keys {
        w.bytes(key);
        w.len(history.versions().len());
        for v in history.versions() {
            put_version(w, v);
        }
    }
    w.len(sm.registers.len());
    for (name, value) in sm.registers.iter() {
        w.str(name);
        w.i64(value);
    }
    let limits = sm.sessions.limits();
    w.u64(limits.idle_entries_max);
    w.len(limits.sessions_max);
    w.len(sm.sessions.len());
    for (client, s) in sm.sessions.iter() {
        w.u64(client);
        w.u64(s.seq);
        w.u64(s.last_used);
        put_reply(w, &s.reply);
    }
    let members = sm.members.list();
    w.len(members.len());
    for m in &members {
        put_member(w, m);
    }
    let volumes = sm.volumes.list();
    w.len(volumes.len());
    for v in &volumes {
        put_volume(w, v);
    }
    w.len(sm.kv.leases.len());
    for (id, lease) in sm.kv.leases.iter() {
        w.i64(id);
        w.i64(lease.ttl);
        w.i64(lease.remaining);
    }
    crate::codec::auth::put_store(w, &sm.auth);
    let alarms = sm.alarms.list();
    w.len(alarms.len());
    for a in &alarms {
        crate::codec::put_alarm_member(w, a);
    }
}

pub(crate) fn decode(data: &[u8]) -> Result<StateMachine, DecodeError> {
    if data.is_empty() {
        return Ok(StateMachine::default());
    }
    let mut r = Reader::new(data);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if !(SNAPSHOT_VERSION_NO_VOLUMES..=SNAPSHOT_VERSION).contains(&version) {
        return Err(DecodeError::Version {
            found: version,
            expected: SNAPSHOT_VERSION,
        });
    }
    let body_len = r.len("snapshot body", usize::MAX)?;
    let body = r.take(body_len)?;
    let stored = r.u32()?;
    r.finish()?;
    let computed = crc32(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let sm = decode_body(body, version)?;
    sm.validate().map_err(DecodeError::Inconsistent)?;
    Ok(sm)
}

fn decode_body(body: &[u8], version: u8) -> Result<StateMachine, DecodeError> {
    let mut r = Reader::new(body);
    r.legacy = version <= SNAPSHOT_VERSION_NO_LEASES;
    let applied_index = r.u64()?;
    let revision = r.i64()?;
    let compact_revision = r.i64()?;
    let mut keys = BTreeMap::new();
    for _ in 0..r.len("keys", usize::MAX)? {
        let key = r.bytes("key", KEY_BYTES_MAX)?;
        let n = r.len("versions", usize::MAX)?;
        let mut versions = r.vec_for(n);
        for _ in 0..n {
            versions.push(get_version(&mut r)?);
        }
        if keys.last_key_value().is_some_and(|(k, _)| *k >= key) {
            return Err(DecodeError::Inconsistent("keys out of order"));
        }
        keys.insert(key, History::from_versions(versions));
    }
    let mut values = BTreeMap::new();
    for _ in 0..r.len("registers", usize::MAX)? {
        let name = r.string("register name", REGISTER_NAME_BYTES_MAX)?;
        let value = r.i64()?;
        if values.last_key_value().is_some_and(|(k, _)| *k >= name) {
            return Err(DecodeError::Inconsistent("registers out of order"));
        }
        values.insert(name, value);
    }
    let limits = SessionLimits {
        idle_entries_max: r.u64()?,
        sessions_max: r.len("session limit", usize::MAX)?,
    };
    let mut sessions = BTreeMap::new();
    for _ in 0..r.len("sessions", usize::MAX)? {
        let client = r.u64()?;
        let session = Session {
            seq: r.u64()?,
            last_used: r.u64()?,
            reply: get_reply(&mut r)?,
        };
        if sessions.last_key_value().is_some_and(|(c, _)| *c >= client) {
            return Err(DecodeError::Inconsistent("sessions out of order"));
        }
        sessions.insert(client, session);
    }
    let mut members = crate::members::Members::default();
    for _ in 0..r.len("members", usize::MAX)? {
        let m = get_member(&mut r)?;
        if members
            .by_id
            .last_key_value()
            .is_some_and(|(id, _)| *id >= m.id)
        {
            return Err(DecodeError::Inconsistent("members out of order"));
        }
        members.publish(m);
    }
    let mut volumes = Vec::new();
    if version >= SNAPSHOT_VERSION_NO_LEASES {
        for _ in 0..r.len("volumes", VOLUMES_MAX)? {
            let v = get_volume(&mut r)?;
            if volumes
                .last()
                .is_some_and(|last: &VolumeInfo| last.name >= v.name)
            {
                return Err(DecodeError::Inconsistent("volumes out of order"));
            }
            if v.size > VOLUME_BYTES_MAX || v.name.is_empty() {
                return Err(DecodeError::Inconsistent(
                    "volume size or name out of bounds",
                ));
            }
            volumes.push(v);
        }
    }
    let mut records = Vec::new();
    if version >= SNAPSHOT_VERSION_NO_AUTH {
        for _ in 0..r.len("leases", usize::MAX)? {
            let record = (r.i64()?, r.i64()?, r.i64()?);
            if records
                .last()
                .is_some_and(|last: &(i64, i64, i64)| last.0 >= record.0)
            {
                return Err(DecodeError::Inconsistent("leases out of order"));
            }
            records.push(record);
        }
    }
    let auth = if version >= SNAPSHOT_VERSION_NO_ALARMS {
        crate::codec::auth::get_store(&mut r)?
    } else {
        crate::auth::AuthStore::default()
    };
    let mut alarms = Vec::new();
    if version >= SNAPSHOT_VERSION {
        for _ in 0..r.len("alarms", ALARMS_MAX)? {
            let a = crate::codec::get_alarm_member(&mut r)?;
            if alarms
                .last()
                .is_some_and(|last: &crate::alarms::AlarmMember| *last >= a)
            {
                return Err(DecodeError::Inconsistent("alarms out of order"));
            }
            alarms.push(a);
        }
    }
    r.finish()?;
    let mut leases = Leases::from_records(records);
    for (key, history) in &keys {
        if let Some(live) = history.live_at(key, revision) {
            if live.lease != 0 {
                if !leases.contains(live.lease) {
                    return Err(DecodeError::Inconsistent(
                        "a key names a lease that does not exist",
                    ));
                }
                leases.move_key(key, 0, live.lease);
            }
        }
    }
    let mut kv = KvStore {
        keys,
        revision,
        compact_revision,
        leases,
        bytes: 0,
    };
    kv.bytes = kv.accounted_bytes();
    Ok(StateMachine {
        kv,
        alarms: crate::alarms::Alarms::from_list(alarms),
        registers: Registers::from_values(values),
        sessions: Sessions::from_sessions(limits, sessions),
        members,
        volumes: Volumes::from_list(volumes),
        auth: std::sync::Arc::new(auth),
        applied_index,
        alarm_canary: Default::default(),
    })
}
