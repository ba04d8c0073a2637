//! Helpers shared by the WAL's integration tests: building Raft values and
//! opening a WAL on either disk behind one interface.
#![allow(dead_code)]

use bytes::Bytes;
use ferrite_raft::{
    Entry, HardState, Index, Membership, NodeId, Payload, Persist, Snapshot, SnapshotMeta, Term,
};
use ferrite_wal::{Disk, FileDisk, MemDisk, Recovered, Wal, WalError, WalOptions};

pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: Index(index),
        term: Term(term),
        payload: Payload::Normal(Bytes::from(format!("entry {index} of term {term}"))),
    }
}

pub fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term)).collect()
}

pub fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: Some(NodeId(1)),
        commit: Index(commit),
    }
}

pub fn persist(entries: Vec<Entry>, hard_state: Option<HardState>) -> Persist {
    Persist {
        hard_state,
        snapshot: None,
        entries,
    }
}

pub fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: Index(index),
            term: Term(term),
            membership: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
        },
        data: Bytes::from(format!("state machine at {index}")),
    }
}

/// Segments large enough not to roll in small tests, small enough that
/// preallocating one costs little.
pub fn normal() -> WalOptions {
    WalOptions {
        segment_bytes_max: 1 << 20,
    }
}

pub fn tiny() -> WalOptions {
    WalOptions {
        segment_bytes_max: 300,
    }
}

/// Opens and reopens a WAL on one kind of disk, so that one suite runs on
/// both.
pub trait Harness {
    type D: Disk;
    fn open(&mut self, options: WalOptions) -> Result<(Wal<Self::D>, Recovered), WalError>;
    /// A clean shutdown: the next `open` sees everything written.
    fn close(&mut self, wal: Wal<Self::D>);
    /// Names in the data directory.
    fn names(&self, wal: &Wal<Self::D>) -> Vec<String> {
        wal.disk().list_dir(wal.dir()).expect("list")
    }
    /// Checks that a second open of the directory in use is refused.
    fn assert_second_open_locked(&mut self, wal: Wal<Self::D>) -> Wal<Self::D>;
}

pub struct FileHarness {
    pub dir: tempfile::TempDir,
}

impl FileHarness {
    pub fn new() -> FileHarness {
        FileHarness {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> String {
        self.dir
            .path()
            .join("data")
            .to_str()
            .expect("utf-8")
            .to_string()
    }
}

impl Harness for FileHarness {
    type D = FileDisk;
    fn open(&mut self, options: WalOptions) -> Result<(Wal<FileDisk>, Recovered), WalError> {
        Wal::open(FileDisk::new(), &self.path(), options)
    }
    fn close(&mut self, wal: Wal<FileDisk>) {
        drop(wal);
    }
    fn assert_second_open_locked(&mut self, wal: Wal<FileDisk>) -> Wal<FileDisk> {
        match Wal::open(FileDisk::new(), &self.path(), normal()) {
            Err(WalError::Locked { dir }) => assert_eq!(dir, self.path()),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second open of a locked directory succeeded"),
        }
        wal
    }
}

pub struct MemHarness {
    pub disk: Option<MemDisk>,
}

pub const MEM_DIR: &str = "node1/data";

impl MemHarness {
    pub fn new() -> MemHarness {
        MemHarness {
            disk: Some(MemDisk::new()),
        }
    }
}

impl Harness for MemHarness {
    type D = MemDisk;
    fn open(&mut self, options: WalOptions) -> Result<(Wal<MemDisk>, Recovered), WalError> {
        let disk = self.disk.take().expect("disk is here between opens");
        Wal::open(disk, MEM_DIR, options)
    }
    fn close(&mut self, wal: Wal<MemDisk>) {
        self.disk = Some(wal.into_disk());
    }
    fn assert_second_open_locked(&mut self, wal: Wal<MemDisk>) -> Wal<MemDisk> {
        // A MemDisk belongs to one node; model "someone else holds it" by
        // taking the lock by hand.
        let mut disk = wal.into_disk();
        disk.lock_dir(MEM_DIR).expect("lock");
        match Wal::open(&mut disk, MEM_DIR, WalOptions::default()) {
            Err(WalError::Locked { dir }) => assert_eq!(dir, MEM_DIR),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second open of a locked directory succeeded"),
        }
        disk.unlock_dir(MEM_DIR);
        Wal::open(disk, MEM_DIR, WalOptions::default())
            .expect("reopen")
            .0
    }
}

/// A small deterministic generator for tests (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
