//! Txn: compares, then the success or the failure branch, as one atomic
//! request with at most one new revision (etcd 3.5, nested transactions
//! included).
//!
//! Order of work, as etcd: the request's shape and its duplicate keys are
//! checked first; then every compare on the path that will run (nested ones
//! too) is evaluated against the state before the transaction; then the
//! puts and ranges on that path are checked against that state (a missing
//! key for `ignore_value`, a compacted or future revision). Only then does
//! anything change, so a refused transaction changes nothing, and the
//! writes themselves cannot fail.

use crate::error::StateError;
use crate::event::Event;
use crate::kv::delete::delete_in;
use crate::kv::put::put_in;
use crate::kv::txn_check::check_intervals;
use crate::kv::write::Write;
use crate::kv::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, KvStore, PutRequest, PutResponse,
    RangeRequest, RangeResponse,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// The store's revision after the transaction (after the nested one, for
    /// a nested response).
    pub revision: i64,
    /// Whether the compares held, so the success branch ran.
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// A transaction whose compares, and those of the nested transactions on
/// its path, have been evaluated.
struct Decided<'a> {
    txn: &'a TxnRequest,
    succeeded: bool,
    /// One per `RequestOp::Txn` of the branch that runs, in order.
    nested: Vec<Decided<'a>>,
}

impl<'a> Decided<'a> {
    fn ops(&self) -> &'a [RequestOp] {
        if self.succeeded {
            &self.txn.success
        } else {
            &self.txn.failure
        }
    }
}

impl TxnRequest {
    /// The per-request checks etcd makes before proposing, on both branches.
    fn check_shape(&self) -> Result<(), StateError> {
        for op in self.success.iter().chain(&self.failure) {
            match op {
                RequestOp::Range(r) => r.check_shape()?,
                RequestOp::Put(p) => p.check_shape()?,
                RequestOp::DeleteRange(d) => d.check_shape()?,
                RequestOp::Txn(t) => t.check_shape()?,
            }
        }
        Ok(())
    }
}

impl KvStore {
    pub(crate) fn txn(
        &mut self,
        req: &TxnRequest,
        events: &mut Vec<Event>,
    ) -> Result<TxnResponse, StateError> {
        req.check_shape()?;
        check_intervals(&req.success)?;
        check_intervals(&req.failure)?;
        let decided = self.decide(req);
        self.check_puts(&decided)?;
        self.check_ranges(&decided)?;
        let mut w = Write::new(self, events);
        let mut resp = execute(&mut w, &decided);
        resp.revision = w.finish();
        Ok(resp)
    }

    fn decide<'a>(&self, txn: &'a TxnRequest) -> Decided<'a> {
        let succeeded = txn.compare.iter().all(|c| self.compare_holds(c));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let nested = branch
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(t) => Some(self.decide(t)),
                _ => None,
            })
            .collect();
        Decided {
            txn,
            succeeded,
            nested,
        }
    }

    fn check_puts(&self, d: &Decided<'_>) -> Result<(), StateError> {
        for op in d.ops() {
            if let RequestOp::Put(p) = op {
                self.check_put(p)?;
            }
        }
        d.nested.iter().try_for_each(|n| self.check_puts(n))
    }

    fn check_ranges(&self, d: &Decided<'_>) -> Result<(), StateError> {
        for op in d.ops() {
            if let RequestOp::Range(r) = op {
                self.check_read_revision(r.revision)?;
            }
        }
        d.nested.iter().try_for_each(|n| self.check_ranges(n))
    }
}

fn execute(w: &mut Write<'_>, d: &Decided<'_>) -> TxnResponse {
    let mut nested = d.nested.iter();
    let mut responses = Vec::with_capacity(d.ops().len());
    for op in d.ops() {
        let resp = match op {
            RequestOp::Range(r) => {
                let view = w.view_revision();
                let at = if r.revision > 0 { r.revision } else { view };
                ResponseOp::Range(w.store().range_at(r, at, view))
            }
            RequestOp::Put(p) => ResponseOp::Put(put_in(w, p)),
            RequestOp::DeleteRange(del) => ResponseOp::DeleteRange(delete_in(w, del)),
            // `decide` made one entry per nested transaction of the branch.
            RequestOp::Txn(_) => match nested.next() {
                Some(n) => ResponseOp::Txn(execute(w, n)),
                None => continue,
            },
        };
        responses.push(resp);
    }
    TxnResponse {
        revision: w.view_revision(),
        succeeded: d.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::test_util::*;
    use crate::kv::{CompareResult, CompareTarget};
    use crate::Event;

    fn version_is(key: &str, v: i64) -> Compare {
        Compare {
            key: b(key),
            range_end: b(""),
            result: CompareResult::Equal,
            target: CompareTarget::Version(v),
        }
    }

    fn put(k: &str, v: &str) -> RequestOp {
        RequestOp::Put(put_req(k, v))
    }

    fn get(k: &str) -> RequestOp {
        RequestOp::Range(range_req(k, ""))
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(delete_req(k, end))
    }

    fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    #[test]
    fn create_if_missing() {
        let mut s = Store::default();
        let t = txn(
            vec![version_is("a", 0)],
            vec![put("a", "1")],
            vec![get("a")],
        );
        let first = s.txn(&t).unwrap();
        assert!(first.succeeded);
        assert_eq!(first.revision, 2);
        let second = s.txn(&t).unwrap();
        assert!(!second.succeeded);
        assert_eq!(second.revision, 2, "a read-only branch does not bump");
        let ResponseOp::Range(r) = &second.responses[0] else {
            panic!("a range response: {second:?}")
        };
        assert_eq!(r.kvs[0].value, b("1"));
    }

    #[test]
    fn all_writes_share_one_revision_and_reads_see_them() {
        let mut s = Store::default();
        s.put("x", "0");
        let t = txn(
            vec![],
            vec![put("a", "1"), get("a"), del("x", ""), put("b", "2")],
            vec![],
        );
        let resp = s.txn(&t).unwrap();
        assert_eq!(resp.revision, 3);
        let ResponseOp::Range(r) = &resp.responses[1] else {
            panic!("{resp:?}")
        };
        assert_eq!(r.kvs[0].value, b("1"), "a range sees the txn's own put");
        assert_eq!(r.revision, 3);
        let a = s.get("a").unwrap();
        let bb = s.get("b").unwrap();
        assert_eq!((a.mod_revision, bb.mod_revision), (3, 3));
        assert_eq!(s.get("x"), None);
        let revisions: Vec<i64> = s
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Kv(e) => Some(e.revision),
                Event::Register(_) | Event::Volume(_) | Event::Lease(_) | Event::Auth(_) => None,
            })
            .collect();
        assert_eq!(revisions, vec![2, 3, 3, 3]);
    }

    #[test]
    fn a_txn_that_writes_nothing_keeps_the_revision() {
        let mut s = Store::default();
        let resp = s.txn(&txn(vec![], vec![del("nope", "")], vec![])).unwrap();
        assert_eq!(resp.revision, 1);
        assert_eq!(s.kv.revision(), 1);
    }

    #[test]
    fn nested_txns_decide_on_the_state_before_the_outer_one() {
        let mut s = Store::default();
        let inner = txn(
            vec![version_is("a", 0)],
            vec![put("b", "new")],
            vec![put("b", "old")],
        );
        let outer = txn(vec![], vec![put("a", "1"), RequestOp::Txn(inner)], vec![]);
        let resp = s.txn(&outer).unwrap();
        let ResponseOp::Txn(inner_resp) = &resp.responses[1] else {
            panic!("{resp:?}")
        };
        assert!(inner_resp.succeeded, "compares see the pre-txn state");
        assert_eq!(s.get("b").unwrap().value, b("new"));
        assert_eq!(s.get("b").unwrap().mod_revision, 2);
        assert_eq!(resp.revision, 2);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let mut s = Store::default();
        let dup = |s: &mut Store, success| s.txn(&txn(vec![], success, vec![]));
        assert_eq!(
            dup(&mut s, vec![put("a", "1"), put("a", "2")]),
            Err(StateError::DuplicateKey)
        );
        assert_eq!(
            dup(&mut s, vec![put("b", "1"), del("a", "c")]),
            Err(StateError::DuplicateKey)
        );
        assert_eq!(
            dup(&mut s, vec![del("a", "\0"), put("z", "1")]),
            Err(StateError::DuplicateKey)
        );
        let nested = RequestOp::Txn(txn(vec![], vec![put("a", "1")], vec![]));
        assert_eq!(
            dup(&mut s, vec![nested.clone(), put("a", "2")]),
            Err(StateError::DuplicateKey)
        );
        let either = RequestOp::Txn(txn(vec![], vec![put("a", "1")], vec![put("a", "2")]));
        assert!(dup(&mut s, vec![either]).is_ok(), "then and else exclude");
        assert!(
            s.txn(&txn(vec![], vec![put("a", "1")], vec![put("a", "1")]))
                .is_ok(),
            "the two top-level branches are checked apart"
        );
        assert!(dup(&mut s, vec![del("a", ""), del("a", "b")]).is_ok());
        assert_eq!(
            s.kv.revision(),
            4,
            "refused txns changed nothing; three succeeded"
        );
    }

    #[test]
    fn put_then_delete_through_nested_txns_is_two_versions_at_one_revision() {
        let mut s = Store::default();
        let t = txn(
            vec![],
            vec![
                RequestOp::Txn(txn(vec![], vec![put("a", "1")], vec![])),
                RequestOp::Txn(txn(vec![], vec![del("a", "")], vec![])),
            ],
            vec![],
        );
        let resp = s.txn(&t).unwrap();
        assert_eq!(resp.revision, 2);
        assert_eq!(s.get("a"), None, "the later change wins");
        s.put("a", "2");
        let a = s.get("a").unwrap();
        assert_eq!((a.create_revision, a.version), (3, 1));
    }

    #[test]
    fn errors_on_the_path_refuse_the_whole_txn() {
        let mut s = Store::default();
        s.put("a", "1");
        let mut future = range_req("a", "");
        future.revision = 3;
        let t = txn(
            vec![],
            vec![put("b", "1"), RequestOp::Range(future)],
            vec![],
        );
        assert_eq!(s.txn(&t), Err(StateError::FutureRevision));
        let mut keep = put_req("c", "");
        keep.ignore_value = true;
        let t = txn(vec![], vec![put("b", "1"), RequestOp::Put(keep)], vec![]);
        assert_eq!(s.txn(&t), Err(StateError::KeyNotFound));
        assert_eq!(s.kv.revision(), 2);
        assert_eq!(s.get("b"), None);
        let t = txn(vec![], vec![], vec![RequestOp::Put(put_req("", "x"))]);
        assert_eq!(s.txn(&t), Err(StateError::EmptyKey), "both branches");
    }

    #[test]
    fn compacted_range_in_txn() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("a", "2");
        s.compact(3).unwrap();
        let mut old = range_req("a", "");
        old.revision = 2;
        let t = txn(vec![], vec![RequestOp::Range(old)], vec![]);
        assert_eq!(s.txn(&t), Err(StateError::Compacted));
    }
}
