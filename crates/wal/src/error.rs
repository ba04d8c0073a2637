//! The errors the WAL reports. Everything read from disk that does not make
//! sense becomes a typed error that names the file and the offset, so an
//! operator can find the damage; nothing read from disk panics.

use std::io;

use ferrite_raft::{Index, Term};

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Another process (or another `Wal` in this one) holds the directory.
    /// Two writers on one log would interleave records and destroy it.
    #[error(
        "data directory {dir} is locked by another process: \
         another ferrite node or tool is using it (only one may open it at a time)"
    )]
    Locked { dir: String },

    /// A record (or snapshot file) that fails its checksum or does not decode,
    /// somewhere a crash cannot explain. The node must stop: serving the log
    /// up to here would silently forget acknowledged writes.
    #[error("{file}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },

    /// Files that are each intact but do not fit together (a missing segment,
    /// a snapshot file that the log refers to but that is gone, ...).
    #[error("{dir}: inconsistent log: {reason}")]
    Inconsistent { dir: String, reason: String },

    #[error("{path}: {op} failed: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// An earlier write or sync failed. After a failed `fdatasync` the kernel
    /// may have dropped the dirty pages, so what is on disk is unknown; the
    /// only safe continuation is a restart that recovers from the files.
    #[error(
        "the WAL is unusable after an earlier failure ({reason}); restart the node to recover"
    )]
    Poisoned { reason: String },

    #[error("entries [{lo}, {hi}] are not all in the log [{first}, {last}]")]
    OutOfRange {
        lo: Index,
        hi: Index,
        first: Index,
        last: Index,
    },

    /// The caller asked to append entries that do not continue the log.
    #[error("entry {index} would leave a gap after the last entry {last}")]
    Gap { index: Index, last: Index },

    /// The caller's entries are not a contiguous run.
    #[error("entries to write are not contiguous: {index} follows {prev}")]
    NotContiguous { index: Index, prev: Index },

    #[error("snapshot at {index} is not newer than the current snapshot at {current}")]
    StaleSnapshot { index: Index, current: Index },

    #[error("snapshot ({index}, term {term}) conflicts with the log's entry of term {log_term}")]
    SnapshotConflict {
        index: Index,
        term: Term,
        log_term: Term,
    },

    /// Indices, terms and node ids stay below 2^62 on disk, as in Raft's
    /// messages, so that nothing read back can overflow.
    #[error("{what} {value} is out of range (limit 2^62)")]
    ValueOutOfRange { what: &'static str, value: u64 },

    #[error("{what} of {bytes} bytes exceeds the record limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit: u64,
    },
}

impl WalError {
    pub(crate) fn io<'a>(
        path: &'a str,
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |source| WalError::Io {
            path: path.to_string(),
            op,
            source,
        }
    }

    pub(crate) fn corrupt(file: &str, offset: u64, reason: impl ToString) -> WalError {
        WalError::Corrupt {
            file: file.to_string(),
            offset,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn inconsistent(dir: &str, reason: impl ToString) -> WalError {
        WalError::Inconsistent {
            dir: dir.to_string(),
            reason: reason.to_string(),
        }
    }
}
