//! HTTP/2 `:authority` as etcd's server accepts it.
//!
//! etcdctl 3.4 (grpc-go of its day) puts an endpoint written as a URL,
//! `http://127.0.0.1:2379`, verbatim into the `:authority` pseudo-header:
//! `etcdctl --endpoints=http://... endpoint status`, `endpoint hashkv`,
//! `defrag`, `move-leader` and every `--cluster` command that dials the
//! client URLs of the member list. Go's HTTP/2 server takes it; the `h2`
//! crate under hyper and tonic refuses such a request with PROTOCOL_ERROR,
//! because `http::uri::Authority` cannot hold a scheme, and has no switch to
//! relax that.
//!
//! [`AuthorityFix`] sits between an accepted connection and the HTTP server.
//! On an HTTP/2 connection (one that opens with the client preface) it reads
//! the client's frames, and rewrites every header block (HEADERS and its
//! CONTINUATION frames): HPACK-decoded with the client's dynamic table, the
//! `:authority` value cut to its `host:port` part (without `scheme://` and
//! without a path), and re-encoded as literals without indexing, so that the
//! server's HPACK table stays empty and never disagrees with the client's.
//! Every other frame passes byte for byte. Whatever does not parse (another
//! protocol, HTTP/1.1, a malformed frame, a block that does not decode, a
//! block larger than `HEADER_BLOCK_BYTES_MAX`) makes the connection pass
//! through unchanged from there on, so the server sees the client's bytes
//! and reports its own error. The server→client direction is never touched.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The largest frame every HTTP/2 peer must accept (the initial
/// SETTINGS_MAX_FRAME_SIZE): rewritten blocks go out in frames this size at
/// most, whatever the server advertised.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;

/// The largest header block (all its frames, as received) rewritten; a larger
/// one passes through and the server judges it. hyper refuses header lists
/// over 16 KiB by default, so this leaves room for any limit it may be given.
pub const HEADER_BLOCK_BYTES_MAX: usize = 256 * 1024;

/// The largest decoded header list (RFC 7541 sizes: name + value + 32 per
/// field) rewritten; HPACK can expand a small block many times over through
/// its table, so the decoded size is bounded too.
pub const HEADER_LIST_BYTES_MAX: usize = 256 * 1024;

/// The largest HPACK table size the client may announce. The server
/// advertises 4096 (HPACK's default); a larger announcement is the server's
/// to refuse, and it sees the original bytes then.
const HPACK_TABLE_BYTES_MAX: usize = 64 * 1024;

/// Bytes read from the connection at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The `:authority` value etcd's clients mean: `scheme://host:port/path`
/// becomes `host:port`. None when it needs no change.
pub fn authority_fixed(value: &[u8]) -> Option<&[u8]> {
    let rest = match value.windows(3).position(|w| w == b"://") {
        Some(at) if is_scheme(&value[..at]) => &value[at + 3..],
        _ => value,
    };
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let fixed = &rest[..end];
    (fixed.len() != value.len()).then_some(fixed)
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(text: &[u8]) -> bool {
    text.first().is_some_and(u8::is_ascii_alphabetic)
        && text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
}

/// Where the rewriter is in the client's byte stream.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Before the end of the HTTP/2 client preface.
    Preface,
    /// At a frame boundary, or inside a frame that passes unchanged with
    /// `remaining` payload bytes still to come.
    Frames { remaining: usize },
    /// Not HTTP/2, or something did not parse: everything passes unchanged.
    Passthrough,
}

/// A header block being collected: the HEADERS frame and its CONTINUATION
/// frames so far.
struct Block {
    /// The frames exactly as received (sent on unchanged if the block cannot
    /// be rewritten).
    raw: BytesMut,
    stream_id: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The HEADERS frame's priority fields (stream dependency and weight).
    priority: Option<[u8; 5]>,
    /// The HPACK bytes of the block (padding removed).
    fragment: BytesMut,
}

/// The client→server half of [`AuthorityFix`], without IO: bytes in, bytes
/// out.
pub struct Rewriter {
    mode: Mode,
    block: Option<Block>,
    /// Mirrors the client's HPACK encoder table.
    decoder: loona_hpack::Decoder<'static>,
    /// Header blocks rewritten so far (tests and logs).
    rewritten: u64,
    /// Header blocks seen so far.
    blocks: u64,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES_MAX);
        Rewriter {
            mode: Mode::Preface,
            block: None,
            decoder,
            rewritten: 0,
            blocks: 0,
        }
    }
}

impl Rewriter {
    /// Whether every byte from here on passes unchanged.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.mode, Mode::Passthrough)
    }

    /// Whether part of a header block waits for its end.
    pub fn holds_block(&self) -> bool {
        self.block.is_some()
    }

    /// Header blocks rewritten so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Moves what can be decided from `input` to `output`; what stays in
    /// `input` (an incomplete frame header, or an incomplete header block) is
    /// waiting for more bytes. At end of input the caller passes the rest
    /// on unchanged.
    pub fn process(&mut self, input: &mut BytesMut, output: &mut BytesMut) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    output.extend_from_slice(input);
                    input.clear();
                    return;
                }
                Mode::Preface => {
                    let n = input.len().min(PREFACE.len());
                    if input[..n] != PREFACE[..n] {
                        self.give_up(output, "not an HTTP/2 connection");
                    } else if n < PREFACE.len() {
                        return;
                    } else {
                        output.extend_from_slice(&input.split_to(n));
                        self.mode = Mode::Frames { remaining: 0 };
                    }
                }
                Mode::Frames { remaining } if remaining > 0 => {
                    if input.is_empty() {
                        return;
                    }
                    let n = remaining.min(input.len());
                    output.extend_from_slice(&input.split_to(n));
                    self.mode = Mode::Frames {
                        remaining: remaining - n,
                    };
                }
                Mode::Frames { .. } => {
                    if !self.next_frame(input, output) {
                        return;
                    }
                }
            }
        }
    }

    /// The connection ended: a header block still being collected goes on
    /// as received.
    pub fn finish(&mut self, output: &mut BytesMut) {
        if let Some(block) = self.block.take() {
            output.extend_from_slice(&block.raw);
        }
    }

    /// Handles the frame at the start of `input`; false when more bytes are
    /// needed first.
    fn next_frame(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        if input.len() < FRAME_HEADER_BYTES {
            return false;
        }
        let length =
            usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
        let kind = input[3];
        let flags = input[4];
        let stream_id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        let collected = self.block.as_ref().map_or(0, |b| b.raw.len());
        let in_block = self.block.is_some();
        if in_block
            && (kind != FRAME_CONTINUATION
                || self
                    .block
                    .as_ref()
                    .is_some_and(|b| b.stream_id != stream_id))
        {
            self.give_up(output, "a header block interrupted");
            return true;
        }
        if !in_block && kind != FRAME_HEADERS {
            if kind == FRAME_PUSH_PROMISE || kind == FRAME_CONTINUATION {
                // Not a client's to send (or out of place): the server's
                // HPACK state would no longer be ours to mirror.
                self.give_up(output, "an unexpected header frame");
                return true;
            }
            output.extend_from_slice(&input.split_to(FRAME_HEADER_BYTES));
            self.mode = Mode::Frames { remaining: length };
            return true;
        }
        if collected + FRAME_HEADER_BYTES + length > HEADER_BLOCK_BYTES_MAX {
            self.give_up(output, "a header block over the rewrite limit");
            return true;
        }
        if input.len() < FRAME_HEADER_BYTES + length {
            return false;
        }
        let frame = input.split_to(FRAME_HEADER_BYTES + length);
        let payload = &frame[FRAME_HEADER_BYTES..];
        match &mut self.block {
            Some(block) => {
                block.raw.extend_from_slice(&frame);
                block.fragment.extend_from_slice(payload);
            }
            None => match headers_frame(flags, payload) {
                Some((priority, fragment)) => {
                    self.block = Some(Block {
                        raw: BytesMut::from(&frame[..]),
                        stream_id,
                        end_stream: flags & FLAG_END_STREAM != 0,
                        priority,
                        fragment: BytesMut::from(fragment),
                    });
                }
                None => {
                    output.extend_from_slice(&frame);
                    self.give_up(output, "a malformed HEADERS frame");
                    return true;
                }
            },
        }
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block(output);
        }
        true
    }

    /// The block is complete: sends it on rewritten, or as received if it
    /// does not decode.
    fn finish_block(&mut self, output: &mut BytesMut) {
        let Some(block) = self.block.take() else {
            return;
        };
        let first = self.blocks == 0;
        self.blocks += 1;
        match self.rewrite(&block.fragment) {
            Some((_, false)) if first => {
                // The client's first request names this member as the
                // server wants it, and a client does not change its
                // `:authority` on a connection: nothing on it needs
                // rewriting. The block goes as received, so that the
                // server's HPACK table mirrors the client's from here on,
                // and so does everything after it. Decoding and re-encoding
                // every block cost a sixth of a member's CPU under load.
                output.extend_from_slice(&block.raw);
                self.mode = Mode::Passthrough;
            }
            Some((fragment, _)) => {
                self.rewritten += 1;
                put_header_frames(output, &block, &fragment);
            }
            None => {
                output.extend_from_slice(&block.raw);
                self.give_up(output, "a header block that does not decode");
            }
        }
    }

    /// The block decoded with the client's table and encoded again with
    /// `:authority` fixed, as literals without indexing; None if it does
    /// not decode (or decodes too large).
    /// Also says whether `:authority` changed.
    fn rewrite(&mut self, fragment: &[u8]) -> Option<(Vec<u8>, bool)> {
        let mut out = Vec::with_capacity(fragment.len() * 2);
        // Table size updates stay at the start of the block, as received:
        // the server's decoder may be waiting for one (RFC 7541 §4.2), and
        // judges the values itself.
        out.extend_from_slice(&fragment[..size_updates_len(fragment)]);
        let mut list_bytes = 0usize;
        let mut too_large = false;
        let mut changed = false;
        let decoded = self
            .decoder
            .decode_with_cb(fragment, |name: Cow<[u8]>, value: Cow<[u8]>| {
                list_bytes = list_bytes.saturating_add(name.len() + value.len() + 32);
                if list_bytes > HEADER_LIST_BYTES_MAX {
                    too_large = true;
                    return;
                }
                let value: &[u8] = match &name[..] {
                    b":authority" => match authority_fixed(&value) {
                        Some(fixed) => {
                            changed = true;
                            fixed
                        }
                        None => &value,
                    },
                    _ => &value,
                };
                put_literal(&mut out, &name, value);
            });
        match decoded {
            Ok(()) if !too_large => Some((out, changed)),
            Ok(()) => None,
            Err(e) => {
                tracing::debug!("HTTP/2 header block does not decode: {e}");
                None
            }
        }
    }

    /// Lets everything from here on pass unchanged (the block collected so
    /// far first).
    fn give_up(&mut self, output: &mut BytesMut, why: &str) {
        if let Some(block) = self.block.take() {
            output.extend_from_slice(&block.raw);
        }
        if !matches!(self.mode, Mode::Preface) {
            tracing::debug!("HTTP/2 :authority rewriting stops on this connection: {why}");
        }
        self.mode = Mode::Passthrough;
    }
}

/// A HEADERS frame's priority fields and header block fragment, without
/// padding; None if the padding does not fit.
fn headers_frame(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut padding = 0;
    if flags & FLAG_PADDED != 0 {
        let (&pad, tail) = rest.split_first()?;
        padding = usize::from(pad);
        rest = tail;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let fields: [u8; 5] = rest.get(..5)?.try_into().ok()?;
        priority = Some(fields);
        rest = &rest[5..];
    }
    let end = rest.len().checked_sub(padding)?;
    Some((priority, &rest[..end]))
}

/// The length of the dynamic table size updates at the start of a block.
fn size_updates_len(fragment: &[u8]) -> usize {
    let mut at = 0;
    while fragment.get(at).is_some_and(|b| b & 0xe0 == 0x20) {
        // The integer's continuation bytes have their top bit set.
        at += 1;
        if fragment[at - 1] & 0x1f == 0x1f {
            while fragment.get(at).is_some_and(|b| b & 0x80 != 0) {
                at += 1;
            }
            at += 1;
        }
    }
    at.min(fragment.len())
}

/// HPACK integer with an `prefix_bits` prefix (RFC 7541 §5.1); `first`
/// carries the representation's pattern bits.
fn put_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, with a literal name and no
/// Huffman coding (RFC 7541 §6.2.2).
fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    put_integer(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    put_integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn put_frame_header(out: &mut BytesMut, length: usize, kind: u8, flags: u8, stream_id: u32) {
    debug_assert!(length <= FRAME_PAYLOAD_BYTES_MAX, "length={length}");
    out.put_uint(length as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

/// The rewritten block as a HEADERS frame and as many CONTINUATION frames as
/// it needs, without padding.
fn put_header_frames(out: &mut BytesMut, block: &Block, fragment: &[u8]) {
    let priority_bytes = if block.priority.is_some() { 5 } else { 0 };
    let first = fragment.len().min(FRAME_PAYLOAD_BYTES_MAX - priority_bytes);
    let (head, mut rest) = fragment.split_at(first);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    if let Some(priority) = &block.priority {
        flags |= FLAG_PRIORITY;
        put_frame_header(out, head.len() + 5, FRAME_HEADERS, flags, block.stream_id);
        out.put_slice(priority);
    } else {
        put_frame_header(out, head.len(), FRAME_HEADERS, flags, block.stream_id);
    }
    out.put_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(FRAME_PAYLOAD_BYTES_MAX);
        let (chunk, tail) = rest.split_at(n);
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_header(out, n, FRAME_CONTINUATION, flags, block.stream_id);
        out.put_slice(chunk);
        rest = tail;
    }
}

/// A connection whose HTTP/2 requests reach the server with `:authority`
/// as etcd's clients mean it (see the module header). Writes pass
/// unchanged.
pub struct AuthorityFix<IO> {
    io: IO,
    rewriter: Rewriter,
    /// Read from `io`, not yet decided.
    input: BytesMut,
    /// Ready for the server.
    output: BytesMut,
    /// `io` reached its end.
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    pub fn new(io: IO) -> AuthorityFix<IO> {
        AuthorityFix {
            io,
            rewriter: Rewriter::default(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                if this.input.is_empty() && !this.rewriter.holds_block() {
                    return Poll::Ready(Ok(()));
                }
                // A frame cut short by the end of the connection: the server
                // sees the pieces.
                this.rewriter.finish(&mut this.output);
                this.output.extend_from_slice(&this.input);
                this.input.clear();
                continue;
            }
            if this.rewriter.is_passthrough() && this.input.is_empty() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.input.extend_from_slice(read.filled());
                this.rewriter.process(&mut this.input, &mut this.output);
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_cut_to_host_and_port() {
        let fixed = |v: &str| authority_fixed(v.as_bytes()).map(|f| f.to_vec());
        assert_eq!(
            fixed("http://127.0.0.1:2379"),
            Some(b"127.0.0.1:2379".to_vec())
        );
        assert_eq!(fixed("https://h1:2379/"), Some(b"h1:2379".to_vec()));
        assert_eq!(fixed("unix+grpc://x/y/z"), Some(b"x".to_vec()));
        assert_eq!(fixed("h1:2379/path"), Some(b"h1:2379".to_vec()));
        assert_eq!(fixed("127.0.0.1:2379"), None);
        assert_eq!(fixed("[::1]:2379"), None);
        // Not a scheme: only the path goes.
        assert_eq!(fixed("1http://h:1"), Some(b"1http:".to_vec()));
    }

    #[test]
    fn literals_decode_as_written() {
        let mut block = Vec::new();
        put_literal(&mut block, b":authority", b"h:1");
        put_literal(&mut block, b"x-long", &[b'v'; 300]);
        put_integer(&mut block, 0x20, 5, 0);
        put_literal(&mut block, b"a", b"");
        // A size update after the first field is not ours to keep, but the
        // decoder accepts the block.
        let mut decoder = loona_hpack::Decoder::new();
        let decoded = decoder.decode(&block).expect("decodes");
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1].1.len(), 300);
        assert_eq!(size_updates_len(&block), 0);
        let mut updates = Vec::new();
        put_integer(&mut updates, 0x20, 5, 4096);
        put_integer(&mut updates, 0x20, 5, 7);
        let n = updates.len();
        updates.push(0x82);
        assert_eq!(size_updates_len(&updates), n);
    }
}
