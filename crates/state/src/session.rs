//! Client sessions: exactly-once application of retried requests.
//!
//! A request may carry `(client, seq)`. The machine keeps, per client, the
//! highest sequence number it applied and the reply it gave. A retry of that
//! number is answered with the kept reply and not applied again; a lower
//! number is a delayed duplicate of something the client has moved past and
//! is refused (`StaleSequence`); a higher one is applied and becomes the
//! kept one. A client therefore has one request outstanding at a time, as
//! the ferrite client and the simulator's clients do.
//!
//! The table is bounded two ways, both decided by applied index alone, so
//! every replica drops the same sessions at the same entry:
//! - a session unused for more than `idle_entries_max` applied entries
//!   expires (checked on every applied entry, no-ops included);
//! - at most `sessions_max` sessions are kept; making room for a new one
//!   evicts the least recently used.
//!
//! The trade-off: a request from a client with no session (never seen,
//! expired or evicted) is applied whatever its sequence number, because
//! the machine cannot tell a retry from a first attempt without the record.
//! Exactly-once therefore holds only while a retry arrives within the idle
//! window (a million entries by default, far beyond any client's retry
//! timeout) and the client is not evicted by a flood of newer clients.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::{SESSIONS_MAX, SESSION_IDLE_ENTRIES_MAX};
use crate::reply::Reply;

/// The bounds of the session table. They shape replicated state, so every
/// replica must use the same; snapshots carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Expire a session unused for more than this many applied entries.
    pub idle_entries_max: u64,
    /// Keep at most this many sessions.
    pub sessions_max: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            idle_entries_max: SESSION_IDLE_ENTRIES_MAX,
            sessions_max: SESSIONS_MAX,
        }
    }
}

/// What the table remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The highest sequence number applied.
    pub(crate) seq: u64,
    /// The reply it got, for retries.
    pub(crate) reply: Reply,
    /// The index of the latest entry that applied or retried `seq`.
    pub(crate) last_used: u64,
}

/// What to do with a request carrying a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Apply it, then `record` the reply.
    Fresh,
    /// A retry: answer with this kept reply, apply nothing.
    Retry(Reply),
    /// A delayed duplicate: the client already moved on to `applied`.
    Stale { applied: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sessions {
    limits: SessionLimits,
    by_client: BTreeMap<u64, Session>,
    /// Invariant: exactly `(last_used, client)` of each session in
    /// `by_client`; its first element is both the least recently used and
    /// the next to expire.
    by_use: BTreeSet<(u64, u64)>,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(SessionLimits::default())
    }
}

impl Sessions {
    /// An empty table. Limits of 0 are raised to 1: a table that can hold
    /// nothing would make every retry apply twice.
    pub(crate) fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits: SessionLimits {
                idle_entries_max: limits.idle_entries_max.max(1),
                sessions_max: limits.sessions_max.max(1),
            },
            by_client: BTreeMap::new(),
            by_use: BTreeSet::new(),
        }
    }

    pub(crate) fn from_sessions(
        limits: SessionLimits,
        by_client: BTreeMap<u64, Session>,
    ) -> Sessions {
        let by_use = by_client.iter().map(|(c, s)| (s.last_used, *c)).collect();
        Sessions {
            limits,
            by_client,
            by_use,
        }
    }

    pub(crate) fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.by_client.iter().map(|(c, s)| (*c, s))
    }

    /// The highest sequence number applied for `client`; 0 if it has no
    /// session.
    pub(crate) fn seq(&self, client: u64) -> u64 {
        self.by_client.get(&client).map_or(0, |s| s.seq)
    }

    /// Drops the sessions that, as of entry `index`, have gone unused for
    /// more than `idle_entries_max` entries.
    pub(crate) fn expire(&mut self, index: u64) {
        while let Some(&(last_used, client)) = self.by_use.first() {
            if index.saturating_sub(last_used) <= self.limits.idle_entries_max {
                return;
            }
            self.by_use.remove(&(last_used, client));
            self.by_client.remove(&client);
        }
    }

    /// Classifies a request of `client` with `seq`, applied at `index`. A
    /// retry counts as a use of the session.
    pub(crate) fn admit(&mut self, client: u64, seq: u64, index: u64) -> Admit {
        let Some(s) = self.by_client.get_mut(&client) else {
            return Admit::Fresh;
        };
        if seq > s.seq {
            return Admit::Fresh;
        }
        if seq < s.seq {
            return Admit::Stale { applied: s.seq };
        }
        self.by_use.remove(&(s.last_used, client));
        s.last_used = index;
        self.by_use.insert((index, client));
        Admit::Retry(s.reply.clone())
    }

    /// Records that `seq` of `client` was applied at `index` with `reply`,
    /// evicting the least recently used session if a new one needs room.
    pub(crate) fn record(&mut self, client: u64, seq: u64, reply: Reply, index: u64) {
        if let Some(old) = self.by_client.remove(&client) {
            self.by_use.remove(&(old.last_used, client));
        }
        while self.by_client.len() >= self.limits.sessions_max {
            let Some((_, lru)) = self.by_use.pop_first() else {
                break;
            };
            self.by_client.remove(&lru);
        }
        self.by_client.insert(
            client,
            Session {
                seq,
                reply,
                last_used: index,
            },
        );
        self.by_use.insert((index, client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle: u64, max: usize) -> SessionLimits {
        SessionLimits {
            idle_entries_max: idle,
            sessions_max: max,
        }
    }

    #[test]
    fn retries_get_the_kept_reply_and_stale_seqs_are_refused() {
        let mut s = Sessions::default();
        assert_eq!(s.admit(7, 1, 1), Admit::Fresh);
        s.record(7, 1, Reply::Value(10), 1);
        assert_eq!(s.admit(7, 1, 2), Admit::Retry(Reply::Value(10)));
        assert_eq!(s.admit(7, 2, 3), Admit::Fresh);
        s.record(7, 2, Reply::Value(11), 3);
        assert_eq!(s.admit(7, 1, 4), Admit::Stale { applied: 2 });
        assert_eq!(s.seq(7), 2);
        assert_eq!(s.seq(8), 0);
    }

    #[test]
    fn sessions_expire_after_the_idle_window() {
        let mut s = Sessions::new(limits(10, 100));
        s.record(1, 1, Reply::Value(1), 5);
        s.record(2, 1, Reply::Value(2), 8);
        s.expire(15);
        assert_eq!((s.seq(1), s.seq(2)), (1, 1), "idle for exactly 10");
        s.expire(16);
        assert_eq!((s.seq(1), s.seq(2)), (0, 1));
        assert_eq!(s.admit(2, 1, 17), Admit::Retry(Reply::Value(2)));
        s.expire(27);
        assert_eq!(s.seq(2), 1, "the retry at 17 renewed it");
        s.expire(28);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let mut s = Sessions::new(limits(1000, 2));
        s.record(1, 1, Reply::Value(1), 1);
        s.record(2, 1, Reply::Value(2), 2);
        assert_eq!(s.admit(1, 1, 3), Admit::Retry(Reply::Value(1)));
        s.record(3, 1, Reply::Value(3), 4);
        assert_eq!((s.seq(1), s.seq(2), s.seq(3)), (1, 0, 1));
        s.record(1, 2, Reply::Value(4), 5);
        assert_eq!(s.len(), 2, "an existing client needs no room");
        assert_eq!(s.seq(3), 1);
    }

    #[test]
    fn zero_limits_are_raised() {
        let s = Sessions::new(limits(0, 0));
        assert_eq!(s.limits(), limits(1, 1));
    }
}
