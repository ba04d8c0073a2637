//! Ferrite's write-ahead log: the durable Raft log, hard state and snapshot
//! files of one node, and their recovery after a crash.
//!
//! Layout of a data directory:
//!
//! ```text
//! LOCK                                   flock'ed while a Wal has it open
//! 0000000000000001.wal ...               segments, oldest first
//! snap-{index:016x}-{term:016x}.snap     the latest snapshot
//! next-segment.tmp                       the next segment, being zero-filled
//! ```
//!
//! Durability in one paragraph: `write` appends records, `sync` makes every
//! record written so far durable with one `fdatasync` (group commit), and
//! each `write` is atomic under crashes. A failed sync poisons the `Wal`.
//! Recovery cuts off a torn tail of the last segment and refuses (naming the
//! file and offset) to open a log damaged anywhere else.
//!
//! `Wal` is the API; `Disk` is the storage it runs on: `FileDisk` for real
//! files, `MemDisk` for the simulator, where a crash loses what was not
//! synced. `ferrite-wal inspect|verify|bench` is the command-line tool.

mod codec;
mod disk;
mod error;
mod file_disk;
pub mod inspect;
mod lock;
mod mem_disk;
mod record;
mod recovery;
mod segment;
mod snapshot_file;
mod wal;

pub mod bench;

pub use crate::codec::{CodecError, MarkKind, SnapshotMark};
pub use crate::disk::{join, page_out, parent, Disk};
pub use crate::error::WalError;
pub use crate::file_disk::FileDisk;
pub use crate::lock::LOCK_FILE;
pub use crate::mem_disk::MemDisk;
pub use crate::recovery::{RecoveryStats, TornTail};
pub use crate::segment::segment_name;
pub use crate::snapshot_file::snapshot_name;
pub use crate::wal::{Recovered, Wal, WalOptions};

/// The decoders of on-disk bytes and the framing they check, public only so
/// that the fuzz targets (`fuzz/`, and their corpus replay in
/// `ferrite-fuzzing`) can drive them directly. Not an API to build on: the
/// `Wal` is.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::codec::{
        decode_entry, decode_hard_state, decode_mark, encode_entry, encode_hard_state, encode_mark,
        VALUE_MAX,
    };
    pub use crate::record::{
        find_valid_after, parse as parse_record, Frame, FrameError, Framer, RecordType,
        FLAG_BATCH_END, HEADER_BYTES,
    };
    pub use crate::segment::{
        encode_header as encode_segment_header, scan as scan_segment, HeaderError, SegmentScan,
        SEGMENT_HEADER_BYTES,
    };
    pub use crate::snapshot_file::decode as decode_snapshot_file;
}
