//! The auth store through the machine, as the node drives it: mutations
//! and their errors, who may do what once auth is enabled, lists filtered
//! for a limited user, and snapshots.

use bytes::Bytes;

use crate::auth::{AuthReply, AuthRequest, PermKind, Permission, Principal};
use crate::command::{Command, Op};
use crate::error::StateError;
use crate::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use crate::reply::Reply;
use crate::{Event, StateMachine};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

struct Driver {
    sm: StateMachine,
    index: u64,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            sm: StateMachine::new(),
            index: 0,
        }
    }

    fn run(&mut self, who: &Principal, op: Op) -> Reply {
        self.index += 1;
        let applied = self
            .sm
            .apply(self.index, &Command::new(op).by(who.clone()).encode());
        applied.reply.expect("a reply")
    }

    fn auth(&mut self, who: &Principal, req: AuthRequest) -> Result<AuthReply, StateError> {
        match self.run(who, Op::Auth(req)) {
            Reply::Auth(r) => Ok(r),
            Reply::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn sys(&mut self, req: AuthRequest) -> Result<AuthReply, StateError> {
        self.auth(&Principal::System, req)
    }

    fn query(&self, who: &Principal, op: Op) -> Reply {
        self.sm.query(&Command::new(op).by(who.clone()))
    }

    /// The current token of `name`.
    fn as_user(&self, name: &str) -> Principal {
        Principal::user(name, self.sm.auth().revision())
    }
}

fn user_add(name: &str) -> AuthRequest {
    AuthRequest::UserAdd {
        name: name.into(),
        password: Some(format!("hash-of-{name}")),
        no_password: false,
    }
}

fn grant(user: &str, role: &str) -> AuthRequest {
    AuthRequest::UserGrantRole {
        user: user.into(),
        role: role.into(),
    }
}

fn perm(role: &str, kind: PermKind, key: &str, end: &str) -> AuthRequest {
    AuthRequest::RoleGrantPermission {
        name: role.into(),
        perm: Permission {
            kind,
            key: b(key),
            range_end: b(end),
        },
    }
}

fn put(k: &str) -> Op {
    Op::Put(PutRequest {
        key: b(k),
        value: b("v"),
        ..PutRequest::default()
    })
}

fn get(k: &str, end: &str) -> Op {
    Op::Range(RangeRequest {
        key: b(k),
        range_end: b(end),
        ..RangeRequest::default()
    })
}

fn denied(r: Reply) -> bool {
    r == Reply::Error(StateError::PermissionDenied)
}

/// root (root role) and alice (role "app": readwrite on the prefix app/,
/// read on cfg), auth enabled.
fn enabled() -> Driver {
    let mut d = Driver::new();
    d.sys(user_add("root")).unwrap();
    d.sys(grant("root", "root")).unwrap();
    d.sys(user_add("alice")).unwrap();
    d.sys(AuthRequest::RoleAdd { name: "app".into() }).unwrap();
    d.sys(perm("app", PermKind::ReadWrite, "app/", "app0"))
        .unwrap();
    d.sys(perm("app", PermKind::Read, "cfg", "")).unwrap();
    d.sys(grant("alice", "app")).unwrap();
    d.sys(AuthRequest::Enable { secret: [1; 32] }).unwrap();
    d
}

#[test]
fn enable_needs_a_root_user_with_the_root_role() {
    let mut d = Driver::new();
    let enable = AuthRequest::Enable { secret: [1; 32] };
    assert_eq!(d.sys(enable.clone()), Err(StateError::RootUserNotExist));
    d.sys(user_add("root")).unwrap();
    assert_eq!(d.sys(enable.clone()), Err(StateError::RootRoleNotExist));
    // The root role need not exist as a role to be granted (etcd).
    d.sys(grant("root", "root")).unwrap();
    let before = d.sm.auth().revision();
    assert_eq!(d.sys(enable.clone()), Ok(AuthReply::Done));
    assert!(d.sm.auth().enabled());
    // Enabling keeps the revision, as etcd's does; enabling again is a no-op.
    assert_eq!(d.sm.auth().revision(), before);
    assert_eq!(d.sys(enable), Ok(AuthReply::Done));
    assert_eq!(d.sm.auth().token_secret(), &[1; 32]);
}

#[test]
fn mutations_bump_the_revision_and_refuse_as_etcd_does() {
    let mut d = Driver::new();
    assert_eq!(d.sm.auth().revision(), 1);
    assert_eq!(d.sys(user_add("")), Err(StateError::UserEmpty));
    d.sys(user_add("u")).unwrap();
    assert_eq!(d.sm.auth().revision(), 2);
    assert_eq!(d.sys(user_add("u")), Err(StateError::UserAlreadyExist));
    assert_eq!(d.sys(grant("u", "r")), Err(StateError::RoleNotFound));
    assert_eq!(
        d.sys(grant("nobody", "root")),
        Err(StateError::UserNotFound)
    );
    assert_eq!(
        d.sys(AuthRequest::RoleAdd { name: "".into() }),
        Err(StateError::RoleEmpty)
    );
    d.sys(AuthRequest::RoleAdd { name: "r".into() }).unwrap();
    assert_eq!(
        d.sys(AuthRequest::RoleAdd { name: "r".into() }),
        Err(StateError::RoleAlreadyExist)
    );
    d.sys(grant("u", "r")).unwrap();
    let rev = d.sm.auth().revision();
    // Granting a role again changes nothing and keeps the revision.
    d.sys(grant("u", "r")).unwrap();
    assert_eq!(d.sm.auth().revision(), rev);
    assert_eq!(
        d.sys(perm("r", PermKind::Read, "b", "a")),
        Err(StateError::InvalidAuthMgmt)
    );
    assert_eq!(
        d.sys(perm("nope", PermKind::Read, "a", "")),
        Err(StateError::RoleNotFound)
    );
    d.sys(perm("r", PermKind::Read, "k", "")).unwrap();
    d.sys(perm("r", PermKind::Write, "a", "\0")).unwrap();
    // The same key and end again: the type is updated in place.
    d.sys(perm("r", PermKind::ReadWrite, "k", "")).unwrap();
    assert_eq!(
        d.sys(AuthRequest::RoleGet { name: "r".into() }),
        Ok(AuthReply::Permissions(vec![
            Permission {
                kind: PermKind::Write,
                key: b("a"),
                range_end: b("\0"),
            },
            Permission {
                kind: PermKind::ReadWrite,
                key: b("k"),
                range_end: b(""),
            },
        ]))
    );
    assert_eq!(
        d.sys(AuthRequest::RoleRevokePermission {
            name: "r".into(),
            key: b("zz"),
            range_end: b(""),
        }),
        Err(StateError::PermissionNotGranted)
    );
    assert_eq!(
        d.sys(AuthRequest::UserRevokeRole {
            user: "u".into(),
            role: "x".into()
        }),
        Err(StateError::RoleNotGranted)
    );
    assert_eq!(
        d.sys(AuthRequest::UserGet { name: "u".into() }),
        Ok(AuthReply::UserRoles(vec!["r".into()]))
    );
    // Deleting a role takes it from its holders.
    d.sys(AuthRequest::RoleDelete { name: "r".into() }).unwrap();
    assert_eq!(
        d.sys(AuthRequest::UserGet { name: "u".into() }),
        Ok(AuthReply::UserRoles(vec![]))
    );
    assert_eq!(
        d.sys(AuthRequest::UserList),
        Ok(AuthReply::Names(vec!["u".into()]))
    );
    d.sm.check_invariants();
}

#[test]
fn root_is_protected_while_enabled() {
    let mut d = enabled();
    let root = d.as_user("root");
    assert_eq!(
        d.auth(
            &root,
            AuthRequest::UserDelete {
                name: "root".into()
            }
        ),
        Err(StateError::InvalidAuthMgmt)
    );
    assert_eq!(
        d.auth(
            &root,
            AuthRequest::UserRevokeRole {
                user: "root".into(),
                role: "root".into()
            }
        ),
        Err(StateError::InvalidAuthMgmt)
    );
    assert_eq!(
        d.auth(
            &root,
            AuthRequest::RoleDelete {
                name: "root".into()
            }
        ),
        Err(StateError::InvalidAuthMgmt)
    );
    d.auth(&root, AuthRequest::Disable).unwrap();
    let root = d.as_user("root");
    d.auth(
        &root,
        AuthRequest::UserDelete {
            name: "root".into(),
        },
    )
    .unwrap();
}

#[test]
fn everything_is_allowed_while_auth_is_disabled() {
    let mut d = Driver::new();
    assert!(matches!(
        d.run(&Principal::Anonymous, put("x")),
        Reply::Put(_)
    ));
    assert!(matches!(
        d.auth(&Principal::Anonymous, user_add("root")),
        Ok(AuthReply::Done)
    ));
}

#[test]
fn who_may_do_what_once_enabled() {
    let mut d = enabled();
    let alice = d.as_user("alice");
    let root = d.as_user("root");
    // No user.
    assert_eq!(
        d.run(&Principal::Anonymous, put("app/x")),
        Reply::Error(StateError::UserEmpty)
    );
    assert_eq!(
        d.query(&Principal::Anonymous, get("app/x", "")),
        Reply::Error(StateError::UserEmpty)
    );
    // Within and outside the user's permissions.
    assert!(matches!(d.run(&alice, put("app/x")), Reply::Put(_)));
    assert!(denied(d.run(&alice, put("other"))));
    assert!(denied(d.run(&alice, put("cfg"))));
    assert!(matches!(d.query(&alice, get("cfg", "")), Reply::Range(_)));
    assert!(matches!(
        d.query(&alice, get("app/", "app0")),
        Reply::Range(_)
    ));
    assert!(denied(d.query(&alice, get("app/", "\0"))));
    assert!(denied(d.query(&alice, get("\0", "\0"))));
    // Root may do anything; the System principal is never checked.
    assert!(matches!(d.run(&root, put("other")), Reply::Put(_)));
    assert!(matches!(
        d.run(&Principal::System, put("sys")),
        Reply::Put(_)
    ));
    // A user who does not exist.
    assert!(denied(d.run(&d.as_user("mallory"), put("app/x"))));
    // Auth management is for root.
    assert_eq!(
        d.auth(&alice, user_add("bob")),
        Err(StateError::PermissionDenied)
    );
    assert_eq!(
        d.auth(&d.as_user("mallory"), AuthRequest::UserList),
        Err(StateError::UserNotFound)
    );
    assert_eq!(
        d.auth(&Principal::Anonymous, AuthRequest::UserList),
        Err(StateError::UserEmpty)
    );
    // ... except reading oneself and one's roles, and the status.
    assert!(d
        .auth(
            &alice,
            AuthRequest::UserGet {
                name: "alice".into()
            }
        )
        .is_ok());
    assert!(d
        .auth(
            &alice,
            AuthRequest::UserGet {
                name: "root".into()
            }
        )
        .is_err());
    assert!(d
        .auth(&alice, AuthRequest::RoleGet { name: "app".into() })
        .is_ok());
    assert!(matches!(
        d.auth(&Principal::Anonymous, AuthRequest::Status),
        Ok(AuthReply::Status { enabled: true, .. })
    ));
    // Compaction is for root.
    let compact = Op::Compact(crate::kv::CompactRequest {
        revision: 1,
        physical: false,
    });
    assert!(denied(d.run(&alice, compact.clone())));
    assert!(matches!(d.run(&root, compact), Reply::Compact(_)));
}

#[test]
fn a_token_from_before_a_change_is_old() {
    let mut d = enabled();
    let alice = d.as_user("alice");
    d.auth(&d.as_user("root"), user_add("bob")).unwrap();
    assert_eq!(
        d.run(&alice, put("app/x")),
        Reply::Error(StateError::AuthOldRevision)
    );
    assert!(matches!(
        d.run(&d.as_user("alice"), put("app/x")),
        Reply::Put(_)
    ));
    // A revision of 0 is no user at all.
    assert_eq!(
        d.run(&Principal::user("alice", 0), put("app/x")),
        Reply::Error(StateError::UserEmpty)
    );
}

#[test]
fn transactions_need_every_compare_and_op_of_both_branches() {
    let mut d = enabled();
    let alice = d.as_user("alice");
    let cmp = |k: &str| Compare {
        key: b(k),
        range_end: b(""),
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
    };
    let txn = |compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>| {
        Op::Txn(TxnRequest {
            compare,
            success,
            failure,
        })
    };
    let rput = |k: &str| {
        RequestOp::Put(PutRequest {
            key: b(k),
            ..PutRequest::default()
        })
    };
    assert!(matches!(
        d.run(&alice, txn(vec![cmp("cfg")], vec![rput("app/a")], vec![])),
        Reply::Txn(_)
    ));
    assert!(denied(d.run(
        &alice,
        txn(vec![cmp("secret")], vec![rput("app/a")], vec![])
    )));
    // The failure branch is checked even when the success branch runs.
    assert!(denied(d.run(
        &alice,
        txn(vec![], vec![rput("app/a")], vec![rput("other")])
    )));
    let nested = RequestOp::Txn(TxnRequest {
        compare: vec![],
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: b("cfg"),
            ..DeleteRangeRequest::default()
        })],
        failure: vec![],
    });
    assert!(denied(d.run(&alice, txn(vec![], vec![nested], vec![]))));
}

#[test]
fn prev_kv_needs_read_and_a_lease_needs_write_on_its_keys() {
    let mut d = Driver::new();
    d.sys(user_add("root")).unwrap();
    d.sys(grant("root", "root")).unwrap();
    d.sys(user_add("w")).unwrap();
    d.sys(AuthRequest::RoleAdd { name: "wo".into() }).unwrap();
    d.sys(perm("wo", PermKind::Write, "w/", "w0")).unwrap();
    d.sys(grant("w", "wo")).unwrap();
    d.run(&Principal::System, Op::LeaseGrant { id: 7, ttl: 60 });
    d.run(
        &Principal::System,
        Op::Put(PutRequest {
            key: b("root-key"),
            lease: 7,
            ..PutRequest::default()
        }),
    );
    d.sys(AuthRequest::Enable { secret: [2; 32] }).unwrap();
    let w = d.as_user("w");
    assert!(matches!(d.run(&w, put("w/a")), Reply::Put(_)));
    let with_prev = Op::Put(PutRequest {
        key: b("w/a"),
        prev_kv: true,
        ..PutRequest::default()
    });
    assert!(denied(d.run(&w, with_prev)));
    let on_lease = Op::Put(PutRequest {
        key: b("w/b"),
        lease: 7,
        ..PutRequest::default()
    });
    assert!(denied(d.run(&w, on_lease)));
    assert!(denied(d.run(&w, Op::LeaseRevoke { id: 7 })));
    assert!(matches!(
        d.run(&w, Op::LeaseGrant { id: 8, ttl: 60 }),
        Reply::LeaseGranted { .. }
    ));
    assert!(matches!(
        d.run(&w, Op::LeaseRevoke { id: 8 }),
        Reply::LeaseRevoked { .. }
    ));
    // Leases need a user; their keys need read.
    assert_eq!(
        d.run(&Principal::Anonymous, Op::LeaseGrant { id: 9, ttl: 60 }),
        Reply::Error(StateError::UserEmpty)
    );
    assert!(denied(d.query(&w, Op::LeaseGet { id: 7, keys: true })));
    assert!(matches!(
        d.query(&w, Op::LeaseGet { id: 7, keys: false }),
        Reply::Lease(_)
    ));
}

#[test]
fn registers_and_volumes_use_their_keys_and_lists_are_filtered() {
    let mut d = Driver::new();
    for name in ["a", "b"] {
        d.run(
            &Principal::System,
            Op::RegisterSet {
                name: name.into(),
                value: 1,
            },
        );
        d.run(
            &Principal::System,
            Op::VolumeCreate {
                name: name.into(),
                size: 4096,
            },
        );
    }
    d.sys(user_add("root")).unwrap();
    d.sys(grant("root", "root")).unwrap();
    d.sys(user_add("u")).unwrap();
    d.sys(AuthRequest::RoleAdd { name: "r".into() }).unwrap();
    d.sys(perm("r", PermKind::Read, "/ferrite/registers/a", ""))
        .unwrap();
    d.sys(perm("r", PermKind::ReadWrite, "/ferrite/volumes/b", ""))
        .unwrap();
    d.sys(grant("u", "r")).unwrap();
    d.sys(AuthRequest::Enable { secret: [3; 32] }).unwrap();
    let u = d.as_user("u");
    assert_eq!(
        d.query(&u, Op::RegisterGet { name: "a".into() }),
        Reply::Value(1)
    );
    assert!(denied(d.query(&u, Op::RegisterGet { name: "b".into() })));
    assert!(denied(d.run(
        &u,
        Op::RegisterAdd {
            name: "a".into(),
            delta: 1
        }
    )));
    assert_eq!(
        d.query(&u, Op::RegisterList { limit: 10 }),
        Reply::Registers(vec![("a".into(), 1)])
    );
    let volumes = |r: Reply| match r {
        Reply::Volumes(v) => v.into_iter().map(|v| v.name).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(volumes(d.query(&u, Op::VolumeList)), vec!["b".to_string()]);
    assert_eq!(
        volumes(d.query(&d.as_user("root"), Op::VolumeList)).len(),
        2
    );
    assert!(denied(d.run(
        &u,
        Op::VolumeResize {
            name: "a".into(),
            size: 8192
        }
    )));
    assert!(matches!(
        d.run(
            &u,
            Op::VolumeResize {
                name: "b".into(),
                size: 8192
            }
        ),
        Reply::Volume(_)
    ));
    assert!(denied(d.run(
        &u,
        Op::VolumeCreate {
            name: "c".into(),
            size: 1
        }
    )));
    assert!(d
        .sm
        .authorize(
            &u,
            &Op::VolumeRead {
                name: "a".into(),
                offset: 0,
                len: 1
            }
        )
        .is_err());
}

#[test]
fn each_change_publishes_the_new_store() {
    let mut d = Driver::new();
    d.index += 1;
    let applied =
        d.sm.apply(d.index, &Command::new(Op::Auth(user_add("u"))).encode());
    match applied.events.as_slice() {
        [Event::Auth(store)] => assert!(store.user("u").is_some()),
        other => panic!("{other:?}"),
    }
    // A refused or read-only request publishes nothing.
    d.index += 1;
    let applied =
        d.sm.apply(d.index, &Command::new(Op::Auth(user_add("u"))).encode());
    assert!(applied.events.is_empty());
    d.index += 1;
    let applied = d.sm.apply(
        d.index,
        &Command::new(Op::Auth(AuthRequest::UserList)).encode(),
    );
    assert!(applied.events.is_empty());
}

#[test]
fn the_store_survives_a_snapshot() {
    let d = enabled();
    let snap = d.sm.snapshot();
    let restored = StateMachine::restore(&snap).expect("restores");
    assert_eq!(restored, d.sm);
    assert_eq!(restored.auth().token_secret(), &[1; 32]);
    assert!(restored.auth().user("alice").is_some());
}

#[test]
fn secrets_and_hashes_stay_out_of_debug_output() {
    let d = enabled();
    let text = format!("{:?}", d.sm.auth());
    assert!(!text.contains("hash-of"), "{text}");
}

#[test]
fn a_refused_write_in_a_session_is_not_remembered() {
    // etcd's clients authenticate again on "revision of auth store is old"
    // and send the same request: with Ferrite's sessions, the retry has the
    // same sequence number and must be judged anew, not answered the saved
    // refusal.
    let mut d = enabled();
    let stale = d.as_user("root");
    d.sys(AuthRequest::RoleAdd { name: "r9".into() })
        .expect("role add");
    let put = Op::Put(PutRequest {
        key: b("k"),
        value: b("v"),
        ..PutRequest::default()
    });
    let send = |d: &mut Driver, who: &Principal| {
        d.index += 1;
        let cmd = Command::with_session(7, 1, put.clone()).by(who.clone());
        d.sm.apply(d.index, &cmd.encode()).reply.expect("a reply")
    };
    assert_eq!(
        send(&mut d, &stale),
        Reply::Error(StateError::AuthOldRevision)
    );
    let fresh = d.as_user("root");
    assert!(matches!(send(&mut d, &fresh), Reply::Put(_)));
    // Applied once: a further retry gets the saved answer, not a new put.
    let revision = d.sm.revision();
    assert!(matches!(send(&mut d, &fresh), Reply::Put(_)));
    assert_eq!(d.sm.revision(), revision);
}

#[test]
fn alarms_and_hashes_are_for_admins() {
    use crate::alarms::{AlarmAction, AlarmRequest, AlarmType};
    let mut d = enabled();
    let alice = d.as_user("alice");
    let root = d.as_user("root");
    let raise = Op::Alarm(AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 1,
        alarm: AlarmType::NoSpace,
    });
    let list = Op::Alarm(AlarmRequest {
        action: AlarmAction::Get,
        member_id: 0,
        alarm: AlarmType::None,
    });
    assert!(denied(d.run(&alice, raise.clone())));
    assert!(denied(d.query(&alice, list.clone())));
    assert!(denied(d.query(&alice, Op::HashKv { revision: 0 })));
    assert_eq!(
        d.query(&Principal::Anonymous, Op::Hash),
        Reply::Error(StateError::UserEmpty)
    );
    assert!(!d.sm.alarms().is_raised(AlarmType::NoSpace));
    assert!(matches!(d.run(&root, raise), Reply::Alarms(v) if v.len() == 1));
    assert!(matches!(d.query(&root, list), Reply::Alarms(v) if v.len() == 1));
    assert!(matches!(
        d.query(&root, Op::HashKv { revision: 0 }),
        Reply::HashKv { .. }
    ));
    // The member's own NOSPACE (System) is never refused.
    let mine = Op::Alarm(AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 2,
        alarm: AlarmType::NoSpace,
    });
    assert!(matches!(d.run(&Principal::System, mine), Reply::Alarms(v) if v.len() == 1));
}
