use bytes::Bytes;

use super::*;

fn store() -> (tempfile::TempDir, BlockStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::open(dir.path()).expect("open");
    (dir, store)
}

fn write(id: u64, offset: u64, data: &[u8]) -> VolumeEvent {
    VolumeEvent::Written {
        id,
        offset,
        data: Bytes::copy_from_slice(data),
    }
}

#[test]
fn unaligned_writes_read_back_and_unwritten_bytes_are_zero() {
    let (_d, mut s) = store();
    s.apply(&VolumeEvent::Created {
        id: 7,
        size: 1 << 20,
    })
    .unwrap();
    s.apply(&write(7, 4095, b"abc")).unwrap();
    s.apply(&write(7, 10_001, &[9u8; 5000])).unwrap();
    let back = s.read(7, 4090, 10).unwrap();
    assert_eq!(&back[..], b"\0\0\0\0\0abc\0\0");
    let back = s.read(7, 10_000, 5002).unwrap();
    assert_eq!(back[0], 0);
    assert!(back[1..5001].iter().all(|&b| b == 9));
    assert_eq!(back[5001], 0);
    assert!(s.read(7, 900_000, 4096).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn zeroing_punches_holes_and_partial_blocks_read_as_zero() {
    let (_d, mut s) = store();
    s.apply(&VolumeEvent::Created {
        id: 1,
        size: 4 << 20,
    })
    .unwrap();
    s.apply(&write(1, 0, &[0xAA; 3 << 20])).unwrap();
    s.apply(&VolumeEvent::Zeroed {
        id: 1,
        offset: 100,
        len: (2 << 20) - 200,
    })
    .unwrap();
    let all = s.read(1, 0, 3 << 20).unwrap();
    assert!(all[..100].iter().all(|&b| b == 0xAA));
    assert!(all[100..(2 << 20) - 100].iter().all(|&b| b == 0));
    assert!(all[(2 << 20) - 100..].iter().all(|&b| b == 0xAA));
    // The whole blocks inside became a hole: the first data after 4096 is
    // at the block holding the end of the zeroed range.
    let f = s.open_for_copy(1).unwrap().expect("file");
    let (start, _) = next_data(&f, 4096).unwrap().expect("data");
    assert!(start >= (2 << 20) - 4096, "data at {start}");
}

#[test]
fn resize_drops_bytes_past_the_end_and_grows_with_zeros() {
    let (_d, mut s) = store();
    s.apply(&VolumeEvent::Created { id: 2, size: 8192 })
        .unwrap();
    s.apply(&write(2, 0, &[1u8; 8192])).unwrap();
    s.apply(&VolumeEvent::Resized {
        id: 2,
        old: 8192,
        new: 100,
    })
    .unwrap();
    s.apply(&VolumeEvent::Resized {
        id: 2,
        old: 100,
        new: 8192,
    })
    .unwrap();
    let back = s.read(2, 0, 8192).unwrap();
    assert!(back[..100].iter().all(|&b| b == 1));
    assert!(back[100..].iter().all(|&b| b == 0));
    s.apply(&VolumeEvent::Deleted { id: 2 }).unwrap();
    assert!(s.open_for_copy(2).unwrap().is_none());
}

#[test]
fn the_valid_mark_survives_reopen_and_install_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = BlockStore::open(dir.path()).unwrap();
    assert_eq!(s.valid_from(), None);
    s.apply(&VolumeEvent::Created { id: 3, size: 4096 })
        .unwrap();
    s.sync(42).unwrap();
    drop(s);
    let mut s = BlockStore::open(dir.path()).unwrap();
    assert_eq!(s.valid_from(), Some(42));
    s.begin_install().unwrap();
    assert!(s.open_for_copy(3).unwrap().is_none());
    drop(s);
    assert_eq!(BlockStore::open(dir.path()).unwrap().valid_from(), None);
    std::fs::write(dir.path().join(VALID_FILE), "garbage").unwrap();
    assert_eq!(BlockStore::open(dir.path()).unwrap().valid_from(), None);
}

/// The property snapshots rely on: replaying events `i+1..` over files that
/// hold, block by block, the state after any event at or after `i` ends in
/// the state a straight replay gives.
#[test]
fn replay_over_a_fuzzy_copy_converges() {
    const BLOCK: u64 = 512;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..20 {
        let mut events = vec![VolumeEvent::Created {
            id: 1,
            size: 16 * BLOCK,
        }];
        let mut size = 16 * BLOCK;
        for _ in 0..60 {
            let ev = match next(10) {
                0 => {
                    let new = (1 + next(24)) * BLOCK / 2;
                    let ev = VolumeEvent::Resized {
                        id: 1,
                        old: size,
                        new,
                    };
                    size = new;
                    ev
                }
                1 | 2 => {
                    let offset = next(size);
                    let len = 1 + next(size - offset);
                    VolumeEvent::Zeroed { id: 1, offset, len }
                }
                _ => {
                    let offset = next(size);
                    let len = 1 + next((size - offset).min(3 * BLOCK));
                    let byte = 1 + next(255) as u8;
                    write(1, offset, &vec![byte; len as usize])
                }
            };
            events.push(ev);
        }
        // Straight replay, recording the state after every event.
        let (_d, mut straight) = store();
        let mut states = Vec::new();
        for ev in &events {
            straight.apply(ev).unwrap();
            let len = std::fs::metadata(straight.path(1)).unwrap().len();
            states.push(straight.read(1, 0, len as usize).unwrap());
        }
        let last = states.last().unwrap().clone();
        let i = next(events.len() as u64) as usize;
        // A fuzzy copy: each block from the state after a random event in
        // i..end (length from one of them too).
        let (_d2, mut fuzzy) = store();
        let len_from = &states[i + next((events.len() - i) as u64) as usize];
        fuzzy.install_volume(1, len_from.len() as u64).unwrap();
        let mut off = 0;
        while off < len_from.len() {
            let from = &states[i + next((events.len() - i) as u64) as usize];
            let end = (off + BLOCK as usize).min(len_from.len());
            let mut chunk = vec![0u8; end - off];
            let have = from.len().min(end).saturating_sub(off);
            if have > 0 {
                chunk[..have].copy_from_slice(&from[off..off + have]);
            }
            fuzzy.install_chunk(1, off as u64, &chunk).unwrap();
            off = end;
        }
        for ev in &events[i + 1..] {
            fuzzy.apply(ev).unwrap();
        }
        let len = std::fs::metadata(fuzzy.path(1)).unwrap().len() as usize;
        assert_eq!(len, last.len(), "round {round}: length");
        assert_eq!(fuzzy.read(1, 0, len).unwrap(), last, "round {round}: bytes");
    }
}
