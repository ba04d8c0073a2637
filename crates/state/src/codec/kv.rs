//! Encodings of the KV requests and responses, and of one stored version
//! (for snapshots). Tag values follow etcd's protobuf enums where there is
//! one, which makes hex dumps easier to read next to etcd's.

use crate::codec::wire::{Reader, Writer};
use crate::error::DecodeError;
use crate::event::KvEvent;
use crate::kv::{
    ChangesRequest, ChangesResponse, CompactResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, Stored, TxnRequest, TxnResponse,
    Version,
};
use crate::limits::{KEY_BYTES_MAX, TXN_DEPTH_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX};

const REQUEST_RANGE: u8 = 1;
const REQUEST_PUT: u8 = 2;
const REQUEST_DELETE_RANGE: u8 = 3;
const REQUEST_TXN: u8 = 4;

fn key(r: &mut Reader<'_>, what: &'static str) -> Result<bytes::Bytes, DecodeError> {
    r.bytes(what, KEY_BYTES_MAX)
}

fn value(r: &mut Reader<'_>) -> Result<bytes::Bytes, DecodeError> {
    r.bytes("value", VALUE_BYTES_MAX)
}

pub(crate) fn put_put(w: &mut Writer, p: &PutRequest) {
    w.bytes(&p.key);
    w.bytes(&p.value);
    w.bool(p.prev_kv);
    w.bool(p.ignore_value);
    w.bool(p.ignore_lease);
    w.i64(p.lease);
}

pub(crate) fn get_put(r: &mut Reader<'_>) -> Result<PutRequest, DecodeError> {
    Ok(PutRequest {
        key: key(r, "key")?,
        value: value(r)?,
        prev_kv: r.bool()?,
        ignore_value: r.bool()?,
        ignore_lease: r.bool()?,
        lease: r.lease()?,
    })
}

pub(crate) fn put_delete(w: &mut Writer, d: &DeleteRangeRequest) {
    w.bytes(&d.key);
    w.bytes(&d.range_end);
    w.bool(d.prev_kv);
}

pub(crate) fn get_delete(r: &mut Reader<'_>) -> Result<DeleteRangeRequest, DecodeError> {
    Ok(DeleteRangeRequest {
        key: key(r, "key")?,
        range_end: key(r, "range_end")?,
        prev_kv: r.bool()?,
    })
}

pub(crate) fn put_range(w: &mut Writer, q: &RangeRequest) {
    w.bytes(&q.key);
    w.bytes(&q.range_end);
    w.i64(q.limit);
    w.i64(q.revision);
    w.u8(match q.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    w.u8(match q.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    w.bool(q.serializable);
    w.bool(q.keys_only);
    w.bool(q.count_only);
    w.i64(q.min_mod_revision);
    w.i64(q.max_mod_revision);
    w.i64(q.min_create_revision);
    w.i64(q.max_create_revision);
}

pub(crate) fn get_range(r: &mut Reader<'_>) -> Result<RangeRequest, DecodeError> {
    Ok(RangeRequest {
        key: key(r, "key")?,
        range_end: key(r, "range_end")?,
        limit: r.i64()?,
        revision: r.i64()?,
        sort_order: match r.u8()? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "sort order",
                    tag,
                })
            }
        },
        sort_target: match r.u8()? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "sort target",
                    tag,
                })
            }
        },
        serializable: r.bool()?,
        keys_only: r.bool()?,
        count_only: r.bool()?,
        min_mod_revision: r.i64()?,
        max_mod_revision: r.i64()?,
        min_create_revision: r.i64()?,
        max_create_revision: r.i64()?,
    })
}

fn put_compare(w: &mut Writer, c: &Compare) {
    w.bytes(&c.key);
    w.bytes(&c.range_end);
    w.u8(match c.result {
        CompareResult::Equal => 0,
        CompareResult::Greater => 1,
        CompareResult::Less => 2,
        CompareResult::NotEqual => 3,
    });
    match &c.target {
        CompareTarget::Version(v) => {
            w.u8(0);
            w.i64(*v);
        }
        CompareTarget::Create(v) => {
            w.u8(1);
            w.i64(*v);
        }
        CompareTarget::Mod(v) => {
            w.u8(2);
            w.i64(*v);
        }
        CompareTarget::Value(v) => {
            w.u8(3);
            w.bytes(v);
        }
        CompareTarget::Lease(v) => {
            w.u8(4);
            w.i64(*v);
        }
    }
}

fn get_compare(r: &mut Reader<'_>) -> Result<Compare, DecodeError> {
    let key = key(r, "key")?;
    let range_end = self::key(r, "range_end")?;
    let result = match r.u8()? {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "compare result",
                tag,
            })
        }
    };
    let target = match r.u8()? {
        0 => CompareTarget::Version(r.i64()?),
        1 => CompareTarget::Create(r.i64()?),
        2 => CompareTarget::Mod(r.i64()?),
        3 => CompareTarget::Value(value(r)?),
        4 => CompareTarget::Lease(r.i64()?),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "compare target",
                tag,
            })
        }
    };
    Ok(Compare {
        key,
        range_end,
        result,
        target,
    })
}

fn put_request_op(w: &mut Writer, op: &RequestOp) {
    match op {
        RequestOp::Range(q) => {
            w.u8(REQUEST_RANGE);
            put_range(w, q);
        }
        RequestOp::Put(p) => {
            w.u8(REQUEST_PUT);
            put_put(w, p);
        }
        RequestOp::DeleteRange(d) => {
            w.u8(REQUEST_DELETE_RANGE);
            put_delete(w, d);
        }
        RequestOp::Txn(t) => {
            w.u8(REQUEST_TXN);
            put_txn(w, t);
        }
    }
}

fn get_request_op(r: &mut Reader<'_>, depth: usize) -> Result<RequestOp, DecodeError> {
    Ok(match r.u8()? {
        REQUEST_RANGE => RequestOp::Range(get_range(r)?),
        REQUEST_PUT => RequestOp::Put(get_put(r)?),
        REQUEST_DELETE_RANGE => RequestOp::DeleteRange(get_delete(r)?),
        REQUEST_TXN => RequestOp::Txn(get_txn(r, depth + 1)?),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "request op",
                tag,
            })
        }
    })
}

pub(crate) fn put_txn(w: &mut Writer, t: &TxnRequest) {
    w.len(t.compare.len());
    for c in &t.compare {
        put_compare(w, c);
    }
    for branch in [&t.success, &t.failure] {
        w.len(branch.len());
        for op in branch {
            put_request_op(w, op);
        }
    }
}

/// `depth` is how many transactions enclose this one.
pub(crate) fn get_txn(r: &mut Reader<'_>, depth: usize) -> Result<TxnRequest, DecodeError> {
    if depth >= TXN_DEPTH_MAX {
        return Err(DecodeError::TooDeep { max: TXN_DEPTH_MAX });
    }
    let n = r.len("txn compares", TXN_OPS_MAX)?;
    let mut compare = r.vec_for(n);
    for _ in 0..n {
        compare.push(get_compare(r)?);
    }
    let branch = |r: &mut Reader<'_>, what| -> Result<Vec<RequestOp>, DecodeError> {
        let n = r.len(what, TXN_OPS_MAX)?;
        let mut ops = r.vec_for(n);
        for _ in 0..n {
            ops.push(get_request_op(r, depth)?);
        }
        Ok(ops)
    };
    let success = branch(r, "txn success ops")?;
    let failure = branch(r, "txn failure ops")?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

pub(crate) fn put_kv(w: &mut Writer, kv: &KeyValue) {
    w.bytes(&kv.key);
    w.i64(kv.create_revision);
    w.i64(kv.mod_revision);
    w.i64(kv.version);
    w.bytes(&kv.value);
    w.i64(kv.lease);
}

pub(crate) fn get_kv(r: &mut Reader<'_>) -> Result<KeyValue, DecodeError> {
    Ok(KeyValue {
        key: key(r, "key")?,
        create_revision: r.i64()?,
        mod_revision: r.i64()?,
        version: r.i64()?,
        value: value(r)?,
        lease: r.lease()?,
    })
}

fn put_kvs(w: &mut Writer, kvs: &[KeyValue]) {
    w.len(kvs.len());
    for kv in kvs {
        put_kv(w, kv);
    }
}

fn get_kvs(r: &mut Reader<'_>) -> Result<Vec<KeyValue>, DecodeError> {
    let n = r.len("kvs", usize::MAX)?;
    let mut kvs = r.vec_for(n);
    for _ in 0..n {
        kvs.push(get_kv(r)?);
    }
    Ok(kvs)
}

fn put_opt_kv(w: &mut Writer, kv: &Option<KeyValue>) {
    match kv {
        None => w.u8(0),
        Some(kv) => {
            w.u8(1);
            put_kv(w, kv);
        }
    }
}

fn get_opt_kv(r: &mut Reader<'_>) -> Result<Option<KeyValue>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_kv(r)?)),
        tag => Err(DecodeError::UnknownTag {
            what: "option",
            tag,
        }),
    }
}

pub(crate) fn put_put_response(w: &mut Writer, p: &PutResponse) {
    w.i64(p.revision);
    put_opt_kv(w, &p.prev_kv);
}

pub(crate) fn get_put_response(r: &mut Reader<'_>) -> Result<PutResponse, DecodeError> {
    Ok(PutResponse {
        revision: r.i64()?,
        prev_kv: get_opt_kv(r)?,
    })
}

pub(crate) fn put_range_response(w: &mut Writer, q: &RangeResponse) {
    w.i64(q.revision);
    put_kvs(w, &q.kvs);
    w.bool(q.more);
    w.i64(q.count);
}

pub(crate) fn get_range_response(r: &mut Reader<'_>) -> Result<RangeResponse, DecodeError> {
    Ok(RangeResponse {
        revision: r.i64()?,
        kvs: get_kvs(r)?,
        more: r.bool()?,
        count: r.i64()?,
    })
}

pub(crate) fn put_delete_response(w: &mut Writer, d: &DeleteRangeResponse) {
    w.i64(d.revision);
    w.i64(d.deleted);
    put_kvs(w, &d.prev_kvs);
}

pub(crate) fn get_delete_response(r: &mut Reader<'_>) -> Result<DeleteRangeResponse, DecodeError> {
    Ok(DeleteRangeResponse {
        revision: r.i64()?,
        deleted: r.i64()?,
        prev_kvs: get_kvs(r)?,
    })
}

pub(crate) fn put_compact_response(w: &mut Writer, c: &CompactResponse) {
    w.i64(c.revision);
}

pub(crate) fn get_compact_response(r: &mut Reader<'_>) -> Result<CompactResponse, DecodeError> {
    Ok(CompactResponse { revision: r.i64()? })
}

pub(crate) fn put_txn_response(w: &mut Writer, t: &TxnResponse) {
    w.i64(t.revision);
    w.bool(t.succeeded);
    w.len(t.responses.len());
    for resp in &t.responses {
        match resp {
            ResponseOp::Range(q) => {
                w.u8(REQUEST_RANGE);
                put_range_response(w, q);
            }
            ResponseOp::Put(p) => {
                w.u8(REQUEST_PUT);
                put_put_response(w, p);
            }
            ResponseOp::DeleteRange(d) => {
                w.u8(REQUEST_DELETE_RANGE);
                put_delete_response(w, d);
            }
            ResponseOp::Txn(t) => {
                w.u8(REQUEST_TXN);
                put_txn_response(w, t);
            }
        }
    }
}

/// `depth` is how many transaction responses enclose this one.
pub(crate) fn get_txn_response(
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<TxnResponse, DecodeError> {
    if depth >= TXN_DEPTH_MAX {
        return Err(DecodeError::TooDeep { max: TXN_DEPTH_MAX });
    }
    let revision = r.i64()?;
    let succeeded = r.bool()?;
    let n = r.len("txn responses", TXN_OPS_MAX)?;
    let mut responses = r.vec_for(n);
    for _ in 0..n {
        responses.push(match r.u8()? {
            REQUEST_RANGE => ResponseOp::Range(get_range_response(r)?),
            REQUEST_PUT => ResponseOp::Put(get_put_response(r)?),
            REQUEST_DELETE_RANGE => ResponseOp::DeleteRange(get_delete_response(r)?),
            REQUEST_TXN => ResponseOp::Txn(get_txn_response(r, depth + 1)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "response op",
                    tag,
                })
            }
        });
    }
    Ok(TxnResponse {
        revision,
        succeeded,
        responses,
    })
}

/// One version of a key's history, for snapshots.
pub(crate) fn put_version(w: &mut Writer, v: &Version) {
    w.i64(v.mod_revision);
    w.u32(v.sub);
    match &v.put {
        None => w.u8(0),
        Some(p) => {
            w.u8(1);
            w.i64(p.create_revision);
            w.i64(p.version);
            w.bytes(&p.value);
            w.i64(p.lease);
        }
    }
}

pub(crate) fn get_version(r: &mut Reader<'_>) -> Result<Version, DecodeError> {
    let mod_revision = r.i64()?;
    let sub = if r.legacy { 0 } else { r.u32()? };
    let put = match r.u8()? {
        0 => None,
        1 => Some(Stored {
            create_revision: r.i64()?,
            version: r.i64()?,
            value: value(r)?,
            lease: r.lease()?,
        }),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "version",
                tag,
            })
        }
    };
    Ok(Version {
        mod_revision,
        sub,
        put,
    })
}

pub(crate) fn put_changes_request(w: &mut Writer, c: &ChangesRequest) {
    w.bytes(&c.key);
    w.bytes(&c.range_end);
    w.i64(c.start_revision);
    w.u64(c.events_max);
}

pub(crate) fn get_changes_request(r: &mut Reader<'_>) -> Result<ChangesRequest, DecodeError> {
    Ok(ChangesRequest {
        key: key(r, "key")?,
        range_end: key(r, "range_end")?,
        start_revision: r.i64()?,
        events_max: r.u64()?,
    })
}

pub(crate) fn put_changes_response(w: &mut Writer, c: &ChangesResponse) {
    w.i64(c.revision);
    w.i64(c.compact_revision);
    w.i64(c.next_revision);
    w.len(c.events.len());
    for e in &c.events {
        w.i64(e.revision);
        w.bytes(&e.key);
        put_opt_kv(w, &e.prev);
        put_opt_kv(w, &e.kv);
    }
}

pub(crate) fn get_changes_response(r: &mut Reader<'_>) -> Result<ChangesResponse, DecodeError> {
    let revision = r.i64()?;
    let compact_revision = r.i64()?;
    let next_revision = r.i64()?;
    let n = r.len("events", usize::MAX)?;
    let mut events = r.vec_for(n);
    for _ in 0..n {
        events.push(KvEvent {
            revision: r.i64()?,
            key: key(r, "key")?,
            prev: get_opt_kv(r)?,
            kv: get_opt_kv(r)?,
        });
    }
    Ok(ChangesResponse {
        events,
        revision,
        compact_revision,
        next_revision,
    })
}
