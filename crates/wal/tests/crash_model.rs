//! Property test: random Raft-shaped histories of writes (with conflicting
//! suffixes), syncs, installed snapshots, compactions, clean restarts and
//! crashes on MemDisk, against a model. After each crash the recovered state
//! must be exactly the state after some write since the last sync: what was
//! synced, possibly plus some of what was not, never less, and never half a
//! write.

mod common;

use bytes::Bytes;
use common::{Rng, MEM_DIR};
use ferrite_raft::{
    Config, DurableState, Entry, HardState, Index, Membership, NodeId, Payload, Persist, Raft,
    Snapshot, SnapshotMeta, Term,
};
use ferrite_wal::{MemDisk, Wal, WalOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

#[derive(Clone, Debug)]
enum Op {
    /// Truncate up to `back` uncommitted entries, append `count` entries,
    /// maybe in a new term, maybe advance the commit index.
    Append {
        back: u8,
        count: u8,
        new_term: bool,
        advance: u8,
    },
    /// A snapshot from the leader, `ahead` past our commit index, followed
    /// by `count` entries.
    Install {
        ahead: u8,
        count: u8,
    },
    /// A local snapshot somewhere in (snapshot, commit].
    Compact {
        at: u8,
    },
    Sync,
    Crash {
        seed: u64,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..6, 0u8..6, proptest::bool::weighted(0.2), 0u8..4)
            .prop_map(|(back, count, new_term, advance)| Op::Append { back, count, new_term, advance }),
        1 => (0u8..8, 0u8..4).prop_map(|(ahead, count)| Op::Install { ahead, count }),
        2 => any::<u8>().prop_map(|at| Op::Compact { at }),
        5 => Just(Op::Sync),
        3 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => Just(Op::Restart),
    ]
}

/// What the node believes is in its log.
#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl State {
    fn from_durable(d: DurableState) -> State {
        State {
            hard_state: d.hard_state,
            snapshot: d.snapshot,
            entries: d.entries,
        }
    }
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(Index::ZERO, |s| s.meta.index)
    }
    fn last_index(&self) -> Index {
        self.snapshot_index() + self.entries.len() as u64
    }
    fn term_at(&self, index: Index) -> Term {
        match self.entries.iter().find(|e| e.index == index) {
            Some(e) => e.term,
            None => self.snapshot.as_ref().map_or(Term::ZERO, |s| s.meta.term),
        }
    }
}

struct Run {
    wal: Option<Wal<MemDisk>>,
    current: State,
    /// States since the last sync; `[0]` is durable. A crash may recover
    /// any one of them.
    candidates: Vec<State>,
    salt: u64,
}

const OPTIONS: WalOptions = WalOptions {
    segment_bytes_max: 256,
};

impl Run {
    fn wal(&mut self) -> &mut Wal<MemDisk> {
        self.wal.as_mut().expect("open")
    }

    fn payload(&mut self, index: u64, term: u64) -> Payload {
        self.salt += 1;
        match self.salt % 7 {
            0 => Payload::Noop,
            1 => Payload::Membership(Membership::new([NodeId(1), NodeId(self.salt % 5 + 2)])),
            _ => Payload::Normal(Bytes::from(format!("{index}/{term}/{}", self.salt))),
        }
    }

    fn written(&mut self, state: State) {
        self.current = state.clone();
        self.candidates.push(state);
    }

    fn synced(&mut self) {
        self.candidates = vec![self.current.clone()];
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let cur = self.current.clone();
        let hs = cur.hard_state;
        match *op {
            Op::Append {
                back,
                count,
                new_term,
                advance,
            } => {
                let term = if new_term {
                    hs.term.next()
                } else {
                    hs.term.max(Term(1))
                };
                let keep = cur
                    .last_index()
                    .0
                    .saturating_sub(u64::from(back))
                    .max(hs.commit.0)
                    .max(cur.snapshot_index().0);
                let mut next = cur.clone();
                let mut persist = Persist::default();
                if count > 0 {
                    next.entries.retain(|e| e.index.0 <= keep);
                    for i in keep + 1..=keep + u64::from(count) {
                        let e = Entry {
                            index: Index(i),
                            term,
                            payload: self.payload(i, term.0),
                        };
                        next.entries.push(e.clone());
                        persist.entries.push(e);
                    }
                }
                let commit = (hs.commit + u64::from(advance)).min(next.last_index());
                let new_hs = HardState {
                    term,
                    vote: Some(NodeId(1 + term.0 % 3)),
                    commit,
                };
                if new_hs != hs {
                    persist.hard_state = Some(new_hs);
                    next.hard_state = new_hs;
                }
                self.wal().write(&persist).map_err(fail)?;
                self.written(next);
            }
            Op::Install { ahead, count } => {
                let index = hs.commit.max(cur.snapshot_index()) + 1 + u64::from(ahead);
                let term = hs.term.max(Term(1));
                self.salt += 1;
                let snapshot = Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        membership: Membership::new([NodeId(1), NodeId(2)]),
                    },
                    data: Bytes::from(format!("installed {index} {}", self.salt)),
                };
                let entries: Vec<Entry> = (1..=u64::from(count))
                    .map(|k| Entry {
                        index: index + k,
                        term,
                        payload: self.payload(index.0 + k, term.0),
                    })
                    .collect();
                let new_hs = HardState {
                    term,
                    vote: hs.vote,
                    commit: index,
                };
                let persist = Persist {
                    hard_state: Some(new_hs),
                    snapshot: Some(snapshot.clone()),
                    entries: entries.clone(),
                };
                self.wal().write(&persist).map_err(fail)?;
                self.written(State {
                    hard_state: new_hs,
                    snapshot: Some(snapshot),
                    entries,
                });
            }
            Op::Compact { at } => {
                let (lo, hi) = (cur.snapshot_index(), hs.commit);
                if hi <= lo {
                    return Ok(());
                }
                let index = lo + 1 + u64::from(at) % hi.distance_from(lo);
                let term = cur.term_at(index);
                let membership = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
                let snapshot = Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        membership,
                    },
                    data: Bytes::from(format!("compacted {index}")),
                };
                self.wal().save_snapshot(&snapshot).map_err(fail)?;
                let mut next = cur.clone();
                next.entries.retain(|e| e.index > index);
                next.snapshot = Some(snapshot);
                self.current = next;
                self.synced();
            }
            Op::Sync => {
                self.wal().sync().map_err(fail)?;
                self.synced();
            }
            Op::Crash { seed } => {
                let mut disk = self.wal.take().expect("open").into_disk();
                let mut rng = Rng(seed);
                disk.crash(&mut || rng.next());
                let (wal, rec) = Wal::open(disk, MEM_DIR, OPTIONS).map_err(fail)?;
                self.wal = Some(wal);
                let got = State::from_durable(rec.durable.clone());
                let found = self.candidates.iter().position(|c| *c == got);
                prop_assert!(
                    found.is_some(),
                    "recovered state is not one that was written since the last sync\n\
                     recovered: {got:#?}\ncandidates: {:#?}",
                    self.candidates
                );
                Raft::new(Config::new(NodeId(1)), rec.durable, 1).map_err(|e| {
                    TestCaseError::fail(format!("raft refuses the recovered state: {e}"))
                })?;
                self.current = got;
                self.synced();
            }
            Op::Restart => {
                let disk = self.wal.take().expect("open").into_disk();
                let (wal, rec) = Wal::open(disk, MEM_DIR, OPTIONS).map_err(fail)?;
                self.wal = Some(wal);
                prop_assert_eq!(&State::from_durable(rec.durable), &self.current);
                self.synced();
            }
        }
        self.check()
    }

    /// The open Wal agrees with the model, reading every entry from disk.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let cur = self.current.clone();
        let wal = self.wal();
        prop_assert_eq!(wal.hard_state(), cur.hard_state);
        prop_assert_eq!(wal.first_index(), cur.snapshot_index().next());
        prop_assert_eq!(wal.last_index(), cur.last_index());
        let read = wal
            .entries(wal.first_index(), wal.last_index())
            .map_err(fail)?;
        prop_assert_eq!(read, cur.entries);
        Ok(())
    }
}

fn fail(e: ferrite_wal::WalError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        rng_seed: RngSeed::Fixed(0x5eed_f0e5),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovery_returns_what_was_synced_plus_a_prefix_of_the_rest(ops in proptest::collection::vec(op(), 1..80)) {
        let (wal, rec) = Wal::open(MemDisk::new(), MEM_DIR, OPTIONS).map_err(fail)?;
        prop_assert_eq!(State::from_durable(rec.durable), State::default());
        let mut run = Run { wal: Some(wal), current: State::default(), candidates: vec![State::default()], salt: 0 };
        for op in &ops {
            run.step(op)?;
        }
        // Finally everything is synced and a crash loses nothing.
        run.step(&Op::Sync)?;
        run.step(&Op::Crash { seed: 99 })?;
        prop_assert_eq!(run.candidates.len(), 1);
    }
}
