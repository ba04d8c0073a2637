//! Watchers and lease holders under chaos, through etcd's own API, and
//! their checks.
//!
//! Watchers: one per KV key. Each watches its key with previous values,
//! and after any failure (a killed, paused or cut-off member: a stream that
//! ends, errs, or does not answer a progress request within
//! `SILENCE_MAX`) resumes on the next member from the last revision it saw
//! plus one, as etcd's clients do. After the run, the reference history is
//! read with one watch from the first revision, and every watcher's stream
//! must be exactly that history for its key: every event, in order, once,
//! with the right previous value — or end with a cancel it reports.
//!
//! Lease holders: each grants a lease of `LEASE_TTL_S`, puts a key on it,
//! keeps it alive on some member about every second for a while, and reads
//! its key (linearizably) all along; then it lets the lease lapse or
//! revokes it. A keepalive answered with a TTL, sent at `s`, promises the
//! lease until `s + TTL` (etcd's clients count from the send too). The
//! checks:
//! - kept alive means kept: a read that completed at `t` and found the key
//!   gone, while such a promise still covered `t` (less `SLACK`, and before
//!   any revoke of ours), is a violation;
//! - lapsed means gone: once healed, a lease left to lapse must have lost
//!   its key within its TTL plus `LAPSE_BOUND` of the last promise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_client::{AuthError, Credentials, TOKEN_METADATA};
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::auth_client::AuthClient;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use ferrite_proto::etcdserverpb::lease_client::LeaseClient;
use ferrite_proto::etcdserverpb::watch_client::WatchClient;
use tokio::sync::{mpsc, Mutex};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::Rng;

/// A stream that answers no progress request for this long is dead.
const SILENCE_MAX: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
pub const LEASE_TTL_S: i64 = 3;
/// Clock and scheduling slack allowed to the "kept alive means kept" rule.
const SLACK: Duration = Duration::from_millis(200);
/// How long after its TTL a lapsed lease may keep its key once the cluster
/// is healed: a failover extends it by a TTL, plus elections and commits.
const LAPSE_BOUND: Duration = Duration::from_secs(12);

/// One event as a watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub revision: i64,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    pub prev: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct WatchLog {
    /// Every event of every segment, in the order received.
    pub events: Vec<Seen>,
    pub resumes: u64,
    /// A cancel that ended the watcher (not one for permission).
    pub canceled: Option<String>,
    /// One per watch created (a stream's life on one member).
    pub segments: Vec<Segment>,
    /// Live watches canceled because the user lost read permission.
    pub permission_cancels: u64,
    /// Creates refused for lack of permission (while it was revoked).
    pub permission_refusals: u64,
}

/// One watch, from its created answer to its end.
#[derive(Clone, Debug)]
pub struct Segment {
    /// When the created answer arrived: the watch existed on its member.
    pub created: Instant,
    /// The highest revision of an event it delivered (0: none).
    pub max_revision: i64,
    /// Whether it ended canceled for permission.
    pub canceled_for_permission: bool,
}

/// A token in every request's metadata (etcd's `token`), or none.
#[derive(Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert(TOKEN_METADATA, t.clone());
        }
        Ok(request)
    }
}

/// Trades `credentials` for a token on `ch`; without credentials, no
/// token. `None` if the member did not answer.
async fn authenticate(ch: &Channel, credentials: Option<&Credentials>) -> Option<Token> {
    let Some(c) = credentials else {
        return Some(Token(None));
    };
    let req = pb::AuthenticateRequest {
        name: c.user.clone(),
        password: c.password.clone(),
    };
    let r = tokio::time::timeout(CALL_TIMEOUT, AuthClient::new(ch.clone()).authenticate(req))
        .await
        .ok()?
        .ok()?;
    MetadataValue::try_from(r.into_inner().token)
        .ok()
        .map(|t| Token(Some(t)))
}

/// Whether a refusal says the token went stale (authenticate again).
fn stale(s: &tonic::Status) -> bool {
    matches!(
        AuthError::from_status(s),
        Some(AuthError::InvalidToken | AuthError::OldRevision | AuthError::UserEmpty)
    )
}

async fn channel(endpoint: &str) -> Option<Channel> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}")).ok()?;
    tokio::time::timeout(CONNECT_TIMEOUT, ep.connect())
        .await
        .ok()?
        .ok()
}

fn seen(e: &ferrite_proto::mvccpb::Event) -> Option<Seen> {
    let kv = e.kv.as_ref()?;
    let put = e.r#type == ferrite_proto::mvccpb::event::EventType::Put as i32;
    Some(Seen {
        revision: kv.mod_revision,
        value: put.then(|| kv.value.to_vec()),
        prev: e.prev_kv.as_ref().map(|p| p.value.to_vec()),
    })
}

fn create(key: &[u8], range_end: &[u8], start_revision: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                start_revision,
                prev_kv: true,
                ..Default::default()
            },
        )),
    }
}

fn progress() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    }
}

/// Watches `key` from `start` until `stop` says the revision it must reach
/// and it has reached it (or `stop` closes), resuming across members.
///
/// With `credentials` (the limited user), a watch canceled because the
/// user lost read permission, or refused for it, waits and tries again
/// until access is back, then goes on from where it stopped.
pub async fn watcher(
    key: Vec<u8>,
    endpoints: Vec<String>,
    start: i64,
    mut stop: tokio::sync::watch::Receiver<Option<i64>>,
    log: Arc<Mutex<WatchLog>>,
    credentials: Option<Credentials>,
) {
    let mut next = start;
    let mut reached = start - 1;
    let mut token: Option<Token> = None;
    // The last attempt ended for lack of permission: waiting for access.
    let mut denied = false;
    for attempt in 0usize.. {
        if let Some(target) = *stop.borrow() {
            if reached >= target {
                return;
            }
        }
        if denied {
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else if attempt > 0 {
            log.lock().await.resumes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        denied = false;
        let ep = &endpoints[attempt % endpoints.len()];
        let Some(ch) = channel(ep).await else {
            continue;
        };
        if token.is_none() {
            token = authenticate(&ch, credentials.as_ref()).await;
        }
        let Some(tok) = token.clone() else {
            continue;
        };
        let (tx, rx) = mpsc::channel(4);
        if tx.send(create(&key, &[], next)).await.is_err() {
            continue;
        }
        let Ok(resp) = tokio::time::timeout(
            CALL_TIMEOUT,
            WatchClient::with_interceptor(ch, tok)
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        else {
            continue;
        };
        let resp = match resp {
            Ok(r) => r,
            Err(s) => {
                if stale(&s) {
                    token = None;
                }
                continue;
            }
        };
        let mut stream = resp.into_inner();
        let mut segment: Option<usize> = None;
        let mut asked = Instant::now();
        let mut answered = true;
        loop {
            if answered && asked.elapsed() > Duration::from_millis(500) {
                let _ = tx.send(progress()).await;
                asked = Instant::now();
                answered = false;
            }
            let msg = tokio::select! {
                m = tokio::time::timeout(Duration::from_millis(250), stream.message()) => m,
                _ = stop.changed() => continue,
            };
            let msg = match msg {
                Err(_) if !answered && asked.elapsed() > SILENCE_MAX => break,
                Err(_) => {
                    if let Some(target) = *stop.borrow() {
                        if reached >= target && answered {
                            return;
                        }
                    }
                    continue;
                }
                Ok(Ok(Some(m))) => m,
                Ok(Err(s)) => {
                    if stale(&s) {
                        token = None;
                    }
                    break;
                }
                Ok(Ok(None)) => break,
            };
            if msg.canceled {
                let auth = AuthError::from_message(&msg.cancel_reason);
                let mut l = log.lock().await;
                match auth {
                    Some(AuthError::PermissionDenied) if msg.compact_revision == 0 => {
                        match segment {
                            Some(i) => {
                                l.permission_cancels += 1;
                                l.segments[i].canceled_for_permission = true;
                            }
                            None => l.permission_refusals += 1,
                        }
                        denied = true;
                        break;
                    }
                    Some(
                        AuthError::InvalidToken | AuthError::OldRevision | AuthError::UserEmpty,
                    ) if msg.compact_revision == 0 => {
                        token = None;
                        break;
                    }
                    _ => {}
                }
                let reason = if msg.compact_revision > 0 {
                    format!("compacted at {}", msg.compact_revision)
                } else {
                    msg.cancel_reason.clone()
                };
                l.canceled = Some(reason);
                return;
            }
            if msg.created && segment.is_none() {
                let mut l = log.lock().await;
                l.segments.push(Segment {
                    created: Instant::now(),
                    max_revision: 0,
                    canceled_for_permission: false,
                });
                segment = Some(l.segments.len() - 1);
            }
            if msg.watch_id == -1 || (msg.events.is_empty() && !msg.created) {
                answered = true;
                // A progress answer: nothing up to its revision is missing.
                if let Some(h) = &msg.header {
                    reached = reached.max(h.revision);
                }
            }
            let events: Vec<Seen> = msg.events.iter().filter_map(seen).collect();
            let mut l = log.lock().await;
            if let Some(last) = events.last() {
                next = last.revision + 1;
                reached = reached.max(last.revision);
                if let Some(i) = segment {
                    let max = events.iter().map(|e| e.revision).max().unwrap_or(0);
                    let s = &mut l.segments[i];
                    s.max_revision = s.max_revision.max(max);
                }
            }
            l.events.extend(events);
            drop(l);
            if let Some(target) = *stop.borrow() {
                if reached >= target && answered {
                    return;
                }
            }
        }
    }
}

/// The whole history of the keys under `prefix` from `start`, read with
/// one watch on `endpoint`, up to a revision at or past `until`.
pub async fn reference(
    endpoint: &str,
    prefix: &[u8],
    start: i64,
    until: i64,
    credentials: Option<&Credentials>,
) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<Seen>>> {
    let ch = channel(endpoint)
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot reach {endpoint}"))?;
    let token = authenticate(&ch, credentials)
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot authenticate on {endpoint}"))?;
    let (tx, rx) = mpsc::channel(4);
    let end = ferrite_service::concurrency::prefix_end(prefix);
    tx.send(create(prefix, &end, start)).await?;
    let mut stream = WatchClient::with_interceptor(ch, token)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut by_key: BTreeMap<Vec<u8>, Vec<Seen>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reached = start - 1;
    while reached < until {
        if Instant::now() > deadline {
            anyhow::bail!("the reference watch reached {reached}, not {until}, in 60 s");
        }
        tx.send(progress()).await?;
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await else {
            continue;
        };
        let Some(msg) = msg? else {
            anyhow::bail!("the reference watch ended");
        };
        if msg.canceled {
            anyhow::bail!("the reference watch was canceled: {}", msg.cancel_reason);
        }
        for e in &msg.events {
            if let (Some(kv), Some(s)) = (&e.kv, seen(e)) {
                reached = reached.max(s.revision);
                by_key.entry(kv.key.to_vec()).or_default().push(s);
            }
        }
        if msg.watch_id == -1 {
            if let Some(h) = &msg.header {
                reached = reached.max(h.revision);
            }
        }
    }
    Ok(by_key)
}

/// Compares a watcher's stream with the reference for its key; the first
/// difference, if any.
pub fn check_watcher(key: &[u8], log: &WatchLog, reference: &[Seen], start: i64) -> Option<String> {
    let want: Vec<&Seen> = reference.iter().filter(|s| s.revision >= start).collect();
    let name = String::from_utf8_lossy(key);
    for (i, w) in want.iter().enumerate() {
        match log.events.get(i) {
            Some(got) if got == *w => {}
            Some(got) => {
                return Some(format!(
                    "watcher of {name}: event {i} is {got:?}, the history has {w:?}"
                ))
            }
            None if log.canceled.is_some() => return None,
            None => {
                return Some(format!(
                    "watcher of {name}: missing {} events from revision {}",
                    want.len() - i,
                    w.revision
                ))
            }
        }
    }
    if log.events.len() > want.len() {
        return Some(format!(
            "watcher of {name}: {} events beyond the history (duplicates?), first {:?}",
            log.events.len() - want.len(),
            log.events[want.len()]
        ));
    }
    None
}

/// What a lease holder did, for the checks.
#[derive(Default)]
pub struct LeaseLog {
    /// Per lease: its key, the promises (send instant + TTL) it got, when
    /// it was put, when (if) we revoked it, and whether we let it lapse.
    pub leases: Vec<HeldLease>,
    /// Reads: (lease index, invoked, completed, present).
    pub reads: Vec<(usize, Instant, Instant, bool)>,
    pub keepalives: u64,
}

#[derive(Clone, Debug)]
pub struct HeldLease {
    pub id: i64,
    pub key: Vec<u8>,
    pub put_done: Option<Instant>,
    pub promised_until: Option<Instant>,
    pub revoked_at: Option<Instant>,
    pub lapsed: bool,
}

/// One lease holder until `until`: grant, put, keep alive and read, then
/// lapse or revoke; again.
pub async fn lease_holder(
    id: u64,
    endpoints: Vec<String>,
    seed: u64,
    until: Instant,
    log: Arc<Mutex<LeaseLog>>,
    credentials: Option<Credentials>,
) {
    let mut rng = Rng::new(seed);
    let mut round = 0u64;
    let mut token: Option<Token> = None;
    while Instant::now() < until {
        round += 1;
        let ep = &endpoints[rng.below(endpoints.len() as u64) as usize];
        let Some(ch) = channel(ep).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if token.is_none() {
            token = authenticate(&ch, credentials.as_ref()).await;
        }
        let Some(tok) = token.clone() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut leases = LeaseClient::with_interceptor(ch.clone(), tok.clone());
        let sent = Instant::now();
        let grant = pb::LeaseGrantRequest {
            ttl: LEASE_TTL_S,
            id: 0,
        };
        let granted = match tokio::time::timeout(CALL_TIMEOUT, leases.lease_grant(grant)).await {
            Ok(Ok(g)) => g,
            Ok(Err(s)) => {
                if stale(&s) {
                    token = None;
                }
                continue;
            }
            Err(_) => continue,
        };
        let granted = granted.into_inner();
        let key = format!("chaos/lease/{id}/{round}").into_bytes();
        let index = {
            let mut l = log.lock().await;
            l.leases.push(HeldLease {
                id: granted.id,
                key: key.clone(),
                put_done: None,
                promised_until: Some(sent + Duration::from_secs(granted.ttl as u64)),
                revoked_at: None,
                lapsed: false,
            });
            l.leases.len() - 1
        };
        let put = pb::PutRequest {
            key: key.clone(),
            value: b"held".to_vec(),
            lease: granted.id,
            ..Default::default()
        };
        let mut kv = KvClient::with_interceptor(ch.clone(), tok.clone());
        match tokio::time::timeout(CALL_TIMEOUT, kv.put(put)).await {
            Ok(Ok(_)) => log.lock().await.leases[index].put_done = Some(Instant::now()),
            Ok(Err(s)) => {
                if stale(&s) {
                    token = None;
                }
                continue;
            }
            Err(_) => continue,
        }
        let hold = Duration::from_millis(3_000 + rng.below(9_000));
        let held_until = (Instant::now() + hold).min(until);
        while Instant::now() < held_until {
            // A keepalive on some member (its own stream: one request).
            let ep = &endpoints[rng.below(endpoints.len() as u64) as usize];
            if let Some(ch) = channel(ep).await {
                let sent = Instant::now();
                let req = tokio_stream::once(pb::LeaseKeepAliveRequest { id: granted.id });
                let answer = tokio::time::timeout(CALL_TIMEOUT, async {
                    let mut s = LeaseClient::with_interceptor(ch.clone(), tok.clone())
                        .lease_keep_alive(req)
                        .await?
                        .into_inner();
                    s.message().await
                })
                .await;
                if let Ok(Err(s)) = &answer {
                    if stale(s) {
                        token = None;
                    }
                }
                if let Ok(Ok(Some(r))) = answer {
                    if r.ttl > 0 {
                        let mut l = log.lock().await;
                        l.keepalives += 1;
                        let until = sent + Duration::from_secs(r.ttl as u64);
                        let entry = &mut l.leases[index];
                        entry.promised_until = entry.promised_until.max(Some(until));
                    }
                }
                // And a linearizable read of the key.
                let invoked = Instant::now();
                let get = pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                };
                if let Ok(Ok(r)) = tokio::time::timeout(
                    CALL_TIMEOUT,
                    KvClient::with_interceptor(ch, tok.clone()).range(get),
                )
                .await
                {
                    let present = !r.into_inner().kvs.is_empty();
                    log.lock()
                        .await
                        .reads
                        .push((index, invoked, Instant::now(), present));
                }
            }
            tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        }
        if rng.below(2) == 0 {
            log.lock().await.leases[index].lapsed = true;
        } else {
            log.lock().await.leases[index].revoked_at = Some(Instant::now());
            let req = pb::LeaseRevokeRequest { id: granted.id };
            let _ = tokio::time::timeout(CALL_TIMEOUT, leases.lease_revoke(req)).await;
        }
    }
}

/// "Kept alive means kept": violations among the reads.
pub fn check_leases_kept(log: &LeaseLog) -> Vec<String> {
    let mut out = Vec::new();
    for &(i, invoked, done, present) in &log.reads {
        let l = &log.leases[i];
        let (Some(put), Some(promised)) = (l.put_done, l.promised_until) else {
            continue;
        };
        if present || invoked < put {
            continue;
        }
        let revoked_before = l.revoked_at.is_some_and(|r| r <= done);
        if !revoked_before && done + SLACK < promised {
            out.push(format!(
                "lease {:x}: its key was gone at a read that completed {:?} before its last acknowledged keepalive ran out",
                l.id,
                promised - done
            ));
        }
    }
    out
}

/// "Lapsed means gone", checked once healed (at `healed`, with a leader):
/// reads each lapsed lease's key (waiting for its bound if needed); the
/// violations. A lease that lapsed while no leader could revoke it is
/// given its bound from `healed`.
pub async fn check_leases_lapsed(
    endpoint: &str,
    log: &LeaseLog,
    healed: Instant,
    credentials: Option<&Credentials>,
) -> anyhow::Result<Vec<String>> {
    let ch = channel(endpoint)
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot reach {endpoint}"))?;
    let token = authenticate(&ch, credentials)
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot authenticate on {endpoint}"))?;
    let mut kv = KvClient::with_interceptor(ch, token);
    let mut out = Vec::new();
    for l in log
        .leases
        .iter()
        .filter(|l| l.lapsed && l.put_done.is_some())
    {
        let Some(promised) = l.promised_until else {
            continue;
        };
        let deadline = promised.max(healed) + LAPSE_BOUND;
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let get = pb::RangeRequest {
            key: l.key.clone(),
            ..Default::default()
        };
        let answer = match kv.range(get.clone()).await {
            Err(s) if stale(&s) => {
                // The token went stale while we waited: once more, anew.
                let ch = channel(endpoint)
                    .await
                    .ok_or_else(|| anyhow::anyhow!("cannot reach {endpoint}"))?;
                let token = authenticate(&ch, credentials)
                    .await
                    .ok_or_else(|| anyhow::anyhow!("cannot authenticate on {endpoint}"))?;
                kv = KvClient::with_interceptor(ch, token);
                kv.range(get).await?
            }
            other => other?,
        };
        let present = !answer.into_inner().kvs.is_empty();
        if present {
            out.push(format!(
                "lease {:x}: its key outlived its last keepalive by more than TTL + {LAPSE_BOUND:?}",
                l.id
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, v: &str, prev: Option<&str>) -> Seen {
        Seen {
            revision: rev,
            value: Some(v.as_bytes().to_vec()),
            prev: prev.map(|p| p.as_bytes().to_vec()),
        }
    }

    fn log(events: Vec<Seen>) -> WatchLog {
        WatchLog {
            events,
            ..WatchLog::default()
        }
    }

    #[test]
    fn the_watch_check_catches_gaps_duplicates_and_wrong_previous_values() {
        let history = vec![
            put(3, "a", None),
            put(5, "b", Some("a")),
            put(8, "c", Some("b")),
        ];
        let k = b"k";
        assert_eq!(check_watcher(k, &log(history.clone()), &history, 1), None);
        assert_eq!(
            check_watcher(k, &log(history[1..].to_vec()), &history, 4),
            None
        );
        let gap = log(vec![history[0].clone(), history[2].clone()]);
        assert!(check_watcher(k, &gap, &history, 1).is_some());
        let mut dup = history.clone();
        dup.push(history[2].clone());
        assert!(check_watcher(k, &log(dup), &history, 1).is_some());
        let short = log(history[..2].to_vec());
        assert!(
            check_watcher(k, &short, &history, 1).is_some(),
            "a missing tail"
        );
        let wrong_prev = log(vec![
            history[0].clone(),
            put(5, "b", None),
            history[2].clone(),
        ]);
        assert!(check_watcher(k, &wrong_prev, &history, 1).is_some());
    }

    #[test]
    fn the_lease_check_catches_a_key_gone_while_promised() {
        let t0 = Instant::now();
        let lease = HeldLease {
            id: 7,
            key: b"k".to_vec(),
            put_done: Some(t0),
            promised_until: Some(t0 + Duration::from_secs(3)),
            revoked_at: None,
            lapsed: false,
        };
        let mut l = LeaseLog {
            leases: vec![lease],
            ..LeaseLog::default()
        };
        let at = |ms| t0 + Duration::from_millis(ms);
        l.reads = vec![
            (0, at(100), at(200), true),
            (0, at(3_300), at(3_400), false),
        ];
        assert!(check_leases_kept(&l).is_empty());
        l.reads.push((0, at(1_000), at(1_100), false));
        assert_eq!(check_leases_kept(&l).len(), 1);
    }
}
