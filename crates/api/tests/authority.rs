//! `AuthorityFix` between HTTP/2 clients and the `h2` server: requests with
//! a URL as `:authority` (as etcdctl 3.4 sends them) are served, requests
//! from an ordinary client keep every header, and bytes that are not a
//! well-formed HTTP/2 header block pass unchanged.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use ferrite_api::authority::{AuthorityFix, Rewriter, HEADER_BLOCK_BYTES_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const TIMEOUT: Duration = Duration::from_secs(10);

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// What the server saw of each request: its authority and `x-*` headers.
type Seen = Vec<(String, Vec<(String, String)>)>;

/// An `h2` server on `io` answering 200 to every request, until the client
/// goes; returns what it saw.
async fn serve(io: DuplexStream, fix: bool) -> Seen {
    let mut seen = Vec::new();
    let conn = if fix {
        h2::server::handshake(Box::new(AuthorityFix::new(io)) as Box<dyn Io>).await
    } else {
        h2::server::handshake(Box::new(io) as Box<dyn Io>).await
    };
    let Ok(mut conn) = conn else {
        return seen;
    };
    while let Some(accepted) = conn.accept().await {
        let Ok((req, mut respond)) = accepted else {
            break;
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let headers = req
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-"))
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        seen.push((authority, headers));
        let _ = respond.send_response(http::Response::new(()), true);
    }
    seen
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The frames of the server's answers, read until `streams` HEADERS or
/// RST_STREAM frames came (or the connection closed): (kind, stream).
async fn answers(client: &mut DuplexStream, streams: usize) -> Vec<(u8, u32)> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let done = |got: &Vec<(u8, u32)>| got.iter().filter(|(k, _)| *k == 0x1 || *k == 0x3).count();
    while done(&got) < streams {
        let n = match tokio::time::timeout(TIMEOUT, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
            let kind = buf[3];
            if kind == 0x4 && buf[4] & 0x1 == 0 {
                // Acknowledge the server's SETTINGS, as a client must.
                let mut ack = BytesMut::new();
                frame(&mut ack, 0x4, 0x1, 0, &[]);
                let _ = client.write_all(&ack).await;
            }
            got.push((kind, stream));
            buf.drain(..9 + len);
        }
    }
    got
}

/// Requests as etcdctl 3.4 sends them to `--endpoints=http://127.0.0.1:2379`:
/// `:authority` is the URL. HPACK with indexing (the dynamic table is used
/// across requests), padded and prioritized HEADERS, and a block split over
/// CONTINUATION frames.
fn etcdctl_like_requests() -> BytesMut {
    let mut enc = loona_hpack::Encoder::new();
    let mut out = BytesMut::from(PREFACE);
    frame(&mut out, 0x4, 0, 0, &[]);
    let headers = |n: u32| -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/etcdserverpb.Maintenance/Status".to_vec(),
            ),
            (b":authority".to_vec(), b"http://127.0.0.1:2379".to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
            (b"x-request".to_vec(), format!("{n}").into_bytes()),
            (b"x-same".to_vec(), b"indexed after the first".to_vec()),
        ]
    };
    let encode = |enc: &mut loona_hpack::Encoder, n: u32| {
        let h = headers(n);
        enc.encode(h.iter().map(|(a, b)| (&a[..], &b[..])))
    };
    // Stream 1: plain HEADERS.
    let block = encode(&mut enc, 1);
    frame(&mut out, 0x1, 0x4 | 0x1, 1, &block);
    // Stream 3: padded and with priority.
    let block = encode(&mut enc, 3);
    let mut payload = vec![7u8];
    payload.extend_from_slice(&[0, 0, 0, 0, 15]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 7]);
    frame(&mut out, 0x1, 0x4 | 0x1 | 0x8 | 0x20, 3, &payload);
    // Stream 5: split into HEADERS and two CONTINUATION frames.
    let block = encode(&mut enc, 5);
    let (a, rest) = block.split_at(3);
    let (b, c) = rest.split_at(rest.len() / 2);
    frame(&mut out, 0x1, 0x1, 5, a);
    frame(&mut out, 0x9, 0, 5, b);
    frame(&mut out, 0x9, 0x4, 5, c);
    out
}

#[tokio::test]
async fn a_url_as_authority_is_served_as_host_and_port() {
    let (mut client, server_io) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve(server_io, true));
    client
        .write_all(&etcdctl_like_requests())
        .await
        .expect("send");
    let got = answers(&mut client, 3).await;
    let headers: Vec<u32> = got.iter().filter(|(k, _)| *k == 0x1).map(|f| f.1).collect();
    assert_eq!(headers, vec![1, 3, 5], "frames from the server: {got:?}");
    drop(client);
    let seen = tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("the server ends")
        .expect("the server task");
    assert_eq!(seen.len(), 3, "{seen:?}");
    for ((authority, headers), n) in seen.iter().zip([1, 3, 5]) {
        assert_eq!(authority, "127.0.0.1:2379");
        assert_eq!(
            headers,
            &vec![
                ("x-request".to_string(), n.to_string()),
                ("x-same".to_string(), "indexed after the first".to_string())
            ]
        );
    }
}

/// The same bytes without the wrapper: h2 refuses each stream (the bug this
/// fixes, and proof that the test above can fail).
#[tokio::test]
async fn without_the_fix_h2_refuses_a_url_as_authority() {
    let (mut client, server_io) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve(server_io, false));
    client
        .write_all(&etcdctl_like_requests())
        .await
        .expect("send");
    let got = answers(&mut client, 3).await;
    let resets: Vec<u32> = got.iter().filter(|(k, _)| *k == 0x3).map(|f| f.1).collect();
    assert_eq!(resets, vec![1, 3, 5], "frames from the server: {got:?}");
    drop(client);
    let seen = tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("the server ends")
        .expect("the server task");
    assert!(seen.is_empty(), "{seen:?}");
}

/// An ordinary client (h2's own, with Huffman coding and its dynamic
/// table) through the wrapper: every header arrives as sent, over many
/// requests, including header blocks larger than one frame.
#[tokio::test]
async fn an_ordinary_client_keeps_every_header() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve(server_io, true));
    let (mut client, conn) = h2::client::handshake(client_io).await.expect("handshake");
    let driver = tokio::spawn(conn);
    let big = "v".repeat(40_000);
    for n in 0..40u32 {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://example.test:2379/svc/Method")
            .header("x-n", n.to_string())
            .header("x-same", "same");
        if n % 10 == 3 {
            req = req.header("x-big", big.as_str());
        }
        let req = req.body(()).expect("request");
        client = client.ready().await.expect("ready");
        let (resp, _) = client.send_request(req, true).expect("send");
        let resp = tokio::time::timeout(TIMEOUT, resp)
            .await
            .expect("answered in time")
            .expect("response");
        assert_eq!(resp.status(), 200);
    }
    drop(client);
    driver.abort();
    let seen = tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("the server ends")
        .expect("the server task");
    assert_eq!(seen.len(), 40);
    for (n, (authority, headers)) in seen.iter().enumerate() {
        assert_eq!(authority, "example.test:2379");
        let mut want = vec![
            ("x-n".to_string(), n.to_string()),
            ("x-same".to_string(), "same".to_string()),
        ];
        if n % 10 == 3 {
            want.push(("x-big".to_string(), big.clone()));
        }
        let mut got = headers.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "request {n}");
    }
}

/// A tiny deterministic generator for the garbage tests.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Feeds `bytes` to a rewriter in pieces of random sizes; returns what came
/// out (with the undecided rest passed on, as at the end of a connection).
fn feed(bytes: &[u8], rng: &mut Prng) -> (Vec<u8>, Rewriter) {
    let mut r = Rewriter::default();
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = (1 + rng.below(64)).min(bytes.len() - at);
        input.extend_from_slice(&bytes[at..at + n]);
        at += n;
        r.process(&mut input, &mut output);
        assert!(
            input.len() <= HEADER_BLOCK_BYTES_MAX + 64,
            "undecided bytes grow: {}",
            input.len()
        );
    }
    r.finish(&mut output);
    output.extend_from_slice(&input);
    (output.to_vec(), r)
}

#[test]
fn other_frames_pass_byte_for_byte() {
    let mut bytes = BytesMut::from(PREFACE);
    frame(&mut bytes, 0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    frame(&mut bytes, 0x0, 0x1, 1, &[42; 1000]);
    frame(&mut bytes, 0x8, 0, 0, &[0, 0, 1, 0]);
    frame(&mut bytes, 0x6, 0, 0, b"pingping");
    frame(&mut bytes, 0x3, 0, 1, &[0, 0, 0, 8]);
    for seed in 1..50 {
        let (out, r) = feed(&bytes, &mut Prng(seed));
        assert_eq!(out, bytes.to_vec(), "seed {seed}");
        assert!(!r.is_passthrough(), "seed {seed}");
    }
}

#[test]
fn not_http2_passes_unchanged() {
    let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n".to_vec();
    let (out, r) = feed(&request, &mut Prng(7));
    assert_eq!(out, request);
    assert!(r.is_passthrough());
}

#[test]
fn a_block_that_does_not_decode_passes_unchanged() {
    let mut bytes = BytesMut::from(PREFACE);
    // Index 200 is in neither table.
    let mut block = BytesMut::new();
    frame(&mut block, 0x1, 0x5, 1, &[0x80 | 0x7f, 200 - 127]);
    bytes.extend_from_slice(&block);
    frame(&mut bytes, 0x0, 0x1, 1, b"after");
    let (out, r) = feed(&bytes, &mut Prng(3));
    assert_eq!(out, bytes.to_vec());
    assert!(r.is_passthrough());
    assert_eq!(r.rewritten(), 0);
}

#[test]
fn an_oversized_block_passes_unchanged() {
    let mut bytes = BytesMut::from(PREFACE);
    // A HEADERS frame without END_HEADERS followed by CONTINUATION frames
    // past the limit: no more than the limit is ever held.
    frame(&mut bytes, 0x1, 0x0, 1, &[0x82; 16_000]);
    for _ in 0..(HEADER_BLOCK_BYTES_MAX / 16_000 + 2) {
        frame(&mut bytes, 0x9, 0x0, 1, &[0x82; 16_000]);
    }
    let (out, r) = feed(&bytes, &mut Prng(5));
    assert_eq!(out, bytes.to_vec());
    assert!(r.is_passthrough());
}

/// Random frames after a real preface, and random bytes: no panic, nothing
/// lost or invented when the rewriter gives up, bounded buffering (`feed`).
#[test]
fn garbage_never_panics() {
    let mut rng = Prng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut bytes = BytesMut::from(PREFACE);
        for _ in 0..rng.below(12) {
            let kind = [0x0, 0x1, 0x1, 0x1, 0x9, 0x4, 0x5, 0x8, 0xff][rng.below(9)];
            let flags = rng.next() as u8;
            let len = rng.below(200);
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            frame(&mut bytes, kind, flags, rng.below(4) as u32, &payload);
        }
        if round % 3 == 0 {
            // A torn tail.
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        let (out, r) = feed(&bytes, &mut rng);
        if r.rewritten() == 0 {
            assert_eq!(out, bytes.to_vec(), "round {round}");
        }
    }
    for _ in 0..100 {
        let len = rng.below(4096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let (out, _) = feed(&bytes, &mut rng);
        assert_eq!(out, bytes);
    }
}

/// A header block of literals without indexing.
fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

#[test]
fn a_connection_whose_first_request_needs_no_fix_passes_untouched() {
    let mut bytes = BytesMut::from(PREFACE);
    let clean = literal_block(&[
        (":method", "POST"),
        (":authority", "127.0.0.1:2379"),
        (":path", "/etcdserverpb.KV/Put"),
    ]);
    frame(&mut bytes, 0x1, 0x4, 1, &clean);
    frame(&mut bytes, 0x0, 0x1, 1, b"body");
    // A later block is not looked at any more, whatever it holds.
    let url = literal_block(&[(":authority", "http://127.0.0.1:2379")]);
    frame(&mut bytes, 0x1, 0x4, 3, &url);
    for seed in 1..20 {
        let (out, r) = feed(&bytes, &mut Prng(seed));
        assert_eq!(out, bytes.to_vec(), "seed {seed}");
        assert!(r.is_passthrough(), "seed {seed}");
        assert_eq!(r.rewritten(), 0);
    }
    // A first request with a URL is rewritten, and so is the rest.
    let mut bytes = BytesMut::from(PREFACE);
    frame(&mut bytes, 0x1, 0x4, 1, &url);
    frame(&mut bytes, 0x1, 0x4, 3, &clean);
    let (out, r) = feed(&bytes, &mut Prng(3));
    assert_ne!(out, bytes.to_vec());
    assert!(!r.is_passthrough());
    assert_eq!(r.rewritten(), 2);
}
