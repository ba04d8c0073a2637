//! The data-directory lock for real files: an exclusive `flock` on
//! `DIR/LOCK`, held for as long as the `Wal` lives. Two processes appending
//! to one log would interleave records and destroy it; the lock turns that
//! operator mistake into a clear error. The kernel drops the lock when the
//! process dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

/// The name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held directory lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails with `io::ErrorKind::WouldBlock` if another
    /// open file description holds it (another process, or another `Wal`
    /// in this one).
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: locked", dir.display()),
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}
