//! The simulated world: every node, the network between them, the clients,
//! and one queue of events ordered by virtual time and sequence number. One
//! seeded PRNG makes every choice, and nothing that decides iterates a hash
//! map, so a seed replays a run exactly.

use std::collections::{BTreeMap, BTreeSet};

use ferrite_node::codec::Frame;
use ferrite_node::ReplicaConfig;
use ferrite_raft::{Config, DurableState, NodeId, Prng, Raft, Role};
use ferrite_wal::WalOptions;

use crate::check::leases::LeaseHistory;
use crate::check::linearizable::Operation;
use crate::check::safety::Safety;
use crate::check::watch::KvHistory;
use crate::check::Violation;
use crate::lease::{KvClient, KvRequest, KvResponse};
use crate::node::SimNode;
use crate::options::{Micros, Options};
use crate::watch::Watcher;
use crate::workload::{Client, ClientRequest, ClientResponse};

pub enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    /// A frame reaches `to` over the simulated network.
    Deliver {
        from: NodeId,
        to: NodeId,
        frame: Frame,
    },
    DiskDone {
        node: NodeId,
        incarnation: u64,
    },
    /// The apply thread of `node` finished its next task.
    ApplyDone {
        node: NodeId,
        incarnation: u64,
    },
    Request(ClientRequest),
    Response(ClientResponse),
    ClientTimeout {
        client: usize,
        seq: u64,
        attempt: u32,
    },
    ClientNext {
        client: usize,
    },
    Nemesis,
    Restart {
        node: NodeId,
    },
    Heal {
        partition: u64,
    },
    Admin,
    /// `node` learns that its connection from `peer` closed (the peer
    /// crashed, or a spurious reset).
    Disconnected {
        node: NodeId,
        peer: NodeId,
    },
    KvNext {
        client: usize,
    },
    KvRequest(Box<KvRequest>),
    KvResponse(Box<KvResponse>),
    KvTimeout {
        client: usize,
        seq: u64,
        attempt: u32,
    },
    /// A KV client's keepalive timer for `lease`.
    KeepAlive {
        client: usize,
        lease: i64,
    },
    /// A watcher subscribes (again) to a member and creates its watch.
    WatchResume {
        watcher: usize,
    },
    /// A watcher's reader takes what its member published.
    WatchPoll {
        watcher: usize,
        generation: u64,
    },
    /// A watcher's history read is answered.
    WatchRead {
        watcher: usize,
        generation: u64,
        id: i64,
        req: Box<ferrite_state::kv::ChangesRequest>,
    },
}

/// What a run did, for the summary line.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub steps: u64,
    pub elections: u64,
    pub commits: u64,
    pub operations: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub transfers: u64,
    pub membership_changes: u64,
    pub snapshots_installed: u64,
    pub snapshots_taken: u64,
    pub torn_tails: u64,
    pub pauses: u64,
    pub virtual_ms: u64,
    /// Writes the replicas forwarded to a leader.
    pub forwarded: u64,
    /// Reads the replicas forwarded to a leader, and the frames (batches)
    /// that carried them.
    pub reads_forwarded: u64,
    pub read_batches: u64,
    /// Snapshots a core swapped for the copy read back from the disk.
    pub snapshots_mapped: u64,
    /// Writes answered "outcome unknown" by a replica.
    pub unknown: u64,
    /// Writes whose entry was superseded (answered so, or proposed again).
    pub superseded: u64,
    /// Lease grants sent by KV clients.
    pub leases_granted: u64,
    /// Keepalives sent.
    pub keepalives: u64,
    /// Leases revoked (first apply of each revoke: expiries and clients').
    pub revokes: u64,
    /// Events watchers received.
    pub watch_events: u64,
    /// History reads of watch streams (catch-ups).
    pub watch_catch_ups: u64,
    /// Readers that found the entries they needed gone.
    pub watch_lags: u64,
    /// Watches created again on another member after a crash.
    pub watcher_resumes: u64,
    /// Watches canceled for compaction (and resumed from there).
    pub watch_compacted: u64,
    /// Permission revokes and grants proposed (`auth.rs`).
    pub auth_changes: u64,
    /// Watches canceled because their user lost read permission.
    pub watch_auth_cancels: u64,
    /// NOSPACE alarms raised (ACTIVATE acknowledged, `alarm.rs`).
    pub alarms_raised: u64,
    /// Writes refused because NOSPACE was raised.
    pub puts_refused_nospace: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.elections += o.elections;
        self.commits += o.commits;
        self.operations += o.operations;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.transfers += o.transfers;
        self.membership_changes += o.membership_changes;
        self.snapshots_installed += o.snapshots_installed;
        self.pauses += o.pauses;
        self.snapshots_taken += o.snapshots_taken;
        self.torn_tails += o.torn_tails;
        self.virtual_ms += o.virtual_ms;
        self.forwarded += o.forwarded;
        self.reads_forwarded += o.reads_forwarded;
        self.read_batches += o.read_batches;
        self.snapshots_mapped += o.snapshots_mapped;
        self.unknown += o.unknown;
        self.superseded += o.superseded;
        self.leases_granted += o.leases_granted;
        self.keepalives += o.keepalives;
        self.revokes += o.revokes;
        self.watch_events += o.watch_events;
        self.watch_catch_ups += o.watch_catch_ups;
        self.watch_lags += o.watch_lags;
        self.watcher_resumes += o.watcher_resumes;
        self.watch_compacted += o.watch_compacted;
        self.auth_changes += o.auth_changes;
        self.watch_auth_cancels += o.watch_auth_cancels;
        self.alarms_raised += o.alarms_raised;
        self.puts_refused_nospace += o.puts_refused_nospace;
    }

    /// Adds what one replica counted (at a crash, and at the end).
    pub fn add_replica(&mut self, c: &ferrite_node::ReplicaCounters) {
        self.forwarded += c.forwarded;
        self.reads_forwarded += c.reads_forwarded;
        self.read_batches += c.read_batches;
        self.snapshots_mapped += c.snapshots_mapped;
        self.unknown += c.unknown;
        self.superseded += c.superseded;
    }
}

pub struct World {
    pub(crate) opts: Options,
    pub(crate) prng: Prng,
    pub(crate) now: Micros,
    seq: u64,
    queue: BTreeMap<(Micros, u64), Event>,
    pub(crate) nodes: BTreeMap<NodeId, SimNode>,
    pub(crate) next_node_id: u64,
    /// Directed links that drop everything (partitions).
    pub(crate) blocked: BTreeSet<(NodeId, NodeId)>,
    pub(crate) partition_id: u64,
    pub(crate) drop_per_million: u64,
    pub(crate) duplicate_per_million: u64,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: Vec<Operation>,
    pub(crate) safety: Safety,
    pub(crate) admin: crate::nemesis::AdminPhase,
    pub(crate) stats: Stats,
    pub(crate) trace: Option<Vec<String>>,
    pub(crate) healing: Option<Micros>,
    pub(crate) final_reads: Option<u64>,
    /// Nodes the current event touched: checked after it.
    pub(crate) touched: BTreeSet<NodeId>,
    pub(crate) violation: Option<Violation>,
    pub(crate) kv_clients: Vec<KvClient>,
    /// The auth setup still to propose, next first (`auth.rs`).
    pub(crate) auth_setup: std::collections::VecDeque<ferrite_state::Op>,
    /// Whether each of `auth::PREFIXES` was last granted (else revoked).
    pub(crate) auth_granted: [bool; 2],
    /// Whether the first KV client last asked to raise NOSPACE (`alarm.rs`).
    pub(crate) alarm_raised: bool,
    /// History entries of register writes refused for NOSPACE: definitely
    /// not applied, so left out of the linearizability check.
    pub(crate) refused: BTreeSet<usize>,
    pub(crate) watchers: Vec<Watcher>,
    /// Renewals asked for and revokes applied, for the lease checker.
    pub(crate) leases: LeaseHistory,
    /// The applied KV history, for the watch checker.
    pub(crate) kv_history: KvHistory,
    /// When a member's lessor last started its clock.
    pub(crate) last_promote: Micros,
    /// When the last process pause ends (a paused leader's clock stops).
    pub(crate) pause_end_max: Micros,
}

impl World {
    pub fn new(opts: Options, trace: bool) -> World {
        let prng = Prng::new(opts.seed);
        let mut world = World {
            prng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: BTreeMap::new(),
            next_node_id: 1,
            blocked: BTreeSet::new(),
            partition_id: 0,
            drop_per_million: opts.drop_per_million,
            duplicate_per_million: opts.duplicate_per_million,
            clients: Vec::new(),
            history: Vec::new(),
            safety: Safety::default(),
            admin: crate::nemesis::AdminPhase::Idle,
            stats: Stats::default(),
            trace: trace.then(Vec::new),
            healing: None,
            final_reads: None,
            touched: BTreeSet::new(),
            violation: None,
            kv_clients: Vec::new(),
            auth_setup: if opts.auth {
                crate::auth::setup_ops().into()
            } else {
                Default::default()
            },
            auth_granted: [true; 2],
            alarm_raised: false,
            refused: BTreeSet::new(),
            watchers: Vec::new(),
            leases: LeaseHistory::default(),
            kv_history: KvHistory::default(),
            last_promote: 0,
            pause_end_max: 0,
            opts,
        };
        let voters: Vec<NodeId> = (1..=world.opts.voters as u64).map(NodeId).collect();
        world.next_node_id = voters.len() as u64 + 1;
        for id in &voters {
            world.add_node(*id, Some(DurableState::bootstrap(voters.iter().copied())));
        }
        for c in 0..world.opts.clients {
            let session = world.prng.below(1000) >= world.opts.sessionless_per_mille;
            world
                .clients
                .push(Client::new(c as u64 + 1, voters[c % voters.len()], session));
            let start = world.prng.below(100_000);
            world.schedule(start, Event::ClientNext { client: c });
        }
        for c in 0..world.opts.kv_clients {
            let id = 10_000 + c as u64;
            world
                .kv_clients
                .push(KvClient::new(id, voters[c % voters.len()]));
            let start = world.prng.below(100_000);
            world.schedule(start, Event::KvNext { client: c });
        }
        world.add_watchers();
        let first = world.nemesis_delay();
        world.schedule(first, Event::Nemesis);
        world
    }

    pub(crate) fn raft_config(&self, id: NodeId) -> Config {
        let mut cfg = Config::new(id);
        cfg.heartbeat_ticks = 2;
        cfg.election_ticks_min = 10;
        cfg.inflight_appends_max = self.opts.inflight_appends_max;
        cfg.append_entries_max = self.opts.append_entries_max;
        cfg.snapshot_chunk_bytes = self.opts.snapshot_chunk_bytes;
        cfg.learner_lag_max = 5;
        cfg.canary = self.opts.canary;
        cfg.apply_bytes_max = self.opts.apply_bytes_max;
        cfg
    }

    /// The replica's limits; the lessor's clock counts ticks of the
    /// nominal length (each node's real interval is skewed, see `add_node`).
    pub(crate) fn replica_limits(&self) -> ReplicaConfig {
        ReplicaConfig {
            request_ticks: self.opts.request_ticks,
            tick_ms: self.opts.tick / 1000,
            lease_proposals: (!self.opts.lease_revokes_off).then(crate::lease::lease_proposals),
            ..ReplicaConfig::default()
        }
    }

    pub(crate) fn replica_config(&mut self) -> ReplicaConfig {
        ReplicaConfig {
            first_request_id: self.prng.next_u64(),
            ..self.replica_limits()
        }
    }

    /// Starts a node: a founding member writes its bootstrap state to its
    /// WAL first; a joining node starts empty.
    pub(crate) fn add_node(&mut self, id: NodeId, bootstrap: Option<DurableState>) {
        let options = WalOptions {
            segment_bytes_max: self.opts.segment_bytes_max,
        };
        let mut node = SimNode::new(options);
        node.alarm_canary = self.opts.alarm_canary;
        let skew = self.opts.clock_skew_per_mille;
        let per_mille = 1000 + self.prng.range(0, 2 * skew) - skew;
        node.tick = self.opts.tick * per_mille / 1000;
        if let Some(durable) = bootstrap {
            let written = node.disk.open().and_then(|_| node.disk.bootstrap(&durable));
            if let Err(e) = written {
                self.fail(Violation::new("wal", format!("{id}: bootstrap: {e}")));
            }
        }
        let seed = self.prng.next_u64();
        let replica = self.replica_config();
        let (every, ring) = (self.opts.compact_every, self.opts.watch_ring_entries);
        if let Err(v) = node.start(self.raft_config(id), seed, replica, every, ring) {
            self.fail(v);
        }
        let incarnation = node.incarnation;
        self.nodes.insert(id, node);
        let first_tick = self.prng.below(self.opts.tick);
        self.schedule(
            first_tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    pub(crate) fn schedule(&mut self, after: Micros, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), event);
    }

    pub(crate) fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>10.3}ms {}", self.now as f64 / 1000.0, line()));
        }
    }

    pub(crate) fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.log(|| format!("VIOLATION {v}"));
            self.violation = Some(v);
        }
    }

    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Runs to the end: the fault phase, then healing, final reads and the
    /// linearizability check.
    pub fn run(&mut self) -> Result<Stats, Violation> {
        loop {
            if let Some(v) = self.violation.take() {
                return Err(v);
            }
            if self.healing.is_none() && self.stats.steps >= self.opts.steps {
                self.start_healing();
            }
            if let Some(start) = self.healing {
                if self.finished() {
                    break;
                }
                if self.now > start + self.opts.heal_deadline {
                    let pending: Vec<String> = self
                        .clients
                        .iter()
                        .filter_map(|c| {
                            c.current
                                .as_ref()
                                .map(|p| format!("client {} seq {}", c.id, p.seq))
                        })
                        .collect();
                    let leader = self.leader().map(|(id, _)| id.to_string());
                    return Err(Violation::new(
                        "liveness",
                        format!(
                            "not settled {}ms after healing: leader={leader:?} pending=[{}]",
                            self.opts.heal_deadline / 1000,
                            pending.join(", ")
                        ),
                    ));
                }
            }
            let Some(((at, _), event)) = self.queue.pop_first() else {
                return Err(Violation::new("liveness", "nothing left to happen"));
            };
            self.now = at;
            // A watcher's reader waking up is not a step of the cluster:
            // counting it would shorten the fault phase of watched runs.
            if !matches!(event, Event::WatchPoll { .. }) {
                self.stats.steps += 1;
            }
            self.handle(event);
            self.check_touched();
        }
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        self.check_acknowledged_writes()?;
        let applied_or_unknown: Vec<Operation> = if self.refused.is_empty() {
            Vec::new()
        } else {
            self.history
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.refused.contains(i))
                .map(|(_, op)| op.clone())
                .collect()
        };
        let history = if self.refused.is_empty() {
            &self.history
        } else {
            &applied_or_unknown
        };
        crate::check::linearizable::check(history)
            .map_err(|v| Violation::new("linearizability", v.to_string()))?;
        self.check_leases()?;
        self.check_watchers()?;
        self.stats.elections = self.safety.leaders_elected() as u64;
        self.stats.commits = self.safety.committed_len();
        self.stats.operations = self.history.len() as u64;
        self.stats.virtual_ms = self.now / 1000;
        for node in self.nodes.values() {
            if let Some(r) = &node.running {
                self.stats.add_replica(r.replica.counters());
            }
        }
        Ok(self.stats.clone())
    }

    fn handle(&mut self, event: Event) {
        let target = match &event {
            Event::Tick { node, .. }
            | Event::DiskDone { node, .. }
            | Event::ApplyDone { node, .. }
            | Event::Disconnected { node, .. } => Some(*node),
            Event::Deliver { to, .. } => Some(*to),
            Event::Request(req) => Some(req.node),
            Event::KvRequest(req) => Some(req.node),
            _ => None,
        };
        if let Some(paused_until) = target
            .and_then(|id| self.nodes.get(&id))
            .map(|n| n.paused_until)
        {
            if paused_until > self.now {
                self.schedule(paused_until - self.now, event);
                return;
            }
        }
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Deliver { from, to, frame } => self.on_deliver(from, to, frame),
            Event::DiskDone { node, incarnation } => self.on_disk_done(node, incarnation),
            Event::ApplyDone { node, incarnation } => self.on_apply_done(node, incarnation),
            Event::Request(req) => self.on_request(req),
            Event::Response(resp) => self.on_response(resp),
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => self.on_client_timeout(client, seq, attempt),
            Event::ClientNext { client } => self.on_client_next(client),
            Event::Nemesis => self.on_nemesis(),
            Event::Restart { node } => self.restart(node),
            Event::Heal { partition } => self.heal(partition),
            Event::Admin => self.on_admin(),
            Event::Disconnected { node, peer } => self.on_disconnected(node, peer),
            Event::KvNext { client } => self.on_kv_next(client),
            Event::KvRequest(req) => self.on_kv_request(*req),
            Event::KvResponse(resp) => self.on_kv_response(*resp),
            Event::KvTimeout {
                client,
                seq,
                attempt,
            } => self.on_kv_timeout(client, seq, attempt),
            Event::KeepAlive { client, lease } => self.on_keepalive(client, lease),
            Event::WatchResume { watcher } => self.on_watch_resume(watcher),
            Event::WatchPoll {
                watcher,
                generation,
            } => self.on_watch_poll(watcher, generation),
            Event::WatchRead {
                watcher,
                generation,
                id,
                req,
            } => self.on_watch_read(watcher, generation, id, *req),
        }
    }

    fn on_disconnected(&mut self, id: NodeId, peer: NodeId) {
        let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.as_mut()) else {
            return;
        };
        running.replica.report_disconnected(peer);
        self.log(|| format!("disconnected {id} <- {peer}"));
        self.drive(id);
    }

    fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation {
            return;
        }
        let Some(running) = node.running.as_mut() else {
            return;
        };
        running.replica.tick();
        self.log(|| format!("tick {id}"));
        self.drive(id);
        let tick = self.nodes.get(&id).map_or(self.opts.tick, |n| n.tick);
        self.schedule(
            tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    fn on_deliver(&mut self, from: NodeId, to: NodeId, frame: Frame) {
        if self.blocked.contains(&(from, to)) {
            return;
        }
        // Through the real peer codec, as the transport sends it.
        let frame = match wire(&frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.fail(Violation::new("codec", format!("{from}->{to}: {e}")));
                return;
            }
        };
        let Some(running) = self.nodes.get_mut(&to).and_then(|n| n.running.as_mut()) else {
            return;
        };
        if let Some(trace) = &mut self.trace {
            trace.push(format!(
                "{:>10.3}ms deliver {from}->{to} {frame:?}",
                self.now as f64 / 1000.0,
            ));
        }
        if let Err(e) = running.replica.on_frame(frame) {
            self.fail(Violation::new("step error", format!("{to}: {e}")));
        }
        self.touched.insert(to);
        self.drive(to);
    }

    /// Sends through the simulated network: maybe dropped, each copy
    /// delayed independently (which also reorders). Raft messages may also
    /// be duplicated; the node's other frames are not (the real transport
    /// is TCP, which never duplicates, and a duplicated Forward would be a
    /// second client request, not a network fault).
    pub(crate) fn send_frame(&mut self, from: NodeId, to: NodeId, frame: Frame) {
        if self.blocked.contains(&(from, to)) || self.prng.chance(self.drop_per_million) {
            return;
        }
        if matches!(frame, Frame::Raft(_)) && self.prng.chance(self.duplicate_per_million) {
            let delay = self.latency();
            let copy = frame.clone();
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    frame: copy,
                },
            );
        }
        let delay = self.latency();
        self.schedule(delay, Event::Deliver { from, to, frame });
    }

    pub(crate) fn latency(&mut self) -> Micros {
        self.prng
            .range(self.opts.latency_min, self.opts.latency_max)
    }

    /// The node that leads the highest term, if any node is up and leading.
    pub(crate) fn leader(&self) -> Option<(NodeId, &Raft)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft().map(|r| (*id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
    }

    fn check_touched(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for id in touched {
            self.observe(id);
        }
    }

    /// Runs the safety checks on one node now.
    pub(crate) fn observe(&mut self, id: NodeId) {
        let Some(running) = self.nodes.get(&id).and_then(|n| n.running.as_ref()) else {
            return;
        };
        running.replica.assert_invariants();
        if let Err(v) = self.safety.observe(running.replica.raft()) {
            self.fail(v);
        }
    }

    /// No acknowledged write is lost: the most advanced replica has applied
    /// every write any client was told succeeded. (All replicas apply the
    /// same sequence, which the safety checks establish.)
    fn check_acknowledged_writes(&self) -> Result<(), Violation> {
        let Some(sm) = self
            .nodes
            .values()
            .filter_map(|n| n.machine())
            .max_by_key(|sm| sm.applied_index())
        else {
            return Err(Violation::new("liveness", "no node is up at the end"));
        };
        for c in self.clients.iter().filter(|c| c.session) {
            let applied = sm.session_seq(c.id);
            if applied < c.acked_write {
                return Err(Violation::new(
                    "lost write",
                    format!("client {} was told seq {} succeeded; the state machine applied only up to {applied}", c.id, c.acked_write),
                ));
            }
        }
        Ok(())
    }

    fn finished(&mut self) -> bool {
        if self.clients.iter().any(|c| c.current.is_some())
            || self.kv_clients.iter().any(|c| c.busy())
        {
            return false;
        }
        match self.final_reads {
            None => {
                self.final_reads = Some(0);
                self.start_final_read();
                false
            }
            // Then every lease must expire, within its bound.
            Some(k) => k >= self.opts.keys && self.leases_settled(),
        }
    }
}

/// Encodes `frame` with the peer codec and decodes it again, as a frame
/// crosses the real transport; a frame that does not survive is a bug.
fn wire(frame: &Frame) -> Result<Frame, String> {
    let bytes = ferrite_node::codec::encode(frame);
    let (prefix, body) = bytes.split_at(4);
    let prefix: [u8; 4] = prefix.try_into().map_err(|_| "short frame".to_string())?;
    let len = ferrite_node::codec::frame_len(prefix).map_err(|e| e.to_string())?;
    if len != body.len() {
        return Err(format!("length prefix {len} for a body of {}", body.len()));
    }
    let decoded = ferrite_node::codec::decode(bytes.slice(4..)).map_err(|e| e.to_string())?;
    if decoded != *frame {
        return Err(format!("{frame:?} decoded as {decoded:?}"));
    }
    Ok(decoded)
}
