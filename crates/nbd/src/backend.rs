//! The storage behind the NBD server: named volumes with a byte address space.
//! The server only translates between NBD and this trait; it never decides
//! anything about the data itself.

use std::future::Future;

/// What the NBD server serves: named volumes. Implemented by the replicated
/// volume store (`volumes.rs`) and by an in-memory test backend (in
/// `tests.rs`).
///
/// The server calls these concurrently, from many connections and with many
/// requests in flight per connection; it keeps overlapping requests of one
/// connection in order itself, so implementations need no ordering of their
/// own beyond being linearizable per call.
pub trait Exports: Send + Sync + 'static {
    /// The names clients may ask for, for `NBD_OPT_LIST`.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, ExportError>> + Send;
    /// The volume's size in bytes, None if no such volume.
    fn size(&self, name: &str) -> impl Future<Output = Result<Option<u64>, ExportError>> + Send;
    /// Exactly `len` bytes from `offset`. The server has checked the range
    /// against the size it announced; a shorter answer is treated as `Io`.
    fn read(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<bytes::Bytes, ExportError>> + Send;
    /// Returns once the write is durable (on a majority); so FUA needs nothing more.
    fn write(
        &self,
        name: &str,
        offset: u64,
        data: bytes::Bytes,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;
    /// Zeroes [offset, offset+len); trim and write-zeroes both land here (both
    /// punch holes; trimmed ranges read as zeros in this store). Durable on
    /// return, like `write`.
    fn zero(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no such volume")]
    NotFound,
    /// Answered with `NBD_ENOSPC` for writes and write-zeroes, `NBD_EINVAL`
    /// for reads and trims.
    #[error("out of range")]
    OutOfRange,
    /// Answered with `NBD_EIO`; the client may retry or reconnect.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// Answered with `NBD_EIO`.
    #[error("{0}")]
    Io(String),
}
