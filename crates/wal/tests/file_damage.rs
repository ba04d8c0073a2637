//! Damage on real files: a log is built and synced batch by batch, then the
//! last segment is cut at many offsets (a crash mid-write), or single bits
//! are flipped anywhere (media corruption). Recovery must return exactly
//! what was synced before the damage, or refuse with an error naming the
//! file and the offset; it must never return less silently, nor panic.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use ferrite_raft::{Entry, HardState, Index, Persist, Snapshot};
use ferrite_wal::{FileDisk, Wal, WalError, WalOptions};

const OPTIONS: WalOptions = WalOptions {
    segment_bytes_max: 700,
};

type State = (HardState, Option<Snapshot>, Vec<Entry>);

/// The state after one synced batch, and where that batch ended.
struct Checkpoint {
    segment: String,
    len: u64,
    state: State,
}

fn last_segment(dir: &Path) -> (String, u64) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    let name = names.pop().expect("a segment");
    let len = fs::metadata(dir.join(&name)).unwrap().len();
    (name, len)
}

/// Builds a log with an installed snapshot, appends, conflicting suffixes
/// and several segments; every batch synced.
fn build(dir: &Path) -> Vec<Checkpoint> {
    let path = dir.to_str().unwrap();
    let (mut wal, _) = Wal::open(FileDisk::new(), path, OPTIONS).unwrap();
    let mut checkpoints = Vec::new();
    let mut state: State = (HardState::default(), None, Vec::new());
    let record = |wal: &Wal<FileDisk>, state: &State, checkpoints: &mut Vec<Checkpoint>| {
        // Logical lengths: the files may be longer (preallocated zeros).
        let (path, len) = wal.write_position();
        let segment = path.rsplit('/').next().unwrap().to_string();
        checkpoints.push(Checkpoint {
            segment,
            len,
            state: state.clone(),
        });
    };
    record(&wal, &state, &mut checkpoints);

    let snap = snapshot(10, 1);
    wal.write(&Persist {
        hard_state: Some(hs(1, 10)),
        snapshot: Some(snap.clone()),
        entries: entries(11, 12, 1),
    })
    .unwrap();
    wal.sync().unwrap();
    state = (hs(1, 10), Some(snap), entries(11, 12, 1));
    record(&wal, &state, &mut checkpoints);

    let mut term = 1;
    for batch in 0..40u64 {
        let last = state.2.last().map_or(10, |e| e.index.0);
        let commit = state.0.commit.0;
        let (from, to) = if batch % 7 == 6 && last > commit + 1 {
            term += 1;
            (last - 1, last + 1) // a new leader replaces the last two entries
        } else {
            (last + 1, last + 1 + batch % 4)
        };
        let new = entries(from, to, term);
        let new_hs = hs(term, to.saturating_sub(3).max(commit));
        wal.write(&persist(new.clone(), Some(new_hs))).unwrap();
        wal.sync().unwrap();
        state.2.retain(|e| e.index.0 < from);
        state.2.extend(new);
        state.0 = new_hs;
        record(&wal, &state, &mut checkpoints);
    }
    assert!(
        wal.segment_count() >= 4,
        "several segments: {}",
        wal.segment_count()
    );
    assert!(
        checkpoints
            .windows(2)
            .any(|w| w[1].state.0.term > w[0].state.0.term),
        "some batches replace a suffix in a new term"
    );
    checkpoints
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn recovered_state(rec: &ferrite_wal::Recovered) -> State {
    (
        rec.durable.hard_state,
        rec.durable.snapshot.clone(),
        rec.durable.entries.clone(),
    )
}

/// What must survive if the last segment keeps only its first `len` bytes.
fn expected_at<'a>(checkpoints: &'a [Checkpoint], segment: &str, len: u64) -> &'a Checkpoint {
    checkpoints
        .iter()
        .rev()
        .find(|c| c.segment == segment && c.len <= len)
        .or_else(|| {
            checkpoints
                .iter()
                .rev()
                .find(|c| c.segment.as_str() < segment)
        })
        .expect("some checkpoint")
}

#[test]
fn torn_last_segment_recovers_everything_synced_before_the_tear() {
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    let checkpoints = build(&pristine);
    let (segment, full) = last_segment(&pristine);
    let mut offsets: Vec<u64> = checkpoints
        .iter()
        .filter(|c| c.segment == segment)
        .flat_map(|c| [c.len - 1, c.len, c.len + 1])
        .chain([0, 1, 19, 20, 21])
        .filter(|o| *o <= full)
        .collect();
    let mut rng = Rng(0x70e1);
    offsets.extend((0..40).map(|_| rng.below(full + 1)));

    for (i, &offset) in offsets.iter().enumerate() {
        let dir = root.path().join(format!("cut-{i}"));
        copy_dir(&pristine, &dir);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&segment))
            .unwrap();
        file.set_len(offset).unwrap();
        drop(file);

        let path = dir.to_str().unwrap();
        let (mut wal, rec) = Wal::open(FileDisk::new(), path, OPTIONS)
            .unwrap_or_else(|e| panic!("cut at {offset}: recovery refused: {e}"));
        let want = expected_at(&checkpoints, &segment, offset);
        assert_eq!(recovered_state(&rec), want.state, "cut at {offset}");
        let at_boundary = checkpoints
            .iter()
            .any(|c| c.segment == segment && c.len == offset);
        let end = checkpoints.last().unwrap().len;
        if at_boundary || offset >= end {
            assert!(
                rec.torn_tail.is_none(),
                "cut at batch end {offset}: {:?}",
                rec.torn_tail
            );
        } else if want.segment == segment {
            let tail = rec.torn_tail.as_ref().expect("torn tail reported");
            assert!(tail.file.ends_with(&segment));
            assert_eq!(
                (tail.offset, tail.bytes_cut),
                (want.len, offset - want.len),
                "cut at {offset}"
            );
        }
        // The file was cut back to the last intact batch, and the log goes on.
        let (last, term) = (wal.last_index(), want.state.0.term.0);
        assert_eq!(wal.entries(wal.first_index(), last).unwrap(), want.state.2);
        let next = persist(
            entries(last.0 + 1, last.0 + 1, term),
            Some(hs(term, last.0)),
        );
        wal.write(&next).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(FileDisk::new(), path, OPTIONS).unwrap();
        assert_eq!(rec.durable.entries.last().map(|e| e.index), Some(last + 1));
        assert!(rec.torn_tail.is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn flipped_bits_are_refused_with_file_and_offset_or_cut_as_a_torn_tail() {
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    let checkpoints = build(&pristine);
    let (last, _) = last_segment(&pristine);
    let mut files: Vec<(String, u64)> = fs::read_dir(&pristine)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            // The log's files; not the lock, nor the preallocated spare.
            let name = e.file_name().into_string().unwrap();
            name.ends_with(".wal") || name.ends_with(".snap")
        })
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    let total: u64 = files.iter().map(|f| f.1).sum();

    let mut rng = Rng(0xb17f);
    let (mut refused, mut cut) = (0, 0);
    for case in 0..150 {
        // A random byte anywhere, but every tenth case in the last record,
        // where damage looks like a torn write.
        let (name, pos) = if case % 10 == 9 {
            let len = files.iter().find(|f| f.0 == last).unwrap().1;
            (last.clone(), len - 1 - rng.below(8))
        } else {
            let mut at = rng.below(total);
            let (name, len) = files
                .iter()
                .find(|(_, len)| {
                    at < *len || {
                        at -= len;
                        false
                    }
                })
                .unwrap();
            assert!(at < *len);
            (name.clone(), at)
        };
        let bit = rng.below(8) as u8;
        let dir = root.path().join(format!("flip-{case}"));
        copy_dir(&pristine, &dir);
        let file_path = dir.join(&name);
        let mut bytes = fs::read(&file_path).unwrap();
        bytes[pos as usize] ^= 1 << bit;
        fs::write(&file_path, &bytes).unwrap();

        let what = format!("case {case}: bit {bit} of byte {pos} in {name}");
        match Wal::open(FileDisk::new(), dir.to_str().unwrap(), OPTIONS) {
            Ok((_, rec)) => {
                cut += 1;
                assert_eq!(
                    name, last,
                    "{what}: damage outside the last segment went unnoticed"
                );
                let want = expected_at(&checkpoints, &last, pos);
                assert_eq!(recovered_state(&rec), want.state, "{what}");
                assert!(rec.torn_tail.is_some(), "{what}");
            }
            Err(e) => {
                refused += 1;
                let message = e.to_string();
                let full = file_path.to_str().unwrap();
                assert!(
                    message.contains(full) && message.contains("offset"),
                    "{what}: {message}"
                );
                match e {
                    WalError::Corrupt { file, offset, .. } => {
                        assert_eq!(file, full, "{what}");
                        if name.ends_with(".wal") {
                            assert!(offset <= pos, "{what}: reported offset {offset}");
                        }
                    }
                    other => panic!("{what}: expected Corrupt, got {other}"),
                }
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }
    assert!(
        refused > 50 && cut > 5,
        "both outcomes exercised: refused={refused} cut={cut}"
    );
}

#[test]
fn damage_in_the_middle_of_the_last_segment_is_not_a_torn_tail() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    build(&dir);
    let (last, len) = last_segment(&dir);
    let path = dir.join(&last);
    let mut bytes = fs::read(&path).unwrap();
    // The first record after the head: intact records follow it.
    let target = 40.min(len as usize / 2);
    bytes[target] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = Wal::open(FileDisk::new(), dir.to_str().unwrap(), OPTIONS)
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(
        message.contains(&last)
            && message.contains("offset")
            && message.contains("not a torn write"),
        "{message}"
    );
    // Nothing was cut: the file is untouched and a later look sees the same.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn missing_snapshot_file_or_segment_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    build(&dir);
    let snap = ferrite_wal::snapshot_name(Index(10), ferrite_raft::Term(1));
    let a = root.path().join("a");
    copy_dir(&dir, &a);
    fs::remove_file(a.join(&snap)).unwrap();
    let e = Wal::open(FileDisk::new(), a.to_str().unwrap(), OPTIONS)
        .err()
        .expect("refused");
    assert!(
        matches!(e, WalError::Inconsistent { .. }) && e.to_string().contains(&snap),
        "{e}"
    );

    let b = root.path().join("b");
    copy_dir(&dir, &b);
    fs::remove_file(b.join(ferrite_wal::segment_name(2))).unwrap();
    let e = Wal::open(FileDisk::new(), b.to_str().unwrap(), OPTIONS)
        .err()
        .expect("refused");
    assert!(e.to_string().contains(&ferrite_wal::segment_name(2)), "{e}");
}
