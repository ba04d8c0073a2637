//! The machine as the node drives it: entries in, replies and events out,
//! sessions, and snapshots.

use bytes::Bytes;

use super::*;
use crate::event::{KvEvent, RegisterEvent};
use crate::kv::{CompactRequest, PutRequest};

fn reg(name: &str) -> String {
    name.to_owned()
}

fn add(name: &str, delta: i64) -> Op {
    Op::RegisterAdd {
        name: reg(name),
        delta,
    }
}

fn put(k: &str, v: &str) -> Op {
    Op::Put(PutRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
        ..PutRequest::default()
    })
}

struct Driver {
    sm: StateMachine,
    index: u64,
}

impl Driver {
    fn new(sm: StateMachine) -> Driver {
        let index = sm.applied_index();
        Driver { sm, index }
    }

    fn apply(&mut self, cmd: Command) -> Applied {
        self.index += 1;
        self.sm.apply(self.index, &cmd.encode())
    }

    fn session(&mut self, client: u64, seq: u64, op: Op) -> Result<Reply, ApplyError> {
        self.apply(Command::with_session(client, seq, op)).reply
    }

    fn noops(&mut self, n: u64) {
        for _ in 0..n {
            self.index += 1;
            self.sm.apply_noop(self.index);
        }
    }
}

#[test]
fn retries_are_answered_once() {
    let mut d = Driver::new(StateMachine::new());
    assert_eq!(d.session(1, 1, add("x", 5)), Ok(Reply::Value(5)));
    let retry = d.apply(Command::with_session(1, 1, add("x", 5)));
    assert_eq!(retry.reply, Ok(Reply::Value(5)));
    assert!(retry.events.is_empty(), "nothing applied again");
    assert_eq!(d.sm.read_register("x"), 5);
    assert_eq!(d.session(1, 2, add("x", 1)), Ok(Reply::Value(6)));
    assert_eq!(
        d.session(1, 1, add("x", 5)),
        Err(ApplyError::StaleSequence {
            client: 1,
            seq: 1,
            applied: 2
        })
    );
    assert_eq!(d.sm.read_register("x"), 6);
    assert_eq!(d.sm.session_seq(1), 2);
}

#[test]
fn error_replies_are_kept_for_retries_too() {
    let mut d = Driver::new(StateMachine::new());
    d.apply(Command::new(Op::RegisterSet {
        name: reg("x"),
        value: i64::MAX,
    }));
    let overflow = Ok(Reply::Error(StateError::Overflow {
        value: i64::MAX,
        delta: 1,
    }));
    assert_eq!(d.session(9, 1, add("x", 1)), overflow);
    d.apply(Command::new(Op::RegisterSet {
        name: reg("x"),
        value: 0,
    }));
    assert_eq!(d.session(9, 1, add("x", 1)), overflow, "not re-run");
    assert_eq!(d.sm.read_register("x"), 0);
}

#[test]
fn sessions_expire_deterministically_then_requests_apply_again() {
    let limits = SessionLimits {
        idle_entries_max: 5,
        sessions_max: 10,
    };
    let mut d = Driver::new(StateMachine::with_session_limits(limits));
    d.session(1, 1, add("x", 1)).unwrap(); // index 1
    d.noops(5); // through index 6: idle for 5
    assert_eq!(d.sm.session_seq(1), 1);
    d.noops(1); // index 7: idle for 6 > 5
    assert_eq!(d.sm.session_seq(1), 0);
    assert_eq!(
        d.session(1, 1, add("x", 1)),
        Ok(Reply::Value(2)),
        "outside the window a retry applies again: the documented trade-off"
    );
}

#[test]
fn the_table_evicts_the_least_recently_used() {
    let limits = SessionLimits {
        idle_entries_max: 1000,
        sessions_max: 2,
    };
    let mut d = Driver::new(StateMachine::with_session_limits(limits));
    d.session(1, 1, add("x", 1)).unwrap();
    d.session(2, 1, add("x", 1)).unwrap();
    d.session(1, 2, add("x", 1)).unwrap();
    d.session(3, 1, add("x", 1)).unwrap();
    assert_eq!(
        (
            d.sm.session_seq(1),
            d.sm.session_seq(2),
            d.sm.session_seq(3)
        ),
        (2, 0, 1)
    );
    assert_eq!(d.sm.session_count(), 2);
}

#[test]
fn undecodable_entries_are_error_replies_and_still_applied() {
    let mut sm = StateMachine::new();
    let applied = sm.apply(1, b"\xffgarbage");
    assert!(matches!(applied.reply, Err(ApplyError::Decode(_))));
    assert!(applied.events.is_empty());
    assert_eq!(sm.applied_index(), 1);
    assert_eq!(sm.revision(), 1);
}

#[test]
#[should_panic(expected = "apply out of order")]
fn applying_out_of_order_is_a_bug() {
    let mut sm = StateMachine::new();
    sm.apply_noop(2);
    sm.apply_noop(2);
}

#[test]
fn events_cover_kv_and_registers_in_order() {
    let mut d = Driver::new(StateMachine::new());
    d.apply(Command::new(put("a", "1")));
    let ev = d.apply(Command::new(put("a", "2"))).events;
    let Event::Kv(KvEvent {
        revision, prev, kv, ..
    }) = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*revision, 3);
    assert_eq!(prev.as_ref().map(|p| p.version), Some(1));
    assert_eq!(kv.as_ref().map(|p| p.version), Some(2));
    let ev = d.apply(Command::new(add("n", 3))).events;
    assert_eq!(
        ev,
        vec![Event::Register(RegisterEvent {
            name: reg("n"),
            old: 0,
            new: 3
        })]
    );
}

#[test]
fn reads_through_the_log_and_locally_agree() {
    let mut d = Driver::new(StateMachine::new());
    d.apply(Command::new(put("a", "1")));
    let req = RangeRequest::key("a");
    let via_log = d.apply(Command::new(Op::Range(req.clone()))).reply;
    assert_eq!(via_log, Ok(Reply::Range(d.sm.read_range(&req).unwrap())));
    let get = d.apply(Command::new(Op::RegisterGet { name: reg("r") }));
    assert_eq!(get.reply, Ok(Reply::Value(0)));
}

#[test]
fn kv_errors_are_replies() {
    let mut d = Driver::new(StateMachine::new());
    d.apply(Command::new(put("a", "1")));
    let compact = |revision| {
        Command::new(Op::Compact(CompactRequest {
            revision,
            physical: true,
        }))
    };
    assert_eq!(
        d.apply(compact(9)).reply,
        Ok(Reply::Error(StateError::FutureRevision))
    );
    assert!(matches!(d.apply(compact(2)).reply, Ok(Reply::Compact(_))));
    assert_eq!(d.sm.compact_revision(), 2);
    let mut old = RangeRequest::key("a");
    old.revision = 1;
    assert_eq!(d.sm.read_range(&old), Err(StateError::Compacted));
}

#[test]
fn snapshot_round_trip_and_continuation() {
    let mut d = Driver::new(StateMachine::new());
    d.session(4, 1, put("a", "1")).unwrap();
    d.apply(Command::new(put("b", "2")));
    d.session(5, 7, add("r", -3)).unwrap();
    d.noops(2);
    let snap = d.sm.snapshot();
    let restored = StateMachine::restore(&snap).unwrap();
    assert_eq!(restored, d.sm);
    restored.check_invariants();
    let mut e = Driver::new(restored);
    let next = Command::with_session(4, 1, put("a", "x"));
    assert_eq!(e.apply(next.clone()), d.apply(next), "the retry is known");
    assert_eq!(e.sm, d.sm);
}

#[test]
fn empty_snapshot_is_the_empty_machine() {
    assert_eq!(StateMachine::restore(&[]).unwrap(), StateMachine::new());
}

#[test]
fn damaged_snapshots_are_refused() {
    let mut d = Driver::new(StateMachine::new());
    d.apply(Command::new(put("a", "1")));
    let snap = d.sm.snapshot().to_vec();
    for cut in 1..snap.len() {
        assert!(
            StateMachine::restore(&snap[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let mut flipped = snap.clone();
    let last = flipped.len() - 6;
    flipped[last] ^= 1;
    assert!(matches!(
        StateMachine::restore(&flipped),
        Err(DecodeError::Checksum { .. })
    ));
    let mut magic = snap.clone();
    magic[0] = b'X';
    assert_eq!(StateMachine::restore(&magic), Err(DecodeError::BadMagic));
    let mut version = snap.clone();
    version[4] = 9;
    assert!(matches!(
        StateMachine::restore(&version),
        Err(DecodeError::Version { found: 9, .. })
    ));
    let mut trailing = snap;
    trailing.push(0);
    assert_eq!(
        StateMachine::restore(&trailing),
        Err(DecodeError::Trailing(1))
    );
}

#[test]
fn intact_but_impossible_snapshots_are_refused() {
    let mut sm = StateMachine::new();
    sm.kv.revision = 0;
    assert_eq!(
        StateMachine::restore(&sm.snapshot()),
        Err(DecodeError::Inconsistent("revision below 1"))
    );
    let mut d = Driver::new(StateMachine::new());
    d.session(1, 1, add("x", 1)).unwrap();
    d.sm.applied_index = 0;
    assert_eq!(
        StateMachine::restore(&d.sm.snapshot()),
        Err(DecodeError::Inconsistent(
            "session used after the applied index"
        ))
    );
}

#[test]
fn volumes_are_created_written_resized_and_deleted_with_events() {
    use crate::event::VolumeEvent;
    let mut d = Driver::new(StateMachine::new());
    let create = |size| Op::VolumeCreate {
        name: "disk0".into(),
        size,
    };
    let created = d.apply(Command::new(create(8192)));
    let id = d.index;
    let info = crate::volumes::VolumeInfo {
        name: "disk0".into(),
        id,
        size: 8192,
    };
    assert_eq!(created.reply, Ok(Reply::Volume(info.clone())));
    assert_eq!(
        created.events,
        vec![Event::Volume(VolumeEvent::Created { id, size: 8192 })]
    );
    assert_eq!(
        d.apply(Command::new(create(1))).reply,
        Ok(Reply::Error(StateError::VolumeExists("disk0".into())))
    );
    let write = |offset: u64, data: &'static [u8]| Op::VolumeWrite {
        name: "disk0".into(),
        offset,
        data: Bytes::from_static(data),
    };
    let w = d.apply(Command::new(write(8190, b"ab")));
    assert_eq!(w.reply, Ok(Reply::Done));
    assert_eq!(
        w.events,
        vec![Event::Volume(VolumeEvent::Written {
            id,
            offset: 8190,
            data: Bytes::from_static(b"ab")
        })]
    );
    let past = d.apply(Command::new(write(8191, b"ab")));
    assert_eq!(
        past.reply,
        Ok(Reply::Error(StateError::VolumeRange {
            offset: 8191,
            len: 2,
            size: 8192
        }))
    );
    assert!(past.events.is_empty());
    let overflow = d.apply(Command::new(Op::VolumeZero {
        name: "disk0".into(),
        offset: u64::MAX,
        len: 2,
    }));
    assert!(matches!(
        overflow.reply,
        Ok(Reply::Error(StateError::VolumeRange { .. }))
    ));
    let grown = d.apply(Command::new(Op::VolumeResize {
        name: "disk0".into(),
        size: 1 << 20,
    }));
    assert_eq!(
        grown.events,
        vec![Event::Volume(VolumeEvent::Resized {
            id,
            old: 8192,
            new: 1 << 20
        })]
    );
    // The table is in the snapshot.
    let restored = StateMachine::restore(&d.sm.snapshot()).unwrap();
    assert_eq!(
        restored.volumes().get("disk0").map(|v| v.size),
        Some(1 << 20)
    );
    assert_eq!(
        d.apply(Command::new(Op::VolumeRead {
            name: "disk0".into(),
            offset: 0,
            len: 1
        }))
        .reply,
        Ok(Reply::Error(StateError::LocalReadOnly))
    );
    let deleted = d.apply(Command::new(Op::VolumeDelete {
        name: "disk0".into(),
    }));
    assert_eq!(
        deleted.events,
        vec![Event::Volume(VolumeEvent::Deleted { id })]
    );
    assert!(d.sm.volumes().is_empty());
    // A new volume under the old name gets a new id.
    d.apply(Command::new(create(4096)));
    assert_ne!(d.sm.volumes().get("disk0").map(|v| v.id), Some(id));
    assert_eq!(info.id, id);
}

#[test]
fn leases_travel_in_snapshots_with_their_keys() {
    let mut d = Driver::new(StateMachine::new());
    d.apply(Command::new(Op::LeaseGrant { id: 9, ttl: 30 }));
    d.apply(Command::new(Op::LeaseGrant { id: 4, ttl: 5 }));
    let mut leased = PutRequest {
        key: Bytes::from_static(b"a"),
        value: Bytes::from_static(b"1"),
        lease: 9,
        ..PutRequest::default()
    };
    d.apply(Command::new(Op::Put(leased.clone())));
    leased.key = Bytes::from_static(b"b");
    d.apply(Command::new(Op::Put(leased)));
    d.apply(Command::new(Op::LeaseCheckpoint {
        checkpoints: vec![(9, 12), (77, 1)],
    }));
    let snap = d.sm.snapshot();
    let restored = StateMachine::restore(&snap).unwrap();
    assert_eq!(restored, d.sm, "keys are re-attached on restore");
    assert_eq!(restored.lease_records(), vec![(4, 5, 0), (9, 30, 12)]);
    let mut e = Driver::new(restored);
    let revoked = e.apply(Command::new(Op::LeaseRevoke { id: 9 }));
    let deleted: Vec<_> = revoked
        .events
        .iter()
        .filter_map(|ev| match ev {
            Event::Kv(k) if k.kv.is_none() => Some((k.key.clone(), k.revision)),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        vec![(Bytes::from_static(b"a"), 4), (Bytes::from_static(b"b"), 4)],
        "both keys go at one revision"
    );
    assert!(matches!(
        e.sm.read(&Op::LeaseGet { id: 9, keys: false }),
        Reply::Error(crate::StateError::LeaseNotFound)
    ));
}

fn alarm(
    action: crate::alarms::AlarmAction,
    member_id: u64,
    alarm: crate::alarms::AlarmType,
) -> Op {
    Op::Alarm(crate::alarms::AlarmRequest {
        action,
        member_id,
        alarm,
    })
}

fn reply_of(d: &mut Driver, op: Op) -> Reply {
    d.apply(Command::new(op)).reply.expect("a reply")
}

fn txn(success: Vec<crate::kv::RequestOp>) -> Op {
    Op::Txn(crate::kv::TxnRequest {
        compare: Vec::new(),
        success,
        failure: Vec::new(),
    })
}

#[test]
fn nospace_refuses_growth_until_disarmed() {
    use crate::alarms::{AlarmAction::*, AlarmMember, AlarmType::*};
    use crate::kv::{DeleteRangeRequest, RequestOp};
    let mut d = Driver::new(StateMachine::new());
    assert!(matches!(reply_of(&mut d, put("a", "1")), Reply::Put(_)));
    assert!(matches!(reply_of(&mut d, add("r", 1)), Reply::Value(1)));
    let raised = AlarmMember {
        member_id: 7,
        alarm: NoSpace,
    };
    assert_eq!(
        reply_of(&mut d, alarm(Activate, 7, NoSpace)),
        Reply::Alarms(vec![raised])
    );
    let nospace = Reply::Error(StateError::NoSpace);
    assert_eq!(reply_of(&mut d, put("b", "1")), nospace);
    assert_eq!(
        reply_of(&mut d, put("a", "2")),
        nospace,
        "overwrites too, as etcd"
    );
    let put_op = |k: &str| match put(k, "v") {
        Op::Put(p) => RequestOp::Put(p),
        _ => unreachable!(),
    };
    assert_eq!(reply_of(&mut d, txn(vec![put_op("c")])), nospace);
    assert_eq!(reply_of(&mut d, Op::LeaseGrant { id: 5, ttl: 10 }), nospace);
    assert_eq!(reply_of(&mut d, add("new", 1)), nospace, "a new register");
    assert_eq!(
        reply_of(
            &mut d,
            Op::VolumeCreate {
                name: "v".into(),
                size: 4096
            }
        ),
        nospace
    );
    // What does not grow the state still applies.
    assert!(matches!(reply_of(&mut d, add("r", 1)), Reply::Value(2)));
    let delete = DeleteRangeRequest {
        key: Bytes::from_static(b"a"),
        ..DeleteRangeRequest::default()
    };
    assert!(matches!(
        reply_of(&mut d, txn(vec![RequestOp::DeleteRange(delete.clone())])),
        Reply::Txn(_)
    ));
    let revision = d.sm.revision();
    assert!(matches!(
        reply_of(
            &mut d,
            Op::Compact(CompactRequest {
                revision,
                physical: false
            })
        ),
        Reply::Compact(_)
    ));
    assert_eq!(
        reply_of(&mut d, alarm(Get, 0, None)),
        Reply::Alarms(vec![raised])
    );
    assert_eq!(
        d.sm.revision(),
        revision,
        "nothing refused changed the store"
    );
    // The alarm survives a snapshot, and refuses there as here.
    let restored = StateMachine::restore(&d.sm.snapshot()).expect("restores");
    assert_eq!(restored, d.sm);
    assert!(restored.alarms().is_raised(NoSpace));
    let mut d = Driver::new(restored);
    assert_eq!(reply_of(&mut d, put("b", "1")), nospace);
    assert_eq!(
        reply_of(&mut d, alarm(Deactivate, 7, NoSpace)),
        Reply::Alarms(vec![raised])
    );
    assert!(matches!(reply_of(&mut d, put("b", "1")), Reply::Put(_)));
    assert_eq!(reply_of(&mut d, alarm(Get, 0, None)), Reply::Alarms(vec![]));
    d.sm.check_invariants();
}

#[test]
fn corrupt_refuses_kv_requests_but_not_alarms() {
    use crate::alarms::{AlarmAction::*, AlarmType::*};
    let mut d = Driver::new(StateMachine::new());
    reply_of(&mut d, put("a", "1"));
    reply_of(&mut d, alarm(Activate, 3, Corrupt));
    let corrupt = Reply::Error(StateError::Corrupt);
    assert_eq!(reply_of(&mut d, put("a", "2")), corrupt);
    assert_eq!(
        reply_of(
            &mut d,
            Op::DeleteRange(crate::kv::DeleteRangeRequest {
                key: Bytes::from_static(b"a"),
                ..Default::default()
            })
        ),
        corrupt
    );
    assert_eq!(reply_of(&mut d, add("r", 1)), corrupt);
    assert_eq!(reply_of(&mut d, Op::LeaseGrant { id: 5, ttl: 10 }), corrupt);
    assert!(matches!(reply_of(&mut d, alarm(Get, 0, Corrupt)), Reply::Alarms(v) if v.len() == 1));
    reply_of(&mut d, alarm(Deactivate, 3, Corrupt));
    assert!(matches!(reply_of(&mut d, put("a", "2")), Reply::Put(_)));
}

#[test]
fn alarms_need_an_admin_and_maintenance_ops_stay_off_the_log() {
    use crate::alarms::{AlarmAction::*, AlarmType::*};
    let mut d = Driver::new(StateMachine::new());
    assert_eq!(
        reply_of(&mut d, Op::HashKv { revision: 0 }),
        Reply::Error(StateError::LocalReadOnly)
    );
    assert_eq!(
        reply_of(&mut d, Op::Defragment),
        Reply::Error(StateError::LocalReadOnly)
    );
    // Auth is off: anyone may; the admin check itself is auth's
    // (`auth/tests.rs` covers check_admin).
    let user = Command::new(alarm(Activate, 1, NoSpace)).by(Principal::user("u", 0));
    assert!(matches!(d.apply(user).reply, Ok(Reply::Alarms(_))));
}

#[test]
fn hash_kv_is_equal_on_replicas_and_space_is_accounted() {
    let mut a = Driver::new(StateMachine::new());
    let mut b = Driver::new(StateMachine::new());
    for d in [&mut a, &mut b] {
        reply_of(d, put("k", "value"));
        reply_of(d, add("r", 1));
    }
    a.noops(3); // members differ in what is not state
    let q = Command::new(Op::HashKv { revision: 0 });
    assert_eq!(a.sm.query(&q), b.sm.query(&q));
    let before = a.sm.space_in_use();
    assert!(before >= crate::space::version_bytes(1, 5) + crate::space::REGISTER_BYTES);
    reply_of(&mut a, put("k", "value2"));
    assert_eq!(
        a.sm.space_in_use(),
        before + crate::space::version_bytes(1, 6),
        "a new version adds its bytes"
    );
    let revision = a.sm.revision();
    reply_of(
        &mut a,
        Op::Compact(CompactRequest {
            revision,
            physical: false,
        }),
    );
    assert_eq!(
        a.sm.space_in_use(),
        before + 1,
        "compaction drops the old version"
    );
    a.sm.check_invariants();
    assert!(a.sm.corrupt_value(b"k"));
    assert_ne!(a.sm.query(&q), b.sm.query(&q));
}
