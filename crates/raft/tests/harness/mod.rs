//! A small deterministic in-memory cluster for scenario tests.
//!
//! Every node is a `Raft` core plus what a real server keeps beside it: a
//! durable copy of its state (changed only when the harness *syncs* a
//! persist), a list of applied entries and confirmed reads. Messages travel
//! through one FIFO queue; links can be cut per direction, messages can be
//! filtered, held back and injected. The harness executes each output exactly
//! as the contract in `ferrite_raft::Output` says: `send` goes at once,
//! `send_after_persist` only when the persist is synced, then
//! `on_persisted(persist.last())`.
//!
//! After every input the harness checks cluster-wide safety: at most one
//! leader per term, committed prefixes agree, and applied entries agree.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ferrite_raft::{
    Body, Config, DurableState, Entry, HardState, Index, Message, NodeId, Output, Payload, Persist,
    Raft, ReadReady, Role, Snapshot, SnapshotMeta, StepError, Term,
};

/// The seed every cluster uses unless told otherwise.
pub const SEED: u64 = 0x5EED;

/// Upper bound on messages delivered by one `deliver_all`: a cluster that does
/// not quiesce within it is a bug.
const DELIVERY_LIMIT: usize = 200_000;

pub fn nid(id: u64) -> NodeId {
    NodeId(id)
}

pub fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The payload the harness gives the entry at `(index, term)` of a prebuilt
/// log, so that entries with equal index and term are equal everywhere.
pub fn prebuilt_payload(index: u64, term: u64) -> Payload {
    Payload::Normal(Bytes::from(format!("i{index}t{term}")))
}

/// The durable state of a founding member whose log holds entries of the given
/// terms at indices 1, 2, ...; the hard state's term is `term` (at least the
/// last entry's) and `commit` entries are known committed.
pub fn durable_log(voters: &[u64], terms: &[u64], term: u64, commit: u64) -> DurableState {
    let mut d = DurableState::bootstrap(voters.iter().copied().map(NodeId));
    d.entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            index: Index(i as u64 + 1),
            term: Term(t),
            payload: prebuilt_payload(i as u64 + 1, t),
        })
        .collect();
    let last = terms.last().copied().unwrap_or(0);
    d.hard_state = HardState {
        term: Term(term.max(last)),
        vote: None,
        commit: Index(commit),
    };
    d
}

/// One output of one node, as the harness received it (`Output` is not
/// `Clone`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub node: u64,
    pub persist: Persist,
    pub send: Vec<Message>,
    pub send_after_persist: Vec<Message>,
    pub apply: Vec<Entry>,
    pub reads: Vec<ReadReady>,
    pub reads_dropped: Vec<u64>,
}

/// An input the harness gave a node, for the determinism check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Tick(u64),
    Step(Message),
    Persisted(u64, Index, Term),
}

pub struct Node {
    pub id: u64,
    pub cfg: Config,
    pub raft: Raft,
    /// What survives a crash: changed only by `sync`.
    pub durable: DurableState,
    /// Persists handed out but not yet durable, each with the messages that
    /// wait for it.
    pub pending: VecDeque<(Persist, Vec<Message>)>,
    /// If set, persists stay pending until `Cluster::sync`.
    pub manual_sync: bool,
    pub up: bool,
    /// The state machine: the snapshot it was restored from, then entries.
    pub sm_snapshot: Option<Snapshot>,
    pub applied: Vec<Entry>,
    pub reads: Vec<ReadReady>,
    pub reads_dropped: Vec<u64>,
}

/// Sees the cluster as it is when the message is sent and again when it
/// would be delivered.
type Filter = Box<dyn Fn(&Cluster, &Message) -> bool>;

pub struct Cluster {
    pub seed: u64,
    pub nodes: BTreeMap<u64, Node>,
    /// Messages in flight, oldest first.
    pub queue: VecDeque<Message>,
    /// Directed links that lose every message: `(from, to)`.
    cut: BTreeSet<(u64, u64)>,
    /// Nodes whose outgoing messages are all lost.
    muted: BTreeSet<u64>,
    /// Messages for which this returns true are lost.
    drop_filter: Option<Filter>,
    /// Every output, in order.
    pub history: Vec<Recorded>,
    /// Every input, in order.
    pub inputs: Vec<Input>,
    /// Every message a node was stepped with, in order.
    pub delivered: Vec<Message>,
    /// Every message lost to a cut link, a mute, a filter or a crashed node.
    pub dropped: Vec<Message>,
    /// Who was leader in each term (must be at most one).
    pub leaders_by_term: BTreeMap<u64, BTreeSet<u64>>,
    /// Every entry applied anywhere, by index (must agree).
    applied_anywhere: BTreeMap<u64, Entry>,
}

impl Cluster {
    /// A fresh cluster of founding voters with default configuration.
    pub fn new(ids: &[u64]) -> Cluster {
        Cluster::with_config(ids, |_| {})
    }

    /// A fresh cluster of founding voters; `tune` adjusts every node's config.
    pub fn with_config(ids: &[u64], tune: impl Fn(&mut Config)) -> Cluster {
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut cfg = Config::new(NodeId(id));
                tune(&mut cfg);
                (
                    id,
                    cfg,
                    DurableState::bootstrap(ids.iter().copied().map(NodeId)),
                )
            })
            .collect();
        Cluster::build(nodes, SEED)
    }

    /// A cluster of voters `ids` whose logs hold the given terms; each node's
    /// hard-state term is `terms[id]` (at least its last entry's term).
    pub fn from_logs(logs: &[(u64, &[u64], u64)], commit: u64) -> Cluster {
        Cluster::from_logs_with(logs, commit, |_| {})
    }

    pub fn from_logs_with(
        logs: &[(u64, &[u64], u64)],
        commit: u64,
        tune: impl Fn(&mut Config),
    ) -> Cluster {
        let voters: Vec<u64> = logs.iter().map(|(id, _, _)| *id).collect();
        let nodes = logs
            .iter()
            .map(|&(id, terms, term)| {
                let mut cfg = Config::new(NodeId(id));
                tune(&mut cfg);
                (id, cfg, durable_log(&voters, terms, term, commit))
            })
            .collect();
        Cluster::build(nodes, SEED)
    }

    pub fn build(nodes: Vec<(u64, Config, DurableState)>, seed: u64) -> Cluster {
        let mut c = Cluster {
            seed,
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            muted: BTreeSet::new(),
            drop_filter: None,
            history: Vec::new(),
            inputs: Vec::new(),
            delivered: Vec::new(),
            dropped: Vec::new(),
            leaders_by_term: BTreeMap::new(),
            applied_anywhere: BTreeMap::new(),
        };
        for (id, cfg, durable) in nodes {
            c.add_node(id, cfg, durable);
        }
        c
    }

    /// Starts a node (a founder or one joining with `DurableState::joining()`).
    pub fn add_node(&mut self, id: u64, cfg: Config, durable: DurableState) {
        assert_eq!(cfg.id, NodeId(id));
        let raft = Raft::new(cfg.clone(), durable.clone(), self.seed).expect("valid node");
        let node = Node {
            id,
            cfg,
            raft,
            sm_snapshot: durable.snapshot.clone(),
            durable,
            pending: VecDeque::new(),
            manual_sync: false,
            up: true,
            applied: Vec::new(),
            reads: Vec::new(),
            reads_dropped: Vec::new(),
        };
        self.nodes.insert(id, node);
        self.collect(id);
    }

    // ---- Accessors ------------------------------------------------------

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn raft(&self, id: u64) -> &Raft {
        &self.node(id).raft
    }

    /// Direct access to a core; call `collect(id)` after giving it input.
    pub fn raft_mut(&mut self, id: u64) -> &mut Raft {
        &mut self.node_mut(id).raft
    }

    pub fn role(&self, id: u64) -> Role {
        self.raft(id).role()
    }

    pub fn term(&self, id: u64) -> u64 {
        self.raft(id).term().0
    }

    pub fn commit(&self, id: u64) -> u64 {
        self.raft(id).commit().0
    }

    pub fn last_index(&self, id: u64) -> u64 {
        self.raft(id).log().last_index().0
    }

    pub fn snapshot_index(&self, id: u64) -> u64 {
        self.raft(id).log().snapshot_index().0
    }

    /// Who `id` believes leads.
    pub fn leader_of(&self, id: u64) -> Option<u64> {
        self.raft(id).leader().map(|n| n.0)
    }

    /// The terms of the entries in `id`'s log after its snapshot (from index
    /// 1 when nothing is compacted).
    pub fn log_terms(&self, id: u64) -> Vec<u64> {
        let log = self.raft(id).log();
        log.entries_after(log.snapshot_index())
            .map(|e| e.term.0)
            .collect()
    }

    /// The entries in `id`'s log after its snapshot.
    pub fn entries(&self, id: u64) -> Vec<Entry> {
        let log = self.raft(id).log();
        log.entries_after(log.snapshot_index()).cloned().collect()
    }

    /// The client payloads in `id`'s log, as strings.
    pub fn log_data(&self, id: u64) -> Vec<String> {
        self.entries(id)
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Normal(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// The client payloads `id`'s state machine applied since its restore.
    pub fn applied_data(&self, id: u64) -> Vec<String> {
        self.node(id)
            .applied
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Normal(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// The up node that is leader in the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter(|n| n.up && n.raft.role() == Role::Leader)
            .max_by_key(|n| n.raft.term())
            .map(|n| n.id)
    }

    /// Every up node currently in the leader role.
    pub fn leaders(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.up && n.raft.role() == Role::Leader)
            .map(|n| n.id)
            .collect()
    }

    /// Messages of `kind` (see `Message::kind`) stepped into `to`.
    pub fn delivered_to(&self, to: u64, kind: &str) -> Vec<&Message> {
        self.delivered
            .iter()
            .filter(|m| m.to == NodeId(to) && m.kind() == kind)
            .collect()
    }

    /// Messages of `kind` in the queue.
    pub fn queued(&self, kind: &str) -> Vec<&Message> {
        self.queue.iter().filter(|m| m.kind() == kind).collect()
    }

    // ---- Network --------------------------------------------------------

    pub fn cut_link(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.cut_both(id, other);
            }
        }
    }

    /// Cuts every link between the two sides.
    pub fn partition(&mut self, side_a: &[u64], side_b: &[u64]) {
        for &a in side_a {
            for &b in side_b {
                self.cut_both(a, b);
            }
        }
    }

    /// Restores every link and lifts the drop filter.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.drop_filter = None;
    }

    /// Loses every message for which `f` returns true (asked at send and at
    /// delivery time), until `heal` or `clear_filter`.
    pub fn drop_if(&mut self, f: impl Fn(&Cluster, &Message) -> bool + 'static) {
        self.drop_filter = Some(Box::new(f));
    }

    pub fn clear_filter(&mut self) {
        self.drop_filter = None;
    }

    fn lost(&self, m: &Message) -> bool {
        self.cut.contains(&(m.from.0, m.to.0))
            || self.muted.contains(&m.from.0)
            || self.drop_filter.as_ref().is_some_and(|f| f(self, m))
    }

    fn enqueue(&mut self, m: Message) {
        if self.lost(&m) {
            self.dropped.push(m);
        } else {
            self.queue.push_back(m);
        }
    }

    /// Removes and returns the queued messages matching `f` (to deliver
    /// later with `inject`, or never).
    pub fn hold(&mut self, f: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (held, kept): (Vec<Message>, Vec<Message>) = self.queue.drain(..).partition(|m| f(m));
        self.queue = kept.into();
        held
    }

    /// Puts a message at the end of the queue.
    pub fn inject(&mut self, m: Message) {
        self.queue.push_back(m);
    }

    // ---- Driving --------------------------------------------------------

    /// Takes and executes every output `id` has, until it is quiet.
    pub fn collect(&mut self, id: u64) {
        loop {
            let node = self.node_mut(id);
            if !node.up {
                return;
            }
            let out = node.raft.take_output();
            if out.is_empty() {
                return;
            }
            self.execute(id, out);
        }
    }

    fn execute(&mut self, id: u64, out: Output) {
        let Output {
            persist,
            must_sync: _,
            send,
            send_after_persist,
            apply,
            reads,
            reads_dropped,
        } = out;
        self.history.push(Recorded {
            node: id,
            persist: persist.clone(),
            send: send.clone(),
            send_after_persist: send_after_persist.clone(),
            apply: apply.clone(),
            reads: reads.clone(),
            reads_dropped: reads_dropped.clone(),
        });
        for m in send {
            assert_eq!(m.from, NodeId(id), "node {id} sends as {}", m.from);
            self.enqueue(m);
        }
        for e in &apply {
            match self.applied_anywhere.get(&e.index.0) {
                Some(seen) => assert_eq!(seen, e, "two different entries applied at {}", e.index),
                None => {
                    self.applied_anywhere.insert(e.index.0, e.clone());
                }
            }
        }
        let node = self.node_mut(id);
        if let Some(s) = &persist.snapshot {
            node.sm_snapshot = Some(s.clone());
            node.applied.clear();
        }
        let expected_next = node
            .applied
            .last()
            .map(|e| e.index.next())
            .or_else(|| node.sm_snapshot.as_ref().map(|s| s.meta.index.next()))
            .unwrap_or(Index(1));
        if let Some(first) = apply.first() {
            assert_eq!(first.index, expected_next, "node {id} applies out of order");
        }
        node.applied.extend(apply.iter().cloned());
        if let Some(last) = apply.last() {
            node.raft.on_applied(last.index);
        }
        node.reads.extend(reads);
        node.reads_dropped.extend(reads_dropped);
        node.pending.push_back((persist, send_after_persist));
        if !node.manual_sync {
            self.sync(id);
        }
    }

    /// Makes every pending persist of `id` durable, in order: releases the
    /// messages that waited for it and reports `on_persisted`.
    pub fn sync(&mut self, id: u64) {
        while let Some((persist, msgs)) = self.node_mut(id).pending.pop_front() {
            let node = self.node_mut(id);
            write_durable(&mut node.durable, &persist);
            for m in msgs {
                self.enqueue(m);
            }
            if let Some((index, term)) = persist.last() {
                self.inputs.push(Input::Persisted(id, index, term));
                self.node_mut(id).raft.on_persisted(index, term);
            }
        }
        self.observe();
    }

    /// Switches `id` between syncing at once and syncing on `sync` only.
    pub fn set_manual_sync(&mut self, id: u64, manual: bool) {
        self.node_mut(id).manual_sync = manual;
    }

    pub fn tick(&mut self, id: u64) {
        if !self.node(id).up {
            return;
        }
        self.inputs.push(Input::Tick(id));
        self.node_mut(id).raft.tick();
        self.collect(id);
        self.observe();
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Ticks every node and delivers until quiet, `n` times.
    pub fn run(&mut self, n: usize) {
        for _ in 0..n {
            self.tick_all();
            self.deliver_all();
        }
    }

    /// Runs whole ticks until `cond` holds; returns the ticks it took, or
    /// `None` if it did not within `max`.
    pub fn run_until(&mut self, max: usize, cond: impl Fn(&Cluster) -> bool) -> Option<usize> {
        for t in 0..=max {
            if cond(self) {
                return Some(t);
            }
            if t < max {
                self.run(1);
            }
        }
        None
    }

    /// Steps `id` with `msg` directly (no network), then collects.
    pub fn step(&mut self, id: u64, msg: Message) -> Result<(), StepError> {
        self.inputs.push(Input::Step(msg.clone()));
        let result = self.node_mut(id).raft.step(msg);
        self.collect(id);
        self.observe();
        result
    }

    /// Delivers the oldest queued message. Returns false if the queue was
    /// empty. A `StepError` during delivery is a bug of the core: it panics.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        let to = m.to.0;
        let down = !matches!(self.nodes.get(&to), Some(n) if n.up);
        if down || self.lost(&m) {
            self.dropped.push(m);
            return true;
        }
        self.delivered.push(m.clone());
        if let Err(e) = self.step(to, m.clone()) {
            panic!("node {to} refused {m:?}: {e}");
        }
        true
    }

    /// Delivers until no message is in flight and no node has output.
    pub fn deliver_all(&mut self) {
        let mut n = 0;
        loop {
            for id in self.ids() {
                self.collect(id);
            }
            if !self.deliver_one() {
                return;
            }
            n += 1;
            assert!(n < DELIVERY_LIMIT, "the cluster does not quiesce");
        }
    }

    /// Delivers one message at a time until `cond` holds. Returns whether it
    /// did before the queue ran dry.
    pub fn deliver_until(&mut self, cond: impl Fn(&Cluster) -> bool) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            if !self.deliver_one() {
                return cond(self);
            }
        }
    }

    // ---- Elections ------------------------------------------------------

    /// Ticks `id` with its messages lost, `n` times.
    pub fn tick_muted(&mut self, id: u64, n: u32) {
        self.muted.insert(id);
        for _ in 0..n {
            self.tick(id);
        }
        self.muted.remove(&id);
    }

    /// Lets every up node but `except` that is not a leader run out its
    /// leader lease (it ticks an election timeout's minimum with its messages
    /// lost), so that it answers vote requests again. Such a node may start
    /// a pre-vote nobody hears; that changes no term.
    pub fn expire_leases(&mut self, except: u64) {
        for id in self.ids() {
            let node = self.node(id);
            if id == except || !node.up || node.raft.role() == Role::Leader {
                continue;
            }
            let ticks = node.cfg.election_ticks_min;
            self.tick_muted(id, ticks);
        }
    }

    /// Ticks `id` alone until it starts an election (sends PreVote or Vote, or
    /// wins at once). Returns whether it did within `2 * election_ticks_min`.
    pub fn tick_until_campaign(&mut self, id: u64) -> bool {
        let limit = 2 * self.node(id).cfg.election_ticks_min;
        for _ in 0..limit {
            let before = self.history.len();
            self.tick(id);
            let campaigned = self.history[before..].iter().any(|r| {
                r.node == id
                    && r.send
                        .iter()
                        .chain(&r.send_after_persist)
                        .any(|m| matches!(m.body, Body::PreVote { .. } | Body::Vote { .. }))
            });
            if campaigned || self.role(id) == Role::Leader {
                return true;
            }
        }
        false
    }

    /// Tries to make `id` leader by ticking only it (after expiring the
    /// others' leases) and delivering, for a few election rounds. Returns
    /// whether it became leader.
    pub fn try_elect(&mut self, id: u64) -> bool {
        for _ in 0..5 {
            if self.role(id) == Role::Leader {
                return true;
            }
            self.expire_leases(id);
            if !self.tick_until_campaign(id) {
                return false;
            }
            self.deliver_all();
        }
        self.role(id) == Role::Leader
    }

    /// Makes `id` leader and delivers until quiet; panics if it cannot win.
    pub fn elect(&mut self, id: u64) {
        assert!(self.try_elect(id), "node {id} could not be elected");
        self.deliver_all();
    }

    // ---- Client operations ----------------------------------------------

    /// Proposes at `id` (which must lead) and collects, without delivering.
    pub fn propose(&mut self, id: u64, payload: &str) -> (u64, u64) {
        let (index, term) = self
            .raft_mut(id)
            .propose(data(payload))
            .unwrap_or_else(|e| panic!("propose at {id}: {e}"));
        self.collect(id);
        self.observe();
        (index.0, term.0)
    }

    /// Compacts `id` up to `index` and stores the snapshot as durable.
    pub fn compact(&mut self, id: u64, index: u64, snapshot: &[u8]) -> SnapshotMeta {
        let bytes = Bytes::copy_from_slice(snapshot);
        let node = self.node_mut(id);
        let meta = node
            .raft
            .compact(Index(index), bytes.clone())
            .unwrap_or_else(|e| panic!("compact {id} to {index}: {e}"));
        node.durable.snapshot = Some(Snapshot {
            meta: meta.clone(),
            data: bytes,
        });
        node.durable.entries.retain(|e| e.index.0 > index);
        meta
    }

    // ---- Crashes --------------------------------------------------------

    /// Stops `id`: every persist not yet synced is lost.
    pub fn crash(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.up = false;
        node.pending.clear();
    }

    /// Restarts `id` from its durable copy, as a real server would.
    pub fn restart(&mut self, id: u64) {
        let seed = self.seed;
        let node = self.node_mut(id);
        node.raft = Raft::new(node.cfg.clone(), node.durable.clone(), seed)
            .unwrap_or_else(|e| panic!("node {id} cannot restart: {e}"));
        node.up = true;
        node.sm_snapshot = node.durable.snapshot.clone();
        node.applied.clear();
        self.collect(id);
        self.observe();
    }

    // ---- Safety ---------------------------------------------------------

    /// Checks what must hold after every input.
    fn observe(&mut self) {
        for node in self.nodes.values().filter(|n| n.up) {
            node.raft.assert_invariants();
            if node.raft.role() == Role::Leader {
                let leaders = self.leaders_by_term.entry(node.raft.term().0).or_default();
                leaders.insert(node.id);
                assert_eq!(
                    leaders.len(),
                    1,
                    "two leaders in term {}: {leaders:?}",
                    node.raft.term()
                );
            }
        }
        let ups: Vec<&Node> = self.nodes.values().filter(|n| n.up).collect();
        for (i, a) in ups.iter().enumerate() {
            for b in &ups[i + 1..] {
                let (la, lb) = (a.raft.log(), b.raft.log());
                let upto = a.raft.commit().min(b.raft.commit());
                let from = la.snapshot_index().max(lb.snapshot_index());
                let mut index = from.next();
                while index <= upto {
                    assert_eq!(
                        la.term_at(index),
                        lb.term_at(index),
                        "committed logs of {} and {} differ at {index}",
                        a.id,
                        b.id
                    );
                    index = index.next();
                }
            }
        }
    }

    /// Asserts that every node in `ids` holds exactly `id0`'s log and commit.
    pub fn assert_same_logs(&self, ids: &[u64]) {
        let first = ids[0];
        for &id in &ids[1..] {
            assert_eq!(
                self.entries(id),
                self.entries(first),
                "logs of {id} and {first} differ: {:?} vs {:?}",
                self.log_terms(id),
                self.log_terms(first)
            );
            assert_eq!(self.snapshot_index(id), self.snapshot_index(first));
        }
    }
}

/// Applies a persist to a durable copy: snapshot first, then entries, then
/// hard state (the order `Output` prescribes).
fn write_durable(d: &mut DurableState, p: &Persist) {
    if let Some(s) = &p.snapshot {
        d.snapshot = Some(s.clone());
        d.entries.clear();
    }
    if let Some(first) = p.entries.first() {
        d.entries.retain(|e| e.index < first.index);
        let durable_last = d
            .entries
            .last()
            .map(|e| e.index)
            .or_else(|| d.snapshot.as_ref().map(|s| s.meta.index))
            .unwrap_or(Index::ZERO);
        assert!(
            first.index <= durable_last.next(),
            "persist leaves a gap: {} after {durable_last}",
            first.index
        );
        d.entries.extend(p.entries.iter().cloned());
    }
    if let Some(hs) = p.hard_state {
        d.hard_state = hs;
    }
}
