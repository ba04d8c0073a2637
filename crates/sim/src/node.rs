//! One simulated server: the Raft core, its disk, its state machine and the
//! client requests waiting on it. `World::drive` executes the core's output
//! exactly as the contract in `ferrite_raft::Output` says a real node must.

use std::collections::BTreeMap;

use ferrite_raft::{Config, Index, NodeId, Payload, Raft, Snapshot, Term};
use ferrite_state::{ApplyError, Reply, StateMachine};
use ferrite_wal::{Recovered, WalOptions};

use crate::check::linearizable::Key;
use crate::check::Violation;
use crate::disk::{Disk, Pending};
use crate::options::Micros;
use crate::workload::register_name;
use crate::world::{Event, World};

/// A client write waiting to be applied at an index.
pub struct Waiter {
    pub term: Term,
    pub client: usize,
    pub seq: u64,
}

/// A client read waiting for its ReadIndex (and then for apply).
#[derive(Clone, Copy)]
pub struct ReadWaiter {
    pub client: usize,
    pub seq: u64,
    pub key: Key,
}

pub struct SimNode {
    /// `None` while crashed.
    pub raft: Option<Raft>,
    /// Bumped on every crash and start, so stale ticks and disk completions
    /// of an earlier life are ignored.
    pub incarnation: u64,
    pub disk: Disk,
    pub sm: StateMachine,
    pub proposals: BTreeMap<Index, Waiter>,
    pub reads: BTreeMap<u64, ReadWaiter>,
    pub ready: Vec<(Index, ReadWaiter)>,
    pub next_ctx: u64,
    /// Until then the process is stopped: its events wait.
    pub paused_until: Micros,
    /// This node's tick interval (clock skew).
    pub tick: Micros,
}

impl SimNode {
    pub fn new(wal: WalOptions) -> SimNode {
        SimNode {
            raft: None,
            incarnation: 0,
            disk: Disk::new(wal),
            sm: StateMachine::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready: Vec::new(),
            next_ctx: 0,
            paused_until: 0,
            tick: 0,
        }
    }

    /// Boots from what is on the disk, as a real node does after a crash:
    /// the WAL recovers, the state machine restores from the snapshot.
    /// Returns the durable state recovered.
    pub fn start(&mut self, cfg: Config, seed: u64) -> Result<Recovered, Violation> {
        self.incarnation += 1;
        let recovered = self
            .disk
            .open()
            .map_err(|e| Violation::new("recovery", e.to_string()))?;
        let durable = recovered.durable.clone();
        let (data, index) = match &durable.snapshot {
            Some(s) => (s.data.clone(), s.meta.index),
            None => (bytes::Bytes::new(), Index::ZERO),
        };
        self.sm = restore(&data, index)?;
        let raft =
            Raft::new(cfg, durable, seed).map_err(|e| Violation::new("recovery", e.to_string()))?;
        self.raft = Some(raft);
        Ok(recovered)
    }

    pub fn crash(&mut self, rng: &mut dyn FnMut() -> u64) {
        self.incarnation += 1;
        self.raft = None;
        self.disk.crash(rng);
        self.proposals.clear();
        self.reads.clear();
        self.ready.clear();
    }
}

fn restore(data: &[u8], index: Index) -> Result<StateMachine, Violation> {
    let sm = StateMachine::restore(data).map_err(|e| Violation::new("snapshot", e.to_string()))?;
    if sm.applied_index() != index.0 {
        return Err(Violation::new(
            "snapshot",
            format!(
                "snapshot at {index} holds state applied to {}",
                sm.applied_index()
            ),
        ));
    }
    Ok(sm)
}

/// Answers owed to clients, sent once the node is no longer borrowed.
type Answers = Vec<(usize, u64, Result<Reply, Option<NodeId>>)>;

impl World {
    /// Executes everything the core of `id` has to say, until it is quiet.
    pub(crate) fn drive(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(raft) = node.raft.as_mut() else {
                return;
            };
            let out = raft.take_output();
            if out.is_empty() {
                return;
            }
            self.touched.insert(id);
            let mut answers: Answers = Vec::new();

            // 1. Persist; `send_after_persist` rides with the write.
            if let Some(snapshot) = &out.persist.snapshot {
                self.stats.snapshots_installed += 1;
                match restore(&snapshot.data, snapshot.meta.index) {
                    Ok(sm) => node.sm = sm,
                    Err(v) => {
                        self.fail(v);
                        return;
                    }
                }
                let covered: Vec<Index> = node
                    .proposals
                    .range(..=snapshot.meta.index)
                    .map(|(i, _)| *i)
                    .collect();
                for index in covered {
                    if let Some(w) = node.proposals.remove(&index) {
                        answers.push((w.client, w.seq, Err(None)));
                    }
                }
            }
            if !out.persist.is_empty() || !out.send_after_persist.is_empty() {
                let latency = if out.persist.is_empty() {
                    0
                } else {
                    self.prng.range(1, self.opts.disk_latency_max)
                };
                let Some(node) = self.nodes.get_mut(&id) else {
                    return;
                };
                // The write reaches the WAL now; it is durable only once the
                // sync scheduled below completes.
                if let Some(Err(e)) = node.disk.wal().map(|w| w.write(&out.persist)) {
                    self.fail(Violation::new("wal", format!("{id}: write: {e}")));
                    return;
                }
                node.disk.busy_until = node.disk.busy_until.max(self.now) + latency;
                node.disk.pending.push_back(Pending {
                    after: out.send_after_persist,
                    last: out.persist.last(),
                });
                let (at, incarnation) = (node.disk.busy_until - self.now, node.incarnation);
                self.schedule(
                    at,
                    Event::DiskDone {
                        node: id,
                        incarnation,
                    },
                );
            }

            // 2. Messages that may leave now.
            for msg in out.send {
                self.send(msg);
            }

            // 3. Apply, answering the writes proposed here.
            for entry in &out.apply {
                if let Err(v) = self.safety.on_apply(id, entry) {
                    self.fail(v);
                    return;
                }
                let node = self.nodes.get_mut(&id).expect("node present");
                let reply = match &entry.payload {
                    Payload::Normal(data) => match node.sm.apply(entry.index.0, data).reply {
                        Ok(reply) => Some(reply),
                        // A duplicate of a write the client has moved past:
                        // nobody waits for its answer.
                        Err(ApplyError::StaleSequence { .. }) => None,
                        Err(ApplyError::Decode(e)) => {
                            self.fail(Violation::new(
                                "apply",
                                format!("undecodable entry {}: {e}", entry.index),
                            ));
                            return;
                        }
                    },
                    _ => {
                        node.sm.apply_noop(entry.index.0);
                        None
                    }
                };
                if let Some(w) = node.proposals.remove(&entry.index) {
                    if w.term == entry.term {
                        if let Some(r) = reply {
                            answers.push((w.client, w.seq, Ok(r)));
                        }
                    } else {
                        // Our entry lost to another leader's: retry.
                        answers.push((w.client, w.seq, Err(None)));
                    }
                }
            }
            let node = self.nodes.get_mut(&id).expect("node present");
            let applied = Index(node.sm.applied_index());
            if let Some(raft) = node.raft.as_mut() {
                raft.on_applied(applied);
            }

            // 4. Reads: confirmed ones wait for apply; dropped ones retry.
            for r in out.reads {
                if let Some(w) = node.reads.remove(&r.ctx) {
                    node.ready.push((r.index, w));
                }
            }
            for ctx in out.reads_dropped {
                if let Some(w) = node.reads.remove(&ctx) {
                    answers.push((w.client, w.seq, Err(None)));
                }
            }
            let sm = &node.sm;
            node.ready.retain(|(index, w)| {
                if index.0 <= sm.applied_index() {
                    let value = sm.read_register(&register_name(w.key));
                    answers.push((w.client, w.seq, Ok(Reply::Value(value))));
                    false
                } else {
                    true
                }
            });

            // Check before compaction drops entries the checker has not seen.
            self.observe(id);
            self.maybe_compact(id);
            for (client, seq, result) in answers {
                self.respond(client, seq, result);
            }
        }
    }

    /// Takes a snapshot once enough has been applied since the last one.
    fn maybe_compact(&mut self, id: NodeId) {
        let every = self.opts.compact_every;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let applied = Index(node.sm.applied_index());
        if applied.distance_from(raft.log().snapshot_index()) < every {
            return;
        }
        let data = node.sm.snapshot();
        match raft.compact(applied, data.clone()) {
            // The snapshot file is made durable before the WAL drops the log
            // prefix it replaces.
            Ok(meta) => {
                let snapshot = Snapshot { meta, data };
                if let Some(Err(e)) = node.disk.wal().map(|w| w.save_snapshot(&snapshot)) {
                    self.fail(Violation::new("wal", format!("{id}: snapshot: {e}")));
                }
                self.stats.snapshots_taken += 1;
            }
            Err(e) => self.fail(Violation::new("compaction", format!("{id}: {e}"))),
        }
    }

    pub(crate) fn on_disk_done(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation {
            return;
        }
        let Some(write) = node.disk.pending.pop_front() else {
            return;
        };
        // One fdatasync makes everything written so far durable.
        let skip = self.opts.skip_sync;
        let synced = node.disk.wal().map(|w| {
            if skip {
                Ok(w.hard_state())
            } else {
                w.sync().map(|()| w.hard_state())
            }
        });
        match synced {
            Some(Ok(hs)) => {
                if let Err(v) = self.safety.on_durable_commit(id, hs.commit) {
                    self.fail(v);
                }
            }
            Some(Err(e)) => {
                self.fail(Violation::new("wal", format!("{id}: sync: {e}")));
                return;
            }
            None => return,
        }
        self.log(|| format!("disk {id} durable {:?}", write.last));
        for msg in write.after {
            self.send(msg);
        }
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return;
        };
        if let Some((index, term)) = write.last {
            raft.on_persisted(index, term);
        }
        self.touched.insert(id);
        self.drive(id);
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
        if node.raft.is_none() {
            return;
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
        let seed = self.prng.next_u64();
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.raft.is_some() {
            return;
        }
        let recovered = match node.start(cfg, seed) {
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
