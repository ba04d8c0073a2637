//! Snapshots: a restored machine equals the original and continues
//! identically; damaged snapshots are refused, and no input makes restore
//! or decode panic.

mod common;

use common::*;
use ferrite_state::*;
use proptest::prelude::*;

fn run(sm: &mut StateMachine, first: u64, cmds: &[Command]) -> Vec<Applied> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| sm.apply(first + i as u64, &c.encode()))
        .collect()
}

/// The CRC-32 the snapshot uses, written out bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Header: magic (4), version (1), body length (8); trailer: CRC (4).
const HEADER: usize = 13;

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn restore_equals_the_original_and_continues_identically(
        before in prop::collection::vec(command(), 0..30),
        after in prop::collection::vec(command(), 0..15),
        noops in 0u64..3,
    ) {
        let mut sm = StateMachine::new();
        run(&mut sm, 1, &before);
        let mut index = before.len() as u64;
        for _ in 0..noops {
            index += 1;
            sm.apply_noop(index);
        }
        let snap = sm.snapshot();
        let mut restored = StateMachine::restore(&snap).unwrap();
        prop_assert_eq!(&restored, &sm);
        prop_assert_eq!(restored.snapshot(), snap.clone());
        let a = run(&mut sm, index + 1, &after);
        let b = run(&mut restored, index + 1, &after);
        prop_assert_eq!(a, b);
        prop_assert_eq!(&restored, &sm);
        restored.check_invariants();
    }

    #[test]
    fn any_single_byte_change_or_truncation_is_refused(
        cmds in prop::collection::vec(command(), 1..20),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut sm = StateMachine::new();
        run(&mut sm, 1, &cmds);
        let snap = sm.snapshot().to_vec();
        let mut damaged = snap.clone();
        damaged[at.index(snap.len())] ^= flip;
        prop_assert!(StateMachine::restore(&damaged).is_err());
        let cut = cut.index(snap.len());
        if cut > 0 {
            prop_assert!(StateMachine::restore(&snap[..cut]).is_err());
        }
    }

    /// Past the checksum, the body decoder and the invariant check must
    /// still refuse, not panic; and whatever they accept must apply safely.
    #[test]
    fn a_damaged_body_with_a_valid_checksum_never_panics(
        cmds in prop::collection::vec(command(), 1..20),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        next in prop::collection::vec(command(), 0..5),
    ) {
        let mut sm = StateMachine::new();
        run(&mut sm, 1, &cmds);
        let mut snap = sm.snapshot().to_vec();
        let body_len = snap.len() - HEADER - 4;
        snap[HEADER + at.index(body_len)] ^= flip;
        let crc = crc32(&snap[HEADER..HEADER + body_len]);
        let end = snap.len();
        snap[end - 4..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(mut odd) = StateMachine::restore(&snap) {
            odd.check_invariants();
            let first = odd.applied_index().saturating_add(1);
            if first.checked_add(next.len() as u64).is_some() {
                run(&mut odd, first, &next);
            }
            let _ = odd.snapshot();
        }
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Command::decode(&data);
        let _ = StateMachine::restore(&data);
        let mut framed = b"FSSM\x01".to_vec();
        framed.extend_from_slice(&(data.len() as u64).to_le_bytes());
        framed.extend_from_slice(&data);
        framed.extend_from_slice(&crc32(&data).to_le_bytes());
        let _ = StateMachine::restore(&framed);
    }
}

/// A snapshot written before leases (version 3: no sub-revisions, no lease
/// fields, no lease table) still restores, its keys without a lease.
#[test]
fn a_version_3_snapshot_restores_without_leases() {
    let mut body = Vec::new();
    body.extend_from_slice(&3u64.to_le_bytes()); // applied index
    body.extend_from_slice(&2i64.to_le_bytes()); // revision
    body.extend_from_slice(&0i64.to_le_bytes()); // compact revision
    body.extend_from_slice(&1u64.to_le_bytes()); // one key
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(b"k");
    body.extend_from_slice(&1u64.to_le_bytes()); // one version
    body.extend_from_slice(&2i64.to_le_bytes()); // mod revision
    body.push(1); // a put
    body.extend_from_slice(&2i64.to_le_bytes()); // create revision
    body.extend_from_slice(&1i64.to_le_bytes()); // version
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(b"v");
    body.extend_from_slice(&0u64.to_le_bytes()); // no registers
    body.extend_from_slice(&1000u64.to_le_bytes()); // session limits
    body.extend_from_slice(&1000u64.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes()); // no sessions
    body.extend_from_slice(&0u64.to_le_bytes()); // no members
    body.extend_from_slice(&0u64.to_le_bytes()); // no volumes
    let mut data = b"FSSM".to_vec();
    data.push(3);
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(&body);
    data.extend_from_slice(&ferrite_state::fuzzing::crc32(&body).to_le_bytes());
    let sm = StateMachine::restore(&data).expect("a version 3 snapshot restores");
    let got = sm
        .read_range(&ferrite_state::RangeRequest {
            key: bytes::Bytes::from_static(b"k"),
            ..Default::default()
        })
        .expect("read");
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(
        (got.kvs[0].value.as_ref(), got.kvs[0].lease),
        (&b"v"[..], 0)
    );
    assert!(sm.lease_records().is_empty());
}

/// A snapshot written before auth (version 4: no auth store after the
/// lease table) still restores, with auth never set up.
#[test]
fn a_version_4_snapshot_restores_without_auth() {
    let mut body = Vec::new();
    body.extend_from_slice(&5u64.to_le_bytes()); // applied index
    body.extend_from_slice(&1i64.to_le_bytes()); // revision
    body.extend_from_slice(&0i64.to_le_bytes()); // compact revision
    body.extend_from_slice(&0u64.to_le_bytes()); // no keys
    body.extend_from_slice(&1u64.to_le_bytes()); // one register
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(b"r");
    body.extend_from_slice(&42i64.to_le_bytes());
    body.extend_from_slice(&1000u64.to_le_bytes()); // session limits
    body.extend_from_slice(&1000u64.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes()); // no sessions
    body.extend_from_slice(&0u64.to_le_bytes()); // no members
    body.extend_from_slice(&0u64.to_le_bytes()); // no volumes
    body.extend_from_slice(&1u64.to_le_bytes()); // one lease: id, ttl, remaining
    for v in [7i64, 60, 0] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let mut data = b"FSSM".to_vec();
    data.push(4);
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(&body);
    data.extend_from_slice(&ferrite_state::fuzzing::crc32(&body).to_le_bytes());
    let mut sm = StateMachine::restore(&data).expect("a version 4 snapshot restores");
    assert_eq!(sm.read_register("r"), 42);
    assert_eq!(sm.lease_records(), vec![(7, 60, 0)]);
    assert!(!sm.auth().enabled());
    assert_eq!(sm.auth().revision(), 1);
    assert_eq!(sm.auth().users().count(), 0);
    // It goes on, and its next snapshot is of the current version.
    let cmd = Command::new(Op::Auth(AuthRequest::UserAdd {
        name: "root".into(),
        password: None,
        no_password: true,
    }));
    sm.apply(6, &cmd.encode());
    let again = StateMachine::restore(&sm.snapshot()).expect("restores");
    assert_eq!(again, sm);
    assert_eq!(sm.snapshot()[4], 6);
}

/// Version 5 is version 6 without the alarm list at the end of the body:
/// it restores with no alarm raised.
#[test]
fn a_version_5_snapshot_restores_without_alarms() {
    let mut sm = StateMachine::new();
    let put = Command::new(Op::RegisterSet {
        name: "r".into(),
        value: 42,
    });
    sm.apply(1, &put.encode());
    let v6 = sm.snapshot();
    assert_eq!(v6[4], 6);
    let body_len = u64::from_le_bytes(v6[5..13].try_into().expect("8 bytes")) as usize;
    let body = &v6[13..13 + body_len];
    // The v6 body ends with the alarm count, 0 here.
    let (v5_body, alarms) = body.split_at(body.len() - 8);
    assert_eq!(alarms, &0u64.to_le_bytes());
    let mut data = b"FSSM".to_vec();
    data.push(5);
    data.extend_from_slice(&(v5_body.len() as u64).to_le_bytes());
    data.extend_from_slice(v5_body);
    data.extend_from_slice(&ferrite_state::fuzzing::crc32(v5_body).to_le_bytes());
    let restored = StateMachine::restore(&data).expect("a version 5 snapshot restores");
    assert_eq!(restored, sm);
    assert!(restored.alarms().is_empty());
}
