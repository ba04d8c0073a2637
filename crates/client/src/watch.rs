//! A watch that outlives the member it is on, as etcd's Go client's does.
//!
//! `WatchCursor` is the pure part: it remembers the next revision the
//! caller has not seen (the last event's revision + 1, or the store's
//! revision + 1 when the watch was created without a start revision), drops
//! any event below it, and turns a cancel into a typed error. `Watcher`
//! drives it over gRPC: when the stream breaks (the member died, stopped,
//! or lost its leader), it opens the same watch on the next member from the
//! cursor's revision, so the caller sees every event once, in order.
//!
//! Progress notifications do not move the cursor: resuming from the last
//! event is always safe, and costs at most a replay that the cursor drops.

use std::collections::VecDeque;
use std::time::Duration;

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::watch_client::WatchClient;
use ferrite_proto::mvccpb;
use tokio::sync::mpsc;
use tonic::Code;

use crate::auth::{Auth, AuthError, AuthRetries, AuthRetry};
use crate::tls::{ConnectError, Connector};
use crate::{Client, ClientError, KeyValue, Notice, Notify};
use crate::{BACKOFF_MAX, BACKOFF_MIN, PATIENCE, WAITING_CHANNEL};

/// etcd's metadata for "end the stream if the member has no leader": a
/// member cut off from the others would otherwise serve a watch that
/// silently stops.
const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");
/// How long a member may take to confirm a new watch.
const CREATE_WAIT: Duration = Duration::from_secs(5);

/// What to watch, as etcd's `WatchCreateRequest` says it.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Every key starting with the key (etcd's `--prefix`).
    pub prefix: bool,
    /// Keys in `[key, range_end)`; overrides `prefix`.
    pub range_end: Option<Vec<u8>>,
    /// The first revision to report (0: from now on).
    pub from_revision: i64,
    /// Each event carries the key-value it replaced.
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

impl EventKind {
    /// etcdctl's spelling: `PUT`, `DELETE`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Put => "PUT",
            EventKind::Delete => "DELETE",
        }
    }
}

/// One change. For a delete, `kv` holds the key and the deleting revision.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// The end of the range of keys that start with `prefix` (etcd's
/// `GetPrefixRangeEnd`: "\0", every key, when there is no such end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Where a watch stands: what to ask a member for, and which events the
/// caller has already seen.
#[derive(Clone, Debug)]
pub struct WatchCursor {
    request: pb::WatchCreateRequest,
    /// The lowest revision not yet delivered; 0 until known (a watch from
    /// "now" learns it when it is created).
    /// Invariant: never decreases once non-zero.
    next_revision: i64,
}

impl WatchCursor {
    pub fn new(key: &[u8], options: &WatchOptions) -> WatchCursor {
        use pb::watch_create_request::FilterType;
        let range_end = match (&options.range_end, options.prefix) {
            (Some(end), _) => end.clone(),
            (None, true) => prefix_end(key),
            (None, false) => Vec::new(),
        };
        let mut filters = Vec::new();
        if options.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if options.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        WatchCursor {
            request: pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end,
                start_revision: options.from_revision.max(0),
                prev_kv: options.prev_kv,
                filters,
                ..Default::default()
            },
            next_revision: options.from_revision.max(0),
        }
    }

    /// The lowest revision not yet delivered (0: not known yet).
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The request that opens (or reopens) the watch where the caller is.
    pub fn create_request(&self) -> pb::WatchCreateRequest {
        pb::WatchCreateRequest {
            start_revision: self.next_revision,
            ..self.request.clone()
        }
    }

    /// Takes one response of the member; returns the events the caller has
    /// not seen, or why the watch ended.
    pub fn on_response(&mut self, r: pb::WatchResponse) -> Result<Vec<WatchEvent>, ClientError> {
        if r.canceled {
            // etcd refuses a watch for auth reasons with a cancel whose
            // reason is the gRPC error's text.
            if let Some(e) = AuthError::from_message(&r.cancel_reason) {
                return Err(ClientError::Auth(e));
            }
            if r.compact_revision > 0 {
                return Err(ClientError::Compacted {
                    requested: self.next_revision,
                    compact_revision: r.compact_revision,
                });
            }
            return Err(ClientError::WatchCanceled(r.cancel_reason));
        }
        if r.created && self.next_revision == 0 {
            // A watch from "now" starts after the store's revision at
            // creation: resuming there misses nothing that came later.
            self.next_revision = r.header.as_ref().map_or(0, |h| h.revision + 1);
        }
        // Events of one revision (a transaction) arrive in one response:
        // compare against the cursor as it was before this response.
        let floor = self.next_revision;
        let mut out = Vec::with_capacity(r.events.len());
        for e in r.events {
            let Some(event) = event(e) else { continue };
            if event.revision() < floor {
                continue; // seen before the stream broke
            }
            self.next_revision = self.next_revision.max(event.revision() + 1);
            out.push(event);
        }
        Ok(out)
    }
}

fn event(e: mvccpb::Event) -> Option<WatchEvent> {
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Some(WatchEvent {
        kind,
        kv: e.kv?,
        prev_kv: e.prev_kv,
    })
}

/// A live stream to one member.
struct Live {
    responses: tonic::Streaming<pb::WatchResponse>,
    /// Held so that the request stream stays open: dropping it ends the
    /// watch on the member.
    _requests: mpsc::Sender<pb::WatchRequest>,
}

/// A watch on the cluster; `next` yields its events in revision order.
pub struct Watcher {
    endpoints: Vec<String>,
    current: usize,
    notify: Notify,
    cursor: WatchCursor,
    live: Option<Live>,
    pending: VecDeque<WatchEvent>,
    connector: Connector,
    auth: Auth,
}

impl Client {
    /// Opens a watch of `key` and returns once a member has created it:
    /// from then on, every change is reported.
    pub async fn watch(&self, key: &[u8], options: WatchOptions) -> Result<Watcher, ClientError> {
        let mut w = Watcher {
            endpoints: self.endpoints.clone(),
            current: self.current,
            notify: self.notify.clone(),
            cursor: WatchCursor::new(key, &options),
            live: None,
            pending: VecDeque::new(),
            connector: self.connector.clone(),
            auth: self.auth.clone(),
        };
        w.open().await?;
        Ok(w)
    }
}

/// Whether a stream's failure is the member's or the connection's (then
/// the watch goes on elsewhere) rather than a refusal of the watch.
fn resumable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
    )
}

impl Watcher {
    /// The member the watch is on now.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// The lowest revision not yet reported.
    pub fn next_revision(&self) -> i64 {
        self.cursor.next_revision()
    }

    /// The next event; an error ends the watch (a compaction, a refusal,
    /// or no member reachable for the client's patience).
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            if self.live.is_none() {
                self.open().await?;
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            match live.responses.message().await {
                Ok(Some(r)) => {
                    let events = self.cursor.on_response(r)?;
                    self.pending.extend(events);
                }
                Ok(None) => self.lost("the member ended the stream"),
                Err(s) if resumable(&s) => self.lost(s.message()),
                Err(s) => return Err(crate::status_error(&s)),
            }
        }
    }

    fn lost(&mut self, _why: &str) {
        self.live = None;
        self.current = (self.current + 1) % self.endpoints.len();
        (self.notify)(Notice::WatchResumed {
            url: self.endpoints[self.current].clone(),
            revision: self.cursor.next_revision(),
        });
    }

    /// Opens the watch on the current member, or the next ones, until one
    /// confirms it or patience runs out.
    async fn open(&mut self) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut backoff = BACKOFF_MIN;
        let mut last = String::new();
        let mut auth_retries = AuthRetries::default();
        while tokio::time::Instant::now() < deadline {
            match self.try_open().await {
                Ok(live) => {
                    self.live = Some(live);
                    return Ok(());
                }
                Err(OpenError::Ended(e)) => return Err(e),
                Err(OpenError::Auth(e)) => {
                    match auth_retries.on_refusal(Some(&e), self.auth.has_credentials()) {
                        AuthRetry::Reauthenticate => {
                            (self.notify)(Notice::Reauthenticated { why: e.to_string() });
                            self.auth.forget();
                        }
                        AuthRetry::Resend => {}
                        AuthRetry::No => return Err(ClientError::Auth(e)),
                    }
                    // Same member, at once: the watch was refused, not lost.
                    continue;
                }
                Err(OpenError::Retry(why)) => last = why,
            }
            self.current = (self.current + 1) % self.endpoints.len();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        Err(ClientError::Unavailable(PATIENCE, last))
    }

    async fn try_open(&mut self) -> Result<Live, OpenError> {
        let channel = self
            .connector
            .connect(&self.endpoints[self.current], WAITING_CHANNEL)
            .await
            .map_err(|e| match e {
                ConnectError::Unreachable(why) => OpenError::Retry(why),
                ConnectError::Tls(e) => OpenError::Ended(e),
            })?;
        if self.auth.needs_token() {
            self.auth
                .authenticate(channel.clone())
                .await
                .map_err(status_error)?;
        }
        let channel = self.auth.wrap(channel);
        let (tx, rx) = mpsc::channel(1);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                self.cursor.create_request(),
            )),
        };
        tx.send(create)
            .await
            .map_err(|_| OpenError::Retry("request stream closed".into()))?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            REQUIRE_LEADER.0,
            tonic::metadata::MetadataValue::from_static(REQUIRE_LEADER.1),
        );
        let opened = tokio::time::timeout(CREATE_WAIT, async {
            let mut responses = WatchClient::new(channel)
                .watch(request)
                .await
                .map_err(status_error)?
                .into_inner();
            // Events may only follow the confirmation; take it here so
            // that `watch` returns once the watch is live.
            match responses.message().await {
                Ok(Some(r)) => {
                    let created = r.created;
                    let events = self.cursor.on_response(r).map_err(|e| match e {
                        ClientError::Auth(e) => OpenError::Auth(e),
                        e => OpenError::Ended(e),
                    })?;
                    self.pending.extend(events);
                    if created {
                        Ok(responses)
                    } else {
                        Err(OpenError::Retry(
                            "the first answer was not a creation".into(),
                        ))
                    }
                }
                Ok(None) => Err(OpenError::Retry("the member ended the stream".into())),
                Err(s) => Err(status_error(s)),
            }
        })
        .await
        .map_err(|_| OpenError::Retry("the member did not confirm the watch".into()))??;
        Ok(Live {
            responses: opened,
            _requests: tx,
        })
    }
}

enum OpenError {
    /// Try the next member.
    Retry(String),
    /// The watch cannot go on.
    Ended(ClientError),
    /// Refused for an auth reason: maybe worth a new token.
    Auth(AuthError),
}

fn status_error(s: tonic::Status) -> OpenError {
    if let Some(why) = crate::tls::tls_failure(&s) {
        return OpenError::Ended(ClientError::Tls(why));
    }
    if let Some(e) = AuthError::from_status(&s) {
        return OpenError::Auth(e);
    }
    if resumable(&s) {
        OpenError::Retry(s.message().to_string())
    } else {
        OpenError::Ended(crate::status_error(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, revision: i64) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: tonic::codegen::Bytes::copy_from_slice(key.as_bytes()),
            value: tonic::codegen::Bytes::copy_from_slice(value.as_bytes()),
            mod_revision: revision,
            ..Default::default()
        }
    }

    fn put(key: &str, value: &str, revision: i64) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(kv(key, value, revision)),
            prev_kv: None,
        }
    }

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    fn created(revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: header(revision),
            created: true,
            ..Default::default()
        }
    }

    fn events(revision: i64, events: Vec<mvccpb::Event>) -> pb::WatchResponse {
        pb::WatchResponse {
            header: header(revision),
            events,
            ..Default::default()
        }
    }

    fn revisions(events: &[WatchEvent]) -> Vec<i64> {
        events.iter().map(WatchEvent::revision).collect()
    }

    /// A watch from "now" that broke after events 11 and 12 resumes at 13.
    /// If the new member replays 12, it is dropped; a transaction's two
    /// events at 13 are both delivered.
    #[test]
    fn resume_starts_after_the_last_event_and_drops_replays() {
        let mut c = WatchCursor::new(b"k", &WatchOptions::default());
        assert_eq!(c.create_request().start_revision, 0);
        assert!(c.on_response(created(10)).expect("created").is_empty());
        assert_eq!(c.next_revision(), 11);
        let got = c
            .on_response(events(12, vec![put("k", "a", 11), put("k", "b", 12)]))
            .expect("events");
        assert_eq!(revisions(&got), vec![11, 12]);

        // The stream broke: the new member is asked from 13.
        assert_eq!(c.create_request().start_revision, 13);
        assert!(c.on_response(created(12)).expect("created").is_empty());
        assert_eq!(
            c.next_revision(),
            13,
            "a creation does not move a known cursor"
        );
        let got = c
            .on_response(events(
                13,
                vec![put("k", "b", 12), put("k", "c", 13), put("k2", "d", 13)],
            ))
            .expect("events");
        assert_eq!(revisions(&got), vec![13, 13]);
        assert_eq!(c.create_request().start_revision, 14);
    }

    /// A watch created before any event resumes from the creation's
    /// revision + 1, so a put made while it was reconnecting is not lost.
    #[test]
    fn a_watch_with_no_events_yet_resumes_from_its_creation() {
        let mut c = WatchCursor::new(b"k", &WatchOptions::default());
        c.on_response(created(41)).expect("created");
        assert_eq!(c.create_request().start_revision, 42);
    }

    #[test]
    fn a_watch_from_a_revision_keeps_it_until_events_come() {
        let options = WatchOptions {
            from_revision: 5,
            prefix: true,
            ..Default::default()
        };
        let mut c = WatchCursor::new(b"a/", &options);
        c.on_response(created(40)).expect("created");
        let r = c.create_request();
        assert_eq!((r.start_revision, r.range_end.as_slice()), (5, &b"a0"[..]));
    }

    #[test]
    fn a_compaction_cancel_is_an_error() {
        let mut c = WatchCursor::new(
            b"k",
            &WatchOptions {
                from_revision: 3,
                ..Default::default()
            },
        );
        let cancel = pb::WatchResponse {
            header: header(50),
            canceled: true,
            compact_revision: 20,
            ..Default::default()
        };
        match c.on_response(cancel) {
            Err(ClientError::Compacted {
                requested,
                compact_revision,
            }) => assert_eq!((requested, compact_revision), (3, 20)),
            other => panic!("expected a compaction error, got {other:?}"),
        }
    }

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
