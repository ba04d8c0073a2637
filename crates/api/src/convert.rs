//! Translation between etcd's wire types and `ferrite-state`'s. Nothing is
//! decided here; every field maps to one field. Headers are filled in by the
//! service, which knows the member and the term.

use bytes::Bytes;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::mvccpb;
use ferrite_state as st;

pub type Header = Option<pb::ResponseHeader>;

pub fn range_request(r: pb::RangeRequest) -> st::RangeRequest {
    st::RangeRequest {
        key: Bytes::from(r.key),
        range_end: Bytes::from(r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order: match pb::range_request::SortOrder::try_from(r.sort_order) {
            Ok(pb::range_request::SortOrder::Ascend) => st::SortOrder::Ascend,
            Ok(pb::range_request::SortOrder::Descend) => st::SortOrder::Descend,
            _ => st::SortOrder::None,
        },
        sort_target: match pb::range_request::SortTarget::try_from(r.sort_target) {
            Ok(pb::range_request::SortTarget::Version) => st::SortTarget::Version,
            Ok(pb::range_request::SortTarget::Create) => st::SortTarget::Create,
            Ok(pb::range_request::SortTarget::Mod) => st::SortTarget::Mod,
            Ok(pb::range_request::SortTarget::Value) => st::SortTarget::Value,
            _ => st::SortTarget::Key,
        },
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn put_request(r: pb::PutRequest) -> st::PutRequest {
    st::PutRequest {
        key: Bytes::from(r.key),
        value: Bytes::from(r.value),
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
        lease: r.lease,
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> st::DeleteRangeRequest {
    st::DeleteRangeRequest {
        key: Bytes::from(r.key),
        range_end: Bytes::from(r.range_end),
        prev_kv: r.prev_kv,
    }
}

/// Fails on a compare without a target value, which etcd refuses too.
pub fn txn_request(r: pb::TxnRequest) -> Result<st::TxnRequest, String> {
    let compare = r
        .compare
        .into_iter()
        .map(compare)
        .collect::<Result<_, _>>()?;
    let ops = |ops: Vec<pb::RequestOp>| {
        ops.into_iter()
            .map(request_op)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(st::TxnRequest {
        compare,
        success: ops(r.success)?,
        failure: ops(r.failure)?,
    })
}

fn compare(c: pb::Compare) -> Result<st::Compare, String> {
    use pb::compare::{CompareResult as R, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => st::CompareResult::Equal,
        Ok(R::Greater) => st::CompareResult::Greater,
        Ok(R::Less) => st::CompareResult::Less,
        Ok(R::NotEqual) => st::CompareResult::NotEqual,
        Err(_) => return Err(format!("unknown compare result {}", c.result)),
    };
    let target = match c.target_union {
        Some(U::Version(v)) => st::CompareTarget::Version(v),
        Some(U::CreateRevision(v)) => st::CompareTarget::Create(v),
        Some(U::ModRevision(v)) => st::CompareTarget::Mod(v),
        Some(U::Value(v)) => st::CompareTarget::Value(Bytes::from(v)),
        Some(U::Lease(v)) => st::CompareTarget::Lease(v),
        None => return Err("compare without a target".to_string()),
    };
    Ok(st::Compare {
        key: Bytes::from(c.key),
        range_end: Bytes::from(c.range_end),
        result,
        target,
    })
}

fn request_op(op: pb::RequestOp) -> Result<st::RequestOp, String> {
    use pb::request_op::Request as R;
    Ok(match op.request {
        Some(R::RequestRange(r)) => st::RequestOp::Range(range_request(r)),
        Some(R::RequestPut(p)) => st::RequestOp::Put(put_request(p)),
        Some(R::RequestDeleteRange(d)) => st::RequestOp::DeleteRange(delete_request(d)),
        Some(R::RequestTxn(t)) => st::RequestOp::Txn(txn_request(t)?),
        None => return Err("empty request op".to_string()),
    })
}

pub fn key_value(kv: st::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_response(r: st::RangeResponse, header: impl Fn(i64) -> Header) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(r.revision),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(r: st::PutResponse, header: impl Fn(i64) -> Header) -> pb::PutResponse {
    pb::PutResponse {
        header: header(r.revision),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_response(
    r: st::DeleteRangeResponse,
    header: impl Fn(i64) -> Header,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// The header of a response inside a transaction: etcd sets only its
/// revision (the transaction's own header carries the rest).
fn revision_only(revision: i64) -> Header {
    Some(pb::ResponseHeader {
        revision,
        ..pb::ResponseHeader::default()
    })
}

pub fn txn_response(r: st::TxnResponse, header: &impl Fn(i64) -> Header) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                st::ResponseOp::Range(x) => R::ResponseRange(range_response(x, revision_only)),
                st::ResponseOp::Put(x) => R::ResponsePut(put_response(x, revision_only)),
                st::ResponseOp::DeleteRange(x) => {
                    R::ResponseDeleteRange(delete_response(x, revision_only))
                }
                st::ResponseOp::Txn(x) => R::ResponseTxn(txn_response(x, &revision_only)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: header(r.revision),
        succeeded: r.succeeded,
        responses,
    }
}
