//! Round trips of every command and reply shape, and refusal of garbage.

use bytes::Bytes;

use super::*;
use crate::kv::*;
use crate::limits::{KEY_BYTES_MAX, TXN_DEPTH_MAX, TXN_OPS_MAX};
use crate::reply::Reply;
use crate::StateError;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn kv(k: &str) -> KeyValue {
    KeyValue {
        key: b(k),
        create_revision: 2,
        mod_revision: 5,
        version: 3,
        value: b("v"),
        lease: 7,
    }
}

fn every_request_op() -> Vec<RequestOp> {
    vec![
        RequestOp::Range(RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            limit: 3,
            revision: -1,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            serializable: true,
            keys_only: true,
            count_only: false,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        }),
        RequestOp::Put(PutRequest {
            key: b("k"),
            value: b("v"),
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
            lease: 0,
        }),
        RequestOp::Put(PutRequest {
            key: b("l"),
            value: b("v"),
            lease: 0x694d_7a3c_1122_3344,
            ..PutRequest::default()
        }),
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: b("a"),
            range_end: b("z"),
            prev_kv: true,
        }),
    ]
}

fn txn() -> TxnRequest {
    let compare = vec![
        Compare {
            key: b("a"),
            range_end: b(""),
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
        },
        Compare {
            key: b("a"),
            range_end: b("b"),
            result: CompareResult::Greater,
            target: CompareTarget::Create(1),
        },
        Compare {
            key: b("a"),
            range_end: b(""),
            result: CompareResult::Less,
            target: CompareTarget::Mod(9),
        },
        Compare {
            key: b("a"),
            range_end: b(""),
            result: CompareResult::NotEqual,
            target: CompareTarget::Value(b("x")),
        },
        Compare {
            key: b("a"),
            range_end: b(""),
            result: CompareResult::Equal,
            target: CompareTarget::Lease(0),
        },
    ];
    let nested = TxnRequest {
        compare: vec![],
        success: every_request_op(),
        failure: vec![],
    };
    let mut failure = every_request_op();
    failure.push(RequestOp::Txn(nested));
    TxnRequest {
        compare,
        success: every_request_op(),
        failure,
    }
}

fn every_op() -> Vec<Op> {
    let mut ops: Vec<Op> = every_request_op()
        .into_iter()
        .map(|op| match op {
            RequestOp::Range(r) => Op::Range(r),
            RequestOp::Put(p) => Op::Put(p),
            RequestOp::DeleteRange(d) => Op::DeleteRange(d),
            RequestOp::Txn(t) => Op::Txn(t),
        })
        .collect();
    ops.push(Op::Txn(txn()));
    ops.push(Op::Compact(CompactRequest {
        revision: 7,
        physical: true,
    }));
    ops.push(Op::RegisterGet { name: "r".into() });
    ops.push(Op::RegisterSet {
        name: "r".into(),
        value: -1,
    });
    ops.push(Op::RegisterAdd {
        name: "ü".into(),
        delta: i64::MIN,
    });
    ops.push(Op::RegisterCas {
        name: "r".into(),
        expected: 1,
        new: 2,
    });
    ops.push(Op::LeaseGrant { id: 5, ttl: 60 });
    ops.push(Op::LeaseRevoke { id: 5 });
    ops.push(Op::LeaseCheckpoint {
        checkpoints: vec![(5, 30), (6, 0)],
    });
    ops.push(Op::LeaseGet { id: 5, keys: true });
    ops.push(Op::LeaseList);
    ops.push(Op::Changes(crate::kv::ChangesRequest {
        key: b("a"),
        range_end: b("\0"),
        start_revision: 9,
        events_max: 100,
    }));
    ops.extend(every_auth_request().into_iter().map(Op::Auth));
    ops
}

fn every_auth_request() -> Vec<crate::auth::AuthRequest> {
    use crate::auth::{AuthRequest as A, PermKind, Permission};
    vec![
        A::Enable { secret: [7; 32] },
        A::Disable,
        A::Status,
        A::UserAdd {
            name: "u".into(),
            password: Some("$2b$10$hash".into()),
            no_password: false,
        },
        A::UserAdd {
            name: "cert".into(),
            password: None,
            no_password: true,
        },
        A::UserGet { name: "u".into() },
        A::UserList,
        A::UserDelete { name: "u".into() },
        A::UserChangePassword {
            name: "u".into(),
            password: "$2b$10$other".into(),
        },
        A::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
        A::UserRevokeRole {
            user: "u".into(),
            role: "r".into(),
        },
        A::RoleAdd { name: "r".into() },
        A::RoleGet { name: "r".into() },
        A::RoleList,
        A::RoleDelete { name: "r".into() },
        A::RoleGrantPermission {
            name: "r".into(),
            perm: Permission {
                kind: PermKind::ReadWrite,
                key: b("a"),
                range_end: b("\0"),
            },
        },
        A::RoleRevokePermission {
            name: "r".into(),
            key: b("a"),
            range_end: b("b"),
        },
    ]
}

fn every_reply() -> Vec<Reply> {
    let range = RangeResponse {
        revision: 5,
        kvs: vec![kv("a"), kv("b")],
        more: true,
        count: 9,
    };
    let put = PutResponse {
        revision: 5,
        prev_kv: Some(kv("a")),
    };
    let delete = DeleteRangeResponse {
        revision: 5,
        deleted: 2,
        prev_kvs: vec![kv("c")],
    };
    let inner = TxnResponse {
        revision: 5,
        succeeded: false,
        responses: vec![ResponseOp::Put(PutResponse {
            revision: 5,
            prev_kv: None,
        })],
    };
    let txn = TxnResponse {
        revision: 5,
        succeeded: true,
        responses: vec![
            ResponseOp::Range(range.clone()),
            ResponseOp::Put(put.clone()),
            ResponseOp::DeleteRange(delete.clone()),
            ResponseOp::Txn(inner),
        ],
    };
    let mut replies = vec![
        Reply::Put(put),
        Reply::Range(range),
        Reply::DeleteRange(delete),
        Reply::Txn(txn),
        Reply::Compact(CompactResponse { revision: 3 }),
        Reply::Value(-4),
        Reply::Set { previous: 8 },
        Reply::Cas {
            swapped: true,
            current: 2,
        },
    ];
    replies.push(Reply::LeaseGranted { id: 5, ttl: 60 });
    replies.push(Reply::LeaseRevoked { revision: 9 });
    replies.push(Reply::Lease(crate::leases::LeaseInfo {
        id: 5,
        ttl: 60,
        remaining: 12,
        keys: vec![b("a"), b("b")],
    }));
    replies.push(Reply::Leases(vec![1, 5]));
    {
        use crate::auth::{AuthReply, PermKind, Permission};
        replies.push(Reply::Auth(AuthReply::Done));
        replies.push(Reply::Auth(AuthReply::Status {
            enabled: true,
            revision: 9,
        }));
        replies.push(Reply::Auth(AuthReply::UserRoles(vec![
            "a".into(),
            "root".into(),
        ])));
        replies.push(Reply::Auth(AuthReply::Names(vec!["x".into()])));
        replies.push(Reply::Auth(AuthReply::Permissions(vec![Permission {
            kind: PermKind::Write,
            key: b("k"),
            range_end: b(""),
        }])));
    }
    replies.push(Reply::Changes(crate::kv::ChangesResponse {
        events: vec![crate::event::KvEvent {
            revision: 4,
            key: b("a"),
            prev: Some(kv("a")),
            kv: None,
        }],
        revision: 5,
        compact_revision: 2,
        next_revision: 6,
    }));
    for e in [
        StateError::Compacted,
        StateError::FutureRevision,
        StateError::DuplicateKey,
        StateError::EmptyKey,
        StateError::KeyNotFound,
        StateError::ValueProvided,
        StateError::Overflow { value: 1, delta: 2 },
        StateError::LeaseNotFound,
        StateError::LeaseExists,
        StateError::LeaseProvided,
        StateError::LeaseTtlTooLarge,
        StateError::RootUserNotExist,
        StateError::RootRoleNotExist,
        StateError::UserAlreadyExist,
        StateError::UserEmpty,
        StateError::UserNotFound,
        StateError::RoleAlreadyExist,
        StateError::RoleNotFound,
        StateError::RoleEmpty,
        StateError::AuthFailed,
        StateError::PermissionNotGiven,
        StateError::PermissionDenied,
        StateError::RoleNotGranted,
        StateError::PermissionNotGranted,
        StateError::AuthNotEnabled,
        StateError::InvalidAuthToken,
        StateError::InvalidAuthMgmt,
        StateError::AuthOldRevision,
    ] {
        replies.push(Reply::Error(e));
    }
    replies
}

#[test]
fn every_command_round_trips() {
    for op in every_op() {
        for session in [None, Some((u64::MAX, 1))] {
            for principal in [
                crate::auth::Principal::System,
                crate::auth::Principal::Anonymous,
                crate::auth::Principal::user("ü", u64::MAX),
            ] {
                let cmd = Command {
                    session,
                    principal,
                    op: op.clone(),
                };
                assert_eq!(Command::decode(&cmd.encode()), Ok(cmd));
            }
        }
    }
}

#[test]
fn every_reply_round_trips() {
    for reply in every_reply() {
        let mut w = Writer::new();
        put_reply(&mut w, &reply);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(get_reply(&mut r), Ok(reply));
        assert_eq!(r.finish(), Ok(()));
    }
}

#[test]
fn every_truncation_is_refused() {
    for op in every_op() {
        let bytes = Command::with_session(1, 2, op).encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                Command::decode(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn garbage_is_refused_with_typed_errors() {
    let good = Command::new(Op::RegisterGet { name: "r".into() })
        .encode()
        .to_vec();
    let mut version = good.clone();
    version[0] = 5;
    assert_eq!(
        Command::decode(&version),
        Err(DecodeError::Version {
            found: 5,
            expected: 4
        })
    );
    // Version 3 (before alarms) has the same layout and still reads.
    let mut before_alarms = good.clone();
    before_alarms[0] = 3;
    assert!(Command::decode(&before_alarms).is_ok());
    let mut principal = good.clone();
    principal[2] = 9;
    assert_eq!(
        Command::decode(&principal),
        Err(DecodeError::UnknownTag {
            what: "principal",
            tag: 9
        })
    );
    let mut session = good.clone();
    session[1] = 5;
    assert_eq!(
        Command::decode(&session),
        Err(DecodeError::UnknownTag {
            what: "session",
            tag: 5
        })
    );
    let mut op = good.clone();
    op[3] = 199;
    assert_eq!(
        Command::decode(&op),
        Err(DecodeError::UnknownTag {
            what: "op",
            tag: 199
        })
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(Command::decode(&trailing), Err(DecodeError::Trailing(1)));
    let mut utf8 = good;
    *utf8.last_mut().unwrap() = 0xff;
    assert_eq!(
        Command::decode(&utf8),
        Err(DecodeError::InvalidUtf8("register name"))
    );
    let bad_bool = [1, 0, OP_COMPACT, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    assert_eq!(Command::decode(&bad_bool), Err(DecodeError::InvalidBool(7)));
}

#[test]
fn lengths_over_the_limits_are_refused() {
    let long_key = Command::new(Op::Put(PutRequest {
        key: Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]),
        ..PutRequest::default()
    }));
    assert!(matches!(
        Command::decode(&long_key.encode()),
        Err(DecodeError::TooLong { what: "key", .. })
    ));
    let mut huge = vec![1, 0, OP_PUT];
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        Command::decode(&huge),
        Err(DecodeError::TooLong { what: "key", .. })
    ));
    let many = Command::new(Op::Txn(TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Range(RangeRequest::key("a")); TXN_OPS_MAX + 1],
        failure: vec![],
    }));
    assert!(matches!(
        Command::decode(&many.encode()),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut t = TxnRequest::default();
        for _ in 1..depth {
            t = TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Txn(t)],
                failure: vec![],
            };
        }
        Command::new(Op::Txn(t))
    };
    let ok = nest(TXN_DEPTH_MAX);
    assert_eq!(Command::decode(&ok.encode()), Ok(ok));
    assert_eq!(
        Command::decode(&nest(TXN_DEPTH_MAX + 1).encode()),
        Err(DecodeError::TooDeep { max: TXN_DEPTH_MAX })
    );
}

/// Regression: a count was believed up to one item per byte of input, and
/// an item in memory is far larger than one byte (a key-value pair is 88),
/// so a reply claiming 2^64 pairs over 24 KiB reserved 2 MiB at once, and a
/// 32 MiB forwarded reply would have reserved 2.8 GB.
#[test]
fn a_count_reserves_no_more_memory_than_the_input_holds() {
    let input = vec![0u8; 24 << 10];
    let r = Reader::new(&input);
    let kvs: Vec<KeyValue> = r.vec_for(usize::MAX);
    assert!(kvs.capacity() * std::mem::size_of::<KeyValue>() <= input.len());
    let few: Vec<KeyValue> = r.vec_for(3);
    assert!(few.capacity() >= 3, "an honest count is reserved in full");

    let mut reply = vec![COMMAND_VERSION, 2];
    reply.extend_from_slice(&1i64.to_le_bytes());
    reply.extend_from_slice(&u64::MAX.to_le_bytes());
    reply.extend_from_slice(&input);
    assert_eq!(Reply::decode(&reply), Err(DecodeError::Truncated));
}

#[test]
fn the_first_format_still_reads_with_no_leases() {
    // A version-1 put: key "k", value "v", three flags, no lease field.
    let mut v1 = vec![1u8, 0, 1];
    for field in [&b"k"[..], &b"v"[..]] {
        v1.extend_from_slice(&(field.len() as u64).to_le_bytes());
        v1.extend_from_slice(field);
    }
    v1.extend_from_slice(&[0, 0, 0]);
    let cmd = Command::decode(&v1).unwrap();
    let Op::Put(p) = cmd.op else {
        panic!("not a put: {cmd:?}")
    };
    assert_eq!((p.key, p.value, p.lease), (b("k"), b("v"), 0));
}

#[test]
fn a_version_2_command_reads_as_the_members_own() {
    // Version 2: version, no session, then the op (a register get of "r").
    let mut v2 = vec![2u8, 0, OP_REGISTER_GET];
    v2.extend_from_slice(&1u64.to_le_bytes());
    v2.push(b'r');
    let cmd = Command::decode(&v2).unwrap();
    assert_eq!(cmd, Command::new(Op::RegisterGet { name: "r".into() }));
    assert_eq!(cmd.principal, crate::auth::Principal::System);
}
