//! KV clients that hold leases, and the lease plumbing a member needs.
//!
//! The mapping between ferrite-state's lease events and the node's lessor is
//! the one the service's machine makes: `ferrite_node::state_leases`
//! (`lease_changes`, `lease_reset`, `lease_proposals`), shared by both.
//!
//! Each KV client runs one command at a time (in a session, so a retried
//! command applies once) against a member of its choice: puts, deletes and a
//! transaction over a few `kv/` keys (what the watchers watch), a rare
//! compaction, and a lease life: grant (`LeaseGrant`, an id unique to the
//! client, a TTL of 2–5 s), attach one or two `lease/` keys, then keepalives
//! (`Replica::lease_keep_alive`, to a member of its choice) on a timer of
//! their own. A lease's plan is drawn at its grant: kept alive well within
//! its TTL, kept alive close to its TTL (so some keepalives arrive late),
//! left to lapse after a few keepalives, or revoked after a few. Every
//! renewal is recorded with its SEND time and, if acknowledged, the TTL
//! the answer carried (`ferrite_checker::leases`), and every revoke with the
//! virtual time a member first applied it (`World::on_published`).
//!
//! Time scale: a tick is 10 ms nominal and the lessor counts it as 10 ms
//! (`tick_ms`), so a 2 s TTL is 200 ticks; each node's real tick interval is
//! within ±`clock_skew_per_mille` (eps: 0, 2 %, 10 % or 50 % per seed) of
//! nominal. The bounds the checker is given (`lease_bounds`):
//! - safety slack: 2 nominal ticks (20 ms): the lessor dates a renewal by
//!   its last tick, and revokes at a tick;
//! - reach (a keepalive's way to the leader's renew): 2·latency_max +
//!   2·(request_ticks + 1) ticks at the slowest rate: the request may wait
//!   out its deadline at the member it was sent to and again at the leader;
//! - revoke bound: (lease_revoke_retry_ticks + 10) = 30 ticks at the
//!   slowest rate + 6·latency_max + 4·disk_latency_max +
//!   4·apply_latency_max: proposed at the first tick past expiry, maybe
//!   again after the retry interval, committed and applied;
//! - the base of the lifetime bound also moves to the latest promote of a
//!   lessor and the end of the latest process pause (a paused leader's
//!   clock stands still).
//!
//! After healing, KV clients stop and the run goes on until every lease is
//! gone from the table, or one is held past its bound ("lease lifetime").

use bytes::Bytes;
use ferrite_checker::leases::LeaseBounds;
use ferrite_node::{LeaseTtl, NodeError};
use ferrite_raft::NodeId;
use ferrite_state::kv::{
    CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest,
    RequestOp, TxnRequest,
};
use ferrite_state::{Command, Event, LeaseEvent, Op, Reply, StateError};

use crate::node::{open_reply, Asker};
use crate::options::Micros;
use crate::workload::Failed;
use crate::world::{Event as WorldEvent, World};

pub use ferrite_node::state_leases::{lease_changes, lease_proposals, lease_reset};

/// The KV keys the clients write (and the watchers watch).
pub const KV_KEYS: [&str; 4] = ["kv/a", "kv/b", "kv/c", "kv/d"];
/// Leases one client grants in a run at most.
const LEASES_PER_CLIENT_MAX: u64 = 3;
const TTL_S_MIN: u64 = 2;
const TTL_S_MAX: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Keepalives every `interval`, until the run heals.
    Keep,
    /// `left` more keepalives, then silence: the lease must expire.
    Lapse,
    /// `left` more keepalives, then the client revokes it.
    Revoke,
}

struct Held {
    id: i64,
    granted: bool,
    keys_attached: u32,
    keys_wanted: u32,
    plan: Plan,
    left: u32,
    interval: Micros,
    revoke_wanted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Grant(i64),
    Attach(i64),
    Revoke(i64),
    Write,
    /// ACTIVATE (true) or DEACTIVATE NOSPACE (`alarm.rs`).
    Alarm(bool),
}

struct KvPending {
    seq: u64,
    what: What,
    command: Bytes,
    attempt: u32,
}

pub struct KvClient {
    /// Session client id (apart from the register clients' ids).
    pub id: u64,
    seq: u64,
    target: NodeId,
    pending: Option<KvPending>,
    held: Option<Held>,
    grants: u64,
}

/// What travels from a KV client to a member.
pub enum KvCall {
    Propose(Bytes),
    KeepAlive { lease: i64 },
}

pub struct KvRequest {
    pub client: usize,
    pub node: NodeId,
    /// The command's `command_tag`, or the keepalive's record index.
    pub tag: u64,
    pub call: KvCall,
}

pub struct KvResponse {
    pub client: usize,
    pub tag: u64,
    pub result: Result<Bytes, NodeError>,
}

impl KvClient {
    pub fn new(id: u64, target: NodeId) -> KvClient {
        KvClient {
            id,
            seq: 0,
            target,
            pending: None,
            held: None,
            grants: 0,
        }
    }

    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }
}

/// Keepalive tags are record indexes with this bit set, apart from
/// command tags.
const KEEPALIVE_TAG: u64 = 1 << 62;

/// A command's tag: its sequence number and (the low bits of) its attempt.
fn command_tag(seq: u64, attempt: u32) -> u64 {
    (seq << 16) | u64::from(attempt & 0xFFFF)
}

const RETRY_BACKOFF: Micros = 20_000;
const RETRY_BACKOFF_MAX: Micros = 1_000_000;

fn put(key: &str, value: String, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value),
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
        lease,
    }
}

fn delete(key: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: Bytes::from(key.to_string()),
        range_end: Bytes::new(),
        prev_kv: false,
    }
}

impl World {
    /// The lease checker's bounds for this run (see `ferrite_checker::leases`).
    pub(crate) fn lease_bounds(&self) -> LeaseBounds {
        let o = &self.opts;
        let eps = o.clock_skew_per_mille;
        let tick_max = o.tick * (1000 + eps) / 1000;
        let retry_ticks = self.replica_limits().lease_revoke_retry_ticks;
        LeaseBounds {
            eps_per_mille: eps,
            // The lessor dates a renewal by its last tick: up to one tick
            // interval early; one more for the tick the revoke waits for.
            slack: 2 * o.tick,
            // Client to member, parked there up to its request deadline,
            // forwarded, and waiting at the leader up to its own.
            reach: 2 * o.latency_max + 2 * (o.request_ticks + 1) * tick_max,
            // Proposed at the first tick past expiry, proposed again after
            // the retry interval, committed and applied: a few round trips,
            // disk writes and apply tasks.
            revoke_bound: (retry_ticks + 10) * tick_max
                + 6 * o.latency_max
                + 4 * o.disk_latency_max
                + 4 * o.apply_latency_max,
        }
    }

    pub(crate) fn on_kv_next(&mut self, c: usize) {
        if self.healing.is_some() || self.kv_clients[c].busy() {
            return;
        }
        let client_id = self.kv_clients[c].id;
        let now = self.now;
        if let Some(op) = self.next_auth_op(c) {
            self.kv_begin(c, What::Write, op);
            return;
        }
        if let Some(op) = self.next_alarm_op(c) {
            self.kv_begin(c, What::Alarm(self.alarm_raised), op);
            return;
        }
        // A lease to grant?
        if self.kv_clients[c].held.is_none()
            && self.kv_clients[c].grants < LEASES_PER_CLIENT_MAX
            && self.prng.below(3) == 0
        {
            let client = &mut self.kv_clients[c];
            client.grants += 1;
            let id = (client_id * 100 + client.grants) as i64;
            let ttl_s = self.prng.range(TTL_S_MIN, TTL_S_MAX) as i64;
            let ttl_us = ttl_s as u64 * 1_000_000;
            let (plan, interval) = match self.prng.below(8) {
                0..=2 => (Plan::Keep, ttl_us * self.prng.range(15, 45) / 100),
                3 => (Plan::Keep, ttl_us * self.prng.range(80, 105) / 100),
                4..=5 => (Plan::Lapse, ttl_us * self.prng.range(20, 60) / 100),
                _ => (Plan::Revoke, ttl_us * self.prng.range(20, 60) / 100),
            };
            let held = Held {
                id,
                granted: false,
                keys_attached: 0,
                keys_wanted: self.prng.range(1, 2) as u32,
                plan,
                left: self.prng.range(0, 4) as u32,
                interval,
                revoke_wanted: false,
            };
            self.kv_clients[c].held = Some(held);
            self.leases.granting(id, ttl_s, now);
            self.stats.leases_granted += 1;
            self.kv_begin(c, What::Grant(id), Op::LeaseGrant { id, ttl: ttl_s });
            return;
        }
        if let Some(h) = &self.kv_clients[c].held {
            if h.granted && h.keys_attached < h.keys_wanted {
                let (id, j) = (h.id, h.keys_attached);
                let key = format!("lease/{id}/{j}");
                let op = Op::Put(put(&key, format!("held by {client_id}"), id));
                self.kv_begin(c, What::Attach(id), op);
                return;
            }
            if h.revoke_wanted {
                let id = h.id;
                self.leases.client_revoke(id, now);
                self.kv_begin(c, What::Revoke(id), Op::LeaseRevoke { id });
                return;
            }
        }
        let seq = self.kv_clients[c].seq + 1;
        let value = format!("{client_id}.{seq}");
        let key = |p: &mut ferrite_raft::Prng| KV_KEYS[p.below(KV_KEYS.len() as u64) as usize];
        let op = match self.prng.below(20) {
            0..=8 => Op::Put(put(key(&mut self.prng), value, 0)),
            9..=12 => Op::DeleteRange(delete(key(&mut self.prng))),
            13..=18 => {
                // One revision touching several keys, deletes included.
                let guard = key(&mut self.prng);
                let version = self.prng.range(0, 2) as i64;
                Op::Txn(TxnRequest {
                    compare: vec![Compare {
                        key: Bytes::from(guard.to_string()),
                        range_end: Bytes::new(),
                        result: CompareResult::Greater,
                        target: CompareTarget::Version(version),
                    }],
                    success: vec![
                        RequestOp::Put(put(KV_KEYS[0], value.clone(), 0)),
                        RequestOp::DeleteRange(delete(KV_KEYS[1])),
                        RequestOp::Put(put(KV_KEYS[2], value.clone(), 0)),
                    ],
                    failure: vec![
                        RequestOp::Put(put(KV_KEYS[1], value.clone(), 0)),
                        RequestOp::Put(put(KV_KEYS[3], value, 0)),
                        RequestOp::DeleteRange(delete(KV_KEYS[2])),
                    ],
                })
            }
            _ => {
                // A compaction a little behind the newest revision known.
                let newest = self.kv_history.newest();
                let back = self.prng.range(0, 10) as i64;
                Op::Compact(CompactRequest {
                    revision: (newest - back).max(1),
                    physical: false,
                })
            }
        };
        self.kv_begin(c, What::Write, op);
    }

    fn kv_begin(&mut self, c: usize, what: What, op: Op) {
        let client = &mut self.kv_clients[c];
        client.seq += 1;
        let command = Command::with_session(client.id, client.seq, op).encode();
        client.pending = Some(KvPending {
            seq: client.seq,
            what,
            command,
            attempt: 0,
        });
        self.kv_send(c, 0);
    }

    fn kv_send(&mut self, c: usize, delay: Micros) {
        let client = &self.kv_clients[c];
        let Some(p) = &client.pending else { return };
        let req = KvRequest {
            client: c,
            node: client.target,
            tag: command_tag(p.seq, p.attempt),
            call: KvCall::Propose(p.command.clone()),
        };
        let (seq, attempt) = (p.seq, p.attempt);
        if !self.prng.chance(self.drop_per_million) {
            let at = delay + self.latency();
            self.schedule(at, WorldEvent::KvRequest(Box::new(req)));
        }
        let timeout = delay + self.opts.client_timeout;
        self.schedule(
            timeout,
            WorldEvent::KvTimeout {
                client: c,
                seq,
                attempt,
            },
        );
    }

    pub(crate) fn on_kv_timeout(&mut self, c: usize, seq: u64, attempt: u32) {
        let Some(p) = &self.kv_clients[c].pending else {
            return;
        };
        if p.seq == seq && p.attempt == attempt {
            self.kv_retry(c, None);
        }
    }

    /// Sends the pending command again (same sequence number: it applies
    /// once), backing off, to the leader if known, else to any member.
    fn kv_retry(&mut self, c: usize, hint: Option<NodeId>) {
        let attempt = self.kv_clients[c].pending.as_ref().map_or(0, |p| p.attempt);
        let delay = RETRY_BACKOFF
            .saturating_mul(1 << attempt.min(10))
            .min(RETRY_BACKOFF_MAX);
        let target = match hint {
            Some(leader) => leader,
            None => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                self.prng
                    .pick(&ids)
                    .copied()
                    .unwrap_or(self.kv_clients[c].target)
            }
        };
        let client = &mut self.kv_clients[c];
        client.target = target;
        if let Some(p) = client.pending.as_mut() {
            p.attempt += 1;
        }
        self.kv_send(c, delay);
    }

    pub(crate) fn on_kv_request(&mut self, req: KvRequest) {
        let id = req.node;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(running) = node.running.as_mut() else {
            return;
        };
        let request = match req.call {
            KvCall::Propose(data) => running.replica.propose(data),
            KvCall::KeepAlive { lease } => running.replica.lease_keep_alive(lease),
        };
        node.requests.insert(
            request,
            Asker::Kv {
                client: req.client,
                tag: req.tag,
            },
        );
        self.touched.insert(id);
        self.drive(id);
    }

    /// A member answered a KV client's request: back over the network.
    pub(crate) fn kv_answer(&mut self, client: usize, tag: u64, answer: ferrite_node::Answer) {
        if self.prng.chance(self.drop_per_million) {
            return;
        }
        let at = self.latency();
        self.schedule(
            at,
            WorldEvent::KvResponse(Box::new(KvResponse {
                client,
                tag,
                result: answer,
            })),
        );
    }

    pub(crate) fn on_kv_response(&mut self, resp: KvResponse) {
        let c = resp.client;
        if resp.tag & KEEPALIVE_TAG != 0 {
            self.on_keepalive_answer(c, resp.tag & !KEEPALIVE_TAG, resp.result);
            return;
        }
        let Some(p) = &self.kv_clients[c].pending else {
            return;
        };
        let (seq, attempt) = (resp.tag >> 16, (resp.tag & 0xFFFF) as u32);
        if p.seq != seq {
            return;
        }
        let what = p.what;
        let reply = match resp.result {
            // `None`: a stale duplicate's non-reply; ours was applied.
            Ok(bytes) => open_reply(&bytes),
            // A failure of an earlier attempt: the current one is in flight.
            Err(_) if attempt != p.attempt & 0xFFFF => return,
            Err(e) => {
                match Failed::from_node(&e) {
                    Failed::NotApplied { leader } => self.kv_retry(c, leader),
                    Failed::Unknown => self.kv_retry(c, None),
                }
                return;
            }
        };
        self.kv_clients[c].pending = None;
        if let Some(Reply::Error(StateError::NoSpace)) = reply {
            // Refused while NOSPACE was raised: definitely not applied.
            self.stats.puts_refused_nospace += 1;
        }
        match (what, reply) {
            (What::Alarm(true), Some(Reply::Alarms(_))) => self.stats.alarms_raised += 1,
            (What::Alarm(false), Some(Reply::Alarms(_))) => {}
            (What::Alarm(_), Some(other)) => {
                self.fail(crate::check::Violation::new(
                    "reply",
                    format!("alarm request answered {other:?}"),
                ));
                return;
            }
            (What::Grant(id), Some(Reply::LeaseGranted { ttl, .. })) => {
                // The grant's own acknowledgement covers from its send.
                self.leases.acked(id, 0, ttl);
                let client = &mut self.kv_clients[c];
                let interval = match client.held.as_mut() {
                    Some(h) if h.id == id => {
                        h.granted = true;
                        Some(h.interval)
                    }
                    _ => None,
                };
                if let Some(interval) = interval {
                    self.schedule(
                        interval,
                        WorldEvent::KeepAlive {
                            client: c,
                            lease: id,
                        },
                    );
                }
            }
            (What::Grant(id) | What::Attach(id), Some(Reply::Error(_))) => {
                // Refused, or attached to a lease that expired meanwhile.
                self.drop_held(c, id);
            }
            (What::Attach(id), _) => {
                if let Some(h) = self.kv_clients[c].held.as_mut().filter(|h| h.id == id) {
                    h.keys_attached += 1;
                }
            }
            (What::Revoke(id), _) => self.drop_held(c, id),
            _ => {}
        }
        let think = self.prng.below(30_000);
        self.schedule(think, WorldEvent::KvNext { client: c });
    }

    fn drop_held(&mut self, c: usize, id: i64) {
        let client = &mut self.kv_clients[c];
        if client.held.as_ref().is_some_and(|h| h.id == id) {
            client.held = None;
        }
    }

    /// The keepalive timer of `lease` fired.
    pub(crate) fn on_keepalive(&mut self, c: usize, lease: i64) {
        if self.healing.is_some() {
            return;
        }
        let Some(h) = self.kv_clients[c].held.as_mut().filter(|h| h.id == lease) else {
            return;
        };
        if h.plan != Plan::Keep {
            if h.left == 0 {
                match h.plan {
                    Plan::Revoke => h.revoke_wanted = true,
                    // Silence: the lease must expire on its own.
                    _ => self.kv_clients[c].held = None,
                }
                if !self.kv_clients[c].busy() {
                    self.schedule(0, WorldEvent::KvNext { client: c });
                }
                return;
            }
            h.left -= 1;
        }
        let interval = h.interval;
        let index = self.leases.keepalive(lease, self.now) as u64;
        self.stats.keepalives += 1;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let node = self
            .prng
            .pick(&ids)
            .copied()
            .unwrap_or(self.kv_clients[c].target);
        if !self.prng.chance(self.drop_per_million) {
            let at = self.latency();
            self.schedule(
                at,
                WorldEvent::KvRequest(Box::new(KvRequest {
                    client: c,
                    node,
                    tag: KEEPALIVE_TAG | (index << 32) | (lease as u64 & 0xFFFF_FFFF),
                    call: KvCall::KeepAlive { lease },
                })),
            );
        }
        self.schedule(interval, WorldEvent::KeepAlive { client: c, lease });
    }

    fn on_keepalive_answer(&mut self, c: usize, tag: u64, result: Result<Bytes, NodeError>) {
        let index = (tag >> 32) as usize;
        let lease = (tag & 0xFFFF_FFFF) as i64;
        match result {
            Ok(bytes) => match LeaseTtl::decode(&bytes) {
                Ok(ttl) if ttl.id == lease => self.leases.acked(lease, index, ttl.remaining_s),
                other => self.fail(crate::check::Violation::new(
                    "reply",
                    format!("keepalive of lease {lease} answered {other:?}"),
                )),
            },
            Err(NodeError::LeaseNotFound) => self.drop_held(c, lease),
            Err(_) => {}
        }
    }

    /// Everything a member applied (or restored), in order: the lease
    /// checker's revoke times, the watch checker's history, and the
    /// member's event stream.
    pub(crate) fn on_published(&mut self, id: NodeId, published: Vec<ferrite_state::Published>) {
        for p in published {
            for e in &p.events {
                match e {
                    Event::Lease(LeaseEvent::Revoked { id: lease }) => {
                        if self
                            .leases
                            .leases()
                            .get(lease)
                            .is_none_or(|l| l.revoked_at.is_none())
                        {
                            self.stats.revokes += 1;
                        }
                        self.leases.revoked(*lease, self.now);
                    }
                    Event::Lease(LeaseEvent::Granted { id: lease, .. }) => {
                        self.leases.granted(*lease, self.now)
                    }
                    _ => {}
                }
            }
            if !p.restored {
                if let Err(v) = self.kv_history.observe(id, &p) {
                    self.fail(v);
                }
            }
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            node.ring.publish(p);
        }
    }

    /// Notes when a member's lessor starts its clock (a promote).
    pub(crate) fn note_promote(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let promoted = node
            .running
            .as_ref()
            .is_some_and(|r| r.replica.lessor_promoted());
        if promoted && !node.promoted {
            self.last_promote = self.now;
        }
        node.promoted = promoted;
    }

    /// After healing: whether every lease is gone from the most advanced
    /// member's table; a lease held past its deadline is a violation.
    pub(crate) fn leases_settled(&mut self) -> bool {
        let Some(sm) = self
            .nodes
            .values()
            .filter_map(|n| n.machine())
            .max_by_key(|sm| sm.applied_index())
        else {
            return false;
        };
        let held = sm.lease_records();
        if held.is_empty() {
            return true;
        }
        let bounds = self.lease_bounds();
        let promote = self.last_promote.max(self.pause_end_max);
        for (lease, _, _) in held {
            if let Err(v) = self.leases.overdue(lease, self.now, promote, &bounds) {
                self.fail(v);
            }
        }
        false
    }

    /// At the end: the safety rule, and no key names a lease that is gone.
    pub(crate) fn check_leases(&self) -> Result<(), crate::check::Violation> {
        self.leases.check_safety(&self.lease_bounds())?;
        let Some(sm) = self
            .nodes
            .values()
            .filter_map(|n| n.machine())
            .max_by_key(|sm| sm.applied_index())
        else {
            return Ok(());
        };
        let live: std::collections::BTreeSet<i64> = sm
            .lease_records()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        let all = ferrite_state::kv::RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        };
        if let Reply::Range(r) = sm.read(&Op::Range(all)) {
            for kv in r.kvs {
                if kv.lease != 0 && !live.contains(&kv.lease) {
                    return Err(crate::check::Violation::new(
                        "lease keys",
                        format!(
                            "key {:?} survives its revoked lease {}",
                            String::from_utf8_lossy(&kv.key),
                            kv.lease
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
