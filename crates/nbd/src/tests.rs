//! The NBD server against an in-memory store, through a raw-socket client
//! written here and through the real `nbdinfo` and `nbdcopy` (libnbd).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::protocol::*;
use super::{
    serve, serve_connection, Client as NbdClient, ExportAccess, ExportError, Exports, NbdError,
    OPTION_DATA_MAX, REQUESTS_INFLIGHT_MAX,
};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// In-memory store

/// Volumes in memory; writes can be made slow (the delay comes before the
/// data lands, so a read that failed to wait would see the old bytes).
#[derive(Default)]
struct MemExports {
    volumes: Mutex<BTreeMap<String, Vec<u8>>>,
    write_delay: Duration,
    writes_active: AtomicUsize,
    writes_active_max: AtomicUsize,
    /// What `authorize` answers: None lets everyone in read-write.
    access: Option<Result<ExportAccess, String>>,
    /// Writes and zeroes are refused as `Denied` (a permission revoked
    /// after the client connected).
    refuse_changes: bool,
    /// Writes and zeroes that reached the store.
    changes_seen: AtomicUsize,
}

impl MemExports {
    fn new(volumes: &[(&str, usize)]) -> MemExports {
        let volumes = volumes
            .iter()
            .map(|&(name, size)| (name.to_string(), vec![0; size]))
            .collect();
        MemExports {
            volumes: Mutex::new(volumes),
            ..MemExports::default()
        }
    }

    fn slow_writes(self, delay: Duration) -> MemExports {
        MemExports {
            write_delay: delay,
            ..self
        }
    }

    fn access(self, access: Result<ExportAccess, String>) -> MemExports {
        MemExports {
            access: Some(access),
            ..self
        }
    }

    fn refusing_changes(self) -> MemExports {
        MemExports {
            refuse_changes: true,
            ..self
        }
    }

    /// A write or zero reached the store: counted, and refused if so set.
    fn change(&self) -> Result<(), ExportError> {
        self.changes_seen.fetch_add(1, Ordering::SeqCst);
        if self.refuse_changes {
            return Err(ExportError::Denied("permission denied".into()));
        }
        Ok(())
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        self.volumes.lock().unwrap()[name].clone()
    }

    fn with<T>(
        &self,
        name: &str,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> T,
    ) -> Result<T, ExportError> {
        let mut volumes = self.volumes.lock().unwrap();
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
    async fn authorize(&self, _: &NbdClient, _: &str) -> Result<ExportAccess, ExportError> {
        match &self.access {
            None => Ok(ExportAccess::ReadWrite),
            Some(Ok(access)) => Ok(*access),
            Some(Err(why)) => Err(ExportError::Denied(why.clone())),
        }
    }

    async fn list(&self, _: &NbdClient) -> Result<Vec<String>, ExportError> {
        Ok(self.volumes.lock().unwrap().keys().cloned().collect())
    }

    async fn size(&self, _: &NbdClient, name: &str) -> Result<Option<u64>, ExportError> {
        Ok(self
            .volumes
            .lock()
            .unwrap()
            .get(name)
            .map(|v| v.len() as u64))
    }

    async fn read(
        &self,
        _: &NbdClient,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, ExportError> {
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
        self.change()?;
        let active = self.writes_active.fetch_add(1, Ordering::SeqCst) + 1;
        self.writes_active_max.fetch_max(active, Ordering::SeqCst);
        tokio::time::sleep(self.write_delay).await;
        self.writes_active.fetch_sub(1, Ordering::SeqCst);
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
        self.change()?;
        self.with(name, offset, len as usize, |range| range.fill(0))
    }
}

// ---------------------------------------------------------------------------
// Server and raw client

struct Server {
    addr: SocketAddr,
    exports: Arc<MemExports>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start(exports: MemExports) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let exports = Arc::new(exports);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, exports.clone(), None, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        exports,
        stop: Some(stop),
        task,
    }
}

/// Every test runs under this bound, so a hang fails instead of stalling CI.
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out")
}

struct Reply {
    handle: u64,
    error: u32,
    data: Vec<u8>,
}

struct Client {
    stream: TcpStream,
    /// Lengths of reads in flight by handle: a simple reply's data length is
    /// only known from its request.
    reads: HashMap<u64, u32>,
}

impl Client {
    /// Connects, checks the greeting and sends `flags`.
    async fn connect_with(addr: SocketAddr, flags: u32) -> Client {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0; GREETING_LEN];
        stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(greeting, encode_greeting());
        stream.write_u32(flags).await.unwrap();
        Client {
            stream,
            reads: HashMap::new(),
        }
    }

    async fn connect(addr: SocketAddr) -> Client {
        Client::connect_with(addr, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await
    }

    /// Connects and enters transmission on `name` with NBD_OPT_GO.
    async fn open(addr: SocketAddr, name: &str) -> Client {
        let mut client = Client::connect(addr).await;
        let replies = client.info(OPT_GO, name, &[]).await;
        assert_eq!(replies.last().map(|r| r.0), Some(REP_ACK), "GO {name}");
        client
    }

    async fn send_option(&mut self, option: u32, data: &[u8]) {
        let header = OptionHeader {
            option,
            length: data.len() as u32,
        };
        self.stream.write_all(&header.encode()).await.unwrap();
        self.stream.write_all(data).await.unwrap();
    }

    async fn option_reply(&mut self, option: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.stream.read_u64().await.unwrap(), OPTION_REPLY_MAGIC);
        assert_eq!(self.stream.read_u32().await.unwrap(), option);
        let reply = self.stream.read_u32().await.unwrap();
        let mut data = vec![0; self.stream.read_u32().await.unwrap() as usize];
        self.stream.read_exact(&mut data).await.unwrap();
        (reply, data)
    }

    /// Sends an option with a single final reply and returns that reply's type.
    async fn simple_option(&mut self, option: u32, data: &[u8]) -> u32 {
        self.send_option(option, data).await;
        self.option_reply(option).await.0
    }

    /// NBD_OPT_INFO or NBD_OPT_GO: every reply up to and including the final one.
    async fn info(&mut self, option: u32, name: &str, requests: &[u16]) -> Vec<(u32, Vec<u8>)> {
        let request = InfoRequest {
            name: name.as_bytes().to_vec(),
            requests: requests.to_vec(),
        };
        self.send_option(option, &request.encode()).await;
        let mut replies = Vec::new();
        loop {
            let reply = self.option_reply(option).await;
            let last = reply.0 != REP_INFO;
            replies.push(reply);
            if last {
                return replies;
            }
        }
    }

    async fn send(
        &mut self,
        command: u16,
        flags: u16,
        handle: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let header = RequestHeader {
            flags,
            command,
            handle,
            offset,
            length,
        };
        self.stream.write_all(&header.encode()).await.unwrap();
        self.stream.write_all(payload).await.unwrap();
        if command == CMD_READ {
            self.reads.insert(handle, length);
        }
    }

    async fn recv(&mut self) -> Reply {
        assert_eq!(self.stream.read_u32().await.unwrap(), SIMPLE_REPLY_MAGIC);
        let error = self.stream.read_u32().await.unwrap();
        let handle = self.stream.read_u64().await.unwrap();
        let len = self
            .reads
            .remove(&handle)
            .filter(|_| error == 0)
            .unwrap_or(0);
        let mut data = vec![0; len as usize];
        self.stream.read_exact(&mut data).await.unwrap();
        Reply {
            handle,
            error,
            data,
        }
    }

    /// Sends one request and waits for its reply, which must be the next one.
    async fn call(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Reply {
        let handle = 0xfeed_0000 + u64::from(command);
        self.send(command, flags, handle, offset, length, payload)
            .await;
        let reply = self.recv().await;
        assert_eq!(reply.handle, handle);
        reply
    }

    async fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.call(CMD_WRITE, 0, offset, data.len() as u32, data)
            .await
            .error
    }

    async fn read(&mut self, offset: u64, length: u32) -> Vec<u8> {
        let reply = self.call(CMD_READ, 0, offset, length, &[]).await;
        assert_eq!(reply.error, 0, "read {offset}+{length}");
        reply.data
    }

    /// True once the server has closed the connection (EOF or reset).
    async fn closed(&mut self) -> bool {
        let mut byte = [0; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    // xorshift64: deterministic bytes without a dependency.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn info_payload(replies: &[(u32, Vec<u8>)], info: u16) -> Option<Vec<u8>> {
    replies
        .iter()
        .filter(|(reply, data)| *reply == REP_INFO && data.len() >= 2)
        .find(|(_, data)| u16::from_be_bytes([data[0], data[1]]) == info)
        .map(|(_, data)| data[2..].to_vec())
}

// ---------------------------------------------------------------------------
// Permissions

#[tokio::test]
async fn a_refused_client_gets_policy_and_learns_nothing_of_the_export() {
    bounded(async {
        let exports = MemExports::new(&[("disk0", 4096)]).access(Err("no".into()));
        let server = start(exports).await;
        let mut client = Client::connect(server.addr).await;
        // Refused the same whether the export exists or not.
        for name in ["disk0", "nope"] {
            for option in [OPT_INFO, OPT_GO] {
                let replies = client.info(option, name, &[]).await;
                assert_eq!(replies.len(), 1);
                assert_eq!(replies[0].0, REP_ERR_POLICY, "option {option} {name}");
            }
        }
        // NBD_OPT_EXPORT_NAME cannot be refused: the connection closes.
        client.send_option(OPT_EXPORT_NAME, b"disk0").await;
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn a_read_only_export_says_so_and_refuses_changes_with_eperm() {
    bounded(async {
        let exports = MemExports::new(&[("disk0", 4096)]).access(Ok(ExportAccess::ReadOnly));
        exports.volumes.lock().unwrap().get_mut("disk0").unwrap()[..4].copy_from_slice(b"data");
        let server = start(exports).await;
        let mut client = Client::connect(server.addr).await;
        let replies = client.info(OPT_GO, "disk0", &[]).await;
        assert_eq!(replies.last().unwrap().0, REP_ACK);
        let export = info_payload(&replies, INFO_EXPORT).expect("NBD_INFO_EXPORT");
        let flags = u16::from_be_bytes([export[8], export[9]]);
        assert_ne!(flags & FLAG_READ_ONLY, 0, "flags {flags:#x}");
        assert_eq!(flags & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES), 0);
        assert_ne!(flags & FLAG_SEND_FLUSH, 0);

        assert_eq!(client.read(0, 4).await, b"data");
        assert_eq!(client.write(0, b"nope").await, EPERM);
        // Out of range too: the refusal comes first.
        assert_eq!(client.write(4090, &[1; 100]).await, EPERM);
        let reply = client.call(CMD_WRITE_ZEROES, 0, 0, 4, &[]).await;
        assert_eq!(reply.error, EPERM);
        let reply = client.call(CMD_TRIM, 0, 0, 4096, &[]).await;
        assert_eq!(reply.error, EPERM);
        // Still in step after the refused payloads; flush is fine.
        assert_eq!(client.call(CMD_FLUSH, 0, 0, 0, &[]).await.error, 0);
        assert_eq!(client.read(0, 4).await, b"data");
        assert_eq!(server.exports.changes_seen.load(Ordering::SeqCst), 0);
        assert_eq!(&server.exports.bytes("disk0")[..4], b"data");

        // NBD_OPT_EXPORT_NAME carries the same flags.
        let mut old = Client::connect(server.addr).await;
        old.send_option(OPT_EXPORT_NAME, b"disk0").await;
        assert_eq!(old.stream.read_u64().await.unwrap(), 4096);
        let flags = old.stream.read_u16().await.unwrap();
        assert_ne!(flags & FLAG_READ_ONLY, 0, "flags {flags:#x}");
        assert_eq!(old.write(0, b"nope").await, EPERM);
    })
    .await;
}

#[tokio::test]
async fn a_change_the_store_refuses_is_answered_eperm_not_eio() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 4096)]).refusing_changes()).await;
        let mut client = Client::open(server.addr, "disk0").await;
        assert_eq!(client.write(0, b"abcd").await, EPERM);
        let reply = client.call(CMD_WRITE_ZEROES, 0, 0, 4, &[]).await;
        assert_eq!(reply.error, EPERM);
        let reply = client.call(CMD_TRIM, 0, 0, 4, &[]).await;
        assert_eq!(reply.error, EPERM);
        assert_eq!(server.exports.changes_seen.load(Ordering::SeqCst), 3);
        // The connection goes on: reads still work.
        assert_eq!(client.read(0, 4).await, vec![0; 4]);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Negotiation

#[tokio::test]
async fn info_reports_export_block_sizes_and_what_was_asked() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", MIB), ("disk1", 4096)])).await;
        let mut client = Client::connect(server.addr).await;

        let replies = client
            .info(OPT_INFO, "disk0", &[INFO_NAME, INFO_DESCRIPTION])
            .await;
        assert_eq!(replies.last().unwrap().0, REP_ACK);
        let export = info_payload(&replies, INFO_EXPORT).expect("NBD_INFO_EXPORT");
        assert_eq!(export[..8], (MIB as u64).to_be_bytes());
        assert_eq!(export[8..], TRANSMISSION_FLAGS.to_be_bytes());
        let sizes = info_payload(&replies, INFO_BLOCK_SIZE).expect("NBD_INFO_BLOCK_SIZE");
        assert_eq!(
            sizes,
            [
                [0, 0, 0, 1],
                4096u32.to_be_bytes(),
                (32u32 << 20).to_be_bytes()
            ]
            .concat()
        );
        assert_eq!(
            info_payload(&replies, INFO_NAME).as_deref(),
            Some(&b"disk0"[..])
        );
        assert!(info_payload(&replies, INFO_DESCRIPTION).is_some());

        // Not asked: no name, but the block sizes still come.
        let replies = client.info(OPT_INFO, "disk1", &[]).await;
        assert_eq!(replies.last().unwrap().0, REP_ACK);
        assert_eq!(info_payload(&replies, INFO_NAME), None);
        assert!(info_payload(&replies, INFO_BLOCK_SIZE).is_some());
        let export = info_payload(&replies, INFO_EXPORT).unwrap();
        assert_eq!(export[..8], 4096u64.to_be_bytes());

        // INFO did not end negotiation: GO still works, then transmission.
        let replies = client.info(OPT_GO, "disk1", &[]).await;
        assert_eq!(replies.last().unwrap().0, REP_ACK);
        assert_eq!(client.read(0, 16).await, vec![0; 16]);
    })
    .await;
}

#[tokio::test]
async fn list_unknown_exports_unsupported_options_and_abort() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", MIB), ("disk1", 4096)])).await;
        let mut client = Client::connect(server.addr).await;

        client.send_option(OPT_LIST, &[]).await;
        assert_eq!(
            client.option_reply(OPT_LIST).await,
            (REP_SERVER, encode_rep_server("disk0"))
        );
        assert_eq!(
            client.option_reply(OPT_LIST).await,
            (REP_SERVER, encode_rep_server("disk1"))
        );
        assert_eq!(client.option_reply(OPT_LIST).await, (REP_ACK, vec![]));
        assert_eq!(client.simple_option(OPT_LIST, b"x").await, REP_ERR_INVALID);

        for option in [
            OPT_STRUCTURED_REPLY,
            OPT_STARTTLS,
            OPT_LIST_META_CONTEXT,
            OPT_SET_META_CONTEXT,
            4,
            0xdead,
        ] {
            assert_eq!(
                client.simple_option(option, &[]).await,
                REP_ERR_UNSUP,
                "option {option}"
            );
        }
        for (option, name) in [
            (OPT_INFO, "nope"),
            (OPT_GO, "nope"),
            (OPT_INFO, ""),
            (OPT_GO, ""),
        ] {
            let replies = client.info(option, name, &[]).await;
            assert_eq!(replies.len(), 1);
            assert_eq!(replies[0].0, REP_ERR_UNKNOWN, "option {option} {name:?}");
        }
        assert_eq!(
            client.simple_option(OPT_GO, &[0, 0, 0, 9, b'x']).await,
            REP_ERR_INVALID
        );
        assert_eq!(
            client
                .simple_option(OPT_INFO, &[0, 0, 0, 1, 0xff, 0, 0])
                .await,
            REP_ERR_INVALID
        );

        // Too much option data is skipped and refused; negotiation goes on.
        let big = vec![7; OPTION_DATA_MAX as usize + 1];
        assert_eq!(client.simple_option(OPT_GO, &big).await, REP_ERR_TOO_BIG);

        assert_eq!(client.simple_option(OPT_ABORT, &[]).await, REP_ACK);
        assert!(client.closed().await);
    })
    .await;
}

#[tokio::test]
async fn export_name_honours_no_zeroes() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 8192)])).await;
        for (flags, padding) in [
            (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 0),
            (FLAG_C_FIXED_NEWSTYLE, 124),
            (0, 124),
        ] {
            let mut client = Client::connect_with(server.addr, flags).await;
            client.send_option(OPT_EXPORT_NAME, b"disk0").await;
            assert_eq!(client.stream.read_u64().await.unwrap(), 8192);
            assert_eq!(client.stream.read_u16().await.unwrap(), TRANSMISSION_FLAGS);
            let mut zeroes = vec![1; padding];
            client.stream.read_exact(&mut zeroes).await.unwrap();
            assert_eq!(zeroes, vec![0; padding]);
            // The next bytes are a reply, not padding.
            assert_eq!(client.read(8000, 192).await, vec![0; 192], "flags {flags}");
        }
    })
    .await;
}

#[tokio::test]
async fn export_name_of_an_unknown_export_closes_the_connection() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 8192)])).await;
        let mut client = Client::connect(server.addr).await;
        client.send_option(OPT_EXPORT_NAME, b"nope").await;
        assert!(client.closed().await);
        Client::open(server.addr, "disk0").await.read(0, 1).await;
    })
    .await;
}

#[tokio::test]
async fn garbage_during_the_handshake_closes_only_that_connection() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 8192)])).await;

        // An HTTP client: "GET " read as client flags has unknown bits.
        let mut http = TcpStream::connect(server.addr).await.unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut greeting = [0; GREETING_LEN];
        http.read_exact(&mut greeting).await.unwrap();
        let mut client = Client {
            stream: http,
            reads: HashMap::new(),
        };
        assert!(client.closed().await);

        // Good flags, then an option header with a bad magic.
        let mut client = Client::connect(server.addr).await;
        client.stream.write_all(&[0x55; 40]).await.unwrap();
        assert!(client.closed().await);

        // A client that leaves mid-greeting.
        drop(TcpStream::connect(server.addr).await.unwrap());

        let mut client = Client::open(server.addr, "disk0").await;
        assert_eq!(client.write(10, b"still here").await, 0);
        assert_eq!(client.read(10, 10).await, b"still here");
    })
    .await;
}

#[tokio::test]
async fn serve_connection_says_how_each_connection_ended() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let exports = Arc::new(MemExports::new(&[("disk0", 4096)]));
        let ended = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..4 {
                let (stream, _) = listener.accept().await.unwrap();
                results.push(serve_connection(stream, exports.clone()).await);
            }
            results
        });
        let mut client = Client::connect(addr).await;
        assert_eq!(client.simple_option(OPT_ABORT, &[]).await, REP_ACK);
        assert!(client.closed().await);
        let mut client = Client::open(addr, "disk0").await;
        client.send(CMD_DISC, 0, 1, 0, 0, &[]).await;
        assert!(client.closed().await);
        let mut client = Client::open(addr, "disk0").await;
        client
            .stream
            .write_all(&[0; REQUEST_HEADER_LEN])
            .await
            .unwrap();
        assert!(client.closed().await);
        let mut client = Client::connect_with(addr, 1 << 7).await;
        assert!(client.closed().await);

        let results = ended.await.unwrap();
        assert!(matches!(results[0], Ok(())), "{:?}", results[0]);
        assert!(matches!(results[1], Ok(())), "{:?}", results[1]);
        assert!(
            matches!(
                results[2],
                Err(NbdError::Protocol(ProtocolError::RequestMagic(0)))
            ),
            "{:?}",
            results[2]
        );
        assert!(
            matches!(results[3], Err(NbdError::ClientFlags(0x80))),
            "{:?}",
            results[3]
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Commands

#[tokio::test]
async fn writes_read_back_at_unaligned_offsets() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", MIB)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        let data = pattern(10_000, 1);
        assert_eq!(client.write(4097, &data).await, 0);
        assert_eq!(
            client
                .call(CMD_WRITE, CMD_FLAG_FUA, 70_001, 3, b"abc")
                .await
                .error,
            0
        );
        assert_eq!(client.read(4097, 10_000).await, data);
        assert_eq!(client.read(4000, 200).await[97..], data[..103]);
        assert_eq!(client.read(70_000, 5).await, b"\0abc\0");
        // FUA is accepted on every command once advertised.
        assert_eq!(
            client
                .call(CMD_READ, CMD_FLAG_FUA, 70_001, 3, &[])
                .await
                .data,
            b"abc"
        );
        assert_eq!(
            client.call(CMD_FLUSH, CMD_FLAG_FUA, 0, 0, &[]).await.error,
            0
        );
        let stored = server.exports.bytes("disk0");
        assert_eq!(stored[4097..14_097], data[..]);
    })
    .await;
}

#[tokio::test]
async fn trim_and_write_zeroes_read_as_zeros() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 16384)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        assert_eq!(client.write(0, &[0xaa; 16384]).await, 0);
        assert_eq!(client.call(CMD_TRIM, 0, 100, 1000, &[]).await.error, 0);
        assert_eq!(
            client
                .call(CMD_TRIM, CMD_FLAG_FUA, 3000, 1, &[])
                .await
                .error,
            0
        );
        let flags = CMD_FLAG_NO_HOLE | CMD_FLAG_FUA;
        assert_eq!(
            client
                .call(CMD_WRITE_ZEROES, flags, 5000, 4096, &[])
                .await
                .error,
            0
        );
        let mut expected = vec![0xaa; 16384];
        expected[100..1100].fill(0);
        expected[3000] = 0;
        expected[5000..9096].fill(0);
        assert_eq!(client.read(0, 16384).await, expected);
    })
    .await;
}

#[tokio::test]
async fn out_of_range_is_refused_and_the_connection_keeps_serving() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 4096)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        assert_eq!(client.write(4000, &[1; 200]).await, ENOSPC);
        assert_eq!(client.call(CMD_READ, 0, 4000, 200, &[]).await.error, EINVAL);
        assert_eq!(
            client.call(CMD_WRITE_ZEROES, 0, 4096, 1, &[]).await.error,
            ENOSPC
        );
        assert_eq!(client.call(CMD_TRIM, 0, 1, 4096, &[]).await.error, EINVAL);
        // offset + length overflows u64.
        assert_eq!(
            client
                .call(CMD_READ, 0, u64::MAX - 10, 100, &[])
                .await
                .error,
            EINVAL
        );
        assert_eq!(client.write(u64::MAX, &[1]).await, ENOSPC);
        // Longer than the advertised maximum block size (TRIM is not bound by it).
        assert_eq!(
            client
                .call(CMD_READ, 0, 0, BLOCK_SIZE_MAX + 1, &[])
                .await
                .error,
            EINVAL
        );
        assert_eq!(
            client
                .call(CMD_WRITE_ZEROES, 0, 0, BLOCK_SIZE_MAX + 1, &[])
                .await
                .error,
            EINVAL
        );
        assert_eq!(
            client
                .call(CMD_TRIM, 0, 0, BLOCK_SIZE_MAX + 1, &[])
                .await
                .error,
            EINVAL
        );
        // Nothing was written, and the connection still serves.
        assert_eq!(client.read(3990, 106).await, vec![0; 106]);
        assert_eq!(client.write(4095, &[9]).await, 0);
        assert_eq!(client.read(4095, 1).await, [9]);
    })
    .await;
}

#[tokio::test]
async fn oversized_write_payload_is_skipped_and_refused() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 64 * MIB)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        let big = vec![0x11; BLOCK_SIZE_MAX as usize + 1];
        assert_eq!(client.write(0, &big).await, EINVAL);
        // Refused writes with bad flags also have their payload skipped.
        assert_eq!(
            client
                .call(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 4, b"nope")
                .await
                .error,
            EINVAL
        );
        assert_eq!(client.read(0, 8).await, vec![0; 8]);
        assert_eq!(client.write(0, b"ok").await, 0);
        assert_eq!(client.read(0, 2).await, b"ok");
    })
    .await;
}

#[tokio::test]
async fn zero_length_requests_succeed_and_touch_nothing() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 4096)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        for command in [CMD_READ, CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
            let reply = client.call(command, 0, 100, 0, &[]).await;
            assert_eq!((reply.error, reply.data.len()), (0, 0), "command {command}");
            // At the very end is still in range; past it is not.
            assert_eq!(
                client.call(command, 0, 4096, 0, &[]).await.error,
                0,
                "command {command}"
            );
            assert_ne!(
                client.call(command, 0, 4097, 0, &[]).await.error,
                0,
                "command {command}"
            );
        }
        assert_eq!(client.write(0, b"x").await, 0);
        assert_eq!(client.read(0, 1).await, b"x");
    })
    .await;
}

#[tokio::test]
async fn unknown_commands_and_flags_are_einval_and_serving_goes_on() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 4096)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        for command in [CMD_CACHE, CMD_BLOCK_STATUS, 8, 99, u16::MAX] {
            assert_eq!(
                client.call(command, 0, 0, 512, &[]).await.error,
                EINVAL,
                "command {command}"
            );
        }
        assert_eq!(
            client.call(CMD_READ, CMD_FLAG_DF, 0, 512, &[]).await.error,
            EINVAL
        );
        assert_eq!(
            client.call(CMD_READ, 1 << 15, 0, 512, &[]).await.error,
            EINVAL
        );
        assert_eq!(
            client
                .call(CMD_TRIM, CMD_FLAG_NO_HOLE, 0, 512, &[])
                .await
                .error,
            EINVAL
        );
        assert_eq!(
            client
                .call(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512, &[])
                .await
                .error,
            EINVAL
        );
        assert_eq!(client.call(CMD_FLUSH, 0, 0, 512, &[]).await.error, EINVAL);
        assert_eq!(client.write(7, b"fine").await, 0);
        assert_eq!(client.read(7, 4).await, b"fine");
    })
    .await;
}

#[tokio::test]
async fn bad_request_magic_closes_only_that_connection() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 4096)])).await;
        let mut bad = Client::open(server.addr, "disk0").await;
        let mut good = Client::open(server.addr, "disk0").await;
        assert_eq!(bad.write(0, b"before").await, 0);
        bad.stream
            .write_all(&[0xab; REQUEST_HEADER_LEN])
            .await
            .unwrap();
        assert!(bad.closed().await);
        assert_eq!(good.read(0, 6).await, b"before");
        assert_eq!(good.write(6, b"after").await, 0);
        assert_eq!(
            Client::open(server.addr, "disk0").await.read(0, 11).await,
            b"beforeafter"
        );
    })
    .await;
}

#[tokio::test]
async fn disconnect_answers_requests_in_flight_then_closes() {
    bounded(async {
        let server =
            start(MemExports::new(&[("disk0", 4096)]).slow_writes(Duration::from_millis(200)))
                .await;
        let mut client = Client::open(server.addr, "disk0").await;
        client.send(CMD_WRITE, 0, 1, 0, 5, b"hello").await;
        client.send(CMD_DISC, 0, 2, 0, 0, &[]).await;
        let reply = client.recv().await;
        assert_eq!((reply.handle, reply.error), (1, 0));
        assert!(client.closed().await);
        assert_eq!(server.exports.bytes("disk0")[..5], *b"hello");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_abandons_its_writes_in_flight() {
    bounded(async {
        let server =
            start(MemExports::new(&[("disk0", 4096)]).slow_writes(Duration::from_millis(300)))
                .await;
        let mut client = Client::open(server.addr, "disk0").await;
        client.send(CMD_WRITE, 0, 1, 0, 5, b"stale").await;
        // The client goes away without NBD_CMD_DISC while the write waits
        // (for a leader, say); it may be rewriting the block elsewhere.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(client);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            server.exports.bytes("disk0")[..5],
            [0; 5],
            "a write left by a dropped connection must not land later"
        );
        // The server still serves others.
        let mut other = Client::open(server.addr, "disk0").await;
        assert_eq!(other.write(0, b"fresh").await, 0);
        assert_eq!(other.read(0, 5).await, b"fresh");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Concurrency and ordering

#[tokio::test]
async fn a_read_does_not_wait_for_a_slow_write_it_does_not_overlap() {
    bounded(async {
        let server =
            start(MemExports::new(&[("disk0", 2 * MIB)]).slow_writes(Duration::from_millis(300)))
                .await;
        let mut client = Client::open(server.addr, "disk0").await;
        client.send(CMD_WRITE, 0, 1, 0, 4096, &[7; 4096]).await;
        client.send(CMD_READ, 0, 2, MIB as u64, 4096, &[]).await;
        let first = client.recv().await;
        assert_eq!(
            (first.handle, first.error),
            (2, 0),
            "the read replies first"
        );
        let second = client.recv().await;
        assert_eq!((second.handle, second.error), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn a_read_overlapping_a_slow_write_sees_the_write() {
    bounded(async {
        let server =
            start(MemExports::new(&[("disk0", MIB)]).slow_writes(Duration::from_millis(300))).await;
        let mut client = Client::open(server.addr, "disk0").await;
        client.send(CMD_WRITE, 0, 1, 0, 4096, &[0x5a; 4096]).await;
        client.send(CMD_READ, 0, 2, 4000, 200, &[]).await;
        // A trim overlapping the read but not the write waits for the read.
        client.send(CMD_TRIM, 0, 3, 4100, 100, &[]).await;
        let replies = [
            client.recv().await,
            client.recv().await,
            client.recv().await,
        ];
        assert_eq!(
            replies
                .iter()
                .map(|r| (r.handle, r.error))
                .collect::<Vec<_>>(),
            [(1, 0), (2, 0), (3, 0)]
        );
        let mut expected = vec![0x5a; 96];
        expected.resize(200, 0);
        assert_eq!(replies[1].data, expected);
    })
    .await;
}

#[tokio::test]
async fn flush_replies_after_every_earlier_write() {
    bounded(async {
        let server =
            start(MemExports::new(&[("disk0", MIB)]).slow_writes(Duration::from_millis(200))).await;
        let mut client = Client::open(server.addr, "disk0").await;
        client.send(CMD_WRITE, 0, 1, 0, 512, &[1; 512]).await;
        client.send(CMD_WRITE, 0, 2, 8192, 512, &[2; 512]).await;
        client.send(CMD_FLUSH, 0, 3, 0, 0, &[]).await;
        client.send(CMD_READ, 0, 4, 65536, 512, &[]).await;
        let mut order = Vec::new();
        for _ in 0..4 {
            let reply = client.recv().await;
            assert_eq!(reply.error, 0);
            order.push(reply.handle);
        }
        assert_eq!(order[0], 4, "the unrelated read does not wait: {order:?}");
        assert_eq!(order[3], 3, "the flush comes after both writes: {order:?}");
    })
    .await;
}

#[tokio::test]
async fn many_requests_in_flight_are_bounded_and_all_answered() {
    bounded(async {
        let server =
            start(MemExports::new(&[("disk0", MIB)]).slow_writes(Duration::from_millis(50))).await;
        let client = Client::open(server.addr, "disk0").await;
        let (mut input, mut output) = client.stream.into_split();
        const COUNT: u64 = 400;
        let sender = tokio::spawn(async move {
            for handle in 0..COUNT {
                let header = RequestHeader {
                    flags: 0,
                    command: CMD_WRITE,
                    handle,
                    offset: handle * 512,
                    length: 512,
                };
                output.write_all(&header.encode()).await.unwrap();
                output.write_all(&[handle as u8; 512]).await.unwrap();
            }
            output
        });
        let mut answered = vec![false; COUNT as usize];
        for _ in 0..COUNT {
            let mut raw = [0; SIMPLE_REPLY_LEN];
            input.read_exact(&mut raw).await.unwrap();
            let handle = u64::from_be_bytes(raw[8..].try_into().unwrap());
            assert_eq!(
                raw[..8],
                encode_simple_reply(0, handle)[..8],
                "handle {handle}"
            );
            assert!(
                !std::mem::replace(&mut answered[handle as usize], true),
                "handle {handle} twice"
            );
        }
        let _output = sender.await.unwrap();
        let active_max = server.exports.writes_active_max.load(Ordering::SeqCst);
        assert!(
            active_max <= REQUESTS_INFLIGHT_MAX,
            "{active_max} writes at once"
        );
        assert!(active_max > 1, "writes ran one at a time");
        let stored = server.exports.bytes("disk0");
        for handle in 0..COUNT as usize {
            assert!(
                stored[handle * 512..][..512]
                    .iter()
                    .all(|&b| b == handle as u8),
                "handle {handle}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    bounded(async {
        let mut server = start(MemExports::new(&[("disk0", 4096)])).await;
        let mut client = Client::open(server.addr, "disk0").await;
        assert_eq!(client.write(0, b"x").await, 0);
        let mut negotiating = Client::connect(server.addr).await;
        server.stop.take().unwrap().send(()).unwrap();
        (&mut server.task).await.unwrap();
        assert!(client.closed().await);
        assert!(negotiating.closed().await);
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "still accepting"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Real clients (libnbd's tools, Debian package libnbd-bin)

/// Runs an installed tool with a deadline and returns its stdout; fails the
/// test, saying what to install, if the tool is missing.
async fn run_tool(program: &str, args: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let spawned = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed; this test needs it (Debian/Ubuntu: apt-get install libnbd-bin)")
        }
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{program} {}` did not finish in time", args.join(" "));
        }
        // The server runs on this runtime too: wait without blocking it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "`{program} {}` failed ({status}):\n{stdout}\n{stderr}",
        args.join(" ")
    );
    stdout
}

#[tokio::test]
async fn nbdinfo_reports_size_and_lists_exports() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 3 * MIB), ("disk1", 4096)])).await;
        let uri = format!("nbd://{}/disk0", server.addr);
        let size = run_tool("nbdinfo", &["--size".into(), uri.clone()]).await;
        assert_eq!(size.trim(), (3 * MIB).to_string());
        let info = run_tool("nbdinfo", &[uri]).await;
        assert!(
            info.contains(&format!("export-size: {}", 3 * MIB)),
            "{info}"
        );
        assert!(info.contains("can_multi_conn: true"), "{info}");
        let list = run_tool(
            "nbdinfo",
            &["--list".into(), format!("nbd://{}", server.addr)],
        )
        .await;
        assert!(list.contains("disk0") && list.contains("disk1"), "{list}");
    })
    .await;
}

#[tokio::test]
async fn nbdcopy_round_trips_four_mib() {
    bounded(async {
        let server = start(MemExports::new(&[("disk0", 4 * MIB)])).await;
        let dir = tempfile::tempdir().unwrap();
        let (source, copy) = (dir.path().join("source.img"), dir.path().join("copy.img"));
        let data = pattern(4 * MIB, 0x9e37_79b9_7f4a_7c15);
        std::fs::write(&source, &data).unwrap();
        let uri = format!("nbd://{}/disk0", server.addr);
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();

        run_tool("nbdcopy", &["--flush".into(), path(&source), uri.clone()]).await;
        assert!(
            server.exports.bytes("disk0") == data,
            "the volume differs from the source"
        );
        run_tool("nbdcopy", &[uri, path(&copy)]).await;
        assert!(
            std::fs::read(&copy).unwrap() == data,
            "the copy differs from the source"
        );
    })
    .await;
}
