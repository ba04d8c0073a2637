//! The simulated service: integer registers with put, compare-and-set and
//! add, plus client sessions so that a retried write is applied once and
//! answered with its first reply. Applied strictly in log order, with no
//! clock and no unordered iteration, so every replica reaches the same state.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_raft::Index;

pub type ClientId = u64;
pub type Key = u64;

/// A write, as proposed through the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub client: ClientId,
    /// Per-client sequence number; a client has one write outstanding.
    pub seq: u64,
    pub key: Key,
    pub write: Write,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Put(i64),
    Cas { expected: i64, new: i64 },
    Add(i64),
}

/// The answer to a write or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    Value(i64),
    Cas(bool),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated input")]
    Truncated,
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    values: BTreeMap<Key, i64>,
    /// Highest applied sequence number per client and its reply.
    sessions: BTreeMap<ClientId, (u64, Reply)>,
    applied: Index,
}

impl Registers {
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The highest sequence number applied for `client` (0 if none).
    pub fn session_seq(&self, client: ClientId) -> u64 {
        self.sessions.get(&client).map_or(0, |s| s.0)
    }

    pub fn get(&self, key: Key) -> i64 {
        self.values.get(&key).copied().unwrap_or(0)
    }

    /// Marks `index` applied for entries that carry no command.
    pub fn skip(&mut self, index: Index) {
        assert!(
            index > self.applied,
            "apply out of order: {index} after {}",
            self.applied
        );
        self.applied = index;
    }

    /// Applies a command at `index`. Returns the reply, or `None` for a
    /// duplicate of a command the client has already moved past.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> Option<Reply> {
        self.skip(index);
        if let Some((seq, reply)) = self.sessions.get(&cmd.client) {
            if cmd.seq == *seq {
                return Some(*reply);
            }
            if cmd.seq < *seq {
                return None;
            }
        }
        let current = self.get(cmd.key);
        let (value, reply) = match cmd.write {
            Write::Put(v) => (v, Reply::Done),
            Write::Cas { expected, new } if expected == current => (new, Reply::Cas(true)),
            Write::Cas { .. } => (current, Reply::Cas(false)),
            Write::Add(d) => {
                let v = current.wrapping_add(d);
                (v, Reply::Value(v))
            }
        };
        self.values.insert(cmd.key, value);
        self.sessions.insert(cmd.client, (cmd.seq, reply));
        Some(reply)
    }

    pub fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u64_le(self.applied.0);
        b.put_u32_le(self.values.len() as u32);
        for (k, v) in &self.values {
            b.put_u64_le(*k);
            b.put_i64_le(*v);
        }
        b.put_u32_le(self.sessions.len() as u32);
        for (c, (seq, reply)) in &self.sessions {
            b.put_u64_le(*c);
            b.put_u64_le(*seq);
            put_reply(&mut b, reply);
        }
        b.freeze()
    }

    /// Restores from `snapshot`; empty data is the empty state (bootstrap).
    pub fn restore(data: &[u8]) -> Result<Registers, DecodeError> {
        let mut r = Registers::default();
        if data.is_empty() {
            return Ok(r);
        }
        let mut d = Reader(data);
        r.applied = Index(d.u64()?);
        for _ in 0..d.u32()? {
            let k = d.u64()?;
            let v = d.u64()? as i64;
            r.values.insert(k, v);
        }
        for _ in 0..d.u32()? {
            let c = d.u64()?;
            let seq = d.u64()?;
            let reply = d.reply()?;
            r.sessions.insert(c, (seq, reply));
        }
        d.finish()?;
        Ok(r)
    }
}

fn put_reply(b: &mut BytesMut, reply: &Reply) {
    match reply {
        Reply::Done => b.put_u8(0),
        Reply::Value(v) => {
            b.put_u8(1);
            b.put_i64_le(*v);
        }
        Reply::Cas(ok) => {
            b.put_u8(2);
            b.put_u8(u8::from(*ok));
        }
    }
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(41);
        b.put_u64_le(self.client);
        b.put_u64_le(self.seq);
        b.put_u64_le(self.key);
        match self.write {
            Write::Put(v) => {
                b.put_u8(0);
                b.put_i64_le(v);
            }
            Write::Cas { expected, new } => {
                b.put_u8(1);
                b.put_i64_le(expected);
                b.put_i64_le(new);
            }
            Write::Add(d) => {
                b.put_u8(2);
                b.put_i64_le(d);
            }
        }
        b.freeze()
    }

    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        let mut d = Reader(data);
        let client = d.u64()?;
        let seq = d.u64()?;
        let key = d.u64()?;
        let write = match d.u8()? {
            0 => Write::Put(d.u64()? as i64),
            1 => Write::Cas {
                expected: d.u64()? as i64,
                new: d.u64()? as i64,
            },
            2 => Write::Add(d.u64()? as i64),
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        d.finish()?;
        Ok(Command {
            client,
            seq,
            key,
            write,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn reply(&mut self) -> Result<Reply, DecodeError> {
        match self.u8()? {
            0 => Ok(Reply::Done),
            1 => Ok(Reply::Value(self.u64()? as i64)),
            2 => Ok(Reply::Cas(self.u8()? != 0)),
            tag => Err(DecodeError::UnknownTag(tag)),
        }
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: u64, seq: u64, write: Write) -> Command {
        Command {
            client,
            seq,
            key: 1,
            write,
        }
    }

    #[test]
    fn retried_writes_apply_once() {
        let mut r = Registers::default();
        assert_eq!(
            r.apply(Index(1), &cmd(1, 1, Write::Add(5))),
            Some(Reply::Value(5))
        );
        assert_eq!(
            r.apply(Index(2), &cmd(1, 1, Write::Add(5))),
            Some(Reply::Value(5))
        );
        assert_eq!(r.get(1), 5);
        assert_eq!(
            r.apply(
                Index(3),
                &cmd(
                    1,
                    2,
                    Write::Cas {
                        expected: 5,
                        new: 9
                    }
                )
            ),
            Some(Reply::Cas(true))
        );
        assert_eq!(
            r.apply(Index(4), &cmd(1, 1, Write::Add(5))),
            None,
            "stale duplicate"
        );
        assert_eq!(
            r.apply(
                Index(5),
                &cmd(
                    2,
                    1,
                    Write::Cas {
                        expected: 5,
                        new: 1
                    }
                )
            ),
            Some(Reply::Cas(false))
        );
        assert_eq!(r.get(1), 9);
    }

    #[test]
    fn snapshot_round_trip_and_garbage() {
        let mut r = Registers::default();
        r.apply(Index(1), &cmd(3, 1, Write::Put(-7)));
        r.skip(Index(2));
        let snap = r.snapshot();
        assert_eq!(Registers::restore(&snap).unwrap(), r);
        assert_eq!(
            Registers::restore(&snap[..snap.len() - 1]),
            Err(DecodeError::Truncated)
        );
        let c = cmd(
            1,
            2,
            Write::Cas {
                expected: 1,
                new: 2,
            },
        );
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        let mut bad = c.encode().to_vec();
        bad[24] = 9;
        assert_eq!(Command::decode(&bad), Err(DecodeError::UnknownTag(9)));
        bad.push(0);
        assert!(Command::decode(&bad).is_err());
    }
}
