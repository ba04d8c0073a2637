//! Put: write one key, as etcd's `Put`, optionally attached to a lease
//! (`lease`) or keeping the lease it has (`ignore_lease`).

use bytes::Bytes;

use crate::error::StateError;
use crate::event::Event;
use crate::kv::write::Write;
use crate::kv::{KeyValue, KvStore};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    /// Return the previous key-value pair.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the key's current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
    /// Attach the key to this lease (0: none; a put without `ignore_lease`
    /// detaches the key from any lease it had, as etcd's does).
    pub lease: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    /// The store's revision after the put (etcd's header revision).
    pub revision: i64,
    /// The key before the put, if it existed and `prev_kv` was asked for.
    pub prev_kv: Option<KeyValue>,
}

impl PutRequest {
    /// The checks etcd makes before a request reaches the log.
    pub(crate) fn check_shape(&self) -> Result<(), StateError> {
        if self.key.is_empty() {
            return Err(StateError::EmptyKey);
        }
        if self.ignore_value && !self.value.is_empty() {
            return Err(StateError::ValueProvided);
        }
        if self.ignore_lease && self.lease != 0 {
            return Err(StateError::LeaseProvided);
        }
        Ok(())
    }
}

impl KvStore {
    /// The checks etcd makes against the state at apply time.
    pub(crate) fn check_put(&self, req: &PutRequest) -> Result<(), StateError> {
        if (req.ignore_value || req.ignore_lease)
            && self.live_one(&req.key, self.revision).is_none()
        {
            return Err(StateError::KeyNotFound);
        }
        if req.lease != 0 && !self.leases.contains(req.lease) {
            return Err(StateError::LeaseNotFound);
        }
        Ok(())
    }

    pub(crate) fn put(
        &mut self,
        req: &PutRequest,
        events: &mut Vec<Event>,
    ) -> Result<PutResponse, StateError> {
        req.check_shape()?;
        self.check_put(req)?;
        let mut w = Write::new(self, events);
        let mut resp = put_in(&mut w, req);
        resp.revision = w.finish();
        Ok(resp)
    }
}

/// Carries out a checked put inside a batch.
pub(crate) fn put_in(w: &mut Write<'_>, req: &PutRequest) -> PutResponse {
    // `check_put` made sure the key exists when either is ignored; should
    // it not, the empty value and no lease are still deterministic.
    let current = w.store().live_one(&req.key, w.revision());
    let value = if req.ignore_value {
        current
            .as_ref()
            .map_or_else(Bytes::new, |kv| kv.value.clone())
    } else {
        req.value.clone()
    };
    let lease = if req.ignore_lease {
        current.as_ref().map_or(0, |kv| kv.lease)
    } else {
        req.lease
    };
    let prev = w.put(&req.key, value, lease);
    PutResponse {
        revision: w.view_revision(),
        prev_kv: prev.filter(|_| req.prev_kv),
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::test_util::*;
    use crate::StateError;

    #[test]
    fn an_empty_store_is_at_revision_1_and_every_put_bumps_it() {
        let mut s = Store::default();
        assert_eq!(s.kv.revision(), 1);
        assert_eq!(s.put("a", "1").revision, 2);
        assert_eq!(s.put("b", "1").revision, 3);
        assert_eq!(s.put("a", "2").revision, 4);
        let a = s.get("a").unwrap();
        assert_eq!(
            (a.create_revision, a.mod_revision, a.version),
            (2, 4, 2),
            "create stays, mod and version move"
        );
    }

    #[test]
    fn version_and_create_revision_reset_after_delete() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("a", "2");
        s.delete("a", "");
        assert_eq!(s.get("a"), None);
        s.put("a", "3");
        let a = s.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    }

    #[test]
    fn prev_kv_only_when_asked() {
        let mut s = Store::default();
        s.put("a", "1");
        let plain = s.put_req(put_req("a", "2"));
        assert_eq!(plain.prev_kv, None);
        let mut req = put_req("a", "3");
        req.prev_kv = true;
        let with = s.put_req(req);
        assert_eq!(with.prev_kv.map(|kv| kv.value), Some(b("2")));
    }

    #[test]
    fn ignore_value_keeps_the_value_and_needs_the_key() {
        let mut s = Store::default();
        let mut req = put_req("a", "");
        req.ignore_value = true;
        assert_eq!(s.try_put(req.clone()), Err(StateError::KeyNotFound));
        assert_eq!(s.kv.revision(), 1, "a refused put changes nothing");
        s.put("a", "1");
        s.try_put(req.clone()).unwrap();
        let a = s.get("a").unwrap();
        assert_eq!((a.value, a.version), (b("1"), 2));
        req.value = b("x");
        assert_eq!(s.try_put(req), Err(StateError::ValueProvided));
    }

    #[test]
    fn the_empty_key_is_refused() {
        let mut s = Store::default();
        assert_eq!(s.try_put(put_req("", "1")), Err(StateError::EmptyKey));
    }

    #[test]
    fn puts_publish_events_with_previous_values() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("a", "2");
        let (prev, kv) = s.last_kv_event();
        assert_eq!(prev.map(|p| p.value), Some(b("1")));
        assert_eq!(kv.map(|p| (p.value, p.mod_revision)), Some((b("2"), 3)));
    }
}
