//! Target `state_commands`: the command and reply codecs of `ferrite-state`,
//! and applying decoded commands to a state machine.

use bytes::Bytes;
use ferrite_state::kv::CompareResult;
use ferrite_state::{
    Command, CompactRequest, Compare, CompareTarget, DeleteRangeRequest, MemberInfo, Op,
    PutRequest, RangeRequest, Reply, RequestOp, SessionLimits, StateMachine, TxnRequest,
};

/// Session bounds small enough for a short input to reach expiry and
/// eviction.
const SMALL_SESSIONS: SessionLimits = SessionLimits {
    idle_entries_max: 4,
    sessions_max: 2,
};

/// The whole input is decoded as a command and as a reply, each of which
/// must survive a round trip. Then it is read as log entries applied in
/// order to a fresh machine, which must keep its invariants after every
/// entry, answer a retry of a session's command as it answered the command,
/// and restore from its own snapshot to an equal machine.
///
/// ```text
/// input = flags:u8 | entry*
/// entry = len:u16 LE | data      (empty data: a Raft no-op entry)
/// flags:  bit 0  small session limits (expiry and eviction within a few entries)
///         bit 1  every entry is applied twice (a client's retry)
/// ```
pub fn state_commands(data: &[u8]) {
    let _bound = crate::allocation::bound(data.len());
    if let Ok(command) = Command::decode(data) {
        assert_eq!(
            Command::decode(&command.encode()).as_ref(),
            Ok(&command),
            "a command changed in a round trip"
        );
    }
    if let Ok(reply) = Reply::decode(data) {
        check_reply(&reply);
    }
    let Some((&flags, mut entries)) = data.split_first() else {
        return;
    };
    let mut sm = if flags & 1 != 0 {
        StateMachine::with_session_limits(SMALL_SESSIONS)
    } else {
        StateMachine::new()
    };
    let mut index = 0;
    while let Some(entry) = crate::chunk(&mut entries) {
        index += 1;
        if entry.is_empty() {
            sm.apply_noop(index);
            continue;
        }
        let applied = sm.apply(index, entry);
        sm.check_invariants();
        if let Ok(reply) = &applied.reply {
            check_reply(reply);
        }
        if flags & 2 != 0 {
            index += 1;
            let retried = sm.apply(index, entry);
            sm.check_invariants();
            let has_session = Command::decode(entry).is_ok_and(|c| c.session.is_some());
            if has_session && applied.reply.is_ok() {
                assert_eq!(retried.reply, applied.reply, "a retry got another reply");
                assert!(retried.events.is_empty(), "a retry changed the state");
            }
        }
    }
    check_snapshot(&sm);
}

/// Replies travel between nodes and sit in snapshots: they round-trip.
pub(crate) fn check_reply(reply: &Reply) {
    assert_eq!(
        Reply::decode(&reply.encode()).as_ref(),
        Ok(reply),
        "a reply changed in a round trip"
    );
}

/// A machine's own snapshot restores to an equal machine.
pub(crate) fn check_snapshot(sm: &StateMachine) {
    match StateMachine::restore(&sm.snapshot()) {
        Ok(restored) => assert_eq!(&restored, sm, "a snapshot restored to another machine"),
        Err(e) => panic!("a machine's own snapshot does not restore: {e}"),
    }
}

/// Commands that touch every part of a machine: keys (with history,
/// transactions and compaction at `revision`), registers, sessions, members
/// and volumes. Seeds are built from them, and restored snapshots must take
/// them.
pub(crate) fn script(revision: i64) -> Vec<Command> {
    let key = |k: &'static str| Bytes::from_static(k.as_bytes());
    let put = |k: &'static str, v: &'static str| {
        Op::Put(PutRequest {
            key: key(k),
            value: key(v),
            prev_kv: true,
            ..PutRequest::default()
        })
    };
    let range_all = RangeRequest {
        key: key("\0"),
        range_end: key("\0"),
        ..RangeRequest::default()
    };
    let txn = TxnRequest {
        compare: vec![Compare {
            key: key("a"),
            range_end: Bytes::new(),
            result: CompareResult::Greater,
            target: CompareTarget::Version(0),
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: key("b"),
                value: key("2"),
                ..PutRequest::default()
            }),
            RequestOp::Range(range_all.clone()),
        ],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: key("a"),
            ..DeleteRangeRequest::default()
        })],
    };
    let volume = |name: &str| name.to_string();
    vec![
        Command::new(put("a", "1")),
        Command::with_session(7, 1, put("a", "2")),
        Command::with_session(7, 2, Op::Txn(txn)),
        Command::new(Op::Range(range_all)),
        Command::new(Op::DeleteRange(DeleteRangeRequest {
            key: key("b"),
            range_end: key("c"),
            prev_kv: true,
        })),
        Command::new(Op::Compact(CompactRequest {
            revision,
            physical: false,
        })),
        Command::with_session(
            8,
            1,
            Op::RegisterAdd {
                name: "visits".into(),
                delta: 5,
            },
        ),
        Command::new(Op::RegisterSet {
            name: "x".into(),
            value: -3,
        }),
        Command::new(Op::RegisterCas {
            name: "x".into(),
            expected: -3,
            new: 4,
        }),
        Command::new(Op::RegisterGet { name: "x".into() }),
        Command::new(Op::RegisterList { limit: 10 }),
        Command::new(Op::MemberPublish(MemberInfo {
            id: 1,
            name: "n1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
        })),
        Command::new(Op::MemberList),
        Command::new(Op::VolumeCreate {
            name: volume("disk0"),
            size: 1 << 20,
        }),
        Command::new(Op::VolumeWrite {
            name: volume("disk0"),
            offset: 4096,
            data: key("block"),
        }),
        Command::new(Op::VolumeZero {
            name: volume("disk0"),
            offset: 0,
            len: 512,
        }),
        Command::new(Op::VolumeResize {
            name: volume("disk0"),
            size: 2 << 20,
        }),
        Command::new(Op::VolumeRead {
            name: volume("disk0"),
            offset: 0,
            len: 16,
        }),
        Command::new(Op::VolumeList),
        Command::new(Op::VolumeCreate {
            name: volume("gone"),
            size: 4096,
        }),
        Command::new(Op::VolumeDelete {
            name: volume("gone"),
        }),
        Command::new(Op::MemberForget { id: 2 }),
    ]
}
