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
    /// Whether `client` may use the export `name`, and how; asked once per
    /// connection, before NBD_OPT_INFO/GO or NBD_OPT_EXPORT_NAME serves the
    /// export (and before its size is looked up, so that a refusal says
    /// nothing about whether the export exists). This is where permissions
    /// are checked at connect time: with TLS and `--client-cert-auth`,
    /// `client.common_name` is the verified client certificate's common
    /// name (etcd's rule: it names the user). `Denied` is answered with
    /// `NBD_REP_ERR_POLICY`; `ReadOnly` sets `NBD_FLAG_READ_ONLY`, and the
    /// server then answers writes, write-zeroes and trims with `NBD_EPERM`
    /// without calling the store. The default lets everyone in, read-write.
    fn authorize(
        &self,
        client: &Client,
        name: &str,
    ) -> impl Future<Output = Result<ExportAccess, ExportError>> + Send {
        let _ = (client, name);
        async { Ok(ExportAccess::ReadWrite) }
    }
    /// The names `client` may ask for, for `NBD_OPT_LIST`.
    fn list(
        &self,
        client: &Client,
    ) -> impl Future<Output = Result<Vec<String>, ExportError>> + Send;
    /// The volume's size in bytes, None if no such volume (asked after
    /// `authorize` let `client` in).
    fn size(
        &self,
        client: &Client,
        name: &str,
    ) -> impl Future<Output = Result<Option<u64>, ExportError>> + Send;
    /// Exactly `len` bytes from `offset`, as `client`. The server has
    /// checked the range against the size it announced; a shorter answer is
    /// treated as `Io`.
    fn read(
        &self,
        client: &Client,
        name: &str,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<bytes::Bytes, ExportError>> + Send;
    /// Returns once the write is durable (on a majority); so FUA needs
    /// nothing more. Made as `client`: `Denied` (its permission is gone) is
    /// answered with `NBD_EPERM`.
    fn write(
        &self,
        client: &Client,
        name: &str,
        offset: u64,
        data: bytes::Bytes,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;
    /// Zeroes [offset, offset+len); trim and write-zeroes both land here (both
    /// punch holes; trimmed ranges read as zeros in this store). Durable on
    /// return, like `write`.
    fn zero(
        &self,
        client: &Client,
        name: &str,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;
}

/// What `Exports::authorize` lets a client do with an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportAccess {
    ReadWrite,
    /// Advertised with `NBD_FLAG_READ_ONLY`; writes, write-zeroes and trims
    /// are answered with `NBD_EPERM`.
    ReadOnly,
}

/// Who is on the other end of an NBD connection, as far as the transport
/// can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    /// Whether the connection runs over TLS (after NBD_OPT_STARTTLS).
    pub tls: bool,
    /// The common name of the client's verified TLS certificate.
    pub common_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `Exports::authorize` said no: answered with `NBD_REP_ERR_POLICY`
    /// during negotiation (NBD_OPT_EXPORT_NAME closes the connection). From
    /// a request (the client's permission went away after it connected):
    /// answered with `NBD_EPERM`.
    #[error("permission denied: {0}")]
    Denied(String),
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
