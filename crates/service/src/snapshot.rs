//! Point-in-time captures of the replicated state, for etcd's
//! `Maintenance.Snapshot` (a backup).
//!
//! A capture is taken on the apply thread after ReadIndex, like a
//! linearizable read: a special query (never a command, never in the log)
//! makes `Replicated::query` clone the state machine (keys and values are
//! shared, so this is cheap) into `Captures` under the caller's token and
//! answer `Done`. The caller takes the clone and encodes it on a blocking
//! thread, so the apply thread never spends the time of an encode. At most
//! `CAPTURES_MAX` captures wait; an older one whose caller gave up is
//! dropped for a newer one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_state::{Reply, StateMachine};

use crate::context::Context;
use crate::error::ServiceError;

/// Starts a capture query. A command starts with its (small) version byte,
/// so no command starts with this.
const QUERY_MAGIC: &[u8; 8] = b"FCAPTURE";
const CAPTURES_MAX: usize = 4;

#[derive(Default)]
pub struct Captures {
    next: AtomicU64,
    waiting: Mutex<VecDeque<(u64, StateMachine)>>,
}

impl Captures {
    fn token(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps `sm` for the caller of `token` (the apply thread).
    pub(crate) fn put(&self, token: u64, sm: StateMachine) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        while waiting.len() >= CAPTURES_MAX {
            waiting.pop_front();
        }
        waiting.push_back((token, sm));
    }

    fn take(&self, token: u64) -> Option<StateMachine> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let at = waiting.iter().position(|(t, _)| *t == token)?;
        waiting.remove(at).map(|(_, sm)| sm)
    }
}

fn query(token: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_slice(QUERY_MAGIC);
    b.put_u64_le(token);
    b.freeze()
}

/// The token of a capture query.
pub(crate) fn parse_query(q: &[u8]) -> Option<u64> {
    let rest = q.strip_prefix(QUERY_MAGIC)?;
    let token: [u8; 8] = rest.try_into().ok()?;
    Some(u64::from_le_bytes(token))
}

impl Context {
    /// The state as of a linearizable point: everything committed before
    /// the call is in it.
    pub async fn capture_state(&self) -> Result<StateMachine, ServiceError> {
        let token = self.captures.token();
        let q = query(token);
        let reply = self.read_query(q).await;
        let captured = self.captures.take(token);
        match reply? {
            Reply::Done => captured.ok_or_else(|| {
                ServiceError::Internal("the state capture was dropped; retry".into())
            }),
            other => Err(ServiceError::unexpected(other)),
        }
    }
}
