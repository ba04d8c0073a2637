//! The bridge between the node, which routes opaque bytes, and
//! `ferrite-state`: commands in, encoded replies out. A reply is an envelope:
//! tag 0 and an encoded `Reply`, or tag 1 and the text of an `ApplyError`
//! (an undecodable entry, a stale duplicate), so that a reply forwarded from
//! the leader means the same on the follower that asked.

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_raft::Index;
use ferrite_state::{Command, Op, Reply, StateMachine};

pub struct Replicated {
    sm: StateMachine,
}

impl Replicated {
    pub fn new() -> Replicated {
        Replicated {
            sm: StateMachine::new(),
        }
    }
}

impl Default for Replicated {
    fn default() -> Self {
        Replicated::new()
    }
}

/// Decodes what `apply` or `query` returned.
pub fn open_envelope(data: &[u8]) -> Result<Reply, String> {
    match data.split_first() {
        Some((0, rest)) => Reply::decode(rest).map_err(|e| format!("undecodable reply: {e}")),
        Some((1, rest)) => Err(String::from_utf8_lossy(rest).into_owned()),
        _ => Err("empty reply".to_string()),
    }
}

fn seal(reply: Result<Reply, String>) -> Bytes {
    let mut b = BytesMut::new();
    match reply {
        Ok(r) => {
            b.put_u8(0);
            b.put_slice(&r.encode());
        }
        Err(e) => {
            b.put_u8(1);
            b.put_slice(e.as_bytes());
        }
    }
    b.freeze()
}

impl ferrite_node::StateMachine for Replicated {
    fn apply(&mut self, index: Index, command: &[u8]) -> Bytes {
        let applied = self.sm.apply(index.0, command);
        seal(applied.reply.map_err(|e| e.to_string()))
    }

    fn apply_empty(&mut self, index: Index) {
        self.sm.apply_noop(index.0);
    }

    /// Read-only commands only: a range, a register, the member table.
    fn query(&self, query: &[u8]) -> Bytes {
        let reply = match Command::decode(query) {
            Ok(cmd) => match cmd.op {
                Op::Range(r) => Ok(self
                    .sm
                    .read_range(&r)
                    .map_or_else(Reply::Error, Reply::Range)),
                Op::RegisterGet { name } => Ok(Reply::Value(self.sm.read_register(&name))),
                Op::MemberList => Ok(Reply::Members(self.sm.members().list())),
                _ => Err("not a read-only request".to_string()),
            },
            Err(e) => Err(format!("undecodable query: {e}")),
        };
        seal(reply)
    }

    fn applied(&self) -> Index {
        Index(self.sm.applied_index())
    }

    fn snapshot(&self) -> Bytes {
        self.sm.snapshot()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        self.sm = StateMachine::restore(data).map_err(|e| e.to_string())?;
        Ok(())
    }
}
