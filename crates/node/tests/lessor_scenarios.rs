//! Scenarios of the lessor inside the sans-IO replica, stepped by hand on
//! ticks: three replicas with a fake state machine that keeps a lease table
//! and reports its changes, a network that delivers in order (with links
//! that can be cut), and an apply that can be held back. The tick is 100 ms,
//! so a lease of `s` seconds runs `10 * s` ticks on the leader's clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrite_node::codec::Frame;
use ferrite_node::{
    Answer, Applied, Applier, ApplyTask, LeaseChange, LeaseId, LeaseProposals, LeaseRecord,
    LeaseTtl, MachineError, MachineSnapshot, NodeError, Replica, ReplicaConfig, RequestId,
    Requester, StateMachine, StorageTask,
};
use ferrite_raft::{Canary, Config, DurableState, Index, NodeId, Raft, Role};

// ---- A state machine with leases ---------------------------------------------

fn grant(id: LeaseId, ttl_s: i64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'g');
    b.put_i64_le(id);
    b.put_i64_le(ttl_s);
    b.freeze()
}

fn revoke(id: LeaseId) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'r');
    b.put_i64_le(id);
    b.freeze()
}

fn checkpoint(leases: &[(LeaseId, i64)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'c');
    for (id, remaining) in leases {
        b.put_i64_le(*id);
        b.put_i64_le(*remaining);
    }
    b.freeze()
}

const PROPOSALS: LeaseProposals = LeaseProposals { revoke, checkpoint };

/// Leases and nothing else. Replies are empty.
#[derive(Default)]
struct Leases {
    applied: Index,
    /// id -> (ttl, checkpointed remaining)
    table: BTreeMap<LeaseId, (i64, i64)>,
    /// Every revoke applied (of a present lease or not).
    revokes: Vec<LeaseId>,
    /// Every checkpoint command applied.
    checkpoints: Vec<Vec<(LeaseId, i64)>>,
    changes: Vec<LeaseChange>,
}

impl StateMachine for Leases {
    fn apply(&mut self, index: Index, command: &[u8]) -> Result<Bytes, MachineError> {
        self.applied = index;
        let mut c = command;
        match c.get_u8() {
            b'g' => {
                let (id, ttl_s) = (c.get_i64_le(), c.get_i64_le());
                self.table.insert(id, (ttl_s, 0));
                self.changes.push(LeaseChange::Granted { id, ttl_s });
            }
            b'r' => {
                let id = c.get_i64_le();
                self.revokes.push(id);
                if self.table.remove(&id).is_some() {
                    self.changes.push(LeaseChange::Revoked { id });
                }
            }
            b'c' => {
                let mut all = Vec::new();
                while c.has_remaining() {
                    let (id, remaining_s) = (c.get_i64_le(), c.get_i64_le());
                    all.push((id, remaining_s));
                    if let Some(lease) = self.table.get_mut(&id) {
                        lease.1 = remaining_s;
                        self.changes
                            .push(LeaseChange::Checkpointed { id, remaining_s });
                    }
                }
                self.checkpoints.push(all);
            }
            other => panic!("unknown command {other}"),
        }
        Ok(Bytes::new())
    }
    fn apply_empty(&mut self, index: Index) {
        self.applied = index;
    }
    fn query(&mut self, _query: &[u8]) -> Bytes {
        Bytes::new()
    }
    fn applied(&self) -> Index {
        self.applied
    }
    fn snapshot(&mut self) -> Result<MachineSnapshot, MachineError> {
        let mut b = BytesMut::new();
        b.put_u64_le(self.applied.0);
        for (id, (ttl, remaining)) in &self.table {
            b.put_i64_le(*id);
            b.put_i64_le(*ttl);
            b.put_i64_le(*remaining);
        }
        Ok(MachineSnapshot::complete(b.freeze()))
    }
    fn recover(&mut self, mut data: &[u8]) -> Result<(), MachineError> {
        self.table.clear();
        self.applied = Index(data.get_u64_le());
        while data.has_remaining() {
            let (id, ttl, remaining) = (data.get_i64_le(), data.get_i64_le(), data.get_i64_le());
            self.table.insert(id, (ttl, remaining));
        }
        let records = self
            .table
            .iter()
            .map(|(id, (ttl_s, remaining_s))| LeaseRecord {
                id: *id,
                ttl_s: *ttl_s,
                remaining_s: *remaining_s,
            })
            .collect();
        self.changes.push(LeaseChange::Reset(records));
        Ok(())
    }
    fn install(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.recover(data)
    }
    fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.changes)
    }
}

// ---- The cluster -----------------------------------------------------------------

struct Member {
    replica: Replica,
    applier: Applier<Leases>,
    answers: BTreeMap<RequestId, Answer>,
    /// Apply tasks held back while `hold` names this member.
    held: Vec<ApplyTask>,
}

struct Cluster {
    members: BTreeMap<NodeId, Member>,
    queue: VecDeque<(NodeId, NodeId, Frame)>,
    cut: BTreeSet<(NodeId, NodeId)>,
    hold: BTreeSet<NodeId>,
}

const IDS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

impl Cluster {
    fn new(checkpoint_ticks: u64, canary: Canary) -> Cluster {
        let mut members = BTreeMap::new();
        for id in IDS {
            let mut cfg = Config::new(id);
            cfg.canary = canary;
            let raft = Raft::new(cfg, DurableState::bootstrap(IDS), id.0 * 7919).expect("config");
            let config = ReplicaConfig {
                request_ticks: 1_000,
                first_request_id: id.0 << 40,
                tick_ms: 100,
                lease_proposals: Some(PROPOSALS),
                lease_checkpoint_ticks: checkpoint_ticks,
                ..ReplicaConfig::default()
            };
            let applier = Applier::new(Leases::default(), 1_000_000, (Index::ZERO, 0), canary);
            members.insert(
                id,
                Member {
                    replica: Replica::new(raft, config),
                    applier,
                    answers: BTreeMap::new(),
                    held: Vec::new(),
                },
            );
        }
        Cluster {
            members,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            hold: BTreeSet::new(),
        }
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        self.members.get_mut(&id).expect("a member")
    }

    fn isolate(&mut self, id: NodeId) {
        for other in IDS.into_iter().filter(|o| *o != id) {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, frame: Frame) {
        if !self.cut.contains(&(from, to)) {
            self.queue.push_back((from, to, frame));
        }
    }

    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut busy = false;
            for id in IDS {
                busy |= self.drive(id);
            }
            if let Some((from, to, frame)) = self.queue.pop_front() {
                busy = true;
                if !self.cut.contains(&(from, to)) {
                    let _ = self.member(to).replica.on_frame(frame);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    fn drive(&mut self, id: NodeId) -> bool {
        let out = self.member(id).replica.take_output();
        if out.is_empty() {
            return false;
        }
        self.member(id).replica.assert_invariants();
        for (request, answer) in out.answers {
            self.member(id).answers.insert(request, answer);
        }
        for task in out.storage {
            if let StorageTask::Persist { persist, after, .. } = task {
                if let Some((index, term)) = persist.last() {
                    self.member(id).replica.on_persisted(index, term);
                }
                for msg in after {
                    self.send(id, msg.to, Frame::Raft(msg));
                }
            }
        }
        for (to, frame) in out.send {
            self.send(id, to, frame);
        }
        for task in out.apply {
            if self.hold.contains(&id) {
                self.member(id).held.push(task);
            } else {
                self.apply(id, task);
            }
        }
        true
    }

    fn release(&mut self, id: NodeId) {
        self.hold.remove(&id);
        for task in std::mem::take(&mut self.member(id).held) {
            self.apply(id, task);
        }
    }

    fn apply(&mut self, id: NodeId, task: ApplyTask) {
        let mut out = Applied::default();
        let member = self.member(id);
        member.applier.handle(task, &mut out).expect("apply works");
        member
            .replica
            .on_lease_changes(std::mem::take(&mut out.leases));
        if let Some(upto) = out.upto {
            member.replica.on_applied(upto);
        }
        for (requester, answer) in out.answers {
            match requester {
                Requester::Local(request) => {
                    self.member(id).answers.insert(request, answer);
                }
                Requester::Peer { from, id: fwd } => {
                    let result = answer.map_err(|e| ferrite_node::replica::refusal(&e));
                    self.send(id, from, Frame::ForwardReply { id: fwd, result });
                }
            }
        }
    }

    /// Ticks `ids` together until one of them leads, has committed its
    /// no-op and promoted its lessor; returns it.
    fn elect_among(&mut self, ids: &[NodeId]) -> NodeId {
        for _ in 0..400 {
            for id in ids {
                self.member(*id).replica.tick();
            }
            self.settle();
            for id in ids {
                let replica = &self.member(*id).replica;
                if replica.raft().role() == Role::Leader && replica.lessor_promoted() {
                    return *id;
                }
            }
        }
        panic!("none of {ids:?} became leader");
    }

    /// `n` ticks of `ids`, settling after each.
    fn tick(&mut self, ids: &[NodeId], n: u64) {
        for _ in 0..n {
            for id in ids {
                self.member(*id).replica.tick();
            }
            self.settle();
        }
    }

    fn propose(&mut self, id: NodeId, data: Bytes) {
        self.member(id).replica.propose(data);
        self.settle();
    }

    fn keep_alive(&mut self, id: NodeId, lease: LeaseId) -> RequestId {
        let request = self.member(id).replica.lease_keep_alive(lease);
        self.settle();
        request
    }

    fn answer(&mut self, id: NodeId, request: RequestId) -> Option<Result<LeaseTtl, NodeError>> {
        let answer = self.member(id).answers.get(&request).cloned()?;
        Some(answer.map(|b| LeaseTtl::decode(&b).expect("a lease answer")))
    }

    fn machine(&mut self, id: NodeId) -> &Leases {
        self.member(id).applier.machine()
    }

    fn revokes_proposed(&mut self, id: NodeId) -> u64 {
        self.member(id).replica.counters().lease_revokes_proposed
    }
}

fn ttl(id: LeaseId, granted_ttl_s: i64, remaining_s: i64) -> LeaseTtl {
    LeaseTtl {
        id,
        granted_ttl_s,
        remaining_s,
    }
}

// ---- Scenarios --------------------------------------------------------------------

#[test]
fn a_leader_revokes_a_lease_not_renewed_for_its_ttl_and_not_before() {
    let (n1, n2, n3) = (IDS[0], IDS[1], IDS[2]);
    let mut c = Cluster::new(1_000, Canary::None);
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, 2));
    assert!(c.machine(n1).table.contains_key(&7));
    // Two seconds are twenty ticks: nineteen leave it alone.
    c.tick(&IDS, 19);
    for id in IDS {
        assert!(c.machine(id).table.contains_key(&7), "granted on {id}");
    }
    assert_eq!(c.revokes_proposed(n1), 0);
    assert!(c.machine(n1).table.contains_key(&7));
    c.tick(&IDS, 1);
    assert_eq!(c.revokes_proposed(n1), 1);
    assert!(!c.machine(n1).table.contains_key(&7));
    // The next heartbeat tells the followers it committed.
    c.tick(&IDS, 1);
    for id in IDS {
        assert!(!c.machine(id).table.contains_key(&7), "revoked on {id}");
        assert_eq!(c.machine(id).revokes, vec![7], "one revoke on {id}");
    }
    // Followers keep the table but never the clock.
    for id in [n2, n3] {
        assert_eq!(c.revokes_proposed(id), 0, "{id}");
        assert!(!c.member(id).replica.lessor_promoted());
    }
    // Nothing more to revoke.
    c.tick(&IDS, 50);
    assert_eq!(c.revokes_proposed(n1), 1);
    assert_eq!(c.member(n1).replica.leases(), 0);
}

#[test]
fn a_renew_pushes_expiry_out_by_the_full_ttl_and_an_unknown_lease_is_not_found() {
    let n1 = IDS[0];
    let mut c = Cluster::new(1_000, Canary::None);
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, 2));
    c.tick(&IDS, 15);
    let renewed = c.keep_alive(n1, 7);
    assert_eq!(c.answer(n1, renewed), Some(Ok(ttl(7, 2, 2))));
    assert_eq!(c.member(n1).replica.counters().lease_renewals, 1);
    // Twenty ticks from the renew, not from the grant.
    c.tick(&IDS, 19);
    assert_eq!(c.revokes_proposed(n1), 0);
    let query = c.member(n1).replica.lease_time_to_live(7);
    c.settle();
    assert_eq!(c.answer(n1, query), Some(Ok(ttl(7, 2, 1))));
    c.tick(&IDS, 1);
    assert_eq!(c.revokes_proposed(n1), 1);
    assert!(!c.machine(n1).table.contains_key(&7));

    let unknown = c.keep_alive(n1, 99);
    assert_eq!(c.answer(n1, unknown), Some(Err(NodeError::LeaseNotFound)));
    let gone = c.keep_alive(n1, 7);
    assert_eq!(c.answer(n1, gone), Some(Err(NodeError::LeaseNotFound)));
}

#[test]
fn an_expired_lease_whose_revoke_is_pending_is_not_found_and_its_revoke_is_retried() {
    let n1 = IDS[0];
    let mut c = Cluster::new(1_000, Canary::None);
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, 1));
    // The leader's apply is held back: its revoke commits but the lease
    // stays in the table it knows.
    c.hold.insert(n1);
    c.tick(&IDS, 10);
    assert_eq!(c.revokes_proposed(n1), 1);
    assert_eq!(c.member(n1).replica.leases(), 1);
    let late = c.keep_alive(n1, 7);
    assert_eq!(c.answer(n1, late), Some(Err(NodeError::LeaseNotFound)));
    // Still in the table two seconds later: proposed again.
    c.tick(&IDS, 19);
    assert_eq!(c.revokes_proposed(n1), 1);
    c.tick(&IDS, 1);
    assert_eq!(c.revokes_proposed(n1), 2);
    // Both apply; the second revoke finds nothing, harmlessly.
    c.release(n1);
    c.settle();
    assert_eq!(c.member(n1).replica.leases(), 0);
    assert_eq!(c.machine(n1).revokes, vec![7, 7]);
}

#[test]
fn a_renew_arriving_before_its_grant_is_applied_waits_and_then_succeeds() {
    let n1 = IDS[0];
    let mut c = Cluster::new(1_000, Canary::None);
    c.elect_among(&[n1]);
    // The grant commits; the leader's apply is held back.
    c.hold.insert(n1);
    c.propose(n1, grant(7, 5));
    assert!(c.member(n1).replica.raft().commit() > c.machine(n1).applied);
    let early = c.keep_alive(n1, 7);
    c.tick(&IDS, 3);
    assert_eq!(c.answer(n1, early), None, "waits for apply");
    c.release(n1);
    c.settle();
    assert_eq!(c.answer(n1, early), Some(Ok(ttl(7, 5, 5))));
}

#[test]
fn a_follower_forwards_a_renew_to_the_leader_and_gets_its_answer() {
    let (n1, n3) = (IDS[0], IDS[2]);
    let mut c = Cluster::new(1_000, Canary::None);
    c.elect_among(&[n1]);
    c.propose(n3, grant(7, 3));
    c.tick(&IDS, 10);
    let renewed = c.keep_alive(n3, 7);
    assert_eq!(c.answer(n3, renewed), Some(Ok(ttl(7, 3, 3))));
    assert_eq!(c.member(n1).replica.counters().lease_renewals, 1);
    let query = c.member(n3).replica.lease_time_to_live(7);
    c.settle();
    assert_eq!(c.answer(n3, query), Some(Ok(ttl(7, 3, 3))));
    let unknown = c.keep_alive(n3, 8);
    assert_eq!(c.answer(n3, unknown), Some(Err(NodeError::LeaseNotFound)));
    // Renewed at tick 10 of 30: it lasts until tick 40.
    c.tick(&IDS, 29);
    assert_eq!(c.revokes_proposed(n1), 0);
    c.tick(&IDS, 1);
    assert_eq!(c.revokes_proposed(n1), 1);
    assert_eq!(c.revokes_proposed(n3), 0);
    c.tick(&IDS, 1);
    assert!(!c.machine(n3).table.contains_key(&7));
}

#[test]
fn a_follower_parks_a_renew_while_no_leader_is_known_and_asks_the_next_one() {
    let (n1, n2, n3) = (IDS[0], IDS[1], IDS[2]);
    let mut c = Cluster::new(1_000, Canary::None);
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, 30));
    // n1 is cut off; n3 asks it (it is still the leader n3 knows).
    c.isolate(n1);
    let renewed = c.keep_alive(n3, 7);
    assert_eq!(c.answer(n3, renewed), None);
    let leader = c.elect_among(&[n2, n3]);
    c.settle();
    c.tick(&[n2, n3], 2);
    assert_eq!(c.answer(n3, renewed), Some(Ok(ttl(7, 30, 30))));
    assert_eq!(c.member(leader).replica.counters().lease_renewals, 1);
}

/// Grants a lease of `ttl_s`, lets `age` ticks pass on n1, fails over to
/// n2 or n3, and returns the checkpoints the new leader had applied when it
/// promoted, with the ticks from its promote to its first revoke proposal.
fn ticks_to_revoke_after_failover(
    canary: Canary,
    checkpoint_ticks: u64,
    ttl_s: i64,
    age: u64,
) -> (Vec<Vec<(LeaseId, i64)>>, u64) {
    let (n1, n2, n3) = (IDS[0], IDS[1], IDS[2]);
    let mut c = Cluster::new(checkpoint_ticks, canary);
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, ttl_s));
    c.tick(&IDS, age);
    assert_eq!(c.revokes_proposed(n1), 0);
    c.isolate(n1);
    let leader = c.elect_among(&[n2, n3]);
    let checkpoints = c.machine(leader).checkpoints.clone();
    for waited in 0..1_000 {
        if c.revokes_proposed(leader) > 0 {
            return (checkpoints, waited);
        }
        c.tick(&[n2, n3], 1);
    }
    panic!("the new leader never revoked the lease");
}

#[test]
fn a_new_leader_extends_every_lease_by_its_full_ttl_without_a_checkpoint() {
    // 25 of 30 ticks gone on the old leader; the new one gives 30 again.
    let (checkpoints, waited) = ticks_to_revoke_after_failover(Canary::None, 1_000, 3, 25);
    assert!(checkpoints.is_empty());
    assert_eq!(waited, 30, "a full TTL from the promote");
}

#[test]
fn a_new_leader_uses_the_checkpointed_remaining_ttl() {
    // Checkpoints every 10 ticks of a 10 s lease: after 35 ticks the last
    // checkpoint (at tick 30 of the lease's life, or close) says about 7 s.
    let (checkpoints, waited) = ticks_to_revoke_after_failover(Canary::None, 10, 10, 35);
    let remaining: Vec<i64> = checkpoints
        .iter()
        .flat_map(|cp| cp.iter().filter(|(id, _)| *id == 7).map(|(_, r)| *r))
        .collect();
    let last = *remaining.last().expect("checkpointed");
    assert!((6..=8).contains(&last), "last checkpoint {last} s");
    assert_eq!(waited, last as u64 * 10, "the checkpointed remaining TTL");
}

#[test]
fn with_the_canary_a_new_leader_does_not_extend_and_a_failover_expires_the_lease() {
    let (_, waited) = ticks_to_revoke_after_failover(Canary::NoLeaseExtendOnPromote, 1_000, 3, 25);
    assert!(waited <= 1, "revoked {waited} ticks after the promote");
}

#[test]
fn checkpoints_carry_remaining_ttls_and_a_renew_resets_them_to_zero() {
    let n1 = IDS[0];
    let mut c = Cluster::new(10, Canary::None);
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, 10));
    c.propose(n1, grant(8, 100));
    c.tick(&IDS, 30);
    let checkpoints = c.machine(n1).checkpoints.clone();
    assert_eq!(checkpoints.len(), 3, "{checkpoints:?}");
    assert_eq!(
        c.member(n1).replica.counters().lease_checkpoints_proposed,
        3
    );
    for (i, cp) in checkpoints.iter().enumerate() {
        let of = |id: LeaseId| cp.iter().find(|(l, _)| *l == id).map(|(_, r)| *r);
        // Checkpoint i comes about 10 * (i + 1) ticks after the grants.
        let elapsed = (i as i64 + 1) as f64;
        let expect = |ttl: i64| (ttl as f64 - elapsed).ceil() as i64;
        let near = |got: Option<i64>, ttl: i64| got.is_some_and(|r| (r - expect(ttl)).abs() <= 1);
        assert!(near(of(7), 10), "checkpoint {i}: {cp:?}");
        assert!(near(of(8), 100), "checkpoint {i}: {cp:?}");
    }
    // The table holds a remaining TTL > 0: a renew proposes remaining 0
    // (so that the next leader uses the full TTL) and answers once it is
    // applied.
    assert!(c.machine(n1).table[&7].1 > 0);
    let renewed = c.keep_alive(n1, 7);
    assert_eq!(c.answer(n1, renewed), Some(Ok(ttl(7, 10, 10))));
    assert_eq!(c.machine(n1).table[&7].1, 0);
    assert_eq!(c.machine(n1).checkpoints.last(), Some(&vec![(7, 0)]));
    // A second renew needs no log write.
    let before = c.machine(n1).checkpoints.len();
    let again = c.keep_alive(n1, 7);
    assert_eq!(c.answer(n1, again), Some(Ok(ttl(7, 10, 10))));
    assert_eq!(c.machine(n1).checkpoints.len(), before);
}

#[test]
fn checkpoints_are_split_into_commands_of_at_most_a_thousand_leases() {
    let n1 = IDS[0];
    let mut c = Cluster::new(10, Canary::None);
    c.elect_among(&[n1]);
    for id in 0..2_500 {
        c.member(n1).replica.propose(grant(id, 60));
    }
    c.settle();
    assert_eq!(c.member(n1).replica.leases(), 2_500);
    c.tick(&IDS, 10);
    let sizes: Vec<usize> = c.machine(n1).checkpoints.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1_000, 1_000, 500], "{sizes:?}");
}

#[test]
fn a_restart_hands_the_recovered_table_to_the_lessor() {
    let mut c = Cluster::new(1_000, Canary::None);
    let n1 = IDS[0];
    c.elect_among(&[n1]);
    c.propose(n1, grant(7, 3));
    let snapshot = c.member(n1).applier.machine().table.clone();
    // A fresh applier recovering the same table reports it as a Reset.
    let mut machine = Leases::default();
    let mut data = BytesMut::new();
    data.put_u64_le(9);
    for (id, (ttl, remaining)) in &snapshot {
        data.put_i64_le(*id);
        data.put_i64_le(*ttl);
        data.put_i64_le(*remaining);
    }
    machine.recover(&data).expect("recovers");
    assert_eq!(
        machine.take_lease_changes(),
        vec![LeaseChange::Reset(vec![LeaseRecord {
            id: 7,
            ttl_s: 3,
            remaining_s: 0
        }])]
    );
}
