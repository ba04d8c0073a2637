//! The KV store against a model that keeps a full copy of the map at every
//! revision: random puts, deletes, transactions and compactions, with every
//! reply checked, then ranges at every revision, which must agree with the
//! model or fail with `Compacted` / `FutureRevision` exactly when they
//! should.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use ferrite_state::*;
use proptest::prelude::*;

type Map = BTreeMap<Bytes, KeyValue>;

struct Model {
    /// `maps[r - 1]` is the map at revision `r`.
    maps: Vec<Map>,
    compact: i64,
}

fn contains(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        end => key <= k && k < end,
    }
}

impl Model {
    fn new() -> Model {
        Model {
            maps: vec![Map::new()],
            compact: 0,
        }
    }

    fn revision(&self) -> i64 {
        self.maps.len() as i64
    }

    fn current(&self) -> &Map {
        self.maps.last().expect("never empty")
    }

    fn check_revision(&self, revision: i64) -> Result<i64, StateError> {
        if revision <= 0 {
            Ok(self.revision())
        } else if revision > self.revision() {
            Err(StateError::FutureRevision)
        } else if revision < self.compact {
            Err(StateError::Compacted)
        } else {
            Ok(revision)
        }
    }

    fn range_in(map: &Map, req: &RangeRequest, header: i64) -> RangeResponse {
        let all: Vec<KeyValue> = map
            .values()
            .filter(|kv| contains(&req.key, &req.range_end, &kv.key))
            .cloned()
            .collect();
        let count = all.len() as i64;
        if req.count_only {
            return RangeResponse {
                revision: header,
                kvs: vec![],
                more: false,
                count,
            };
        }
        let mut kvs = all;
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResponse {
            revision: header,
            kvs,
            more,
            count,
        }
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StateError> {
        let rev = self.check_revision(req.revision)?;
        Ok(Model::range_in(
            &self.maps[rev as usize - 1],
            req,
            self.revision(),
        ))
    }

    fn put_in(map: &mut Map, rev: i64, req: &PutRequest) -> PutResponse {
        let prev = map.get(&req.key).cloned();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: req.value.clone(),
            lease: 0,
        };
        map.insert(req.key.clone(), kv);
        PutResponse {
            revision: rev,
            prev_kv: prev.filter(|_| req.prev_kv),
        }
    }

    fn delete_in(map: &mut Map, req: &DeleteRangeRequest) -> Vec<KeyValue> {
        let doomed: Vec<KeyValue> = map
            .values()
            .filter(|kv| contains(&req.key, &req.range_end, &kv.key))
            .cloned()
            .collect();
        for kv in &doomed {
            map.remove(&kv.key);
        }
        doomed
    }

    fn commit(&mut self, map: Map, wrote: bool) -> i64 {
        if wrote {
            self.maps.push(map);
        }
        self.revision()
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .current()
            .values()
            .filter(|kv| contains(&c.key, &c.range_end, &kv.key))
            .collect();
        let holds = |kv: Option<&KeyValue>| {
            let ord = match (&c.target, kv) {
                (CompareTarget::Value(_), None) => return false,
                (CompareTarget::Value(v), Some(kv)) => kv.value.cmp(v),
                (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
                (CompareTarget::Mod(v), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
                (CompareTarget::Create(v), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(v),
                (CompareTarget::Lease(v), _) => 0.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if kvs.is_empty() {
            holds(None)
        } else {
            kvs.into_iter().all(|kv| holds(Some(kv)))
        }
    }

    /// For flat branches etcd's duplicate check is: no key put twice, no
    /// put inside a delete of the same branch.
    fn duplicate(ops: &[RequestOp]) -> bool {
        let puts: Vec<&Bytes> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Put(p) => Some(&p.key),
                _ => None,
            })
            .collect();
        let twice = puts.iter().enumerate().any(|(i, k)| puts[..i].contains(k));
        let deleted = ops.iter().any(|op| match op {
            RequestOp::DeleteRange(d) => puts.iter().any(|k| contains(&d.key, &d.range_end, k)),
            _ => false,
        });
        twice || deleted
    }

    fn apply(&mut self, op: &Op) -> Reply {
        self.try_apply(op).unwrap_or_else(Reply::Error)
    }

    fn try_apply(&mut self, op: &Op) -> Result<Reply, StateError> {
        let next = self.revision() + 1;
        match op {
            Op::Put(p) => {
                let mut map = self.current().clone();
                let mut resp = Model::put_in(&mut map, next, p);
                resp.revision = self.commit(map, true);
                Ok(Reply::Put(resp))
            }
            Op::DeleteRange(d) => {
                let mut map = self.current().clone();
                let deleted = Model::delete_in(&mut map, d);
                let revision = self.commit(map, !deleted.is_empty());
                Ok(Reply::DeleteRange(DeleteRangeResponse {
                    revision,
                    deleted: deleted.len() as i64,
                    prev_kvs: if d.prev_kv { deleted } else { vec![] },
                }))
            }
            Op::Compact(c) => {
                if c.revision <= self.compact {
                    return Err(StateError::Compacted);
                }
                if c.revision > self.revision() {
                    return Err(StateError::FutureRevision);
                }
                self.compact = c.revision;
                Ok(Reply::Compact(CompactResponse {
                    revision: self.revision(),
                }))
            }
            Op::Range(r) => self.range(r).map(Reply::Range),
            Op::Txn(t) => {
                if Model::duplicate(&t.success) || Model::duplicate(&t.failure) {
                    return Err(StateError::DuplicateKey);
                }
                let succeeded = t.compare.iter().all(|c| self.compare(c));
                let ops = if succeeded { &t.success } else { &t.failure };
                let mut map = self.current().clone();
                let mut wrote = false;
                let mut responses = vec![];
                for op in ops {
                    let view = if wrote { next } else { next - 1 };
                    responses.push(match op {
                        RequestOp::Put(p) => {
                            let mut resp = Model::put_in(&mut map, next, p);
                            wrote = true;
                            resp.revision = next;
                            ResponseOp::Put(resp)
                        }
                        RequestOp::DeleteRange(d) => {
                            let deleted = Model::delete_in(&mut map, d);
                            wrote |= !deleted.is_empty();
                            ResponseOp::DeleteRange(DeleteRangeResponse {
                                revision: if wrote { next } else { next - 1 },
                                deleted: deleted.len() as i64,
                                prev_kvs: if d.prev_kv { deleted } else { vec![] },
                            })
                        }
                        RequestOp::Range(r) => ResponseOp::Range(Model::range_in(&map, r, view)),
                        RequestOp::Txn(_) => unreachable!("flat transactions only"),
                    });
                }
                let revision = self.commit(map, wrote);
                Ok(Reply::Txn(TxnResponse {
                    revision,
                    succeeded,
                    responses,
                }))
            }
            other => unreachable!("not a KV op: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn kv_agrees_with_the_model(ops in prop::collection::vec(kv_op(), 1..40)) {
        let mut sm = StateMachine::new();
        let mut model = Model::new();
        for (i, op) in ops.iter().enumerate() {
            let applied = sm.apply(i as u64 + 1, &Command::new(op.clone()).encode());
            let expected = model.apply(op);
            prop_assert_eq!(applied.reply, Ok(expected), "op {}: {:?}", i, op);
            prop_assert_eq!(sm.revision(), model.revision());
        }
        sm.check_invariants();
        for revision in -1..=model.revision() + 1 {
            for end in ["\0", "c"] {
                let req = RangeRequest {
                    key: b("a"),
                    range_end: b(end),
                    revision,
                    ..RangeRequest::default()
                };
                prop_assert_eq!(sm.read_range(&req), model.range(&req), "at {}", revision);
            }
        }
    }
}
