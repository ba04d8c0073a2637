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
/// At most this many members in a reply.
const MEMBERS_MAX: usize = 1024;
const REPLY_ERROR: u8 = 32;

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
        Reply::Members(members) => {
            w.u8(REPLY_MEMBERS);
            w.len(members.len());
            for m in members {
                crate::codec::put_member(w, m);
            }
        }
        Reply::Error(e) => {
            w.u8(REPLY_ERROR);
            put_error(w, e);
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
            let mut members = Vec::with_capacity(r.capacity(n));
            for _ in 0..n {
                members.push(crate::codec::get_member(r)?);
            }
            Reply::Members(members)
        }
        REPLY_CAS => Reply::Cas {
            swapped: r.bool()?,
            current: r.i64()?,
        },
        REPLY_ERROR => Reply::Error(get_error(r)?),
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
    }
}

fn get_error(r: &mut Reader<'_>) -> Result<StateError, DecodeError> {
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
        tag => return Err(DecodeError::UnknownTag { what: "error", tag }),
    })
}
