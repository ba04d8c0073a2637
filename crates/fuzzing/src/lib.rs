//! The bodies of Ferrite's fuzz targets: one function per family of decoders
//! that read bytes from a network or a disk. `fuzz/` (a cargo-fuzz project,
//! its own workspace) hands them libFuzzer's inputs; `tests/corpus.rs` here
//! replays the committed seed corpora and crash regressions through the same
//! functions, so that `cargo test --workspace` covers them without libFuzzer.
//!
//! A body returns normally on every input. It panics only when a decoder does
//! (an unwrap, an index out of bounds, an overflow) or when an oracle fails:
//! a value that does not survive a round trip, a recovered log that Raft
//! refuses or that reopens differently, a restored state machine that breaks
//! its invariants on the next apply. Those are the bugs being looked for.
//!
//! Every body also runs under an allocation bound (see `allocation.rs`),
//! which turns an allocation sized by an unchecked length field into a
//! crash where [`Bounded`] is the global allocator (the fuzz targets and
//! the corpus replay).
//!
//! The input formats are documented on each function; `seeds.rs` writes
//! valid examples of every one.

mod allocation;
mod backup;
mod nbd;
mod peer;
mod runtime;
pub mod seeds;
mod snapshot;
mod state;
mod wal;

pub use allocation::{name_input, Bounded, ALLOCATION_BYTES_BASE, ALLOCATION_FACTOR};
pub use backup::backup_files;
pub use nbd::nbd_server;
pub use peer::peer_frames;
pub use snapshot::snapshot_files;
pub use state::state_commands;
pub use wal::wal_recovery;

/// A target's body: one input in, a panic if it found a bug.
pub type Body = fn(&[u8]);

/// Every target: its name (that of the fuzz target in `fuzz/fuzz_targets/`
/// and of its corpus directory) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("peer_frames", peer_frames),
    ("wal_recovery", wal_recovery),
    ("snapshot_files", snapshot_files),
    ("state_commands", state_commands),
    ("nbd_server", nbd_server),
    ("backup_files", backup_files),
];

/// Splits off a length-prefixed chunk: `len:u16 LE | bytes`, where a length
/// beyond the input takes what is left. None once the input is used up.
fn chunk<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = input.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (chunk, rest) = rest.split_at(len);
    *input = rest;
    Some(chunk)
}

/// Prefixes `bytes` with the length `chunk` reads.
fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("seed chunks stay below 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}
