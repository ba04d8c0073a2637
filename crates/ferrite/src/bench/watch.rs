//! Watchers and the puts that feed them, over the etcd v3 API, the same for
//! both systems: watchers spread round-robin over the members, several per
//! gRPC stream and several streams per connection, as real clients
//! multiplex; a put load spread over all members.
//!
//! Every watcher watches the whole bench prefix from the revision after
//! the last one written before it was created, and only the load writes
//! under it, so each one must see every revision from there to the last
//! put exactly once and in order: a gap is a missed event, a repeat a
//! duplicate. Each put's value carries the time it was sent, so a watcher
//! measures put-to-event latency from the event alone.

use std::time::{Duration, Instant};

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use ferrite_proto::etcdserverpb::watch_client::WatchClient;
use tokio::sync::{mpsc, watch as signal};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::cluster::{stream_channel, Cluster};

/// Watchers sharing one gRPC stream.
const WATCHERS_PER_STREAM: usize = 64;
/// gRPC streams (watch or keepalive) sharing one HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 16;
/// Connections the load generator opens to each member.
const CONNECTIONS_PER_MEMBER: usize = 4;
/// Concurrent put clients of the load that drives events.
pub const PUT_CLIENTS: usize = 32;
/// Distinct keys the puts cycle through (the store stays small).
const KEYS: u64 = 1024;
/// The bench's keys: `PREFIX` followed by a number.
const PREFIX: &[u8] = b"wbench/";
/// The end of the watched range: the prefix with its last byte + 1.
const PREFIX_END: &[u8] = b"wbench0";
/// How long watchers may take to receive every event once the puts stop.
const DRAIN_MAX: Duration = Duration::from_secs(60);
/// How long creating watchers may take.
const CREATE_MAX: Duration = Duration::from_secs(120);

/// Connections to every member of a cluster, opened once.
pub struct Members {
    /// `connections[member][k]`.
    connections: Vec<Vec<Channel>>,
}

impl Members {
    pub async fn connect(c: &Cluster) -> anyhow::Result<Members> {
        let mut connections = Vec::new();
        for i in 0..c.members.len() {
            let mut per = Vec::new();
            for _ in 0..CONNECTIONS_PER_MEMBER {
                let ch = stream_channel(&c.endpoint(i), Duration::from_secs(2))
                    .await
                    .ok_or_else(|| anyhow::anyhow!("cannot connect to {}", c.members[i].name))?;
                per.push(ch);
            }
            connections.push(per);
        }
        Ok(Members { connections })
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// The connection for the `k`-th stream or client of `member`.
    pub fn channel(&self, member: usize, k: usize) -> Channel {
        let per = &self.connections[member];
        per[(k / STREAMS_PER_CONNECTION) % per.len()].clone()
    }
}

/// What the watchers of one run received.
#[derive(Default)]
pub struct Received {
    pub watchers: usize,
    /// Events received, over all watchers.
    pub events: u64,
    /// Watchers that missed or repeated at least one revision, and how
    /// many revisions were missed and repeated over all watchers.
    pub watchers_wrong: usize,
    pub missed: u64,
    pub duplicated: u64,
    /// Watchers canceled by the server, or whose stream failed.
    pub failed: usize,
    /// Put-to-event latencies in µs, if asked for.
    pub latencies_us: Vec<u32>,
    /// When the last event arrived.
    pub last_event: Option<Instant>,
    /// Why a stream failed (the first one seen).
    pub failure: Option<String>,
}

impl Received {
    fn merge(&mut self, o: Received) {
        self.watchers += o.watchers;
        self.events += o.events;
        self.watchers_wrong += o.watchers_wrong;
        self.missed += o.missed;
        self.duplicated += o.duplicated;
        self.failed += o.failed;
        self.latencies_us.extend(o.latencies_us);
        self.last_event = self.last_event.max(o.last_event);
        self.failure = self.failure.take().or(o.failure);
    }
}

/// One watcher's record: the revision it must see next, and what went
/// wrong.
#[derive(Clone, Copy)]
struct Watcher {
    next: i64,
    missed: u64,
    duplicated: u64,
}

impl Watcher {
    fn on_event(&mut self, revision: i64) {
        if revision == self.next {
            self.next += 1;
        } else if revision < self.next {
            self.duplicated += 1;
        } else {
            self.missed += (revision - self.next) as u64;
            self.next = revision + 1;
        }
    }
}

/// Open watchers, each on its stream's task.
pub struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<Received>>,
    /// The last revision the watchers must reach; they finish once every
    /// one has (0: not known yet).
    until: signal::Sender<i64>,
}

/// Opens `count` watchers from revision `from` on, round-robin over the
/// members, and returns once the servers confirmed every one. `epoch` is
/// the clock the puts' send times count from; latencies are kept only if
/// `latency` is set.
pub async fn open(
    members: &Members,
    count: usize,
    from: i64,
    epoch: Instant,
    latency: bool,
) -> anyhow::Result<Watchers> {
    let n = members.len();
    let (until, until_rx) = signal::channel(0i64);
    let (created_tx, mut created_rx) = mpsc::channel::<anyhow::Result<()>>(64);
    let mut tasks = Vec::new();
    let mut streams = 0;
    for member in 0..n.min(count) {
        // Watchers i ≡ member (mod n) are this member's.
        let here = (count - member).div_ceil(n);
        let per_member = here.div_ceil(WATCHERS_PER_STREAM);
        for s in 0..per_member {
            let watchers = here / per_member + usize::from(s < here % per_member);
            let client = WatchClient::new(members.channel(member, s));
            let stream = Stream {
                watchers,
                from,
                epoch,
                latency,
            };
            tasks.push(tokio::spawn(stream.run(
                client,
                created_tx.clone(),
                until_rx.clone(),
            )));
            streams += 1;
        }
    }
    drop(created_tx);
    let deadline = tokio::time::Instant::now() + CREATE_MAX;
    for _ in 0..streams {
        match tokio::time::timeout_at(deadline, created_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => anyhow::bail!("a watch stream ended while creating its watchers"),
            Err(_) => anyhow::bail!("{count} watchers not created within {CREATE_MAX:?}"),
        }
    }
    Ok(Watchers { tasks, until })
}

impl Watchers {
    /// Waits until every watcher received revision `last` (or `DRAIN_MAX`
    /// passed), closes the streams, and returns what they received.
    pub async fn finish(self, last: i64) -> Received {
        let _ = self.until.send(last);
        let mut all = Received::default();
        for t in self.tasks {
            if let Ok(r) = t.await {
                all.merge(r);
            }
        }
        all
    }
}

struct Stream {
    watchers: usize,
    from: i64,
    epoch: Instant,
    latency: bool,
}

impl Stream {
    async fn run(
        self,
        mut client: WatchClient<Channel>,
        created: mpsc::Sender<anyhow::Result<()>>,
        mut until: signal::Receiver<i64>,
    ) -> Received {
        let mut got = Received {
            watchers: self.watchers,
            ..Received::default()
        };
        let (tx, rx) = mpsc::channel(self.watchers + 1);
        for _ in 0..self.watchers {
            let create = pb::WatchCreateRequest {
                key: PREFIX.to_vec(),
                range_end: PREFIX_END.to_vec(),
                start_revision: self.from,
                ..Default::default()
            };
            let req = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            };
            let _ = tx.try_send(req);
        }
        let mut replies = match client.watch(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                let _ = created.send(Err(anyhow::anyhow!("watch: {e}"))).await;
                got.failed = self.watchers;
                return got;
            }
        };
        // Creates on one stream are answered in order: the k-th created
        // reply names the k-th watcher's id.
        let mut ids: std::collections::HashMap<i64, usize> = Default::default();
        let mut w = vec![
            Watcher {
                next: self.from,
                missed: 0,
                duplicated: 0,
            };
            self.watchers
        ];
        let deadline = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(deadline);
        let mut last = 0i64;
        let mut created = Some(created);
        loop {
            if last > 0 && w.iter().all(|x| x.next > last) {
                break;
            }
            tokio::select! {
                reply = replies.message() => match reply {
                    Ok(Some(r)) => {
                        if r.created {
                            ids.insert(r.watch_id, ids.len());
                            if ids.len() == self.watchers {
                                if let Some(c) = created.take() {
                                    let _ = c.send(Ok(())).await;
                                }
                            }
                        }
                        if r.canceled {
                            got.failed += 1;
                            if let Some(c) = created.take() {
                                let why = format!("watch canceled: {}", r.cancel_reason);
                                let _ = c.send(Err(anyhow::anyhow!(why))).await;
                            }
                            continue;
                        }
                        let Some(&k) = ids.get(&r.watch_id) else { continue };
                        let now = Instant::now();
                        for e in &r.events {
                            let Some(kv) = &e.kv else { continue };
                            w[k].on_event(kv.mod_revision);
                            got.events += 1;
                            if self.latency {
                                if let Some(sent) = sent_at(&kv.value) {
                                    let at = now.duration_since(self.epoch).as_micros() as u64;
                                    got.latencies_us.push(at.saturating_sub(sent) as u32);
                                }
                            }
                        }
                        if !r.events.is_empty() {
                            got.last_event = Some(now);
                        }
                    }
                    Ok(None) | Err(_) => {
                        let why = match reply {
                            Err(e) => format!("watch stream failed: {e}"),
                            _ => "watch stream ended by the server".to_string(),
                        };
                        got.failed = self.watchers;
                        got.failure = Some(why.clone());
                        if let Some(c) = created.take() {
                            let _ = c.send(Err(anyhow::anyhow!(why))).await;
                        }
                        // Whatever it did not get counts as missed.
                        if last == 0 && until.changed().await.is_ok() {
                            last = *until.borrow();
                        }
                        break;
                    }
                },
                changed = until.changed(), if last == 0 => {
                    if changed.is_err() {
                        break;
                    }
                    last = *until.borrow();
                    deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_MAX);
                }
                () = &mut deadline => break,
            }
        }
        drop(tx);
        for x in &w {
            // What never arrived by the end is missed too.
            let missed = x.missed + (last + 1 - x.next).max(0) as u64;
            got.missed += missed;
            got.duplicated += x.duplicated;
            if missed + x.duplicated > 0 {
                got.watchers_wrong += 1;
            }
        }
        got
    }
}

/// The send time (µs since the epoch) a put's value carries.
fn sent_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// The store's revision now, read linearizably on `member`.
pub async fn revision(members: &Members, member: usize) -> anyhow::Result<i64> {
    let mut kv = KvClient::new(members.channel(member, 0));
    let req = pb::RangeRequest {
        key: PREFIX.to_vec(),
        limit: 1,
        count_only: true,
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(10), kv.range(req))
        .await
        .map_err(|_| anyhow::anyhow!("revision: timed out"))??;
    Ok(r.into_inner().header.map_or(0, |h| h.revision))
}

/// What a put load did.
pub struct Puts {
    pub ok: u64,
    pub errors: u64,
}

/// `PUT_CLIENTS` clients spread round-robin over the members put under the
/// bench prefix for `duration`, each value carrying its send time; with
/// `rate`, the clients together put at most that many per second.
pub async fn put_load(
    members: &Members,
    epoch: Instant,
    duration: Duration,
    rate: Option<f64>,
) -> Puts {
    let until = Instant::now() + duration;
    let n = members.len();
    let mut tasks = Vec::new();
    for i in 0..PUT_CLIENTS {
        let mut kv = KvClient::new(members.channel(i % n, i / n));
        let every = rate.map(|r| Duration::from_secs_f64(PUT_CLIENTS as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut pace = every.map(|e| {
                let mut t = tokio::time::interval(e);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut k = i as u64;
            while Instant::now() < until {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                k = (k + PUT_CLIENTS as u64) % KEYS;
                let mut value = (epoch.elapsed().as_micros() as u64).to_le_bytes().to_vec();
                value.resize(64, b'v');
                let mut key = PREFIX.to_vec();
                key.extend_from_slice(format!("{k:04}").as_bytes());
                let req = pb::PutRequest {
                    key,
                    value,
                    ..Default::default()
                };
                match tokio::time::timeout(Duration::from_secs(10), kv.put(req)).await {
                    Ok(Ok(_)) => ok += 1,
                    _ => errors += 1,
                }
            }
            (ok, errors)
        }));
    }
    let mut puts = Puts { ok: 0, errors: 0 };
    for t in tasks {
        if let Ok((ok, errors)) = t.await {
            puts.ok += ok;
            puts.errors += errors;
        }
    }
    puts
}

/// One watch row's result.
pub struct Delivery {
    pub received: Received,
    /// From the first put to the last event's arrival.
    pub seconds: f64,
    pub puts: Puts,
    /// Revisions written: every watcher must see each once.
    pub revisions: i64,
}

/// `watchers` watchers receive the events of a put load of `duration`
/// (paced at `rate` puts/s, if given); returns what they received.
pub async fn deliver(
    members: &Members,
    leader: usize,
    watchers: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<Delivery> {
    let epoch = Instant::now();
    let from = revision(members, leader).await? + 1;
    let open = open(members, watchers, from, epoch, rate.is_some()).await?;
    let started = Instant::now();
    let puts = put_load(members, epoch, duration, rate).await;
    let last = revision(members, leader).await?;
    let received = open.finish(last).await;
    let end = received.last_event.unwrap_or_else(Instant::now);
    Ok(Delivery {
        seconds: end.duration_since(started).as_secs_f64().max(1e-3),
        received,
        puts,
        revisions: last - from + 1,
    })
}

/// The largest member RSS (MB) with `count` idle watchers open.
pub async fn rss_with(
    c: &Cluster,
    members: &Members,
    leader: usize,
    count: usize,
) -> anyhow::Result<f64> {
    let from = revision(members, leader).await? + 1;
    let open = open(members, count, from, Instant::now(), false).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = largest_rss(c);
    open.finish(from - 1).await;
    Ok(rss)
}

/// The largest resident memory (MB) of the cluster's members now.
pub fn largest_rss(c: &Cluster) -> f64 {
    (0..c.members.len())
        .filter_map(|i| c.pid(i))
        .map(super::load::rss_mb)
        .fold(0.0, f64::max)
}
