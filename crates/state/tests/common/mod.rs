//! Strategies shared by the property tests: commands over a small key
//! space, so that random operations collide often enough to be interesting.

#![allow(dead_code)]

use bytes::Bytes;
use ferrite_state::*;
use proptest::prelude::*;

pub const KEYS: &[&str] = &["a", "b", "c", "d", "e"];
pub const RANGE_ENDS: &[&str] = &["", "", "\0", "b", "c", "e", "f"];

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(KEYS).prop_map(b)
}

pub fn range_end() -> impl Strategy<Value = Bytes> {
    prop::sample::select(RANGE_ENDS).prop_map(b)
}

pub fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(&["", "x", "y", "z"][..]).prop_map(b)
}

pub fn put() -> impl Strategy<Value = PutRequest> {
    (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| PutRequest {
        key,
        value,
        prev_kv,
        ..PutRequest::default()
    })
}

pub fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

/// Ranges at revisions around the interesting ones (`revision` is offset
/// from 0, so tests can scale it to the history they built).
pub fn range() -> impl Strategy<Value = RangeRequest> {
    (
        key(),
        range_end(),
        0i64..4,
        -1i64..12,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(key, range_end, limit, revision, keys_only, count_only)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                keys_only,
                count_only,
                ..RangeRequest::default()
            },
        )
}

pub fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0i64..3).prop_map(CompareTarget::Version),
        (0i64..8).prop_map(CompareTarget::Mod),
        value().prop_map(CompareTarget::Value),
    ];
    let result = prop::sample::select(
        &[
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual,
        ][..],
    );
    (
        key(),
        prop::sample::select(&["", "", "\0", "d"][..]),
        result,
        target,
    )
        .prop_map(|(key, end, result, target)| Compare {
            key,
            range_end: b(end),
            result,
            target,
        })
}

/// Flat request ops (no nested transactions).
pub fn request_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        3 => put().prop_map(RequestOp::Put),
        2 => delete().prop_map(RequestOp::DeleteRange),
        1 => range().prop_map(|mut r| { r.revision = 0; RequestOp::Range(r) }),
    ]
}

pub fn txn() -> impl Strategy<Value = TxnRequest> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(request_op(), 0..4),
        prop::collection::vec(request_op(), 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

/// KV writes, compactions and reads through the log.
pub fn kv_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => put().prop_map(Op::Put),
        3 => delete().prop_map(Op::DeleteRange),
        3 => txn().prop_map(Op::Txn),
        1 => (0i64..12).prop_map(|revision| Op::Compact(CompactRequest { revision, physical: false })),
        1 => range().prop_map(Op::Range),
    ]
}

pub fn register_op() -> impl Strategy<Value = Op> {
    let name = prop::sample::select(&["r", "s"][..]).prop_map(str::to_owned);
    prop_oneof![
        name.clone().prop_map(|name| Op::RegisterGet { name }),
        (0u64..5).prop_map(|limit| Op::RegisterList { limit }),
        (name.clone(), -3i64..3).prop_map(|(name, value)| Op::RegisterSet { name, value }),
        (name.clone(), prop_oneof![-3i64..3, Just(i64::MAX)])
            .prop_map(|(name, delta)| Op::RegisterAdd { name, delta }),
        (name, -1i64..2, -3i64..3).prop_map(|(name, expected, new)| Op::RegisterCas {
            name,
            expected,
            new
        }),
    ]
}

pub fn volume_op() -> impl Strategy<Value = Op> {
    let name = prop::sample::select(&["disk0", "d1"][..]).prop_map(str::to_owned);
    prop_oneof![
        (name.clone(), 0u64..70_000).prop_map(|(name, size)| Op::VolumeCreate { name, size }),
        (name.clone(), 0u64..70_000).prop_map(|(name, size)| Op::VolumeResize { name, size }),
        name.clone().prop_map(|name| Op::VolumeDelete { name }),
        Just(Op::VolumeList),
        (
            name.clone(),
            0u64..70_000,
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(name, offset, data)| Op::VolumeWrite {
                name,
                offset,
                data: data.into()
            }),
        (name.clone(), 0u64..70_000, 0u64..70_000).prop_map(|(name, offset, len)| Op::VolumeZero {
            name,
            offset,
            len
        }),
        (name, 0u64..70_000, 0u64..4096).prop_map(|(name, offset, len)| Op::VolumeRead {
            name,
            offset,
            len
        }),
    ]
}

/// Auth changes over two users and two roles (root among them), so that
/// auth gets enabled, narrowed and disabled often enough.
pub fn auth_op() -> impl Strategy<Value = Op> {
    use ferrite_state::auth::{PermKind, Permission};
    let user = prop::sample::select(&["root", "u"][..]).prop_map(str::to_owned);
    let role = prop::sample::select(&["root", "r"][..]).prop_map(str::to_owned);
    let kind = prop::sample::select(&[PermKind::Read, PermKind::Write, PermKind::ReadWrite][..]);
    let perm = (kind, key(), range_end()).prop_map(|(kind, key, range_end)| Permission {
        kind,
        key,
        range_end,
    });
    let a = prop_oneof![
        any::<u8>().prop_map(|s| AuthRequest::Enable { secret: [s; 32] }),
        Just(AuthRequest::Disable),
        Just(AuthRequest::Status),
        user.clone().prop_map(|name| AuthRequest::UserAdd {
            name,
            password: Some("$2b$04$hash".into()),
            no_password: false,
        }),
        user.clone()
            .prop_map(|name| AuthRequest::UserDelete { name }),
        (user.clone(), role.clone())
            .prop_map(|(user, role)| AuthRequest::UserGrantRole { user, role }),
        (user.clone(), role.clone())
            .prop_map(|(user, role)| AuthRequest::UserRevokeRole { user, role }),
        role.clone().prop_map(|name| AuthRequest::RoleAdd { name }),
        role.clone()
            .prop_map(|name| AuthRequest::RoleDelete { name }),
        (role.clone(), perm)
            .prop_map(|(name, perm)| AuthRequest::RoleGrantPermission { name, perm }),
        (role, key(), range_end()).prop_map(|(name, key, range_end)| {
            AuthRequest::RoleRevokePermission {
                name,
                key,
                range_end,
            }
        }),
        user.prop_map(|name| AuthRequest::UserGet { name }),
    ];
    a.prop_map(Op::Auth)
}

pub fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        3 => Just(Principal::System),
        1 => Just(Principal::Anonymous),
        2 => (prop::sample::select(&["root", "u"][..]), 0u64..8)
            .prop_map(|(name, revision)| Principal::user(name, revision)),
    ]
}

/// Any command, sometimes in a session of a few clients with sequence
/// numbers that repeat and go backwards, from any principal.
pub fn command() -> impl Strategy<Value = Command> {
    let session = prop::option::of((1u64..4, 1u64..6));
    let op = prop_oneof![3 => kv_op(), 2 => register_op(), 2 => volume_op(), 1 => auth_op()];
    (session, principal(), op).prop_map(|(session, principal, op)| Command {
        session,
        principal,
        op,
    })
}

/// Bounded, reproducible runs: a fixed seed (CI replays the same cases) and
/// no failure files (tests/ has no lib.rs for proptest to put them beside).
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xfe77_17e5),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
