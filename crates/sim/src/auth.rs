//! Auth in the simulated workload: permission changes in the mix, and
//! watchers that belong to a limited user.
//!
//! With `Options::auth`, the first KV client sets up etcd's auth as an
//! operator would (a root user with the root role; role `r` with read on
//! the `kv/` and `lease/` prefixes; user `w` holding `r`; auth enabled),
//! through the log like any other write. From then on KV clients now and
//! then revoke one of `r`'s two prefixes, or grant it back. Watchers of
//! `kv/a`, `kv/` and `lease/` watch as user `w`; those of everything stay
//! the member's own.
//!
//! The rule checked here (the leak check): once a member has applied a
//! change after which `w` may no longer read a watch's range, that watch,
//! on that member, receives no event any more — not from the live stream
//! and not from a history read that was under way. The stream is judged by
//! what it took from its member's event stream: every auth change the
//! member published after the watch was created is recorded (`AuthMarks`),
//! skipped entries included, and a response with events delivered after
//! the stream passed a denying change is a violation. Permission is
//! evaluated here with a model of our own (one prefix permission covers
//! the watch), not with the store's own check.
//!
//! A watch canceled for permission resumes later, from where it stopped,
//! as a client would once access is back; while access is missing, its
//! create is refused and it tries again.

use std::sync::Arc;

use bytes::Bytes;
use ferrite_state::auth::{Access, PermKind, Permission, TOKEN_SECRET_BYTES};
use ferrite_state::{AuthRequest, AuthStore, Op, Principal, StateError};

/// The limited user the watchers run as.
pub const WATCH_USER: &str = "w";
/// Its role.
pub const WATCH_ROLE: &str = "r";
/// The prefixes `r` grants read on (and `[prefix, end)` as etcd encodes a
/// prefix), which the workload revokes and grants back.
pub const PREFIXES: [(&[u8], &[u8]); 2] = [(b"kv/", b"kv0"), (b"lease/", b"lease0")];

/// The operator's setup, in order.
pub fn setup_ops() -> Vec<Op> {
    let mut ops = vec![
        AuthRequest::RoleAdd {
            name: "root".into(),
        },
        AuthRequest::UserAdd {
            name: "root".into(),
            // The simulator never authenticates: any hash will do.
            password: Some("$2b$10$simulatedsimulatedsimulatedsimulatedsimulatedsimu".into()),
            no_password: false,
        },
        AuthRequest::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthRequest::RoleAdd {
            name: WATCH_ROLE.into(),
        },
    ];
    for (key, end) in PREFIXES {
        ops.push(grant(key, end));
    }
    ops.extend([
        AuthRequest::UserAdd {
            name: WATCH_USER.into(),
            password: None,
            no_password: true,
        },
        AuthRequest::UserGrantRole {
            user: WATCH_USER.into(),
            role: WATCH_ROLE.into(),
        },
        AuthRequest::Enable {
            secret: [7; TOKEN_SECRET_BYTES],
        },
    ]);
    ops.into_iter().map(Op::Auth).collect()
}

fn grant(key: &[u8], end: &[u8]) -> AuthRequest {
    AuthRequest::RoleGrantPermission {
        name: WATCH_ROLE.into(),
        perm: Permission {
            kind: PermKind::Read,
            key: Bytes::copy_from_slice(key),
            range_end: Bytes::copy_from_slice(end),
        },
    }
}

/// Revokes prefix `i` of `r`, or grants it back.
pub fn toggle_op(i: usize, revoke: bool) -> Op {
    let (key, end) = PREFIXES[i % PREFIXES.len()];
    Op::Auth(if revoke {
        AuthRequest::RoleRevokePermission {
            name: WATCH_ROLE.into(),
            key: Bytes::copy_from_slice(key),
            range_end: Bytes::copy_from_slice(end),
        }
    } else {
        grant(key, end)
    })
}

/// Whether a watch of `range` by `WATCH_USER` may see events under
/// `store`, by this module's own model: auth off, a root user, or one read
/// permission whose prefix holds the whole range.
pub fn may_read(store: &AuthStore, key: &[u8], range_end: &[u8]) -> bool {
    if !store.enabled() {
        return true;
    }
    let Some(user) = store.user(WATCH_USER) else {
        return false;
    };
    if user.roles.contains("root") {
        return true;
    }
    user.roles
        .iter()
        .filter_map(|r| store.role(r))
        .flat_map(|r| r.perms.iter())
        .filter(|p| p.kind.grants(Access::Read))
        .any(|p| {
            let inside = |k: &[u8]| k >= &p.key[..] && k < &p.range_end[..];
            inside(key)
                && if range_end.is_empty() {
                    true
                } else {
                    range_end <= &p.range_end[..]
                }
        })
}

/// Whether a watch's range is one the limited user watches.
pub fn limited_range(key: &[u8]) -> bool {
    PREFIXES.iter().any(|(p, _)| key.starts_with(p))
}

/// A cancel reason after which a watcher may resume once access is back.
pub fn resumable_reason(reason: &str) -> bool {
    [
        StateError::PermissionDenied,
        StateError::UserEmpty,
        StateError::AuthOldRevision,
    ]
    .iter()
    // etcd words a watch cancel as "rpc error: code = ... desc = <message>".
    .any(|e| reason.ends_with(&e.to_string()))
}

/// Auth changes one member published in one life: `(ring sequence number
/// of the entry, store after it)`.
#[derive(Default)]
pub struct AuthMarks {
    marks: Vec<(u64, Arc<AuthStore>)>,
}

impl AuthMarks {
    pub fn record(&mut self, seq: u64, store: Arc<AuthStore>) {
        self.marks.push((seq, store));
    }

    /// The first change in entries `from..upto` after which `range` may not
    /// be read: its sequence number.
    pub fn first_denial(&self, from: u64, upto: u64, key: &[u8], range_end: &[u8]) -> Option<u64> {
        self.marks
            .iter()
            .filter(|(seq, _)| *seq >= from && *seq < upto)
            .find(|(_, store)| !may_read(store, key, range_end))
            .map(|(seq, _)| *seq)
    }
}

/// The principal a limited watcher creates its watch as, on a member
/// whose store is `store`.
pub fn watch_principal(store: &AuthStore) -> Principal {
    Principal::user(WATCH_USER, store.revision())
}

impl crate::world::World {
    /// The auth request KV client `c` proposes next, if any: the setup,
    /// in order, from the first client; then, now and then, a revoke or a
    /// grant back of one of the role's prefixes.
    pub(crate) fn next_auth_op(&mut self, c: usize) -> Option<Op> {
        if !self.opts.auth {
            return None;
        }
        if !self.auth_setup.is_empty() {
            return if c == 0 {
                self.auth_setup.pop_front()
            } else {
                None
            };
        }
        if self.prng.below(12) != 0 {
            return None;
        }
        let i = self.prng.below(PREFIXES.len() as u64) as usize;
        let revoke = self.auth_granted[i];
        self.auth_granted[i] = !revoke;
        self.stats.auth_changes += 1;
        Some(toggle_op(i, revoke))
    }
}
