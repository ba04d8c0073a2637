//! The peer wire format: length-prefixed, versioned binary frames. Anything
//! that does not decode is an error for that connection only, never a panic:
//! lengths are bounded before anything is allocated, every enum tag is
//! checked, and trailing bytes are refused.
//!
//! ```text
//! frame   = len:u32 (bytes after this field) | version:u8 | kind:u8 | body
//! ```
//!
//! `read_frame` takes frames off a stream; `decode` parses one frame's body.
//! Both are public for the fuzz targets (`fuzz/`) as well as the transport.

use std::collections::BTreeSet;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrite_raft::{
    AppendResult, Body, Entry, Index, Membership, Message, NodeId, Payload, SnapshotMeta, Term,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::lessor::{LeaseId, LeaseTtl};

/// Bumped on any incompatible change; a peer speaking another version is
/// refused at the first frame.
pub const VERSION: u8 = 1;
/// The largest frame accepted: an append of `append_bytes_max` plus
/// headroom, or a snapshot chunk.
pub const FRAME_BYTES_MAX: usize = 32 << 20;
/// Entries in one append, and members in one configuration: bounds on what a
/// frame may make us allocate.
const ITEMS_MAX: u64 = 1 << 20;
/// What `read_frame` reserves up front for a frame body; beyond it the buffer
/// grows only as bytes arrive.
const READ_RESERVE_BYTES: usize = 64 << 10;

/// Everything one node says to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame on a connection: who is calling, from which cluster.
    Hello {
        cluster_id: u64,
        from: NodeId,
    },
    Raft(Message),
    /// A client request forwarded by a follower to the leader.
    Forward {
        id: u64,
        from: NodeId,
        data: Bytes,
    },
    ForwardReply {
        id: u64,
        result: Result<Bytes, Refusal>,
    },
    /// A forwarded write's reply, with the leader's applied index when it
    /// answered: the follower answers its client only once it has applied
    /// that far itself, so a client that wrote through a member then reads
    /// (or watches) there sees its write, as with etcd.
    ForwardApplied {
        id: u64,
        index: Index,
        reply: Bytes,
    },
    /// A follower asking the leader for a linearizable read point.
    ReadIndex {
        id: u64,
        from: NodeId,
    },
    ReadIndexReply {
        id: u64,
        result: Result<Index, Refusal>,
    },
    /// A follower asking the leader to renew a lease (`renew`), or only to
    /// say its time to live.
    LeaseRenew {
        id: u64,
        from: NodeId,
        lease: LeaseId,
        renew: bool,
    },
    LeaseRenewReply {
        id: u64,
        result: Result<LeaseTtl, Refusal>,
    },
}

/// Why a forwarded request or read was refused: the follower turns it into
/// the same error its own client would have got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotLeader {
        leader: Option<NodeId>,
    },
    /// Not proposed; retry later (queue full, leader not ready).
    Busy,
    TooLarge,
    /// Proposed, but its log position committed with another leader's
    /// entry: definitely not applied.
    Superseded,
    /// Proposed, and the leader can no longer tell whether it applied (a
    /// snapshot covered it, or the leader is stopping): must not be retried
    /// by the server.
    Unknown,
    /// The lease is unknown or expired (definitely not renewed).
    LeaseNotFound,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("peer speaks protocol version {0}, we speak {VERSION}")]
    Version(u8),
    #[error("truncated frame")]
    Truncated,
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{0} trailing bytes in frame")]
    Trailing(usize),
    #[error("{what} count {count} exceeds the limit")]
    Count { what: &'static str, count: u64 },
}

/// Why `read_frame` could not take a frame off a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed, or ended inside a frame (`UnexpectedEof`).
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Codec(#[from] CodecError),
}

// ---- Encoding --------------------------------------------------------------

/// Encodes `frame` with its length prefix.
pub fn encode(frame: &Frame) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32_le(0);
    b.put_u8(VERSION);
    match frame {
        Frame::Hello { cluster_id, from } => {
            b.put_u8(0);
            b.put_u64_le(*cluster_id);
            b.put_u64_le(from.0);
        }
        Frame::Raft(msg) => {
            b.put_u8(1);
            put_message(&mut b, msg);
        }
        Frame::Forward { id, from, data } => {
            b.put_u8(2);
            b.put_u64_le(*id);
            b.put_u64_le(from.0);
            put_bytes(&mut b, data);
        }
        Frame::ForwardReply { id, result } => {
            b.put_u8(3);
            b.put_u64_le(*id);
            match result {
                Ok(data) => {
                    b.put_u8(0);
                    put_bytes(&mut b, data);
                }
                Err(r) => {
                    b.put_u8(1);
                    put_refusal(&mut b, r);
                }
            }
        }
        Frame::ReadIndex { id, from } => {
            b.put_u8(4);
            b.put_u64_le(*id);
            b.put_u64_le(from.0);
        }
        Frame::ReadIndexReply { id, result } => {
            b.put_u8(5);
            b.put_u64_le(*id);
            match result {
                Ok(index) => {
                    b.put_u8(0);
                    b.put_u64_le(index.0);
                }
                Err(r) => {
                    b.put_u8(1);
                    put_refusal(&mut b, r);
                }
            }
        }
        Frame::LeaseRenew {
            id,
            from,
            lease,
            renew,
        } => {
            b.put_u8(6);
            b.put_u64_le(*id);
            b.put_u64_le(from.0);
            b.put_i64_le(*lease);
            b.put_u8(u8::from(*renew));
        }
        Frame::ForwardApplied { id, index, reply } => {
            b.put_u8(8);
            b.put_u64_le(*id);
            b.put_u64_le(index.0);
            put_bytes(&mut b, reply);
        }
        Frame::LeaseRenewReply { id, result } => {
            b.put_u8(7);
            b.put_u64_le(*id);
            match result {
                Ok(ttl) => {
                    b.put_u8(0);
                    b.put_slice(&ttl.encode());
                }
                Err(r) => {
                    b.put_u8(1);
                    put_refusal(&mut b, r);
                }
            }
        }
    }
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_le_bytes());
    b.freeze()
}

fn put_bytes(b: &mut BytesMut, data: &[u8]) {
    b.put_u32_le(data.len() as u32);
    b.put_slice(data);
}

fn put_refusal(b: &mut BytesMut, r: &Refusal) {
    match r {
        Refusal::NotLeader { leader } => {
            b.put_u8(0);
            b.put_u64_le(leader.map_or(0, |l| l.0));
        }
        Refusal::Busy => b.put_u8(1),
        Refusal::TooLarge => b.put_u8(2),
        Refusal::Superseded => b.put_u8(3),
        Refusal::Unknown => b.put_u8(4),
        Refusal::LeaseNotFound => b.put_u8(5),
    }
}

fn put_message(b: &mut BytesMut, m: &Message) {
    b.put_u64_le(m.from.0);
    b.put_u64_le(m.to.0);
    b.put_u64_le(m.term.0);
    match &m.body {
        Body::PreVote {
            last_index,
            last_term,
        } => {
            b.put_u8(0);
            b.put_u64_le(last_index.0);
            b.put_u64_le(last_term.0);
        }
        Body::PreVoteResponse { granted } => {
            b.put_u8(1);
            b.put_u8(u8::from(*granted));
        }
        Body::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            b.put_u8(2);
            b.put_u64_le(last_index.0);
            b.put_u64_le(last_term.0);
            b.put_u8(u8::from(*transfer));
        }
        Body::VoteResponse { granted } => {
            b.put_u8(3);
            b.put_u8(u8::from(*granted));
        }
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            b.put_u8(4);
            b.put_u64_le(prev_index.0);
            b.put_u64_le(prev_term.0);
            b.put_u64_le(commit.0);
            b.put_u32_le(entries.len() as u32);
            for e in entries {
                put_entry(b, e);
            }
        }
        Body::AppendResponse(result) => {
            b.put_u8(5);
            match result {
                AppendResult::Success { match_index } => {
                    b.put_u8(0);
                    b.put_u64_le(match_index.0);
                }
                AppendResult::Reject {
                    rejected,
                    hint_index,
                    hint_term,
                } => {
                    b.put_u8(1);
                    b.put_u64_le(rejected.0);
                    b.put_u64_le(hint_index.0);
                    b.put_u64_le(hint_term.0);
                }
            }
        }
        Body::Heartbeat { commit, read_round } => {
            b.put_u8(6);
            b.put_u64_le(commit.0);
            b.put_u64_le(*read_round);
        }
        Body::HeartbeatResponse { read_round } => {
            b.put_u8(7);
            b.put_u64_le(*read_round);
        }
        Body::Snapshot {
            meta,
            offset,
            total_bytes,
            data,
        } => {
            b.put_u8(8);
            put_meta(b, meta);
            b.put_u64_le(*offset);
            b.put_u64_le(*total_bytes);
            put_bytes(b, data);
        }
        Body::SnapshotResponse {
            index,
            next_offset,
            done,
        } => {
            b.put_u8(9);
            b.put_u64_le(index.0);
            b.put_u64_le(*next_offset);
            b.put_u8(u8::from(*done));
        }
        Body::TimeoutNow => b.put_u8(10),
    }
}

fn put_entry(b: &mut BytesMut, e: &Entry) {
    b.put_u64_le(e.index.0);
    b.put_u64_le(e.term.0);
    match &e.payload {
        Payload::Noop => b.put_u8(0),
        Payload::Normal(data) => {
            b.put_u8(1);
            put_bytes(b, data);
        }
        Payload::Membership(m) => {
            b.put_u8(2);
            put_membership(b, m);
        }
    }
}

fn put_membership(b: &mut BytesMut, m: &Membership) {
    for set in [&m.voters, &m.learners] {
        b.put_u32_le(set.len() as u32);
        for id in set {
            b.put_u64_le(id.0);
        }
    }
}

fn put_meta(b: &mut BytesMut, meta: &SnapshotMeta) {
    b.put_u64_le(meta.index.0);
    b.put_u64_le(meta.term.0);
    put_membership(b, &meta.membership);
}

// ---- Decoding --------------------------------------------------------------

/// Reads the length prefix: how many more bytes make up the frame.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, CodecError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge(len));
    }
    Ok(len)
}

/// Reads one frame (length prefix and body) from `stream`; `None` at a clean
/// end of stream, that is before the first byte of a frame.
///
/// Memory grows with the bytes that really arrive, not with the length the
/// prefix claims: otherwise four bytes from anyone who can connect (the hello
/// is checked only after this) would pin `FRAME_BYTES_MAX` of memory.
pub async fn read_frame<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Option<Frame>, ReadError> {
    let mut prefix = [0u8; 4];
    if stream.read(&mut prefix[..1]).await? == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut prefix[1..]).await?;
    let len = frame_len(prefix)?;
    let mut body = Vec::with_capacity(len.min(READ_RESERVE_BYTES));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(decode(Bytes::from(body))?))
}

/// Decodes a frame body (everything after the length prefix).
pub fn decode(body: Bytes) -> Result<Frame, CodecError> {
    let mut r = Reader(body);
    let version = r.u8()?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let frame = match r.u8()? {
        0 => Frame::Hello {
            cluster_id: r.u64()?,
            from: NodeId(r.u64()?),
        },
        1 => Frame::Raft(r.message()?),
        2 => Frame::Forward {
            id: r.u64()?,
            from: NodeId(r.u64()?),
            data: r.bytes()?,
        },
        3 => Frame::ForwardReply {
            id: r.u64()?,
            result: match r.u8()? {
                0 => Ok(r.bytes()?),
                1 => Err(r.refusal()?),
                tag => {
                    return Err(CodecError::UnknownTag {
                        what: "result",
                        tag,
                    })
                }
            },
        },
        4 => Frame::ReadIndex {
            id: r.u64()?,
            from: NodeId(r.u64()?),
        },
        5 => Frame::ReadIndexReply {
            id: r.u64()?,
            result: match r.u8()? {
                0 => Ok(Index(r.u64()?)),
                1 => Err(r.refusal()?),
                tag => {
                    return Err(CodecError::UnknownTag {
                        what: "result",
                        tag,
                    })
                }
            },
        },
        6 => Frame::LeaseRenew {
            id: r.u64()?,
            from: NodeId(r.u64()?),
            lease: r.u64()? as i64,
            renew: r.bool()?,
        },
        7 => Frame::LeaseRenewReply {
            id: r.u64()?,
            result: match r.u8()? {
                0 => {
                    r.need(24)?;
                    let ttl = r.0.split_to(24);
                    Ok(LeaseTtl::decode(&ttl)?)
                }
                1 => Err(r.refusal()?),
                tag => {
                    return Err(CodecError::UnknownTag {
                        what: "result",
                        tag,
                    })
                }
            },
        },
        8 => Frame::ForwardApplied {
            id: r.u64()?,
            index: Index(r.u64()?),
            reply: r.bytes()?,
        },
        tag => return Err(CodecError::UnknownTag { what: "frame", tag }),
    };
    if r.0.has_remaining() {
        return Err(CodecError::Trailing(r.0.remaining()));
    }
    Ok(frame)
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.0.remaining() < n {
            Err(CodecError::Truncated)
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::UnknownTag { what: "bool", tag }),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
    fn count(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let count = u64::from(self.u32()?);
        if count > ITEMS_MAX {
            return Err(CodecError::Count { what, count });
        }
        Ok(count)
    }
    fn refusal(&mut self) -> Result<Refusal, CodecError> {
        match self.u8()? {
            0 => {
                let id = self.u64()?;
                Ok(Refusal::NotLeader {
                    leader: (id != 0).then_some(NodeId(id)),
                })
            }
            1 => Ok(Refusal::Busy),
            2 => Ok(Refusal::TooLarge),
            3 => Ok(Refusal::Superseded),
            4 => Ok(Refusal::Unknown),
            5 => Ok(Refusal::LeaseNotFound),
            tag => Err(CodecError::UnknownTag {
                what: "refusal",
                tag,
            }),
        }
    }
    fn membership(&mut self) -> Result<Membership, CodecError> {
        let mut sets = [BTreeSet::new(), BTreeSet::new()];
        for set in &mut sets {
            for _ in 0..self.count("member")? {
                set.insert(NodeId(self.u64()?));
            }
        }
        let [voters, learners] = sets;
        Ok(Membership { voters, learners })
    }
    fn entry(&mut self) -> Result<Entry, CodecError> {
        let index = Index(self.u64()?);
        let term = Term(self.u64()?);
        let payload = match self.u8()? {
            0 => Payload::Noop,
            1 => Payload::Normal(self.bytes()?),
            2 => Payload::Membership(self.membership()?),
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "payload",
                    tag,
                })
            }
        };
        Ok(Entry {
            index,
            term,
            payload,
        })
    }
    fn message(&mut self) -> Result<Message, CodecError> {
        let from = NodeId(self.u64()?);
        let to = NodeId(self.u64()?);
        let term = Term(self.u64()?);
        let body = match self.u8()? {
            0 => Body::PreVote {
                last_index: Index(self.u64()?),
                last_term: Term(self.u64()?),
            },
            1 => Body::PreVoteResponse {
                granted: self.bool()?,
            },
            2 => Body::Vote {
                last_index: Index(self.u64()?),
                last_term: Term(self.u64()?),
                transfer: self.bool()?,
            },
            3 => Body::VoteResponse {
                granted: self.bool()?,
            },
            4 => {
                let prev_index = Index(self.u64()?);
                let prev_term = Term(self.u64()?);
                let commit = Index(self.u64()?);
                let count = self.count("entry")?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    entries.push(self.entry()?);
                }
                Body::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
            5 => Body::AppendResponse(match self.u8()? {
                0 => AppendResult::Success {
                    match_index: Index(self.u64()?),
                },
                1 => AppendResult::Reject {
                    rejected: Index(self.u64()?),
                    hint_index: Index(self.u64()?),
                    hint_term: Term(self.u64()?),
                },
                tag => {
                    return Err(CodecError::UnknownTag {
                        what: "append result",
                        tag,
                    })
                }
            }),
            6 => Body::Heartbeat {
                commit: Index(self.u64()?),
                read_round: self.u64()?,
            },
            7 => Body::HeartbeatResponse {
                read_round: self.u64()?,
            },
            8 => Body::Snapshot {
                meta: SnapshotMeta {
                    index: Index(self.u64()?),
                    term: Term(self.u64()?),
                    membership: self.membership()?,
                },
                offset: self.u64()?,
                total_bytes: self.u64()?,
                data: self.bytes()?,
            },
            9 => Body::SnapshotResponse {
                index: Index(self.u64()?),
                next_offset: self.u64()?,
                done: self.bool()?,
            },
            10 => Body::TimeoutNow,
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "message",
                    tag,
                })
            }
        };
        Ok(Message {
            from,
            to,
            term,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let bytes = encode(&frame);
        let len = frame_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode(bytes.slice(4..)).unwrap(), frame);
    }

    fn msg(body: Body) -> Frame {
        Frame::Raft(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(7),
            body,
        })
    }

    fn samples() -> Vec<Frame> {
        let membership = Membership {
            voters: [NodeId(1), NodeId(2)].into(),
            learners: [NodeId(9)].into(),
        };
        vec![
            Frame::Hello {
                cluster_id: 42,
                from: NodeId(3),
            },
            msg(Body::PreVote {
                last_index: Index(5),
                last_term: Term(2),
            }),
            msg(Body::PreVoteResponse { granted: true }),
            msg(Body::Vote {
                last_index: Index(5),
                last_term: Term(2),
                transfer: true,
            }),
            msg(Body::VoteResponse { granted: false }),
            msg(Body::Append {
                prev_index: Index(4),
                prev_term: Term(2),
                entries: vec![
                    Entry {
                        index: Index(5),
                        term: Term(7),
                        payload: Payload::Noop,
                    },
                    Entry {
                        index: Index(6),
                        term: Term(7),
                        payload: Payload::Normal(Bytes::from_static(b"hello")),
                    },
                    Entry {
                        index: Index(7),
                        term: Term(7),
                        payload: Payload::Membership(membership.clone()),
                    },
                ],
                commit: Index(3),
            }),
            msg(Body::AppendResponse(AppendResult::Success {
                match_index: Index(7),
            })),
            msg(Body::AppendResponse(AppendResult::Reject {
                rejected: Index(9),
                hint_index: Index(4),
                hint_term: Term(2),
            })),
            msg(Body::Heartbeat {
                commit: Index(3),
                read_round: 11,
            }),
            msg(Body::HeartbeatResponse { read_round: 11 }),
            msg(Body::Snapshot {
                meta: SnapshotMeta {
                    index: Index(100),
                    term: Term(6),
                    membership,
                },
                offset: 64,
                total_bytes: 200,
                data: Bytes::from_static(b"chunk"),
            }),
            msg(Body::SnapshotResponse {
                index: Index(100),
                next_offset: 69,
                done: false,
            }),
            msg(Body::TimeoutNow),
            Frame::Forward {
                id: 5,
                from: NodeId(2),
                data: Bytes::from_static(b"put"),
            },
            Frame::ForwardReply {
                id: 5,
                result: Ok(Bytes::from_static(b"ok")),
            },
            Frame::ForwardApplied {
                id: 5,
                index: Index(42),
                reply: Bytes::from_static(b"ok"),
            },
            Frame::ForwardReply {
                id: 6,
                result: Err(Refusal::NotLeader {
                    leader: Some(NodeId(3)),
                }),
            },
            Frame::ReadIndex {
                id: 8,
                from: NodeId(2),
            },
            Frame::ReadIndexReply {
                id: 8,
                result: Ok(Index(77)),
            },
            Frame::ReadIndexReply {
                id: 9,
                result: Err(Refusal::Busy),
            },
            Frame::ForwardReply {
                id: 10,
                result: Err(Refusal::Superseded),
            },
            Frame::ForwardReply {
                id: 11,
                result: Err(Refusal::Unknown),
            },
            Frame::LeaseRenew {
                id: 12,
                from: NodeId(3),
                lease: -7,
                renew: true,
            },
            Frame::LeaseRenew {
                id: 13,
                from: NodeId(2),
                lease: i64::MAX,
                renew: false,
            },
            Frame::LeaseRenewReply {
                id: 12,
                result: Ok(LeaseTtl {
                    id: -7,
                    granted_ttl_s: 10,
                    remaining_s: 9,
                }),
            },
            Frame::LeaseRenewReply {
                id: 13,
                result: Err(Refusal::LeaseNotFound),
            },
            Frame::ForwardReply {
                id: 14,
                result: Err(Refusal::LeaseNotFound),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            round_trip(frame);
        }
    }

    #[tokio::test]
    async fn frames_are_read_off_a_stream_until_its_clean_end() {
        let mut stream = Vec::new();
        for frame in samples() {
            stream.extend_from_slice(&encode(&frame));
        }
        let mut input = &stream[..];
        for frame in samples() {
            assert_eq!(read_frame(&mut input).await.unwrap(), Some(frame));
        }
        assert!(read_frame(&mut input).await.unwrap().is_none());
        // Ending anywhere inside a frame, prefix included, is an error.
        let one = encode(&samples()[0]);
        for cut in 1..one.len() {
            let mut input = &one[..cut];
            assert!(
                matches!(read_frame(&mut input).await, Err(ReadError::Io(_))),
                "cut at {cut}"
            );
        }
        let mut too_large = &u32::MAX.to_le_bytes()[..];
        assert!(matches!(
            read_frame(&mut too_large).await,
            Err(ReadError::Codec(CodecError::TooLarge(_)))
        ));
    }

    /// Hands out `data`, and records the largest buffer it was offered.
    struct Trickle {
        data: Vec<u8>,
        offered_max: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.offered_max = self.offered_max.max(buf.remaining());
            let n = buf.remaining().min(self.data.len());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_length_prefix_alone_reserves_no_memory_for_its_claim() {
        // Regression: the body buffer was allocated (zeroed) at the claimed
        // length before any of it arrived.
        let mut data = (FRAME_BYTES_MAX as u32).to_le_bytes().to_vec();
        data.extend_from_slice(&[VERSION, 0, 1, 2, 3]);
        let mut stream = Trickle {
            data,
            offered_max: 0,
        };
        assert!(matches!(
            read_frame(&mut stream).await,
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
        assert!(
            stream.offered_max <= 2 * READ_RESERVE_BYTES,
            "a buffer of {} bytes for 5 bytes of body",
            stream.offered_max
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(
            frame_len(u32::MAX.to_le_bytes()),
            Err(CodecError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(
            decode(Bytes::from_static(&[9, 0])),
            Err(CodecError::Version(9))
        );
        assert_eq!(
            decode(Bytes::from_static(&[VERSION, 200])),
            Err(CodecError::UnknownTag {
                what: "frame",
                tag: 200
            })
        );
        // Every truncation and every single-byte corruption of every sample
        // decodes to an error or to some frame, never a panic.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for frame in samples() {
            let bytes = encode(&frame).slice(4..);
            for cut in 0..bytes.len() {
                assert!(
                    decode(bytes.slice(..cut)).is_err(),
                    "cut at {cut} of {frame:?}"
                );
            }
            for i in 0..bytes.len() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bad = bytes.to_vec();
                bad[i] ^= (seed as u8) | 1;
                let _ = decode(Bytes::from(bad));
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert_eq!(decode(Bytes::from(longer)), Err(CodecError::Trailing(1)));
        }
        // A count that claims more entries than exist is refused without
        // allocating for them.
        let mut huge = BytesMut::new();
        huge.put_u8(VERSION);
        huge.put_u8(1);
        huge.put_slice(&[0; 24]);
        huge.put_u8(4);
        huge.put_slice(&[0; 24]);
        huge.put_u32_le(u32::MAX);
        assert!(matches!(
            decode(huge.freeze()),
            Err(CodecError::Count { .. })
        ));
    }
}
