//! Behaviour that needs a disk we can count syncs on, fail, or crash.

mod common;

use common::*;
use ferrite_raft::{Index, Persist};
use ferrite_wal::{Disk, MemDisk, Wal, WalError, WalOptions};

fn open(disk: MemDisk, options: WalOptions) -> (Wal<MemDisk>, ferrite_wal::Recovered) {
    Wal::open(disk, MEM_DIR, options).expect("open")
}

#[test]
fn one_fdatasync_per_batch() {
    let (mut wal, _) = open(MemDisk::new(), WalOptions::default());
    let before = wal.disk().data_syncs();
    for i in 0..10 {
        wal.write(&persist(
            entries(i * 10 + 1, i * 10 + 10, 1),
            Some(hs(1, i * 10)),
        ))
        .unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(
        wal.disk().data_syncs(),
        before + 1,
        "ten writes, one fdatasync"
    );
    // Nothing written: no sync at all.
    wal.sync().unwrap();
    assert_eq!(wal.disk().data_syncs(), before + 1);
    assert_eq!(wal.disk().dir_syncs(), 1, "only open synced the directory");
}

#[test]
fn unsynced_writes_may_be_lost_synced_ones_never() {
    for seed in 0..50 {
        let (mut wal, _) = open(MemDisk::new(), WalOptions::default());
        wal.write(&persist(entries(1, 5, 1), Some(hs(1, 2))))
            .unwrap();
        wal.sync().unwrap();
        wal.write(&persist(entries(6, 8, 1), Some(hs(1, 5))))
            .unwrap();
        wal.write(&persist(entries(9, 9, 1), Some(hs(1, 8))))
            .unwrap();
        let mut disk = wal.into_disk();
        let mut rng = Rng(seed);
        disk.crash(&mut || rng.next());
        let (wal, rec) = open(disk, WalOptions::default());
        let n = rec.durable.entries.len();
        // Each write is all or nothing: 5, 8 or 9 entries, with its hard state.
        let expected_hs = match n {
            5 => hs(1, 2),
            8 => hs(1, 5),
            9 => hs(1, 8),
            _ => panic!("seed {seed}: recovered {n} entries"),
        };
        assert_eq!(rec.durable.hard_state, expected_hs, "seed {seed}");
        assert_eq!(rec.durable.entries, entries(1, n as u64, 1));
        assert_eq!(wal.last_index(), Index(n as u64));
    }
}

#[test]
fn failed_sync_poisons_every_later_call() {
    let (mut wal, _) = open(MemDisk::new(), WalOptions::default());
    wal.write(&persist(entries(1, 3, 1), Some(hs(1, 1))))
        .unwrap();
    wal.sync().unwrap();
    wal.write(&persist(entries(4, 6, 1), Some(hs(1, 3))))
        .unwrap();
    wal.disk_mut().fail_next_sync();
    match wal.sync() {
        Err(WalError::Io { op, .. }) => assert_eq!(op, "fdatasync"),
        other => panic!("expected the fdatasync error, got {other:?}"),
    }
    assert!(wal.is_poisoned());
    // The disk works again, but the Wal cannot know what the failed sync
    // lost: it refuses everything until a restart recovers from the files.
    let poisoned = |r: Result<(), WalError>| matches!(r, Err(WalError::Poisoned { .. }));
    assert!(poisoned(wal.sync()));
    assert!(poisoned(wal.write(&persist(entries(7, 7, 1), None))));
    assert!(poisoned(wal.save_snapshot(&snapshot(3, 1))));
    assert!(matches!(
        wal.entries(Index(1), Index(1)),
        Err(WalError::Poisoned { .. })
    ));
    let message = wal.sync().unwrap_err().to_string();
    assert!(
        message.contains("fdatasync") && message.contains("restart"),
        "{message}"
    );

    // Restart after a crash: everything synced before the failure is there.
    let mut disk = wal.into_disk();
    let mut rng = Rng(7);
    disk.crash(&mut || rng.next());
    let (_, rec) = open(disk, WalOptions::default());
    assert!(rec.durable.entries.len() == 3 || rec.durable.entries.len() == 6);
    assert_eq!(rec.durable.entries[..3], entries(1, 3, 1)[..]);
}

#[test]
fn failed_write_of_installed_snapshot_poisons_too() {
    let (mut wal, _) = open(MemDisk::new(), WalOptions::default());
    wal.write(&Persist {
        hard_state: Some(hs(2, 10)),
        snapshot: Some(snapshot(10, 2)),
        entries: entries(11, 12, 2),
    })
    .unwrap();
    // The snapshot file is already durable; the log record naming it is not.
    wal.disk_mut().fail_next_sync();
    assert!(wal.sync().is_err());
    assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
    let mut disk = wal.into_disk();
    disk.crash(&mut || 0);
    // Nothing of the install was durable: an empty log, not a log that
    // names a snapshot file that does not exist.
    let (wal, rec) = open(disk, WalOptions::default());
    assert!(rec.durable.snapshot.is_none());
    assert!(rec.durable.entries.is_empty());
    assert_eq!(wal.last_index(), Index(0));
}

#[test]
fn torn_head_of_the_last_segment_is_rebuilt() {
    let (mut wal, _) = open(MemDisk::new(), tiny());
    for i in 1..=20 {
        wal.write(&persist(entries(i, i, 1), Some(hs(1, i - 1))))
            .unwrap();
        wal.sync().unwrap();
    }
    let segments = wal.segment_count();
    let last = ferrite_wal::join(MEM_DIR, &ferrite_wal::segment_name(segments as u64));
    let disk = wal.into_disk();
    let full = disk.file_bytes(&last).unwrap().len() as u64;
    for cut in [0, 5, 19, 20, 21, 40, full - 1] {
        let mut torn = disk.clone();
        torn.truncate(&last, cut).unwrap();
        torn.sync_data(&last).unwrap();
        let (mut wal, rec) = open(torn, tiny());
        let tail = rec.torn_tail.expect("a torn tail is reported");
        assert_eq!(tail.file, last);
        assert!(tail.offset <= cut, "cut {cut}: {tail:?}");
        let n = rec.durable.entries.len() as u64;
        assert_eq!(rec.durable.entries, entries(1, n, 1), "cut {cut}");
        assert_eq!(rec.durable.hard_state, hs(1, n - 1), "cut {cut}");
        // The log goes on, and survives another reopen.
        wal.write(&persist(entries(n + 1, n + 1, 2), Some(hs(2, n))))
            .unwrap();
        wal.sync().unwrap();
        let (_, rec) = open(wal.into_disk(), tiny());
        assert_eq!(rec.durable.entries.len() as u64, n + 1, "cut {cut}");
        assert_eq!(rec.durable.hard_state, hs(2, n));
    }
}

#[test]
fn failed_snapshot_publish_poisons_and_writes_nothing() {
    let (mut wal, _) = open(MemDisk::new(), WalOptions::default());
    wal.write(&persist(entries(1, 3, 1), Some(hs(1, 1))))
        .unwrap();
    wal.sync().unwrap();
    wal.disk_mut().fail_next_sync();
    let install = Persist {
        hard_state: Some(hs(2, 10)),
        snapshot: Some(snapshot(10, 2)),
        entries: vec![],
    };
    assert!(matches!(wal.write(&install), Err(WalError::Io { .. })));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
    let (_, rec) = open(wal.into_disk(), WalOptions::default());
    assert!(rec.durable.snapshot.is_none());
    assert_eq!(rec.durable.entries, entries(1, 3, 1));
}
