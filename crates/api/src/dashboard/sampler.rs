//! What the dashboard shows, published as one JSON document to every open
//! page by one task per member: every member's Raft view (asked of each
//! member twice a second, as `ferrite status` does), a timeline of events
//! found by comparing each view with the last, per-second series of this
//! member's rates and latencies for the charts, and the data: registers,
//! volumes and the latest changes to keys. The data is a view of the event
//! stream (`ferrite_service::events`), as etcd's Watch is: read once, then
//! kept current from every applied change and pushed to the pages as it
//! happens (at most every `DATA_PUSH_MIN`), never polled. After the stream
//! lags or a snapshot replaces the state, it is read once more. Everything
//! kept is bounded.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrite_node::{Histogram, Metrics, SYNC_BUCKETS};
use ferrite_proto::ferrite::v1 as fv;
use ferrite_service::Context;
use ferrite_state::auth::{register_key, volume_key};
use ferrite_state::{AuthStore, Op, Principal, Reply};
use serde_json::{json, Value};
use tokio::sync::watch;

/// How often the view is refreshed.
pub const PERIOD: Duration = Duration::from_millis(500);
/// Events kept for the timeline.
const EVENTS_MAX: usize = 100;
/// Chart points kept: one per second, five minutes.
const SERIES_MAX: usize = 300;
/// Registers shown.
const REGISTERS_MAX: u64 = 200;
/// Key changes shown.
const CHANGES_MAX: usize = 20;
/// Pages get data changes at most this often.
const DATA_PUSH_MIN: Duration = Duration::from_millis(100);
/// Bytes of a value shown in the changes list.
const VALUE_SHOWN_MAX: usize = 64;

/// The data the pages show, kept current from the event stream.
#[derive(Default)]
struct DataView {
    /// Read from the state once; `None` until then or after a lag.
    registers: Option<std::collections::BTreeMap<String, i64>>,
    volumes: Option<std::collections::BTreeMap<String, (u64, u64)>>,
    /// Newest first, each with its whole key (the JSON shows it cut), for
    /// the per-user filter.
    changes: VecDeque<(bytes::Bytes, Value)>,
    changed: bool,
    /// This member's applied index just before the last read: entries up
    /// to it are in what was read. Later ones may be too, but applying
    /// them again, in order, ends in the same state.
    loaded_at: u64,
}

impl DataView {
    /// Applies one published entry; false if the view must be read again.
    fn apply(&mut self, p: &ferrite_state::Published) -> bool {
        use ferrite_state::{Event, VolumeEvent};
        if p.restored {
            return false;
        }
        for e in p.events.iter().filter(|_| p.index > self.loaded_at) {
            self.changed = true;
            match e {
                Event::Kv(k) => {
                    let (kind, value) = match &k.kv {
                        Some(kv) => ("put", shown(&kv.value)),
                        None => ("delete", String::new()),
                    };
                    if self.changes.len() == CHANGES_MAX {
                        self.changes.pop_back();
                    }
                    self.changes.push_front((
                        k.key.clone(),
                        json!({
                            "kind": kind, "key": shown(&k.key), "value": value,
                            "revision": k.revision,
                        }),
                    ));
                }
                Event::Register(r) => {
                    if let Some(regs) = &mut self.registers {
                        regs.insert(r.name.clone(), r.new);
                        if regs.len() > REGISTERS_MAX as usize {
                            regs.pop_last();
                        }
                    }
                }
                Event::Volume(v) => {
                    // The table keys volumes by name; events name ids.
                    let Some(vols) = &mut self.volumes else {
                        continue;
                    };
                    match v {
                        VolumeEvent::Resized { id, new, .. } => {
                            if let Some(entry) = vols.values_mut().find(|(i, _)| i == id) {
                                entry.1 = *new;
                            }
                        }
                        VolumeEvent::Deleted { id } => vols.retain(|_, (i, _)| i != id),
                        // A new volume's name is not in its event: read again.
                        VolumeEvent::Created { .. } => return false,
                        VolumeEvent::Written { .. } | VolumeEvent::Zeroed { .. } => {}
                    }
                }
                Event::Lease(_) | Event::Auth(_) => {}
            }
        }
        true
    }
}

/// Bytes as text for the page, cut to `VALUE_SHOWN_MAX`.
fn shown(b: &[u8]) -> String {
    let cut = &b[..b.len().min(VALUE_SHOWN_MAX)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if b.len() > VALUE_SHOWN_MAX {
        text.push('…');
    }
    text
}

/// One member as last seen, to notice what changed.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    reachable: bool,
    role: i32,
    term: u64,
    snapshot_index: u64,
    isolated: bool,
}

struct Sampler {
    ctx: Context,
    control: bool,
    data: DataView,
    events: VecDeque<Value>,
    series: VecDeque<Value>,
    seen: Vec<(String, Seen)>,
    leader: Option<String>,
    members_key: Vec<(u64, bool)>,
    last: Option<Counters>,
    /// The members as last sampled, as the page shows them.
    members: Vec<Value>,
}

/// Cumulative counters at one instant, for rates and windowed percentiles.
struct Counters {
    at: std::time::Instant,
    commit: u64,
    reads: u64,
    requests: Vec<u64>,
    syncs: Vec<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn role_name(role: i32, learner: bool) -> &'static str {
    match role {
        3 => "leader",
        2 => "candidate",
        1 => "pre-candidate",
        _ if learner => "learner",
        _ => "follower",
    }
}

fn buckets(h: &Histogram) -> Vec<u64> {
    h.buckets
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect()
}

/// The `q` quantile (0..1) in milliseconds of the samples between two
/// bucket snapshots, interpolated inside its bucket; 0 with no samples.
fn quantile_ms(before: &[u64], after: &[u64], q: f64) -> f64 {
    let counts: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let target = q * total as f64;
    let mut seen = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if seen + c as f64 >= target {
            let lo = if i == 0 { 0.0 } else { SYNC_BUCKETS[i - 1] };
            let hi = SYNC_BUCKETS.get(i).copied().unwrap_or(lo * 2.0);
            let frac = (target - seen) / c as f64;
            return (lo + (hi - lo) * frac) * 1000.0;
        }
        seen += c as f64;
    }
    SYNC_BUCKETS[SYNC_BUCKETS.len() - 1] * 1000.0
}

impl Sampler {
    fn event(&mut self, kind: &str, text: String) {
        tracing::debug!(kind, %text, "dashboard event");
        if self.events.len() == EVENTS_MAX {
            self.events.pop_front();
        }
        self.events
            .push_back(json!({ "at": now_ms(), "kind": kind, "text": text }));
    }

    fn counters(&self) -> Counters {
        let m = self.ctx.metrics();
        Counters {
            at: std::time::Instant::now(),
            commit: Metrics::get(&m.commit),
            reads: Metrics::get(&m.reads),
            requests: buckets(&m.requests),
            syncs: buckets(&m.sync),
        }
    }

    /// Adds a chart point once a second has passed since the last.
    fn sample_series(&mut self) {
        let now = self.counters();
        let Some(last) = &self.last else {
            self.last = Some(now);
            return;
        };
        let dt = now.at.duration_since(last.at).as_secs_f64();
        if dt < 0.95 {
            return;
        }
        let point = json!({
            "at": now_ms(),
            "writes": now.commit.saturating_sub(last.commit) as f64 / dt,
            "reads": now.reads.saturating_sub(last.reads) as f64 / dt,
            "p50_ms": quantile_ms(&last.requests, &now.requests, 0.5),
            "p99_ms": quantile_ms(&last.requests, &now.requests, 0.99),
            "fsync_p50_ms": quantile_ms(&last.syncs, &now.syncs, 0.5),
            "fsync_p99_ms": quantile_ms(&last.syncs, &now.syncs, 0.99),
        });
        if self.series.len() == SERIES_MAX {
            self.series.pop_front();
        }
        self.series.push_back(point);
        self.last = Some(now);
    }

    /// Notes elections, leader changes, members going down or up,
    /// isolation, snapshots and membership changes.
    fn diff(&mut self, members: &[fv::MemberStatus]) {
        let mut leader = None;
        let mut term = 0;
        let mut now = Vec::new();
        let mut key = Vec::new();
        for m in members {
            let seen = match &m.status {
                Some(s) => {
                    if s.role == 3 {
                        leader = Some(m.name.clone());
                        term = s.term;
                    }
                    Seen {
                        reachable: true,
                        role: s.role,
                        term: s.term,
                        snapshot_index: s.snapshot_index,
                        isolated: s.isolated,
                    }
                }
                None => Seen::default(),
            };
            let learner = m
                .status
                .as_ref()
                .is_some_and(|s| s.learners.contains(&m.id));
            key.push((m.id, learner));
            now.push((m.name.clone(), seen));
        }
        if !self.seen.is_empty() {
            for (name, seen) in &now {
                let Some((_, before)) = self.seen.iter().find(|(n, _)| n == name).cloned() else {
                    continue;
                };
                if before.reachable && !seen.reachable {
                    self.event("down", format!("{name} is unreachable"));
                }
                if !before.reachable && seen.reachable {
                    self.event("up", format!("{name} is back"));
                }
                if !before.isolated && seen.isolated {
                    self.event("control", format!("{name} is cut off from its peers"));
                }
                if before.isolated && !seen.isolated {
                    self.event("control", format!("{name} is connected again"));
                }
                if seen.reachable && seen.role == 2 && (before.role != 2 || seen.term > before.term)
                {
                    self.event(
                        "election",
                        format!("{name} stands for election in term {}", seen.term),
                    );
                }
                if before.reachable && seen.snapshot_index > before.snapshot_index {
                    self.event(
                        "snapshot",
                        format!("{name} has a snapshot at index {}", seen.snapshot_index),
                    );
                }
            }
            if !self.members_key.is_empty() && key != self.members_key {
                self.event("membership", format!("members now: {}", describe(members)));
            }
        }
        if leader.is_some() && leader != self.leader {
            let name = leader.clone().unwrap_or_default();
            self.event("leader", format!("{name} leads term {term}"));
        } else if leader.is_none() && self.leader.is_some() {
            self.event("election", "no leader".to_string());
        }
        self.leader = leader;
        self.seen = now;
        self.members_key = key;
    }

    /// Reads the registers and volumes the view lacks (this member's
    /// state: the event stream that keeps them current is this member's).
    async fn load_data(&mut self) {
        if self.data.registers.is_none() || self.data.volumes.is_none() {
            self.data.loaded_at = Metrics::get(&self.ctx.metrics().applied);
        }
        if self.data.registers.is_none() {
            let op = Op::RegisterList {
                limit: REGISTERS_MAX,
            };
            if let Ok(Reply::Registers(list)) = self
                .ctx
                .read(op, &ferrite_state::Principal::System, true)
                .await
            {
                self.data.registers = Some(list.into_iter().collect());
            }
        }
        if self.data.volumes.is_none() {
            if let Ok(Reply::Volumes(list)) = self
                .ctx
                .read(Op::VolumeList, &ferrite_state::Principal::System, true)
                .await
            {
                let vols = list.into_iter().map(|v| (v.name, (v.id, v.size)));
                self.data.volumes = Some(vols.collect());
            }
        }
    }

    /// Samples the members (Raft views, rates).
    async fn sample(&mut self) {
        let members = crate::status::cluster_statuses(&self.ctx, Duration::from_millis(400))
            .await
            .unwrap_or_default();
        self.diff(&members);
        self.sample_series();
        self.members = members.iter().map(member_json).collect();
    }

    fn view(&mut self) -> View {
        self.data.changed = false;
        let registers: Vec<Value> = self
            .data
            .registers
            .iter()
            .flatten()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        let volumes: Vec<Value> = self
            .data
            .volumes
            .iter()
            .flatten()
            .map(|(name, (_, size))| json!({ "name": name, "size": size }))
            .collect();
        let changes: Vec<&Value> = self.data.changes.iter().map(|(_, v)| v).collect();
        let doc = json!({
            "me": self.ctx.name,
            "leader": self.leader,
            "control": self.control,
            "members": self.members,
            "registers": registers,
            "volumes": volumes,
            "changes": changes,
            "events": self.events,
            "series": self.series,
        });
        View {
            text: doc.to_string(),
            doc,
            change_keys: self.data.changes.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
}

/// One published view: everything (read as `Principal::System`), as JSON
/// and as text, with the whole keys of `changes` (in the same order). Each
/// page gets it whole, or cut to what its user may read (`for_user`).
#[derive(Debug, Default)]
pub struct View {
    pub doc: Value,
    pub text: String,
    pub change_keys: Vec<bytes::Bytes>,
}

/// The view as `who` may see it, checked against the auth store as it is
/// now (so a revoked permission hides data at the next update): with auth
/// disabled, or for root, all of it; otherwise only the registers, volumes
/// and key changes the user may read (by their permission keys,
/// `register_key`/`volume_key`), and no controls. Cluster health (members,
/// leader, timeline, charts) is shown to every user.
pub fn for_user(view: &View, store: &AuthStore, who: &Principal) -> String {
    if !store.enabled() || store.check_admin(who).is_ok() {
        return view.text.clone();
    }
    let may_read = |key: &[u8]| store.may_still_read(who, key, b"");
    let mut doc = view.doc.clone();
    doc["control"] = Value::Bool(false);
    let named = |v: &Value| v["name"].as_str().unwrap_or_default().to_string();
    if let Some(regs) = doc["registers"].as_array_mut() {
        regs.retain(|r| may_read(&register_key(&named(r))));
    }
    if let Some(vols) = doc["volumes"].as_array_mut() {
        vols.retain(|v| may_read(&volume_key(&named(v))));
    }
    if let Some(changes) = doc["changes"].as_array_mut() {
        let mut keys = view.change_keys.iter();
        // Same length and order as `change_keys`; a change without its key
        // (never) is dropped.
        changes.retain(|_| keys.next().is_some_and(|k| may_read(k)));
    }
    doc.to_string()
}

fn describe(members: &[fv::MemberStatus]) -> String {
    members
        .iter()
        .map(|m| m.name.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

fn member_json(m: &fv::MemberStatus) -> Value {
    let client = m.client_urls.first().cloned().unwrap_or_default();
    match &m.status {
        Some(s) => {
            let first = (s.last_index + 1).saturating_sub(s.tail_terms.len() as u64);
            let tail: Vec<Value> = s
                .tail_terms
                .iter()
                .enumerate()
                .map(|(i, t)| json!({ "index": first + i as u64, "term": t }))
                .collect();
            json!({
                "name": m.name, "id": format!("{:x}", m.id), "client": client,
                "reachable": true, "error": "",
                "role": role_name(s.role, s.learners.contains(&m.id)),
                "term": s.term, "last_index": s.last_index, "commit": s.commit_index,
                "applied": s.applied_index, "snapshot_index": s.snapshot_index,
                "isolated": s.isolated, "tail": tail,
            })
        }
        None => json!({
            "name": m.name, "id": format!("{:x}", m.id), "client": client,
            "reachable": false, "error": m.error,
            "role": "unknown", "term": 0, "last_index": 0, "commit": 0, "applied": 0,
            "snapshot_index": 0, "isolated": false, "tail": [],
        }),
    }
}

/// Samples the members every `PERIOD` and follows the event stream, and
/// publishes the view after each sample and after data changes, until the
/// server stops (the sender lives as long as the task).
pub async fn run(ctx: Context, control: bool, tx: watch::Sender<std::sync::Arc<View>>) {
    let mut changes = ctx.events.subscribe();
    let mut sampler = Sampler {
        ctx,
        control,
        data: DataView::default(),
        members: Vec::new(),
        events: VecDeque::new(),
        series: VecDeque::new(),
        seen: Vec::new(),
        leader: None,
        members_key: Vec::new(),
        last: None,
    };
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut push = tokio::time::interval(DATA_PUSH_MIN);
    push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                sampler.sample().await;
                sampler.load_data().await;
            }
            entry = changes.recv() => {
                let current = match entry {
                    Ok(p) => sampler.data.apply(&p),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => false,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if !current {
                    sampler.data.registers = None;
                    sampler.data.volumes = None;
                    sampler.load_data().await;
                    sampler.data.changed = true;
                }
                continue;
            }
            _ = push.tick() => {
                if !sampler.data.changed {
                    continue;
                }
            }
        }
        let view = sampler.view();
        let _ = tx.send(std::sync::Arc::new(view));
    }
}

#[cfg(test)]
mod tests {
    use super::quantile_ms;

    #[test]
    fn quantiles_come_from_the_window_between_two_snapshots() {
        let before = vec![5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        // 10 new samples: 9 in (0.25, 0.5] ms, 1 in (2.5, 5] ms.
        let after = vec![5, 0, 9, 0, 0, 1, 0, 0, 0, 0, 0];
        let p50 = quantile_ms(&before, &after, 0.5);
        assert!(p50 > 0.25 && p50 <= 0.5, "p50 {p50}");
        let p99 = quantile_ms(&before, &after, 0.99);
        assert!(p99 > 2.5 && p99 <= 5.0, "p99 {p99}");
        assert_eq!(quantile_ms(&before, &before, 0.5), 0.0);
    }
}
