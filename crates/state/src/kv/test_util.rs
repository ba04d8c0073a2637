//! Shorthands for the KV unit tests: a store with its event sink, and
//! requests built from string literals.

use bytes::Bytes;

use crate::error::StateError;
use crate::event::Event;
use crate::kv::*;

pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) fn keys_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

pub(crate) fn values_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect()
}

pub(crate) fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..PutRequest::default()
    }
}

pub(crate) fn delete_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        prev_kv: false,
    }
}

pub(crate) fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..RangeRequest::default()
    }
}

#[derive(Default)]
pub(crate) struct Store {
    pub(crate) kv: KvStore,
    pub(crate) events: Vec<Event>,
}

impl Store {
    pub(crate) fn try_put(&mut self, req: PutRequest) -> Result<PutResponse, StateError> {
        self.kv.put(&req, &mut self.events)
    }

    pub(crate) fn put_req(&mut self, req: PutRequest) -> PutResponse {
        self.try_put(req).expect("put")
    }

    pub(crate) fn put(&mut self, k: &str, v: &str) -> PutResponse {
        self.put_req(put_req(k, v))
    }

    pub(crate) fn try_delete(
        &mut self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StateError> {
        self.kv.delete_range(&req, &mut self.events)
    }

    pub(crate) fn delete_req(&mut self, req: DeleteRangeRequest) -> DeleteRangeResponse {
        self.try_delete(req).expect("delete")
    }

    pub(crate) fn delete(&mut self, k: &str, end: &str) -> DeleteRangeResponse {
        self.delete_req(delete_req(k, end))
    }

    pub(crate) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, StateError> {
        self.kv.txn(req, &mut self.events)
    }

    pub(crate) fn compact(&mut self, revision: i64) -> Result<CompactResponse, StateError> {
        self.kv.compact(&CompactRequest {
            revision,
            physical: false,
        })
    }

    pub(crate) fn range(&self, k: &str, end: &str) -> RangeResponse {
        self.kv.range(&range_req(k, end)).expect("range")
    }

    pub(crate) fn range_at(&self, k: &str, revision: i64) -> Result<RangeResponse, StateError> {
        let mut req = range_req(k, if k == "\0" { "\0" } else { "" });
        req.revision = revision;
        self.kv.range(&req)
    }

    pub(crate) fn range_all(&self) -> Vec<KeyValue> {
        self.range("\0", "\0").kvs
    }

    pub(crate) fn get(&self, k: &str) -> Option<KeyValue> {
        self.range(k, "").kvs.into_iter().next()
    }

    pub(crate) fn try_grant(&mut self, id: i64, ttl: i64) -> Result<(i64, i64), StateError> {
        self.kv.lease_grant(id, ttl, &mut self.events)
    }

    pub(crate) fn grant(&mut self, id: i64, ttl: i64) {
        self.try_grant(id, ttl).expect("grant");
    }

    pub(crate) fn revoke(&mut self, id: i64) -> Result<i64, StateError> {
        self.kv.lease_revoke(id, &mut self.events)
    }

    pub(crate) fn changes(&self, k: &str, end: &str, from: i64) -> ChangesResponse {
        self.kv
            .changes(&ChangesRequest {
                key: b(k),
                range_end: b(end),
                start_revision: from,
                events_max: 1000,
            })
            .expect("changes")
    }

    /// The (prev, kv) of the latest KV event.
    pub(crate) fn last_kv_event(&self) -> (Option<KeyValue>, Option<KeyValue>) {
        match self.events.last() {
            Some(Event::Kv(e)) => (e.prev.clone(), e.kv.clone()),
            other => panic!("expected a KV event, got {other:?}"),
        }
    }
}
