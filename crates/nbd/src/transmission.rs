//! The transmission phase of one connection: one reader, a task per request,
//! one writer.
//!
//! The reader takes requests off the socket in order. Each request first
//! takes its share of the connection's bounds (`REQUESTS_INFLIGHT_MAX`
//! requests, `PAYLOAD_BYTES_INFLIGHT_MAX` payload bytes), so that when the
//! bounds are reached the reader stops reading and TCP pushes back on the
//! client, instead of the server buffering. A valid request is then admitted
//! to the ordering tracker, in arrival order, and spawned: its task waits for
//! the earlier requests it conflicts with, calls the store, and queues its
//! reply to the writer. Replies thus go out in completion order. A request
//! keeps its share of the bounds until its reply is written.
//!
//! A request counts as complete once its reply is queued, so a reply never
//! overtakes the reply of a request it waited for: a FLUSH is answered after
//! every write sent before it.
//!
//! On `NBD_CMD_DISC`, end of stream, or server shutdown, the reader stops;
//! requests already read still run and are answered, then the connection
//! closes. A bad request magic also stops the reader (nothing after it can
//! be trusted) and is reported as the connection's error.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::handshake::{discard, Export};
use super::ordering::{Access, Tracker};
use super::protocol::*;
use super::{
    ExportError, Exports, NbdError, Shutdown, PAYLOAD_BYTES_INFLIGHT_MAX, REQUESTS_INFLIGHT_MAX,
};

/// Buffer of the reply writer; large read data bypasses it.
const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// What a write's payload buffer starts with; it grows as bytes arrive.
const PAYLOAD_RESERVE_BYTES: usize = 64 << 10;

/// Closes (its sender drops) when its request completes.
type Waiter = watch::Receiver<()>;

/// A request that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    Trim,
    WriteZeroes,
}

impl Kind {
    fn access(self) -> Access {
        match self {
            Kind::Read => Access::Read,
            Kind::Flush => Access::Flush,
            Kind::Write | Kind::Trim | Kind::WriteZeroes => Access::Modify,
        }
    }
}

struct Connection<E> {
    exports: Arc<E>,
    export: Export,
    tracker: Arc<Mutex<Tracker<Waiter>>>,
    requests: Arc<Semaphore>,
    payload_bytes: Arc<Semaphore>,
    /// Set when the client went away without NBD_CMD_DISC: what it left in
    /// flight is abandoned (see `run`).
    abandoned: watch::Sender<bool>,
}

/// How the client left.
enum End {
    /// NBD_CMD_DISC, or this server shutting down: outstanding requests
    /// are finished and answered first.
    Disconnect,
    /// The connection dropped (or broke the protocol).
    Gone,
}

/// A request's share of the connection's bounds, released when dropped.
struct Permits {
    _request: OwnedSemaphorePermit,
    _payload_bytes: OwnedSemaphorePermit,
}

/// A reply on its way to the writer, holding its request's permits until it
/// has been written.
struct Reply {
    handle: u64,
    error: u32,
    data: Option<Bytes>,
    _permits: Permits,
}

/// A request's place in the tracker; dropping it retires the request and
/// closes its waiter, releasing every request that waits for it.
struct Ticket {
    tracker: Arc<Mutex<Tracker<Waiter>>>,
    seq: u64,
    _done: watch::Sender<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.tracker).retire(self.seq);
    }
}

/// Serves requests read from `read_half` for `export`, replying on
/// `write_half`, until the client disconnects.
pub(crate) async fn run<E, R, W>(
    read_half: R,
    write_half: W,
    exports: Arc<E>,
    export: Export,
    mut shutdown: Shutdown,
) -> Result<(), NbdError>
where
    E: Exports,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (replies, queued) = mpsc::channel(REQUESTS_INFLIGHT_MAX);
    let writer = tokio::spawn(write_replies(queued, write_half));
    let connection = Arc::new(Connection {
        exports,
        export,
        tracker: Arc::new(Mutex::new(Tracker::new())),
        requests: Arc::new(Semaphore::new(REQUESTS_INFLIGHT_MAX)),
        payload_bytes: Arc::new(Semaphore::new(PAYLOAD_BYTES_INFLIGHT_MAX as usize)),
        abandoned: watch::Sender::new(false),
    });
    let read = read_requests(
        BufReader::new(read_half),
        &connection,
        replies,
        &mut shutdown,
    )
    .await;
    // A client that dropped the connection cannot be answered, and it may
    // already be writing the same blocks through another member: a write
    // of its still retrying through a failover here could then land after
    // those and undo them. Stop what it left in flight (an entry already
    // in the log may still commit; nothing is retried any more).
    if !matches!(read, Ok(End::Disconnect)) {
        connection.abandoned.send_replace(true);
    }
    // The reader's sender is gone; the channel closes once every request task
    // has queued its reply (or stopped), and the writer then flushes and
    // closes.
    let written = writer
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read?;
    written?;
    Ok(())
}

async fn read_requests<E: Exports, R: AsyncRead + Unpin>(
    mut input: BufReader<R>,
    connection: &Arc<Connection<E>>,
    replies: mpsc::Sender<Reply>,
    shutdown: &mut Shutdown,
) -> Result<End, NbdError> {
    loop {
        let mut raw = [0; REQUEST_HEADER_LEN];
        let more = tokio::select! {
            more = read_header(&mut input, &mut raw) => more?,
            () = shutdown.wait() => return Ok(End::Disconnect),
        };
        // The writer stops only when the socket fails; stop reading too.
        if !more || replies.is_closed() {
            return Ok(End::Gone);
        }
        let header = RequestHeader::decode(&raw)?;
        if header.command == CMD_DISC {
            return Ok(End::Disconnect);
        }
        let checked = validate(
            &header,
            connection.export.size,
            connection.export.read_only(),
        );
        let payload_len = match checked {
            Ok(Kind::Read | Kind::Write) => header.length,
            _ => 0,
        };
        // Waiting here is the backpressure; shutdown must still get through.
        let permits = tokio::select! {
            permits = connection.permits(payload_len) => permits?,
            () = shutdown.wait() => return Ok(End::Disconnect),
        };
        let mut data = Bytes::new();
        if header.command == CMD_WRITE {
            if checked.is_ok() {
                data = read_payload(&mut input, header.length as usize).await?;
            } else {
                // Refused writes still carry their payload; skip it to stay
                // in step (streamed, so even 4 GiB costs no memory).
                discard(&mut input, header.length).await?;
            }
        }
        match checked {
            Ok(kind) if kind == Kind::Flush || header.length > 0 => {
                dispatch(connection, header, kind, data, permits, replies.clone());
            }
            // Zero-length requests touch nothing: answered at once (the spec
            // leaves them unspecified, only asking not to disconnect).
            outcome => {
                let reply = Reply {
                    handle: header.handle,
                    error: outcome.err().unwrap_or(0),
                    data: None,
                    _permits: permits,
                };
                if replies.send(reply).await.is_err() {
                    return Ok(End::Gone);
                }
            }
        }
    }
}

/// Admits a valid request to the tracker and runs it in its own task.
fn dispatch<E: Exports>(
    connection: &Arc<Connection<E>>,
    header: RequestHeader,
    kind: Kind,
    data: Bytes,
    permits: Permits,
    replies: mpsc::Sender<Reply>,
) {
    let (done, waiter) = watch::channel(());
    let (seq, waits) = {
        let mut tracker = lock(&connection.tracker);
        let admitted = tracker.admit(
            kind.access(),
            header.offset,
            u64::from(header.length),
            waiter,
        );
        // Entries retire before their permits are released.
        debug_assert!(
            tracker.len() <= REQUESTS_INFLIGHT_MAX,
            "inflight={}",
            tracker.len()
        );
        admitted
    };
    let ticket = Ticket {
        tracker: connection.tracker.clone(),
        seq,
        _done: done,
    };
    let connection = connection.clone();
    let mut abandoned = connection.abandoned.subscribe();
    tokio::spawn(async move {
        let run = async {
            for mut earlier in waits {
                // Err once the earlier request's ticket is dropped: it is done.
                let _ = earlier.changed().await;
            }
            execute(&connection, &header, kind, data).await
        };
        let result = tokio::select! {
            result = run => result,
            _ = abandoned.wait_for(|gone| *gone) => return,
        };
        let (error, data) = match result {
            Ok(data) => (0, data),
            Err(error) => (error, None),
        };
        let _ = replies
            .send(Reply {
                handle: header.handle,
                error,
                data,
                _permits: permits,
            })
            .await;
        // Only now: whatever waited for this request replies after it.
        drop(ticket);
    });
}

/// Runs a request against the store: read data, or an NBD error value.
async fn execute<E: Exports>(
    connection: &Connection<E>,
    header: &RequestHeader,
    kind: Kind,
    data: Bytes,
) -> Result<Option<Bytes>, u32> {
    let (exports, name) = (&*connection.exports, connection.export.name.as_str());
    let client = &connection.export.client;
    let (offset, length) = (header.offset, header.length);
    let result = match kind {
        Kind::Read => match exports.read(client, name, offset, length).await {
            Ok(bytes) if bytes.len() == length as usize => return Ok(Some(bytes)),
            Ok(bytes) => Err(ExportError::Io(format!(
                "store returned {} bytes for {length}",
                bytes.len()
            ))),
            Err(e) => Err(e),
        },
        Kind::Write => exports.write(client, name, offset, data).await,
        Kind::Trim | Kind::WriteZeroes => exports.zero(client, name, offset, length).await,
        // Writes are durable when answered, and the flush waited for every
        // earlier write of this connection: nothing is left to do.
        Kind::Flush => Ok(()),
    };
    result.map(|()| None).map_err(|e| {
        tracing::debug!(export = name, ?kind, offset, length, error = %e, "nbd: request failed");
        errno(kind, &e)
    })
}

/// Checks a request against the export; Err is the NBD error to answer with.
/// On a read-only export every change is refused with EPERM (the spec's
/// answer for a write to a read-only export), before the store sees it.
fn validate(header: &RequestHeader, size: u64, read_only: bool) -> Result<Kind, u32> {
    // FUA is valid on every command once advertised; writes are durable on
    // reply anyway, so it is accepted and needs nothing.
    let (kind, flags_known) = match header.command {
        CMD_READ => (Kind::Read, CMD_FLAG_FUA),
        CMD_WRITE => (Kind::Write, CMD_FLAG_FUA),
        CMD_FLUSH => (Kind::Flush, CMD_FLAG_FUA),
        CMD_TRIM => (Kind::Trim, CMD_FLAG_FUA),
        CMD_WRITE_ZEROES => (Kind::WriteZeroes, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE),
        _ => return Err(EINVAL),
    };
    if header.flags & !flags_known != 0 {
        return Err(EINVAL);
    }
    if read_only && kind.access() == Access::Modify {
        return Err(EPERM);
    }
    if kind == Kind::Flush {
        // Offset and length are reserved and must be zero.
        return if header.offset == 0 && header.length == 0 {
            Ok(kind)
        } else {
            Err(EINVAL)
        };
    }
    // The advertised maximum block size binds all but TRIM.
    if kind != Kind::Trim && header.length > BLOCK_SIZE_MAX {
        return Err(EINVAL);
    }
    let end = header.offset.checked_add(u64::from(header.length));
    if end.is_none_or(|end| end > size) {
        return Err(out_of_range(kind));
    }
    Ok(kind)
}

/// proto.md: ENOSPC for writes and write-zeroes past the end, EINVAL for
/// reads and trims.
fn out_of_range(kind: Kind) -> u32 {
    match kind {
        Kind::Write | Kind::WriteZeroes => ENOSPC,
        Kind::Read | Kind::Trim | Kind::Flush => EINVAL,
    }
}

/// What a failed request is answered with: EPERM when the store refused
/// the client (say its permission was revoked after it connected), never
/// EIO, which a client would take for a fault worth retrying.
fn errno(kind: Kind, error: &ExportError) -> u32 {
    match error {
        ExportError::OutOfRange => out_of_range(kind),
        ExportError::Denied(_) => EPERM,
        ExportError::NotFound | ExportError::Unavailable(_) | ExportError::Io(_) => EIO,
    }
}

impl<E> Connection<E> {
    async fn permits(&self, payload_len: u32) -> Result<Permits, NbdError> {
        let request = self.requests.clone().acquire_owned().await;
        let payload_bytes = self
            .payload_bytes
            .clone()
            .acquire_many_owned(payload_len)
            .await;
        match (request, payload_bytes) {
            (Ok(request), Ok(payload_bytes)) => Ok(Permits {
                _request: request,
                _payload_bytes: payload_bytes,
            }),
            // The semaphores are never closed.
            _ => Err(NbdError::Io(std::io::Error::other(
                "nbd: in-flight bounds closed",
            ))),
        }
    }
}

/// Reads a write's `len` payload bytes into a buffer that grows (doubling)
/// with what arrives, rather than one allocated at the length the header
/// claims: a header alone would otherwise hold up to `BLOCK_SIZE_MAX` of
/// memory for as long as the client cares to send nothing more.
async fn read_payload<R: AsyncRead + Unpin>(input: &mut R, len: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len.min(PAYLOAD_RESERVE_BYTES));
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(len - buf.len()));
        }
        let wanted = (len - buf.len()) as u64;
        if (&mut *input).take(wanted).read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

/// False on a clean end of stream between two requests.
async fn read_header<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    raw: &mut [u8; REQUEST_HEADER_LEN],
) -> std::io::Result<bool> {
    let n = input.read(raw).await?;
    if n == 0 {
        return Ok(false);
    }
    input.read_exact(&mut raw[n..]).await?;
    Ok(true)
}

async fn write_replies<W: AsyncWrite + Unpin>(
    mut queued: mpsc::Receiver<Reply>,
    output: W,
) -> std::io::Result<()> {
    let mut output = BufWriter::with_capacity(WRITE_BUFFER_BYTES, output);
    while let Some(reply) = queued.recv().await {
        write_reply(&mut output, reply).await?;
        // Whatever else is ready goes out in the same flush.
        while let Ok(reply) = queued.try_recv() {
            write_reply(&mut output, reply).await?;
        }
        output.flush().await?;
    }
    output.shutdown().await
}

async fn write_reply<W: AsyncWrite + Unpin>(
    output: &mut BufWriter<W>,
    reply: Reply,
) -> std::io::Result<()> {
    output
        .write_all(&encode_simple_reply(reply.error, reply.handle))
        .await?;
    if let Some(data) = reply.data.filter(|_| reply.error == 0) {
        output.write_all(&data).await?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The tracker holds no invariant a panicking holder could break halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    #[test]
    fn a_refusal_is_eperm_and_a_read_only_export_refuses_changes() {
        let denied = ExportError::Denied("permission denied".into());
        for kind in [Kind::Read, Kind::Write, Kind::Trim, Kind::WriteZeroes] {
            assert_eq!(errno(kind, &denied), EPERM, "{kind:?}");
            assert_eq!(errno(kind, &ExportError::Unavailable("x".into())), EIO);
        }
        assert_eq!(errno(Kind::Write, &ExportError::OutOfRange), ENOSPC);
        let header = |command, length| RequestHeader {
            flags: 0,
            command,
            handle: 1,
            offset: 0,
            length,
        };
        for command in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
            assert_eq!(validate(&header(command, 8), 4096, true), Err(EPERM));
            assert!(validate(&header(command, 8), 4096, false).is_ok());
        }
        assert_eq!(validate(&header(CMD_READ, 8), 4096, true), Ok(Kind::Read));
        assert_eq!(validate(&header(CMD_FLUSH, 0), 4096, true), Ok(Kind::Flush));
    }

    /// Hands out `data`, and records the largest buffer it was offered.
    struct Trickle {
        data: Vec<u8>,
        offered_max: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.offered_max = self.offered_max.max(buf.remaining());
            let n = buf.remaining().min(self.data.len()).min(1000);
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    /// Regression (found by the `nbd_server` fuzz target): the payload
    /// buffer of a write was allocated, zeroed, at the length its header
    /// claims before any of the payload arrived.
    #[tokio::test]
    async fn a_payload_buffer_grows_with_the_bytes_that_arrive() {
        let mut short = Trickle {
            data: vec![7; 5],
            offered_max: 0,
        };
        let claimed = BLOCK_SIZE_MAX as usize;
        let e = read_payload(&mut short, claimed).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(
            short.offered_max <= 2 * PAYLOAD_RESERVE_BYTES,
            "a buffer of {} bytes for 5 bytes of payload",
            short.offered_max
        );

        for len in [0, 1, PAYLOAD_RESERVE_BYTES, 3 * PAYLOAD_RESERVE_BYTES + 17] {
            let data: Vec<u8> = (0..len + 10).map(|i| i as u8).collect();
            let mut full = Trickle {
                data: data.clone(),
                offered_max: 0,
            };
            let payload = read_payload(&mut full, len).await.unwrap();
            assert_eq!(&payload[..], &data[..len]);
            assert_eq!(full.data.len(), 10, "read past the payload");
        }
    }
}
