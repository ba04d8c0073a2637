//! Target `nbd_server`: the NBD server's negotiation and request parsing,
//! run over an in-memory stream against in-memory exports, plus the pure
//! header parsers of its protocol module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Every path into the NBD server is here, to re-point in one place when the
/// server moves to a crate of its own.
pub(crate) mod server {
    pub use ferrite_nbd::protocol;
    pub use ferrite_nbd::{serve_stream, Client, ExportError, Exports};
}

use server::protocol::{
    InfoRequest, OptionHeader, RequestHeader, OPTION_HEADER_LEN, REQUEST_HEADER_LEN,
};
use server::{Client as NbdClient, ExportError, Exports};

/// The exports held in memory: one to read and write, one empty.
pub(crate) const EXPORTS: [(&str, usize); 2] = [("disk0", 64 << 10), ("empty", 0)];
/// And one too large to hold (1 TiB), so that requests of any size are in
/// range: it reads as zeros and drops writes. Its reads above
/// `HUGE_READ_BYTES_MAX` fail, since answering them would rightly take as
/// much memory as they ask for; what the server allocates for a request
/// before its bytes arrive is what the allocation bound is for.
pub(crate) const HUGE: (&str, u64) = ("huge", 1 << 40);
const HUGE_READ_BYTES_MAX: u32 = 64 << 10;
/// Bytes the in-memory stream buffers each way; smaller than most sessions
/// so that reads and writes are split as over a socket.
const STREAM_BUFFER_BYTES: usize = 4096;

/// The input is what a client sends, from its handshake flags on: the
/// server reads it over an in-memory stream (while the client side reads
/// and drops the replies), and must end, with an error or not, without a
/// panic. The start of the input also goes through the option and request
/// header parsers and the `NBD_OPT_INFO`/`GO` data parser, and whatever
/// they accept must encode back to the same bytes.
pub fn nbd_server(data: &[u8]) {
    let _bound = crate::allocation::bound(data.len());
    parsers(data);
    crate::runtime::block_on(session(data));
}

fn parsers(data: &[u8]) {
    if let Some(raw) = data.first_chunk::<OPTION_HEADER_LEN>() {
        if let Ok(header) = OptionHeader::decode(raw) {
            assert_eq!(&header.encode(), raw);
        }
    }
    if let Some(raw) = data.first_chunk::<REQUEST_HEADER_LEN>() {
        if let Ok(header) = RequestHeader::decode(raw) {
            assert_eq!(&header.encode(), raw);
        }
    }
    if let Some(request) = InfoRequest::decode(data) {
        assert_eq!(request.encode(), data);
    }
}

/// Runs the server on `data` as the client's bytes; returns what the server
/// sent.
pub(crate) async fn session(data: &[u8]) -> Vec<u8> {
    let exports = Arc::new(MemExports::new());
    let (client, server_side): (DuplexStream, DuplexStream) =
        tokio::io::duplex(STREAM_BUFFER_BYTES);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let send = async {
        // The server may hang up first; what it did until then is the test.
        let _ = to_server.write_all(data).await;
        let _ = to_server.shutdown().await;
    };
    let receive = async {
        let mut replies = Vec::new();
        let _ = from_server.read_to_end(&mut replies).await;
        replies
    };
    let serve = server::serve_stream(server_side, exports);
    let (_, replies, _) = tokio::join!(send, receive, serve);
    replies
}

/// Volumes in memory.
pub(crate) struct MemExports {
    volumes: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemExports {
    pub(crate) fn new() -> MemExports {
        let volumes = EXPORTS
            .iter()
            .map(|&(name, size)| (name.to_string(), vec![0; size]))
            .collect();
        MemExports {
            volumes: Mutex::new(volumes),
        }
    }

    fn volumes(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.volumes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(
        &self,
        name: &str,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> T,
    ) -> Result<T, ExportError> {
        let mut volumes = self.volumes();
        let volume = volumes.get_mut(name).ok_or(ExportError::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| ExportError::OutOfRange)?;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= volume.len())
            .ok_or(ExportError::OutOfRange)?;
        Ok(f(&mut volume[start..end]))
    }
}

impl Exports for MemExports {
    async fn list(&self, _: &NbdClient) -> Result<Vec<String>, ExportError> {
        let mut names: Vec<String> = self.volumes().keys().cloned().collect();
        names.push(HUGE.0.to_string());
        Ok(names)
    }

    async fn size(&self, _: &NbdClient, name: &str) -> Result<Option<u64>, ExportError> {
        if name == HUGE.0 {
            return Ok(Some(HUGE.1));
        }
        Ok(self.volumes().get(name).map(|v| v.len() as u64))
    }

    async fn read(
        &self,
        _: &NbdClient,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, ExportError> {
        if name == HUGE.0 {
            if len > HUGE_READ_BYTES_MAX {
                return Err(ExportError::Io(
                    "a read too large for the test store".into(),
                ));
            }
            return Ok(Bytes::from(vec![0; len as usize]));
        }
        self.with(name, offset, len as usize, |range| {
            Bytes::copy_from_slice(range)
        })
    }

    async fn write(
        &self,
        _: &NbdClient,
        name: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ExportError> {
        if name == HUGE.0 {
            return Ok(());
        }
        self.with(name, offset, data.len(), |range| {
            range.copy_from_slice(&data)
        })
    }

    async fn zero(
        &self,
        _: &NbdClient,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<(), ExportError> {
        if name == HUGE.0 {
            return Ok(());
        }
        self.with(name, offset, len as usize, |range| range.fill(0))
    }
}
