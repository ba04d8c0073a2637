//! One simulated server, running the code that ships: `ferrite_node`'s
//! `Replica` (proposals, forwarding, read index, outcomes), its `Applier`
//! (apply in order, answer waiters, reads at their index, snapshot policy)
//! and its group-commit rule `write_batch`, over the real WAL on `MemDisk`
//! and the real `ferrite-state` machine. What is simulated: the network
//! (`World::send_frame`), the disk's latency and crashes (`disk.rs`), the
//! apply thread's latency (tasks wait in a queue), and time (ticks).

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};
use ferrite_node::{
    Applied, Applier, ApplyTask, LeaseChange, MachineError, MachineSnapshot, Replica,
    ReplicaConfig, ReplicaOutput, RequestId, Requester, StorageTask,
};
use ferrite_raft::{Config, Index, NodeId, Raft};
use ferrite_state::{AlarmCanary, ApplyError, Command, Op, Published, Reply, StateMachine};
use ferrite_wal::{Recovered, WalOptions};

use crate::alarm::AlarmCheck;
use crate::check::Violation;
use crate::disk::Disk;
use crate::lease::{lease_changes, lease_reset};
use crate::options::Micros;
use crate::watch::EventRing;
use crate::world::{Event, World};

/// `ferrite-state`'s machine behind the node's `StateMachine` trait, as the
/// service's `Replicated` is in the real server (without volume files):
/// replies are enveloped (0 and an encoded `Reply`, or 1 for a stale
/// duplicate nobody waits for). Like `Replicated`, it reports lease changes
/// to the lessor and publishes what each entry changed (here into
/// `published`, which the world moves to the member's event ring).
pub struct SimMachine {
    pub sm: StateMachine,
    /// Entries applied (with their events) or restored since the world
    /// last took them.
    pub published: Vec<Published>,
    lease_changes: Vec<LeaseChange>,
    /// This member's record of NOSPACE, in its apply order (`alarm.rs`).
    pub alarms: AlarmCheck,
    /// Test-only breakage of the machine, kept across restores.
    canary: AlarmCanary,
}

impl SimMachine {
    pub fn new(mut sm: StateMachine, canary: AlarmCanary) -> SimMachine {
        sm.set_alarm_canary(canary);
        let mut alarms = AlarmCheck::default();
        alarms.reset(sm.applied_index(), sm.alarms());
        SimMachine {
            sm,
            published: Vec::new(),
            lease_changes: Vec::new(),
            alarms,
            canary,
        }
    }

    /// The state was replaced by a snapshot: the lessor gets the whole
    /// table, readers are told to catch up from history.
    fn restored(&mut self) {
        self.sm.set_alarm_canary(self.canary);
        self.alarms.reset(self.sm.applied_index(), self.sm.alarms());
        self.lease_changes = vec![lease_reset(&self.sm)];
        self.published.push(Published {
            index: self.sm.applied_index(),
            revision: self.sm.revision(),
            // The auth store it restored, for the leak check's record
            // (a watch stream ignores a restored entry's events).
            events: vec![ferrite_state::Event::Auth(self.sm.auth().clone())],
            restored: true,
        });
    }

    fn restore(data: &[u8]) -> Result<StateMachine, MachineError> {
        if data.is_empty() {
            return Ok(StateMachine::new());
        }
        StateMachine::restore(data).map_err(|e| MachineError::Restore(e.to_string()))
    }
}

impl ferrite_node::StateMachine for SimMachine {
    fn apply(&mut self, index: Index, command: &[u8]) -> Result<Bytes, MachineError> {
        let mut b = BytesMut::new();
        let applied = self.sm.apply(index.0, command);
        self.alarms.applied(
            index.0,
            command,
            applied.reply.as_ref().ok(),
            &applied.events,
        );
        if !applied.events.is_empty() {
            self.lease_changes.extend(lease_changes(&applied.events));
            self.published.push(Published {
                index: index.0,
                revision: self.sm.revision(),
                events: applied.events,
                restored: false,
            });
        }
        match applied.reply {
            Ok(reply) => {
                b.put_u8(0);
                b.put_slice(&reply.encode());
            }
            // A duplicate of a write the client has moved past.
            Err(ApplyError::StaleSequence { .. }) => b.put_u8(1),
            Err(ApplyError::Decode(e)) => {
                return Err(MachineError::Storage(format!(
                    "undecodable entry {index}: {e}"
                )))
            }
        }
        Ok(b.freeze())
    }

    fn apply_empty(&mut self, index: Index) {
        self.sm.apply_noop(index.0);
    }

    fn query(&mut self, query: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        match Command::decode(query).map(|c| c.op) {
            Ok(Op::RegisterGet { name }) => {
                b.put_u8(0);
                b.put_slice(&Reply::Value(self.sm.read_register(&name)).encode());
            }
            _ => b.put_u8(1),
        }
        b.freeze()
    }

    fn applied(&self) -> Index {
        Index(self.sm.applied_index())
    }

    fn snapshot(&mut self) -> Result<MachineSnapshot, MachineError> {
        Ok(MachineSnapshot::complete(self.sm.snapshot()))
    }

    fn recover(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.sm = SimMachine::restore(data)?;
        self.restored();
        Ok(())
    }

    fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    fn install(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.recover(data)
    }
}

/// Decodes a reply envelope: `None` for "no reply" (a stale duplicate).
pub fn open_reply(data: &[u8]) -> Option<Reply> {
    match data.split_first() {
        Some((0, rest)) => Reply::decode(rest).ok(),
        _ => None,
    }
}

/// Who waits for a local request's answer.
#[derive(Clone, Copy, Debug)]
pub enum Asker {
    /// A register client's operation.
    Register {
        client: usize,
        seq: u64,
        attempt: u32,
    },
    /// A KV client's command (`tag`: its sequence number) or keepalive
    /// (`tag`: the index of its record).
    Kv { client: usize, tag: u64 },
}

/// The running parts of a node; `None` while it is crashed.
pub struct Running {
    pub replica: Replica,
    pub applier: Applier<SimMachine>,
}

pub struct SimNode {
    pub running: Option<Running>,
    /// Bumped on every crash and start, so stale ticks and completions of
    /// an earlier life are ignored.
    pub incarnation: u64,
    pub disk: Disk,
    /// Storage tasks handed out and not yet written (the storage thread's
    /// queue): the next disk completion writes them all (group commit).
    pub storage: Vec<StorageTask>,
    /// Apply tasks handed out and not yet done (the apply thread's queue).
    pub apply: VecDeque<ApplyTask>,
    /// Whether an apply completion is scheduled.
    pub applying: bool,
    /// Which client request each local request id is.
    pub requests: BTreeMap<RequestId, Asker>,
    /// This life's event stream (the real server's `EventStream`).
    pub ring: EventRing,
    /// The lessor ran its clock when last looked at.
    pub promoted: bool,
    /// Until then the process is stopped: its events wait.
    pub paused_until: Micros,
    /// This node's tick interval (clock skew).
    pub tick: Micros,
    /// Test-only breakage of its state machine (`Options::alarm_canary`).
    pub alarm_canary: AlarmCanary,
}

impl SimNode {
    pub fn new(wal: WalOptions) -> SimNode {
        SimNode {
            running: None,
            incarnation: 0,
            disk: Disk::new(wal),
            storage: Vec::new(),
            apply: VecDeque::new(),
            applying: false,
            requests: BTreeMap::new(),
            ring: EventRing::new(1, 1),
            promoted: false,
            paused_until: 0,
            tick: 0,
            alarm_canary: AlarmCanary::None,
        }
    }

    pub fn raft(&self) -> Option<&Raft> {
        self.running.as_ref().map(|r| r.replica.raft())
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub fn machine(&self) -> Option<&StateMachine> {
        self.running.as_ref().map(|r| &r.applier.machine().sm)
    }

    /// Boots from what is on the disk, as a real node does after a crash:
    /// the WAL recovers, the state machine restores from the snapshot.
    pub fn start(
        &mut self,
        cfg: Config,
        seed: u64,
        replica: ReplicaConfig,
        snapshot_entries: u64,
        ring_entries: usize,
    ) -> Result<Recovered, Violation> {
        self.incarnation += 1;
        let recovered = self
            .disk
            .open()
            .map_err(|e| Violation::new("recovery", e.to_string()))?;
        let durable = recovered.durable.clone();
        let (data, index) = match &durable.snapshot {
            Some(s) => (s.data.clone(), s.meta.index),
            None => (Bytes::new(), Index::ZERO),
        };
        let sm =
            SimMachine::restore(&data).map_err(|e| Violation::new("snapshot", e.to_string()))?;
        if sm.applied_index() != index.0 {
            return Err(Violation::new(
                "snapshot",
                format!(
                    "snapshot at {index} holds state applied to {}",
                    sm.applied_index()
                ),
            ));
        }
        let canary = cfg.canary;
        let alarm_canary = self.alarm_canary;
        let raft =
            Raft::new(cfg, durable, seed).map_err(|e| Violation::new("recovery", e.to_string()))?;
        // A new life: a new event stream, nobody subscribed yet.
        self.ring = EventRing::new(ring_entries, sm.revision());
        self.promoted = false;
        let reset = lease_reset(&sm);
        let applier = Applier::new(
            SimMachine::new(sm, alarm_canary),
            snapshot_entries,
            (index, data.len()),
            canary,
        );
        let mut replica = Replica::new(raft, replica);
        // The lease table the machine recovered, before any entry (as
        // `Node::start` does).
        replica.on_lease_changes(vec![reset]);
        self.running = Some(Running { replica, applier });
        Ok(recovered)
    }

    pub fn crash(&mut self, rng: &mut dyn FnMut() -> u64) {
        self.incarnation += 1;
        self.running = None;
        self.disk.crash(rng);
        self.storage.clear();
        self.apply.clear();
        self.applying = false;
        self.requests.clear();
    }

    /// Payload bytes (`Entry::size`) of entries waiting in the apply queue
    /// after its last restore, and how many of them have any: what the
    /// core's apply budget bounds. Entries of no size (a leader's no-op)
    /// are not counted: the core's "one entry always goes when nothing is
    /// outstanding" is in bytes, so a large entry may follow one.
    pub fn apply_backlog(&self) -> (usize, usize) {
        let start = self
            .apply
            .iter()
            .rposition(|t| matches!(t, ApplyTask::Restore(_)))
            .map_or(0, |i| i + 1);
        let mut bytes = 0;
        let mut count = 0;
        for task in self.apply.iter().skip(start) {
            if let ApplyTask::Entries { entries, .. } = task {
                for e in entries.iter().filter(|e| e.size() > 0) {
                    bytes += e.size();
                    count += 1;
                }
            }
        }
        (bytes, count)
    }
}

impl World {
    /// Executes everything the replica of `id` has to say, until it is quiet.
    pub(crate) fn drive(&mut self, id: NodeId) {
        loop {
            let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.as_mut()) else {
                return;
            };
            let out = running.replica.take_output();
            if out.is_empty() {
                break;
            }
            self.touched.insert(id);
            self.execute(id, out);
        }
        self.check_apply_budget(id);
        self.note_promote(id);
    }

    fn execute(&mut self, id: NodeId, out: ReplicaOutput) {
        for (request, answer) in out.answers {
            self.answer_request(id, request, answer);
        }
        if !out.storage.is_empty() {
            let latency = self.prng.range(1, self.opts.disk_latency_max);
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            node.storage.extend(out.storage);
            node.disk.busy_until = node.disk.busy_until.max(self.now) + latency;
            let (at, incarnation) = (node.disk.busy_until - self.now, node.incarnation);
            self.schedule(
                at,
                Event::DiskDone {
                    node: id,
                    incarnation,
                },
            );
        }
        for (to, frame) in out.send {
            self.send_frame(id, to, frame);
        }
        if !out.apply.is_empty() {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            node.apply.extend(out.apply);
            self.schedule_apply(id);
        }
    }

    fn schedule_apply(&mut self, id: NodeId) {
        let latency = self.prng.range(0, self.opts.apply_latency_max + 1);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.applying || node.apply.is_empty() {
            return;
        }
        node.applying = true;
        let incarnation = node.incarnation;
        self.schedule(
            latency,
            Event::ApplyDone {
                node: id,
                incarnation,
            },
        );
    }

    /// The apply thread finished its next task.
    pub(crate) fn on_apply_done(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation {
            return;
        }
        node.applying = false;
        let Some(task) = node.apply.pop_front() else {
            return;
        };
        if let ApplyTask::Entries { entries, .. } = &task {
            for entry in entries {
                if let Err(v) = self.safety.on_apply(id, entry) {
                    self.fail(v);
                    return;
                }
            }
        }
        if matches!(task, ApplyTask::Restore(_)) {
            self.stats.snapshots_installed += 1;
        }
        let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.as_mut()) else {
            return;
        };
        let mut out = Applied::default();
        if let Err(e) = running.applier.handle(task, &mut out) {
            self.fail(Violation::new("apply", format!("{id}: {e}")));
            return;
        }
        let published = std::mem::take(&mut running.applier.machine_mut().published);
        let alarms = std::mem::take(&mut running.applier.machine_mut().alarms.violations);
        if let Some(v) = alarms.into_iter().next() {
            self.fail(Violation::new(v.kind, format!("{id}: {}", v.detail)));
            return;
        }
        self.on_published(id, published);
        let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.as_mut()) else {
            return;
        };
        running
            .replica
            .on_lease_changes(std::mem::take(&mut out.leases));
        if let Some(upto) = out.upto {
            running.replica.on_applied(upto);
        }
        if let Some((index, snapshot)) = out.snapshot {
            // The snapshot thread, at once: its encode takes no virtual time.
            match (snapshot.finish)() {
                Ok(data) => {
                    running.applier.snapshot_done(Some(data.len()));
                    running.replica.on_snapshot_ready(index, data);
                    self.stats.snapshots_taken += 1;
                }
                Err(e) => {
                    self.fail(Violation::new("snapshot", format!("{id}: {e}")));
                    return;
                }
            }
        }
        for (requester, answer) in out.answers {
            match requester {
                Requester::Local(request) => self.answer_request(id, request, answer),
                Requester::Peer { from, id: fwd } => {
                    let result = answer.map_err(|e| ferrite_node::replica::refusal(&e));
                    let frame = ferrite_node::codec::Frame::ForwardReply { id: fwd, result };
                    self.send_frame(id, from, frame);
                }
            }
        }
        self.touched.insert(id);
        self.schedule_apply(id);
        self.drive(id);
    }

    /// The disk finished: everything queued is written (the storage
    /// thread's group commit, with the node's own rule for what to sync).
    pub(crate) fn on_disk_done(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation || node.storage.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut node.storage);
        let skip = self.opts.skip_sync;
        let Some(wal) = node.disk.wal() else {
            return;
        };
        let result = if skip {
            // Test-only: "durable" without the fdatasync.
            batch
                .into_iter()
                .try_fold(ferrite_node::Committed::default(), |mut done, task| {
                    match task {
                        StorageTask::Persist { persist, after, .. } => {
                            done.last = persist.last().or(done.last);
                            done.after.extend(after);
                            wal.write(&persist)?;
                        }
                        StorageTask::Snapshot(s) => wal.save_snapshot(&s)?,
                    }
                    Ok(done)
                })
        } else {
            ferrite_node::write_batch(wal, batch, || {})
        };
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                self.fail(Violation::new("wal", format!("{id}: {e}")));
                return;
            }
        };
        if done.synced {
            let hs = wal.hard_state();
            if let Err(v) = self.safety.on_durable_commit(id, hs.commit) {
                self.fail(v);
            }
        }
        self.log(|| format!("disk {id} durable {:?} synced={}", done.last, done.synced));
        for msg in done.after {
            let (from, to) = (msg.from, msg.to);
            self.send_frame(from, to, ferrite_node::codec::Frame::Raft(msg));
        }
        let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.as_mut()) else {
            return;
        };
        if let Some(snapshot) = done.snapshot {
            running.replica.on_snapshot_saved(snapshot);
        }
        if let Some((index, term)) = done.last {
            running.replica.on_persisted(index, term);
        }
        self.touched.insert(id);
        self.drive(id);
    }

    /// The core's apply budget holds, checked outside the core: what waits
    /// in the apply queue is at most `apply_bytes_max`, or one entry.
    fn check_apply_budget(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let (bytes, count) = node.apply_backlog();
        let budget = self.opts.apply_bytes_max;
        if bytes > budget && count > 1 {
            self.fail(Violation::new(
                "apply budget",
                format!("{id}: {count} entries of {bytes} bytes wait for apply (budget {budget})"),
            ));
        }
    }

    /// What a node recovered must include everything it had synced: its
    /// durable commit index may not go backwards across the crash.
    pub(crate) fn on_recovered(&mut self, id: NodeId, recovered: &Recovered) {
        if recovered.torn_tail.is_some() {
            self.stats.torn_tails += 1;
        }
        let commit = recovered.durable.hard_state.commit;
        if let Err(v) = self.safety.on_durable_commit(id, commit) {
            self.fail(Violation::new("recovery", format!("{v} (after a crash)")));
        }
    }

    pub(crate) fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.is_up() {
            return;
        }
        if let Some(r) = &node.running {
            self.stats.add_replica(r.replica.counters());
        }
        let prng = &mut self.prng;
        node.crash(&mut || prng.next_u64());
        self.safety.forget(id);
        self.stats.crashes += 1;
        self.log(|| format!("CRASH {id}"));
        // The peers' connections from it close: TCP tells them soon after,
        // unless a partition is in the way.
        let peers: Vec<NodeId> = self.nodes.keys().copied().filter(|p| *p != id).collect();
        for peer in peers {
            if !self.blocked.contains(&(id, peer)) {
                let delay = self.prng.range(100, 5_000);
                self.schedule(
                    delay,
                    Event::Disconnected {
                        node: peer,
                        peer: id,
                    },
                );
            }
        }
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        let cfg = self.raft_config(id);
        let replica = self.replica_config();
        let every = self.opts.compact_every;
        let ring = self.opts.watch_ring_entries;
        let seed = self.prng.next_u64();
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.is_up() {
            return;
        }
        let recovered = match node.start(cfg, seed, replica, every, ring) {
            Ok(r) => r,
            Err(v) => {
                self.fail(v);
                return;
            }
        };
        let incarnation = node.incarnation;
        self.on_recovered(id, &recovered);
        self.log(|| format!("RESTART {id} (torn tail: {:?})", recovered.torn_tail));
        self.touched.insert(id);
        let first = self.prng.below(self.opts.tick);
        self.schedule(
            first,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }
}

/// A local request's answer goes back to the client that sent it.
impl World {
    pub(crate) fn answer_request(
        &mut self,
        id: NodeId,
        request: RequestId,
        answer: ferrite_node::Answer,
    ) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(asker) = node.requests.remove(&request) else {
            return;
        };
        let (client, seq, attempt) = match asker {
            Asker::Register {
                client,
                seq,
                attempt,
            } => (client, seq, attempt),
            Asker::Kv { client, tag } => {
                self.kv_answer(client, tag, answer);
                return;
            }
        };
        self.log(|| {
            format!(
                "answer {id} client #{client} seq {seq}: {:?}",
                answer.as_ref().err()
            )
        });
        let result = match answer {
            Ok(bytes) => match open_reply(&bytes) {
                Some(reply) => Ok(reply),
                // A stale duplicate's "reply": the client has moved on.
                None => return,
            },
            Err(e) => Err(crate::workload::Failed::from_node(&e)),
        };
        self.respond(client, seq, attempt, result);
    }
}
