//! One watch stream's watches, sans IO: etcd's `serverWatchStream` and its
//! synced/unsynced watcher groups as a deterministic state machine. The
//! service's async side (`ferrite-service`'s `watch/session.rs`) feeds it
//! commands, live entries from the event stream, lag notices and history
//! reads, and sends what it returns; the simulator drives the very same
//! code.
//!
//! Each watch has `next_rev`, the first revision it has not been sent.
//! Invariant: every matching event below `next_rev` has been returned,
//! exactly once and in order. A watch is
//! - *synced* when the live stream delivers what it needs next: each live
//!   entry at or above `next_rev` is filtered, returned and moves it on;
//!   entries below it (already sent, or before the watch) are skipped;
//! - *unsynced* when it needs revisions the live stream no longer has (it
//!   starts in the past, the reader lagged, a snapshot replaced the state):
//!   it reads them from the MVCC history, `CATCH_UP_EVENTS_MAX` at a time,
//!   and is synced again once a read reaches the revision the store had
//!   then. Live entries meanwhile are skipped for it; the reader was
//!   subscribed before the read, so what the read did not see arrives live.
//!
//! A start below the compaction cancels the watch with `compact_revision`
//! set, as in etcd; the client resumes from there or gives up.
//!
//! Auth: a stream belongs to one principal. A create needs read permission
//! on the watched range (refused as etcd refuses it: created and canceled at
//! once, with the reason). The stream keeps the auth store as of the last
//! entry it took from the event stream; each auth change arrives there in
//! apply order (`Event::Auth`) and every watch is checked again: one whose
//! principal may no longer read its range is canceled with the reason and
//! sent nothing after. History reads are made as the principal at the auth
//! revision the stream knows, so the state machine refuses them ("revision
//! of auth store is old") when the stream has not yet seen a change; the
//! stream then waits for the newer store ([`WatchStream::on_auth`]) before
//! reading again. A store that skips changes (after a lag, or a snapshot)
//! also cancels the watches of a principal that may have lost a permission
//! in between (`AuthStore::restricted_since`): whether it was allowed all
//! along cannot be told.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::{Access, AuthStore, Principal};
use crate::error::StateError;
use crate::event::{Event, KvEvent, Published};
use crate::kv::{ChangesRequest, ChangesResponse};
use bytes::Bytes;

mod reply_events;

pub use reply_events::{EventRun, ReplyEvents};

/// Events read from history per catch-up read of one watch.
pub const CATCH_UP_EVENTS_MAX: u64 = 1000;
/// Watches on one stream; a create beyond it is refused (created and
/// canceled at once, with a reason).
pub const WATCHES_PER_STREAM_MAX: usize = 100_000;
/// With `fragment`, a response is split into pieces of about this size
/// (etcd's default `--max-request-bytes`, 1.5 MiB).
pub const FRAGMENT_BYTES: usize = 1536 * 1024;
/// The id of a progress response that speaks for every watch of the stream
/// (etcd's `clientv3.InvalidWatchID`).
pub const STREAM_PROGRESS_ID: i64 = -1;

/// A create request, as etcd's `WatchCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchCreate {
    pub key: Bytes,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Bytes,
    /// The first revision to send; 0 (or below): from the next one.
    pub start_revision: i64,
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    /// 0: the server chooses (etcd's `AutoWatchID`).
    pub watch_id: i64,
    pub fragment: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchCommand {
    Create(WatchCreate),
    Cancel(i64),
    /// etcd's `WatchProgressRequest`: a progress response for the stream
    /// as soon as every watch is synced.
    Progress,
}

/// A response, as etcd's `WatchResponse` (the header's revision apart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchReply {
    pub revision: i64,
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    /// More pieces of this response follow.
    pub fragment: bool,
    pub events: ReplyEvents,
}

#[derive(Debug)]
struct Watch {
    key: Bytes,
    range_end: Bytes,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    next_rev: i64,
    synced: bool,
    /// A history read for it is in flight.
    reading: bool,
    /// Events were sent since the last progress tick.
    sent: bool,
}

impl Watch {
    fn matches(&self, e: &KvEvent) -> bool {
        let kind_ok = if e.kv.is_some() {
            !self.no_put
        } else {
            !self.no_delete
        };
        kind_ok && in_range(&e.key, &self.key, &self.range_end)
    }

    fn shape(&self, e: &KvEvent) -> KvEvent {
        shape(e, self.prev_kv)
    }
}

/// `e` as a watch with (or without) `prev_kv` is sent it.
fn shape(e: &KvEvent, prev_kv: bool) -> KvEvent {
    KvEvent {
        revision: e.revision,
        key: e.key.clone(),
        prev: if prev_kv { e.prev.clone() } else { None },
        kv: e.kv.clone(),
    }
}

/// The reason a watch refused or canceled for lack of permission gives, as
/// etcd words it: the text of its gRPC error (etcd's `v3rpc/watch.go`
/// sends `rpctypes.ErrGRPC*.Error()`), which etcdctl shows as is.
pub fn auth_cancel_reason(e: &StateError) -> String {
    let code = match e {
        StateError::UserEmpty | StateError::AuthOldRevision => "InvalidArgument",
        StateError::InvalidAuthToken => "Unauthenticated",
        _ => "PermissionDenied",
    };
    let e = match e {
        StateError::UserEmpty | StateError::AuthOldRevision | StateError::InvalidAuthToken => {
            e.clone()
        }
        _ => StateError::PermissionDenied,
    };
    format!("rpc error: code = {code} desc = {e}")
}

/// Whether `key` is in etcd's range `[start, end)`, with its two special
/// ends: empty (only `start`) and `"\0"` (everything from `start`).
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub events_sent: u64,
    pub catch_up_reads: u64,
    /// Times the stream's reader lagged behind the event stream.
    pub lagged: u64,
}

#[derive(Debug, Default)]
pub struct WatchStream {
    /// Who the stream's watches are for.
    principal: Principal,
    /// The auth store as of the last entry taken from the event stream.
    auth: Arc<AuthStore>,
    /// A history read found a newer auth store: no more reads until
    /// `on_auth` brings it.
    auth_wait: bool,
    watches: BTreeMap<i64, Watch>,
    /// Where the next automatic id search starts (etcd's `nextID`).
    next_id: i64,
    /// The highest revision this stream knows the store reached.
    known_revision: i64,
    progress_pending: bool,
    counters: StreamCounters,
    canary: WatchCanary,
}

/// Deliberately broken variants of the stream, for the simulator's
/// canaries (only with the `canary` feature; otherwise just `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchCanary {
    #[default]
    None,
    /// A lag notice is ignored, so the entries the reader missed are
    /// silently skipped (a hub that drops events under backpressure). The
    /// simulator's watch checker must catch it.
    #[cfg(feature = "canary")]
    DropLagged,
    /// Auth changes are taken but never cancel a watch, so a watcher goes
    /// on receiving events after its read permission was revoked. The
    /// simulator's auth leak check must catch it.
    #[cfg(feature = "canary")]
    IgnoreAuth,
}

impl WatchCanary {
    pub fn all() -> &'static [WatchCanary] {
        #[cfg(feature = "canary")]
        {
            &[
                WatchCanary::None,
                WatchCanary::DropLagged,
                WatchCanary::IgnoreAuth,
            ]
        }
        #[cfg(not(feature = "canary"))]
        {
            &[WatchCanary::None]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WatchCanary::None => "none",
            #[cfg(feature = "canary")]
            WatchCanary::DropLagged => "watch-drop-lagged",
            #[cfg(feature = "canary")]
            WatchCanary::IgnoreAuth => "watch-ignore-auth",
        }
    }

    fn ignores_auth(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == WatchCanary::IgnoreAuth
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    fn drops_lagged(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == WatchCanary::DropLagged
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }
}

impl WatchStream {
    /// A stream of the member's own (`Principal::System`: never checked)
    /// whose reader was subscribed when the store was at `now`.
    pub fn new(now: i64) -> WatchStream {
        WatchStream {
            known_revision: now,
            ..WatchStream::default()
        }
    }

    /// A client's stream, for `principal`, whose reader was subscribed when
    /// the store was at `now` and the auth store was `auth`.
    pub fn with_auth(now: i64, principal: Principal, auth: Arc<AuthStore>) -> WatchStream {
        WatchStream {
            principal,
            auth,
            ..WatchStream::new(now)
        }
    }

    /// The same stream, deliberately broken (`WatchCanary::None`: as is).
    pub fn canaried(self, canary: WatchCanary) -> WatchStream {
        WatchStream { canary, ..self }
    }

    /// Who history reads are made as: the principal, at the auth revision
    /// the stream knows (see the module notes).
    pub fn read_principal(&self) -> Principal {
        match &self.principal {
            Principal::User { name, .. } => Principal::User {
                name: name.clone(),
                revision: self.auth.revision(),
            },
            other => other.clone(),
        }
    }

    /// A history read found an auth store newer than the stream's: give it
    /// the current one (`on_auth`) so that it can go on.
    pub fn needs_auth(&self) -> bool {
        self.auth_wait
    }

    /// The auth store after changes the stream may not have seen one by one
    /// (after a lag, a restore, or when `needs_auth`); older or equal stores
    /// are ignored. Returns the cancellations.
    pub fn on_auth(&mut self, store: Arc<AuthStore>) -> Vec<WatchReply> {
        let known = self.auth.changes();
        if store.changes() <= known {
            if store.changes() == known {
                self.auth_wait = false;
            }
            return Vec::new();
        }
        // One change after the one known: it is checked exactly; a jump
        // over several cannot tell a revoke and a grant from nothing.
        let jumped = store.changes() > known + 1;
        self.auth = store;
        self.auth_wait = false;
        if self.canary.ignores_auth() {
            return Vec::new();
        }
        let auth = &self.auth;
        let who = &self.principal;
        let lost: Vec<i64> = self
            .watches
            .iter()
            .filter(|(_, w)| {
                !auth.may_still_read(who, &w.key, &w.range_end)
                    || (jumped && auth.restricted_since(who, known))
            })
            .map(|(id, _)| *id)
            .collect();
        let reason = auth_cancel_reason(&match who {
            Principal::Anonymous => StateError::UserEmpty,
            _ => StateError::PermissionDenied,
        });
        lost.into_iter()
            .map(|id| {
                self.watches.remove(&id);
                WatchReply {
                    revision: self.known_revision,
                    watch_id: id,
                    canceled: true,
                    cancel_reason: reason.clone(),
                    ..WatchReply::default()
                }
            })
            .collect()
    }

    /// A stream with a deliberately broken variant (`WatchCanary::None`:
    /// the real one).
    pub fn with_canary(now: i64, canary: WatchCanary) -> WatchStream {
        WatchStream {
            canary,
            ..WatchStream::new(now)
        }
    }

    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    pub fn counters(&self) -> &StreamCounters {
        &self.counters
    }

    /// Watches waiting for history reads (etcd's "slow watchers").
    pub fn unsynced(&self) -> usize {
        self.watches.values().filter(|w| !w.synced).count()
    }

    /// A client's request; `now` is the event stream's revision.
    pub fn command(&mut self, cmd: WatchCommand, now: i64) -> Vec<WatchReply> {
        self.known_revision = self.known_revision.max(now);
        match cmd {
            WatchCommand::Create(c) => vec![self.create(c, now)],
            WatchCommand::Cancel(id) => match self.watches.remove(&id) {
                Some(_) => vec![WatchReply {
                    revision: self.known_revision,
                    watch_id: id,
                    canceled: true,
                    ..WatchReply::default()
                }],
                // etcd answers nothing for an id it does not have.
                None => Vec::new(),
            },
            WatchCommand::Progress => {
                self.progress_pending = true;
                self.maybe_progress()
            }
        }
    }

    fn create(&mut self, c: WatchCreate, now: i64) -> WatchReply {
        let refuse = |id: i64, reason: String| WatchReply {
            revision: now,
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..WatchReply::default()
        };
        if self.watches.len() >= WATCHES_PER_STREAM_MAX {
            return refuse(
                -1,
                format!("too many watches on this stream (limit {WATCHES_PER_STREAM_MAX})"),
            );
        }
        if c.key.is_empty() && c.range_end.is_empty() {
            return refuse(-1, "etcdserver: key is not provided".to_string());
        }
        if let Err(e) = self
            .auth
            .check(&self.principal, Access::Read, &c.key, &c.range_end)
        {
            return refuse(-1, auth_cancel_reason(&e));
        }
        let id = if c.watch_id != 0 {
            if self.watches.contains_key(&c.watch_id) || c.watch_id < 0 {
                return refuse(
                    -1,
                    "mvcc: duplicate watch ID provided on the WatchStream".to_string(),
                );
            }
            c.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        let start = if c.start_revision <= 0 {
            now.saturating_add(1)
        } else {
            c.start_revision
        };
        let watch = Watch {
            key: c.key,
            range_end: c.range_end,
            no_put: c.no_put,
            no_delete: c.no_delete,
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            next_rev: start,
            // A start past `now` is served live: the entries at and above it
            // have not been published yet.
            synced: start > now,
            reading: false,
            sent: false,
        };
        self.watches.insert(id, watch);
        WatchReply {
            revision: now,
            watch_id: id,
            created: true,
            ..WatchReply::default()
        }
    }

    /// An entry from the event stream, in order.
    pub fn on_live(&mut self, p: &Published) -> Vec<WatchReply> {
        let mut out = Vec::new();
        self.on_live_into(p, &mut out);
        out
    }

    /// `on_live`, appending to `out`. Every watch that takes all of the
    /// entry's KV events gets the same shared run (one per `prev_kv`
    /// shape), made once here; only a watch that takes some of them gets
    /// a list of its own.
    pub fn on_live_into(&mut self, p: &Published, out: &mut Vec<WatchReply>) {
        self.known_revision = self.known_revision.max(p.revision);
        if p.restored {
            self.on_lagged();
            return;
        }
        for e in &p.events {
            if let Event::Auth(store) = e {
                out.extend(self.on_auth(store.clone()));
            }
        }
        let kv = || {
            p.events.iter().filter_map(|e| match e {
                Event::Kv(e) => Some(e),
                _ => None,
            })
        };
        let kv_count = kv().count();
        // Indexed by `prev_kv`.
        let mut whole: [Option<Arc<EventRun>>; 2] = [None, None];
        for (id, w) in self.watches.iter_mut() {
            if !w.synced || p.revision < w.next_rev {
                continue;
            }
            w.next_rev = p.revision.saturating_add(1);
            let taken = kv().filter(|e| w.matches(e)).count();
            if taken == 0 {
                continue;
            }
            w.sent = true;
            self.counters.events_sent += taken as u64;
            if w.fragment {
                let events = kv().filter(|e| w.matches(e)).map(|e| w.shape(e)).collect();
                push_events(out, *id, true, p.revision, events);
                continue;
            }
            let run = if taken == kv_count {
                let prev_kv = w.prev_kv;
                whole[usize::from(prev_kv)]
                    .get_or_insert_with(|| {
                        Arc::new(EventRun::new(kv().map(|e| shape(e, prev_kv)).collect()))
                    })
                    .clone()
            } else {
                let events = kv().filter(|e| w.matches(e)).map(|e| w.shape(e)).collect();
                Arc::new(EventRun::new(events))
            };
            out.push(WatchReply {
                revision: p.revision,
                watch_id: *id,
                events: ReplyEvents::run(run),
                ..WatchReply::default()
            });
        }
    }

    /// The reader missed entries: every watch reads what it lacks from
    /// history.
    pub fn on_lagged(&mut self) {
        self.counters.lagged += 1;
        if self.canary.drops_lagged() {
            return;
        }
        for w in self.watches.values_mut() {
            w.synced = false;
        }
    }

    /// The next history read to make, if any (one at a time per stream, so
    /// that a stream's catch-up work stays bounded).
    pub fn next_read(&mut self) -> Option<(i64, ChangesRequest)> {
        if self.auth_wait || self.watches.values().any(|w| w.reading) {
            return None;
        }
        let (id, w) = self.watches.iter_mut().find(|(_, w)| !w.synced)?;
        w.reading = true;
        self.counters.catch_up_reads += 1;
        let req = ChangesRequest {
            key: w.key.clone(),
            range_end: w.range_end.clone(),
            start_revision: w.next_rev,
            events_max: CATCH_UP_EVENTS_MAX,
        };
        Some((*id, req))
    }

    /// The answer to `next_read` for watch `id`.
    pub fn on_read(&mut self, id: i64, result: Result<ChangesResponse, String>) -> Vec<WatchReply> {
        let Some(w) = self.watches.get_mut(&id) else {
            return Vec::new(); // Canceled meanwhile.
        };
        w.reading = false;
        let resp = match result {
            Ok(resp) => resp,
            // The store's auth moved on: read again once the stream has it.
            Err(reason) if reason == StateError::AuthOldRevision.to_string() => {
                self.auth_wait = true;
                return Vec::new();
            }
            Err(reason) => {
                // A refusal for lack of permission reads as etcd's.
                let reason = [StateError::PermissionDenied, StateError::UserEmpty]
                    .iter()
                    .find(|e| e.to_string() == reason)
                    .map_or(reason, auth_cancel_reason);
                self.watches.remove(&id);
                return vec![WatchReply {
                    revision: self.known_revision,
                    watch_id: id,
                    canceled: true,
                    cancel_reason: reason,
                    ..WatchReply::default()
                }];
            }
        };
        self.known_revision = self.known_revision.max(resp.revision);
        if w.next_rev < resp.compact_revision {
            self.watches.remove(&id);
            return vec![WatchReply {
                revision: resp.revision,
                watch_id: id,
                canceled: true,
                compact_revision: resp.compact_revision,
                cancel_reason: "mvcc: required revision has been compacted".to_string(),
                ..WatchReply::default()
            }];
        }
        let events: Vec<KvEvent> = resp
            .events
            .iter()
            .filter(|e| e.revision >= w.next_rev && w.matches(e))
            .map(|e| w.shape(e))
            .collect();
        w.next_rev = w.next_rev.max(resp.next_revision);
        if resp.next_revision > resp.revision {
            w.synced = true;
        }
        let mut out = Vec::new();
        if !events.is_empty() {
            w.sent = true;
            self.counters.events_sent += events.len() as u64;
            push_events(&mut out, id, w.fragment, resp.revision, events);
        }
        out.extend(self.maybe_progress());
        out
    }

    /// The periodic progress notification: an empty response to every
    /// synced watch that asked for them and was sent nothing since the
    /// last tick.
    pub fn on_progress_tick(&mut self) -> Vec<WatchReply> {
        let known = self.known_revision;
        let mut out = Vec::new();
        for (id, w) in self.watches.iter_mut() {
            if w.progress_notify && w.synced && !w.sent {
                out.push(WatchReply {
                    revision: (w.next_rev - 1).min(known),
                    watch_id: *id,
                    ..WatchReply::default()
                });
            }
            w.sent = false;
        }
        out
    }

    /// A requested progress response, once every watch is synced: its
    /// revision is one that every watch of the stream has been sent all
    /// events up to.
    fn maybe_progress(&mut self) -> Vec<WatchReply> {
        if !self.progress_pending || self.watches.values().any(|w| !w.synced) {
            return Vec::new();
        }
        self.progress_pending = false;
        let revision = self
            .watches
            .values()
            .map(|w| w.next_rev - 1)
            .min()
            .unwrap_or(self.known_revision)
            .min(self.known_revision);
        vec![WatchReply {
            revision,
            watch_id: STREAM_PROGRESS_ID,
            ..WatchReply::default()
        }]
    }
}

/// Appends the response(s) carrying `events` for watch `id`: one, or with
/// `fragment` several of about `FRAGMENT_BYTES`, all but the last marked.
fn push_events(
    out: &mut Vec<WatchReply>,
    id: i64,
    fragment: bool,
    revision: i64,
    events: Vec<KvEvent>,
) {
    let reply = |events: Vec<KvEvent>, more: bool| WatchReply {
        revision,
        watch_id: id,
        fragment: more,
        events: events.into(),
        ..WatchReply::default()
    };
    if !fragment {
        out.push(reply(events, false));
        return;
    }
    let mut piece = Vec::new();
    let mut bytes = 0;
    for e in events {
        let size = event_bytes(&e);
        if !piece.is_empty() && bytes + size > FRAGMENT_BYTES {
            out.push(reply(std::mem::take(&mut piece), true));
            bytes = 0;
        }
        bytes += size;
        piece.push(e);
    }
    out.push(reply(piece, false));
}

/// About what an event costs on the wire.
fn event_bytes(e: &KvEvent) -> usize {
    let kv = |kv: &Option<crate::kv::KeyValue>| {
        kv.as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len() + 48)
    };
    e.key.len() + kv(&e.kv) + kv(&e.prev) + 16
}

#[cfg(test)]
mod tests;
