//! Scenarios of the sans-IO replica, stepped by hand: three replicas whose
//! network, disk and apply this file plays, so that exact interleavings can
//! be staged. The one that matters most: an old leader that still holds
//! waiters installs a snapshot from the new leader that covers their
//! entries. Each waiter must get its true outcome (never "not applied" for
//! an entry the snapshot contains, which a server would re-propose, applying
//! the write twice).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ferrite_node::codec::Frame;
use ferrite_node::{
    Answer, Applied, Applier, ApplyTask, MachineError, MachineSnapshot, NodeError, Replica,
    ReplicaConfig, RequestId, Requester, StateMachine, StorageTask, Unknown,
};
use ferrite_raft::{Canary, Config, DurableState, Index, NodeId, Raft, Role};

/// Counts `add` commands; replies with the count after the add.
#[derive(Default)]
struct Counter {
    count: u64,
    applied: Index,
}

impl StateMachine for Counter {
    fn apply(&mut self, index: Index, _command: &[u8]) -> Result<Bytes, MachineError> {
        self.count += 1;
        self.applied = index;
        Ok(Bytes::from(self.count.to_string()))
    }
    fn apply_empty(&mut self, index: Index) {
        self.applied = index;
    }
    fn query(&mut self, _query: &[u8]) -> Bytes {
        Bytes::from(self.count.to_string())
    }
    fn applied(&self) -> Index {
        self.applied
    }
    fn snapshot(&mut self) -> Result<MachineSnapshot, MachineError> {
        let text = format!("{} {}", self.count, self.applied.0);
        Ok(MachineSnapshot::complete(Bytes::from(text)))
    }
    fn recover(&mut self, data: &[u8]) -> Result<(), MachineError> {
        let bad = || MachineError::Restore("bad counter snapshot".into());
        let text = std::str::from_utf8(data).map_err(|_| bad())?;
        let (count, applied) = text.split_once(' ').ok_or_else(bad)?;
        self.count = count.parse().map_err(|_| bad())?;
        self.applied = Index(applied.parse().map_err(|_| bad())?);
        Ok(())
    }
    fn install(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.recover(data)
    }
}

struct Member {
    replica: Replica,
    applier: Applier<Counter>,
    answers: BTreeMap<RequestId, Answer>,
}

/// Three members and a network that delivers in order, with links that can
/// be cut. Disk writes are durable at once; apply happens at once.
struct Cluster {
    members: BTreeMap<NodeId, Member>,
    queue: VecDeque<(NodeId, NodeId, Frame)>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Directed links that drop Raft messages only.
    raft_cut: BTreeSet<(NodeId, NodeId)>,
}

const IDS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

impl Cluster {
    /// `snapshot_entries`: how often members snapshot (and compact).
    fn new(snapshot_entries: u64) -> Cluster {
        let mut members = BTreeMap::new();
        for id in IDS {
            let raft = Raft::new(Config::new(id), DurableState::bootstrap(IDS), id.0 * 7919)
                .expect("valid config");
            let config = ReplicaConfig {
                request_ticks: 1_000,
                first_request_id: id.0 << 40,
                ..ReplicaConfig::default()
            };
            let applier = Applier::new(
                Counter::default(),
                snapshot_entries,
                (Index::ZERO, 0),
                Canary::None,
            );
            members.insert(
                id,
                Member {
                    replica: Replica::new(raft, config),
                    applier,
                    answers: BTreeMap::new(),
                },
            );
        }
        Cluster {
            members,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            raft_cut: BTreeSet::new(),
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

    fn heal(&mut self) {
        self.cut.clear();
        self.raft_cut.clear();
    }

    fn send(&mut self, from: NodeId, to: NodeId, frame: Frame) {
        let raft_cut = matches!(frame, Frame::Raft(_)) && self.raft_cut.contains(&(from, to));
        if !self.cut.contains(&(from, to)) && !raft_cut {
            self.queue.push_back((from, to, frame));
        }
    }

    /// Executes every member's output and delivers every frame until all
    /// are quiet.
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

    /// Executes one round of `id`'s output; whether there was any.
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
            self.apply(id, task);
        }
        true
    }

    fn apply(&mut self, id: NodeId, task: ApplyTask) {
        let mut out = Applied::default();
        let member = self.member(id);
        member.applier.handle(task, &mut out).expect("apply works");
        if let Some(upto) = out.upto {
            member.replica.on_applied(upto);
        }
        if let Some((index, snapshot)) = out.snapshot {
            let data = (snapshot.finish)().expect("snapshot finishes");
            member.applier.snapshot_done(Some(data.len()));
            member.replica.on_snapshot_ready(index, data);
        }
        for (requester, answer) in out.answers {
            match requester {
                Requester::Local(request) => {
                    self.member(id).answers.insert(request, answer);
                }
                // As the apply thread does: a reply carries the index applied.
                Requester::Peer { from, id: fwd } => match (answer, out.upto) {
                    (Ok(reply), Some(index)) => {
                        let frame = Frame::ForwardApplied {
                            id: fwd,
                            index,
                            reply,
                        };
                        self.send(id, from, frame);
                    }
                    (answer, _) => {
                        let result = answer.map_err(|e| ferrite_node::replica::refusal(&e));
                        self.send(id, from, Frame::ForwardReply { id: fwd, result });
                    }
                },
            }
        }
    }

    /// Ticks `id` alone until it leads.
    fn elect(&mut self, id: NodeId) {
        assert_eq!(self.elect_among(&[id]), id);
    }

    /// Ticks `ids` together (their leader leases must run out before they
    /// vote) until one of them leads; returns it.
    fn elect_among(&mut self, ids: &[NodeId]) -> NodeId {
        for _ in 0..400 {
            for id in ids {
                self.member(*id).replica.tick();
            }
            self.settle();
            for id in ids {
                let raft = self.member(*id).replica.raft();
                if raft.role() == Role::Leader && raft.commit() >= raft.log().last_index() {
                    return *id;
                }
            }
        }
        panic!("none of {ids:?} became leader");
    }

    fn propose(&mut self, id: NodeId, n: usize) -> Vec<RequestId> {
        (0..n)
            .map(|_| self.member(id).replica.propose(Bytes::from_static(b"add")))
            .collect()
    }

    fn count(&mut self, id: NodeId) -> u64 {
        self.member(id).applier.machine().count
    }
}

#[test]
fn an_old_leader_installing_a_snapshot_answers_covered_waiters_unknown_never_not_applied() {
    let (n1, n2, n3) = (IDS[0], IDS[1], IDS[2]);
    let mut c = Cluster::new(4);
    c.elect(n1);
    let first = c.propose(n1, 3);
    c.settle();
    for r in &first {
        assert!(matches!(c.member(n1).answers.get(r), Some(Ok(_))), "{r:?}");
    }
    assert_eq!(c.count(n1), 3);

    // n1 proposes W; its appends reach n2 and n3, their acknowledgements
    // are lost: W is in everyone's log, and n1 never learns it committed.
    let w = c.propose(n1, 1)[0];
    c.cut.insert((n2, n1));
    c.cut.insert((n3, n1));
    c.settle();
    assert!(!c.member(n1).answers.contains_key(&w), "W waits on n1");
    let w_term = c.member(n1).replica.raft().term();

    // n1 is cut off; n2 leads a new term, commits W with its no-op, takes
    // more writes, and compacts its log past W.
    c.isolate(n1);
    let n2 = c.elect_among(&[n2, n3]);
    let later = c.propose(n2, 12);
    c.settle();
    for r in &later {
        assert!(matches!(c.member(n2).answers.get(r), Some(Ok(_))), "{r:?}");
    }
    assert_eq!(c.count(n2), 3 + 1 + 12, "W applied once on n2");
    let raft2 = c.member(n2).replica.raft();
    assert!(raft2.term() > w_term);
    let snapshot_index = raft2.log().snapshot_index();
    assert!(
        snapshot_index > Index(4),
        "n2 compacted past W (snapshot at {snapshot_index})"
    );

    // Healed: n1 steps down and installs n2's snapshot, which contains W.
    c.heal();
    for _ in 0..30 {
        c.member(n2).replica.tick();
        c.settle();
    }
    assert_eq!(c.member(n1).replica.raft().role(), Role::Follower);
    assert_eq!(
        c.member(n1).replica.raft().log().snapshot_index(),
        snapshot_index,
        "n1 installed the snapshot"
    );
    let answer = c.member(n1).answers.get(&w).cloned();
    assert_eq!(
        answer,
        Some(Err(NodeError::Unknown(Unknown::CoveredBySnapshot))),
        "W's outcome is unknown: the snapshot holds its effect, not its reply"
    );
    assert!(answer.is_some_and(|a| a.is_err_and(|e| e.is_unknown() && !e.not_applied())));
    // Nobody proposed W again: every member counts it once.
    for id in IDS {
        assert_eq!(c.count(id), 16, "{id}");
    }
    assert_eq!(c.member(n1).replica.counters().reproposed, 0);
}

#[test]
fn an_old_leaders_entry_replaced_by_a_new_leaders_is_not_applied_and_goes_again() {
    let (n1, n2, n3) = (IDS[0], IDS[1], IDS[2]);
    // No snapshots: the new leader's entries reach n1 in appends.
    let mut c = Cluster::new(1_000_000);
    c.elect(n1);
    c.propose(n1, 2);
    c.settle();

    // n1, cut off, proposes W: it never leaves n1.
    c.isolate(n1);
    let w = c.propose(n1, 1)[0];
    c.settle();
    // n2 (or n3) leads a new term and writes at W's index.
    let n2 = c.elect_among(&[n2, n3]);
    c.propose(n2, 2);
    c.settle();

    // Healed: n1's W is overwritten by n2's entries; the replica sees W's
    // index commit with another term and, W's deadline not yet passed,
    // sends it again, to the new leader.
    c.heal();
    for _ in 0..30 {
        c.member(n2).replica.tick();
        c.settle();
    }
    let answer = c.member(n1).answers.get(&w).cloned();
    assert!(
        matches!(answer, Some(Ok(_))),
        "W applied after going again: {answer:?}"
    );
    let counters = c.member(n1).replica.counters().clone();
    assert_eq!(counters.superseded, 1, "{counters:?}");
    assert_eq!(counters.reproposed, 1, "{counters:?}");
    assert_eq!(counters.forwarded, 1, "{counters:?}");
    for id in IDS {
        assert_eq!(c.count(id), 5, "2 + W + 2 on {id}");
    }
}

#[test]
fn a_follower_forwards_writes_and_reads_and_answers_them() {
    let (n1, n3) = (IDS[0], IDS[2]);
    let mut c = Cluster::new(4);
    c.elect(n1);
    let writes = c.propose(n3, 3);
    c.settle();
    for w in &writes {
        assert!(matches!(c.member(n3).answers.get(w), Some(Ok(_))), "{w:?}");
    }
    let read = c.member(n3).replica.read(Bytes::from_static(b"get"), true);
    c.settle();
    assert_eq!(
        c.member(n3).answers.get(&read),
        Some(&Ok(Bytes::from_static(b"3"))),
        "the read after the writes sees them"
    );
    assert_eq!(c.member(n3).replica.counters().forwarded, 3);
}

#[test]
fn a_forwarded_write_is_answered_once_the_follower_has_applied_it_too() {
    let (n1, n3) = (IDS[0], IDS[2]);
    let mut c = Cluster::new(1_000);
    c.elect(n1);
    // n3 hears nothing of the log: the leader commits with n2 alone.
    c.raft_cut.insert((n1, n3));
    let writes = c.propose(n3, 1);
    c.settle();
    assert_eq!(c.count(n1), 1, "applied on the leader");
    assert_eq!(c.count(n3), 0, "not yet here");
    assert!(
        !c.member(n3).answers.contains_key(&writes[0]),
        "not answered before this member applied it: a read here would miss it"
    );
    c.heal();
    for _ in 0..5 {
        c.member(n1).replica.tick();
        c.settle();
    }
    assert_eq!(c.count(n3), 1);
    assert!(matches!(c.member(n3).answers.get(&writes[0]), Some(Ok(_))));
}

#[test]
fn a_snapshot_whose_state_ends_elsewhere_than_its_index_is_refused() {
    use ferrite_raft::{Membership, Snapshot, SnapshotMeta, Term};
    let mut applier = Applier::new(Counter::default(), 4, (Index::ZERO, 0), Canary::None);
    let snapshot = |index: u64, applied: u64| {
        ApplyTask::Restore(Snapshot {
            meta: SnapshotMeta {
                index: Index(index),
                term: Term(2),
                membership: Membership::new(IDS),
            },
            data: Bytes::from(format!("9 {applied}")),
        })
    };
    let mut out = Applied::default();
    let refused = applier.handle(snapshot(7, 5), &mut out);
    assert!(
        matches!(&refused, Err(MachineError::Restore(why)) if why.contains("applied to 5")),
        "{refused:?}"
    );
    let mut out = Applied::default();
    applier
        .handle(snapshot(7, 7), &mut out)
        .expect("a consistent snapshot");
    assert_eq!(out.upto, Some(Index(7)));
    assert_eq!(applier.machine().count, 9);
}
