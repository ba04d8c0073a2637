//! Lease grants, revokes and checkpoints, as etcd's lessor applies them.
//! A revoke deletes every key attached to the lease in one write batch, so
//! all of them go at one revision (no revision if it held no key).

use crate::error::StateError;
use crate::event::{Event, LeaseEvent};
use crate::kv::key_range::KeySpan;
use crate::kv::write::Write;
use crate::kv::KvStore;
use crate::leases::{LeaseId, LEASE_TTL_MAX};

impl KvStore {
    /// Grants lease `id` (chosen by the proposer, > 0) with `ttl` seconds
    /// (the proposer raised it to the minimum TTL).
    pub(crate) fn lease_grant(
        &mut self,
        id: LeaseId,
        ttl: i64,
        events: &mut Vec<Event>,
    ) -> Result<(LeaseId, i64), StateError> {
        if id <= 0 {
            return Err(StateError::LeaseNotFound);
        }
        if ttl > LEASE_TTL_MAX {
            return Err(StateError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(1);
        if !self.leases.grant(id, ttl) {
            return Err(StateError::LeaseExists);
        }
        events.push(Event::Lease(LeaseEvent::Granted { id, ttl }));
        Ok((id, ttl))
    }

    /// Revokes lease `id`: deletes its keys (one revision), then the lease.
    /// Returns the store's revision after it.
    pub(crate) fn lease_revoke(
        &mut self,
        id: LeaseId,
        events: &mut Vec<Event>,
    ) -> Result<i64, StateError> {
        if !self.leases.contains(id) {
            return Err(StateError::LeaseNotFound);
        }
        let keys = self.leases.keys_of(id);
        let mut w = Write::new(self, events);
        for key in &keys {
            w.delete(KeySpan::new(key, &[]));
        }
        let revision = w.finish();
        self.leases.remove(id);
        events.push(Event::Lease(LeaseEvent::Revoked { id }));
        Ok(revision)
    }

    /// Records the remaining TTLs a leader measured; leases gone meanwhile
    /// are skipped (a checkpoint races with revokes and is only advice).
    pub(crate) fn lease_checkpoint(
        &mut self,
        checkpoints: &[(LeaseId, i64)],
        events: &mut Vec<Event>,
    ) {
        for &(id, remaining) in checkpoints {
            if self.leases.checkpoint(id, remaining) {
                let remaining = self.leases.get(id).map_or(0, |l| l.remaining);
                events.push(Event::Lease(LeaseEvent::Checkpointed { id, remaining }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::test_util::*;
    use crate::kv::{Compare, CompareResult, CompareTarget, RequestOp, TxnRequest};
    use crate::StateError;

    fn leased(key: &str, value: &str, lease: i64) -> crate::kv::PutRequest {
        let mut r = put_req(key, value);
        r.lease = lease;
        r
    }

    #[test]
    fn a_put_needs_its_lease_and_shows_it() {
        let mut s = Store::default();
        assert_eq!(
            s.try_put(leased("a", "1", 7)),
            Err(StateError::LeaseNotFound)
        );
        s.grant(7, 10);
        s.put_req(leased("a", "1", 7));
        assert_eq!(s.get("a").map(|kv| kv.lease), Some(7));
        assert_eq!(s.kv.leases().get(7).map(|l| l.keys.len()), Some(1));
        // A plain put detaches; ignore_lease keeps.
        let mut keep = put_req("a", "2");
        keep.ignore_lease = true;
        s.put_req(keep);
        assert_eq!(s.get("a").map(|kv| kv.lease), Some(7));
        s.put("a", "3");
        assert_eq!(s.get("a").map(|kv| kv.lease), Some(0));
        assert_eq!(s.kv.leases().get(7).map(|l| l.keys.len()), Some(0));
    }

    #[test]
    fn ignore_lease_with_a_lease_or_without_the_key_is_refused() {
        let mut s = Store::default();
        s.grant(7, 10);
        let mut req = leased("a", "1", 7);
        req.ignore_lease = true;
        assert_eq!(s.try_put(req), Err(StateError::LeaseProvided));
        let mut req = put_req("a", "1");
        req.ignore_lease = true;
        assert_eq!(s.try_put(req), Err(StateError::KeyNotFound));
    }

    #[test]
    fn revoke_deletes_every_key_at_one_revision() {
        let mut s = Store::default();
        s.grant(7, 10);
        s.put_req(leased("a", "1", 7));
        s.put_req(leased("b", "1", 7));
        s.put("c", "1");
        let before = s.kv.revision();
        let rev = s.revoke(7).unwrap();
        assert_eq!(rev, before + 1);
        assert_eq!(s.get("a"), None);
        assert_eq!(s.get("b"), None);
        assert!(s.get("c").is_some());
        assert!(s.kv.leases().get(7).is_none());
        assert_eq!(s.revoke(7), Err(StateError::LeaseNotFound));
        // A revoke of a lease without keys takes no revision.
        s.grant(8, 10);
        assert_eq!(s.revoke(8), Ok(rev));
    }

    #[test]
    fn grant_refuses_a_taken_id_and_a_huge_ttl() {
        let mut s = Store::default();
        s.grant(7, 10);
        assert_eq!(s.try_grant(7, 10), Err(StateError::LeaseExists));
        assert_eq!(
            s.try_grant(8, crate::leases::LEASE_TTL_MAX + 1),
            Err(StateError::LeaseTtlTooLarge)
        );
    }

    #[test]
    fn compares_see_the_lease() {
        let mut s = Store::default();
        s.grant(7, 10);
        s.put_req(leased("a", "1", 7));
        let txn = |lease| TxnRequest {
            compare: vec![Compare {
                key: b("a"),
                range_end: b(""),
                result: CompareResult::Equal,
                target: CompareTarget::Lease(lease),
            }],
            success: vec![RequestOp::Put(put_req("ok", "1"))],
            failure: vec![],
        };
        assert!(!s.txn(&txn(0)).unwrap().succeeded);
        assert!(s.txn(&txn(7)).unwrap().succeeded);
    }
}
