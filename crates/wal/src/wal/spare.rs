//! Preallocation of the next segment. Appending to a file makes the file
//! system allocate blocks, and an `fdatasync` after an allocation must also
//! commit the file system journal; on ext4 that doubles the cost of syncing
//! a 32 KiB batch. Writing into blocks zero-filled ahead of time (by the
//! disk, in the background) makes each group commit a plain data flush.
//! Zeros after the last batch are therefore normal (see `recovery.rs`).

use tracing::warn;

use super::Wal;
use crate::disk::{join, Disk};
use crate::error::WalError;

/// The next segment, zero-filled ahead of time. A `.tmp` name: recovery
/// removes it.
const SPARE_NAME: &str = "next-segment.tmp";
/// Preallocate no more than this, whatever the segment size.
const PREALLOCATE_BYTES_MAX: u64 = 1 << 30;

impl<D: Disk> Wal<D> {
    /// Asks the disk to zero-fill the next segment in the background, once
    /// the current one is half full. Writing into allocated blocks lets each
    /// group commit's `fdatasync` skip the journal commit that allocating
    /// blocks would need (on ext4, that doubles the cost of a 32 KiB batch).
    /// Failure only costs speed, so it is logged, not returned.
    pub(super) fn request_spare(&mut self) {
        if self.spare_requested {
            return;
        }
        let max = self.options.segment_bytes_max;
        let len = max.saturating_add(max / 8).min(PREALLOCATE_BYTES_MAX);
        let spare = join(&self.dir, SPARE_NAME);
        match self.disk.preallocate(&spare, len) {
            Ok(()) => self.spare_requested = true,
            Err(e) => warn!(file = %spare, error = %e, "could not start preallocating a segment"),
        }
    }

    /// Takes the preallocated spare as segment `path`, if there is one.
    pub(super) fn take_spare(&mut self, path: &str) -> Result<bool, WalError> {
        if !std::mem::take(&mut self.spare_requested) {
            return Ok(false);
        }
        let spare = join(&self.dir, SPARE_NAME);
        match self.disk.preallocated(&spare) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                warn!(file = %spare, error = %e, "preallocating a segment failed");
                return Ok(false);
            }
        }
        self.disk
            .rename(&spare, path)
            .map_err(WalError::io(&spare, "rename"))?;
        self.disk.open(path).map_err(WalError::io(path, "open"))?;
        Ok(true)
    }
}
