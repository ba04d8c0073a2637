//! One suite, two disks: every behaviour the simulator relies on (MemDisk)
//! must hold on real files (FileDisk), and vice versa.

mod common;

use common::*;
use ferrite_raft::{Config, Index, NodeId, Persist, Raft, Term};
use ferrite_wal::WalError;

fn append_sync_reopen<H: Harness>(mut h: H) {
    let (mut wal, rec) = h.open(normal()).unwrap();
    assert!(rec.durable.entries.is_empty() && rec.durable.snapshot.is_none());
    assert_eq!((wal.first_index(), wal.last_index()), (Index(1), Index(0)));
    wal.write(&persist(entries(1, 3, 1), Some(hs(1, 0))))
        .unwrap();
    wal.write(&persist(entries(4, 6, 1), None)).unwrap();
    wal.write(&persist(entries(7, 10, 2), Some(hs(2, 6))))
        .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), Index(10));
    assert_eq!(wal.hard_state(), hs(2, 6));
    assert_eq!(
        wal.entries(Index(3), Index(7)).unwrap(),
        entries(3, 6, 1)
            .into_iter()
            .chain(entries(7, 7, 2))
            .collect::<Vec<_>>()
    );
    h.close(wal);

    let (wal, rec) = h.open(normal()).unwrap();
    let expected: Vec<_> = entries(1, 6, 1)
        .into_iter()
        .chain(entries(7, 10, 2))
        .collect();
    assert_eq!(rec.durable.entries, expected);
    assert_eq!(rec.durable.hard_state, hs(2, 6));
    assert!(rec.torn_tail.is_none());
    assert_eq!(wal.entries(Index(1), Index(10)).unwrap(), expected);
    // What recovery returns is what the Raft core accepts.
    Raft::new(Config::new(NodeId(1)), rec.durable, 1).expect("raft accepts the recovered state");
}

fn truncate_conflicting_suffix<H: Harness>(mut h: H) {
    let (mut wal, _) = h.open(normal()).unwrap();
    wal.write(&persist(entries(1, 10, 1), Some(hs(1, 3))))
        .unwrap();
    wal.sync().unwrap();
    // A new leader's entries replace the suffix from 6 on.
    wal.write(&persist(entries(6, 8, 2), Some(hs(2, 3))))
        .unwrap();
    wal.sync().unwrap();
    let expected: Vec<_> = entries(1, 5, 1)
        .into_iter()
        .chain(entries(6, 8, 2))
        .collect();
    assert_eq!(wal.last_index(), Index(8));
    assert_eq!(wal.entries(Index(1), Index(8)).unwrap(), expected);
    assert!(matches!(
        wal.entries(Index(1), Index(9)),
        Err(WalError::OutOfRange { .. })
    ));
    // Caller mistakes are refused before anything is written.
    assert!(matches!(
        wal.write(&persist(entries(10, 10, 2), None)),
        Err(WalError::Gap {
            index: Index(10),
            last: Index(8)
        })
    ));
    let holey = vec![entry(9, 2), entry(11, 2)];
    assert!(matches!(
        wal.write(&persist(holey, None)),
        Err(WalError::NotContiguous { .. })
    ));
    assert!(!wal.is_poisoned());
    // Truncating to an earlier point again, then appending more.
    wal.write(&persist(entries(3, 4, 3), Some(hs(3, 3))))
        .unwrap();
    wal.write(&persist(entries(5, 5, 3), None)).unwrap();
    wal.sync().unwrap();
    h.close(wal);

    let (wal, rec) = h.open(normal()).unwrap();
    let expected: Vec<_> = entries(1, 2, 1)
        .into_iter()
        .chain(entries(3, 5, 3))
        .collect();
    assert_eq!(rec.durable.entries, expected);
    assert_eq!(wal.entries(Index(1), Index(5)).unwrap(), expected);
    assert_eq!(rec.durable.hard_state, hs(3, 3));
}

fn install_snapshot<H: Harness>(mut h: H) {
    let (mut wal, _) = h.open(normal()).unwrap();
    wal.write(&persist(entries(1, 5, 1), Some(hs(1, 2))))
        .unwrap();
    wal.sync().unwrap();
    let snap = snapshot(20, 3);
    wal.write(&Persist {
        hard_state: Some(hs(3, 20)),
        snapshot: Some(snap.clone()),
        entries: entries(21, 22, 3),
    })
    .unwrap();
    wal.sync().unwrap();
    // Read back from its file (a memory map on real files): the same bytes.
    assert_eq!(wal.map_snapshot().unwrap().as_ref(), Some(&snap));
    assert_eq!(
        (wal.first_index(), wal.last_index()),
        (Index(21), Index(22))
    );
    assert_eq!(wal.term_at(Index(20)), Some(Term(3)));
    assert!(matches!(
        wal.entries(Index(5), Index(5)),
        Err(WalError::OutOfRange { .. })
    ));
    let snaps = |names: Vec<String>| {
        names
            .into_iter()
            .filter(|n| n.ends_with(".snap"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        snaps(h.names(&wal)),
        vec![ferrite_wal::snapshot_name(Index(20), Term(3))]
    );
    h.close(wal);

    let (mut wal, rec) = h.open(normal()).unwrap();
    assert_eq!(rec.durable.snapshot.as_ref(), Some(&snap));
    assert_eq!(rec.durable.entries, entries(21, 22, 3));
    assert_eq!(rec.durable.hard_state, hs(3, 20));
    Raft::new(Config::new(NodeId(1)), rec.durable, 1).expect("raft accepts it");

    // A newer install replaces the old snapshot file once durable.
    let newer = snapshot(30, 4);
    wal.write(&Persist {
        hard_state: Some(hs(4, 30)),
        snapshot: Some(newer.clone()),
        entries: vec![],
    })
    .unwrap();
    wal.sync().unwrap();
    assert_eq!(
        snaps(h.names(&wal)),
        vec![ferrite_wal::snapshot_name(Index(30), Term(4))]
    );
    assert_eq!(
        (wal.first_index(), wal.last_index()),
        (Index(31), Index(30))
    );
    // An older snapshot is refused.
    let stale = Persist {
        hard_state: None,
        snapshot: Some(snapshot(25, 4)),
        entries: vec![],
    };
    assert!(matches!(
        wal.write(&stale),
        Err(WalError::StaleSnapshot { .. })
    ));
    h.close(wal);
    let (_, rec) = h.open(normal()).unwrap();
    assert_eq!(rec.durable.snapshot, Some(newer));
    assert!(rec.durable.entries.is_empty());
}

fn compaction_drops_segments<H: Harness>(mut h: H) {
    let (mut wal, _) = h.open(tiny()).unwrap();
    for i in (1..=200).step_by(5) {
        wal.write(&persist(entries(i, i + 4, 1), Some(hs(1, i + 4))))
            .unwrap();
        wal.sync().unwrap();
    }
    let before = wal.segment_count();
    assert!(before > 10, "tiny segments roll often: {before}");
    let segs = |names: Vec<String>| names.into_iter().filter(|n| n.ends_with(".wal")).count();
    assert_eq!(segs(h.names(&wal)), before);

    wal.save_snapshot(&snapshot(150, 1)).unwrap();
    let after = wal.segment_count();
    assert!(
        after < before / 3,
        "compaction dropped segments: {before} -> {after}"
    );
    assert_eq!(segs(h.names(&wal)), after);
    assert_eq!(
        (wal.first_index(), wal.last_index()),
        (Index(151), Index(200))
    );
    assert_eq!(
        wal.entries(Index(151), Index(200)).unwrap(),
        entries(151, 200, 1)
    );
    assert!(matches!(
        wal.entries(Index(150), Index(150)),
        Err(WalError::OutOfRange { .. })
    ));
    assert!(matches!(
        wal.save_snapshot(&snapshot(150, 1)),
        Err(WalError::StaleSnapshot { .. })
    ));
    assert!(matches!(
        wal.save_snapshot(&snapshot(160, 9)),
        Err(WalError::SnapshotConflict { .. })
    ));
    h.close(wal);

    let (mut wal, rec) = h.open(tiny()).unwrap();
    assert_eq!(rec.durable.snapshot, Some(snapshot(150, 1)));
    assert_eq!(rec.durable.entries, entries(151, 200, 1));
    assert_eq!(rec.durable.hard_state, hs(1, 200));
    // The log goes on after a reopen, and compacts again past everything.
    wal.write(&persist(entries(201, 210, 2), Some(hs(2, 210))))
        .unwrap();
    wal.sync().unwrap();
    wal.save_snapshot(&snapshot(210, 2)).unwrap();
    assert!(wal.segment_count() <= 2, "{}", wal.segment_count());
    wal.write(&persist(entries(211, 212, 2), Some(hs(2, 211))))
        .unwrap();
    wal.sync().unwrap();
    h.close(wal);
    let (_, rec) = h.open(tiny()).unwrap();
    assert_eq!(rec.durable.snapshot, Some(snapshot(210, 2)));
    assert_eq!(rec.durable.entries, entries(211, 212, 2));
    Raft::new(Config::new(NodeId(1)), rec.durable, 1).expect("raft accepts it");
}

fn entries_across_segments<H: Harness>(mut h: H) {
    let (mut wal, _) = h.open(tiny()).unwrap();
    let mut all = Vec::new();
    for i in 1..=120u64 {
        // Varying sizes, one entry per write, a hard state now and then.
        let e = ferrite_raft::Entry {
            index: Index(i),
            term: Term(1 + i / 40),
            payload: ferrite_raft::Payload::Normal(bytes::Bytes::from(vec![
                i as u8;
                (i % 17) as usize * 7
            ])),
        };
        let state = (i % 3 == 0).then(|| hs(1 + i / 40, i));
        wal.write(&persist(vec![e.clone()], state)).unwrap();
        all.push(e);
    }
    wal.sync().unwrap();
    assert!(wal.segment_count() > 5);
    for (lo, hi) in [(1, 120), (37, 63), (120, 120), (1, 1), (80, 79)] {
        let got = wal.entries(Index(lo), Index(hi)).unwrap();
        let want: Vec<_> = all
            .iter()
            .filter(|e| e.index.0 >= lo && e.index.0 <= hi)
            .cloned()
            .collect();
        assert_eq!(got, want, "[{lo}, {hi}]");
    }
    h.close(wal);
    let (wal, rec) = h.open(tiny()).unwrap();
    assert_eq!(rec.durable.entries, all);
    assert_eq!(
        wal.entries(Index(50), Index(70)).unwrap(),
        all[49..70].to_vec()
    );
}

fn bootstrap_snapshot_at_zero<H: Harness>(mut h: H) {
    // A founding node persists the bootstrap snapshot so that its voters
    // survive a restart before any entry is written.
    let boot = ferrite_raft::DurableState::bootstrap([NodeId(1), NodeId(2), NodeId(3)]);
    let snap = boot.snapshot.clone().unwrap();
    let (mut wal, _) = h.open(normal()).unwrap();
    wal.save_snapshot(&snap).unwrap();
    h.close(wal);
    let (wal, rec) = h.open(normal()).unwrap();
    assert_eq!(rec.durable.snapshot, Some(snap));
    assert_eq!((wal.first_index(), wal.last_index()), (Index(1), Index(0)));
}

fn lock<H: Harness>(mut h: H) {
    let (mut wal, _) = h.open(normal()).unwrap();
    wal.write(&persist(entries(1, 1, 1), Some(hs(1, 0))))
        .unwrap();
    wal.sync().unwrap();
    let wal = h.assert_second_open_locked(wal);
    assert_eq!(wal.last_index(), Index(1));
    h.close(wal);
    // Released on close: opens again.
    let (wal, _) = h.open(normal()).unwrap();
    assert_eq!(wal.last_index(), Index(1));
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod file_disk {
            use super::*;
            $(#[test] fn $name() { super::$name(FileHarness::new()) })*
        }
        mod mem_disk {
            use super::*;
            $(#[test] fn $name() { super::$name(MemHarness::new()) })*
        }
    };
}

suite!(
    append_sync_reopen,
    truncate_conflicting_suffix,
    install_snapshot,
    compaction_drops_segments,
    entries_across_segments,
    bootstrap_snapshot_at_zero,
    lock
);
