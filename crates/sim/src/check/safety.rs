//! Raft's safety properties (Figure 3 of the paper), checked incrementally
//! after every simulation step so a run of thousands of steps stays cheap:
//!
//! - election safety: at most one leader per term;
//! - log matching: two logs with an entry of the same index and term agree on
//!   every entry up to it (checked with a hash chain over each log, so an
//!   entry's chain value stands for its whole prefix);
//! - leader completeness: a new leader holds every committed entry;
//! - state machine safety: no two nodes commit (and so apply) different
//!   entries at one index;
//! - a node's durable commit index never goes backwards.

use std::collections::BTreeMap;

use ferrite_raft::{Entry, Index, NodeId, Payload, Raft, Role, Term};

use super::Violation;

#[derive(Default)]
pub struct Safety {
    leaders: BTreeMap<Term, NodeId>,
    /// Chain value of every (index, term) seen in any log.
    seen: BTreeMap<(Index, Term), u64>,
    /// Committed prefix: `committed[i - 1]` is the entry at index i.
    committed: Vec<Committed>,
    mirrors: BTreeMap<NodeId, Mirror>,
    durable_commit: BTreeMap<NodeId, Index>,
}

#[derive(Clone, Copy)]
struct Committed {
    term: Term,
    chain: u64,
    /// The term of the node that first reported the entry committed: the
    /// committing leader's term, or later. Leader completeness applies to
    /// leaders of later terms only: a candidate of an older term may still
    /// win its (stale) election after a newer term has committed entries.
    commit_term: Term,
}

/// What the checker last saw of one node's log.
struct Mirror {
    snapshot_index: Index,
    /// Chain value at `snapshot_index`; `None` if unknown (then this node's
    /// entries are not compared, rather than compared wrongly).
    base: Option<u64>,
    chains: Vec<(Term, u64)>,
    rewrites: u64,
    commit: Index,
    leader_term: Option<Term>,
}

impl Mirror {
    fn last_index(&self) -> Index {
        self.snapshot_index + self.chains.len() as u64
    }
    fn chain_at(&self, index: Index) -> Option<(Term, u64)> {
        if index == self.snapshot_index {
            return self.base.map(|c| (Term::ZERO, c));
        }
        if index < self.snapshot_index {
            return None;
        }
        self.chains
            .get((index.0 - self.snapshot_index.0 - 1) as usize)
            .copied()
    }
}

impl Safety {
    pub fn committed_len(&self) -> u64 {
        self.committed.len() as u64
    }

    pub fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }

    /// Forgets a node's in-memory view (it crashed, or was removed); its
    /// durable commit record stays.
    pub fn forget(&mut self, id: NodeId) {
        self.mirrors.remove(&id);
    }

    /// Checks everything that can be checked of `raft` now.
    pub fn observe(&mut self, raft: &Raft) -> Result<(), Violation> {
        raft.assert_invariants();
        let id = raft.id();
        if raft.role() == Role::Leader {
            let leader = *self.leaders.entry(raft.term()).or_insert(id);
            if leader != id {
                return Err(Violation::new(
                    "election safety",
                    format!("{leader} and {id} both lead term {}", raft.term()),
                ));
            }
        }
        self.update_mirror(raft)?;
        self.register_commit(raft)?;
        self.check_new_leader(raft)
    }

    fn update_mirror(&mut self, raft: &Raft) -> Result<(), Violation> {
        let id = raft.id();
        let log = raft.log();
        let base_of = |committed: &[Committed], index: Index| -> Option<u64> {
            if index == Index::ZERO {
                Some(0)
            } else {
                committed.get(index.0 as usize - 1).map(|c| c.chain)
            }
        };
        let rebuild = match self.mirrors.get(&id) {
            None => true,
            Some(m) => m.rewrites != log.rewrites() || log.snapshot_index() < m.snapshot_index,
        };
        if rebuild {
            let mirror = Mirror {
                snapshot_index: log.snapshot_index(),
                base: base_of(&self.committed, log.snapshot_index()),
                chains: Vec::new(),
                rewrites: log.rewrites(),
                commit: self.mirrors.get(&id).map_or(Index::ZERO, |m| m.commit),
                leader_term: self.mirrors.get(&id).and_then(|m| m.leader_term),
            };
            self.mirrors.insert(id, mirror);
        }
        let Some(m) = self.mirrors.get_mut(&id) else {
            return Ok(());
        };
        if log.snapshot_index() > m.snapshot_index {
            let dropped = log.snapshot_index().distance_from(m.snapshot_index) as usize;
            if dropped <= m.chains.len() {
                m.base = m.base.and(m.chains.get(dropped - 1).map(|c| c.1));
                m.chains.drain(..dropped);
            } else {
                m.chains.clear();
                m.base = base_of(&self.committed, log.snapshot_index());
            }
            m.snapshot_index = log.snapshot_index();
        }
        let mut prev = match m.chains.last() {
            Some(c) => Some(c.1),
            None => m.base,
        };
        for entry in log.entries_after(m.last_index()) {
            let chain = prev.map(|p| chain(p, entry));
            m.chains.push((entry.term, chain.unwrap_or(0)));
            if let Some(c) = chain {
                let seen = *self.seen.entry((entry.index, entry.term)).or_insert(c);
                if seen != c {
                    return Err(Violation::new(
                        "log matching",
                        format!(
                            "{id} holds index {} term {} with a different prefix than another log",
                            entry.index, entry.term
                        ),
                    ));
                }
            }
            prev = chain;
        }
        Ok(())
    }

    fn register_commit(&mut self, raft: &Raft) -> Result<(), Violation> {
        let id = raft.id();
        let Some(m) = self.mirrors.get_mut(&id) else {
            return Ok(());
        };
        let commit = raft.commit();
        let from = m.commit.max(m.snapshot_index);
        if commit <= from {
            m.commit = m.commit.max(commit);
            return Ok(());
        }
        let mut index = from.next();
        while index <= commit {
            let Some((term, chain)) = m.chain_at(index) else {
                return Err(Violation::new(
                    "checker",
                    format!("{id} committed {index} it does not hold"),
                ));
            };
            if m.base.is_some() {
                match self.committed.get(index.0 as usize - 1) {
                    Some(&Committed {
                        term: t, chain: c, ..
                    }) if t != term || c != chain => {
                        return Err(Violation::new(
                            "state machine safety",
                            format!("{id} committed index {index} term {term}, but term {t} was committed there before"),
                        ));
                    }
                    Some(_) => {}
                    None if self.committed.len() as u64 == index.0 - 1 => {
                        self.committed.push(Committed {
                            term,
                            chain,
                            commit_term: raft.term(),
                        })
                    }
                    None => {
                        return Err(Violation::new(
                            "checker",
                            format!("gap in the committed prefix at {index}"),
                        ));
                    }
                }
            }
            index = index.next();
        }
        m.commit = commit;
        Ok(())
    }

    /// Raft §5.4: a node that has just become leader holds every entry
    /// committed in an earlier term.
    fn check_new_leader(&mut self, raft: &Raft) -> Result<(), Violation> {
        let id = raft.id();
        let Some(m) = self.mirrors.get_mut(&id) else {
            return Ok(());
        };
        if raft.role() != Role::Leader || m.leader_term == Some(raft.term()) {
            return Ok(());
        }
        m.leader_term = Some(raft.term());
        let log = raft.log();
        for (i, c) in self.committed.iter().enumerate() {
            let index = Index(i as u64 + 1);
            if index <= log.snapshot_index() || c.commit_term >= raft.term() {
                continue;
            }
            let term = c.term;
            if log.term_at(index) != Some(term) {
                return Err(Violation::new(
                    "leader completeness",
                    format!(
                        "{id} leads term {} without committed index {index} (term {term}); its log ends at {}",
                        raft.term(),
                        log.last_index()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An entry handed to a state machine must be the committed one.
    pub fn on_apply(&self, id: NodeId, entry: &Entry) -> Result<(), Violation> {
        match self.committed.get(entry.index.0 as usize - 1) {
            Some(Committed { term, .. }) if *term != entry.term => Err(Violation::new(
                "state machine safety",
                format!(
                    "{id} applied index {} term {}, committed was term {term}",
                    entry.index, entry.term
                ),
            )),
            _ => Ok(()),
        }
    }

    /// A hard state reached the disk.
    pub fn on_durable_commit(&mut self, id: NodeId, commit: Index) -> Result<(), Violation> {
        let before = self.durable_commit.entry(id).or_insert(Index::ZERO);
        if commit < *before {
            return Err(Violation::new(
                "durable commit",
                format!("{id} persisted commit {commit} after {before}"),
            ));
        }
        *before = commit;
        Ok(())
    }
}

fn chain(prev: u64, entry: &Entry) -> u64 {
    let payload = match &entry.payload {
        Payload::Noop => 1,
        Payload::Normal(data) => fnv1a(data),
        Payload::Membership(m) => {
            let mut h = 2u64;
            for id in m
                .voters
                .iter()
                .chain([NodeId(0)].iter())
                .chain(m.learners.iter())
            {
                h = mix(h ^ id.0);
            }
            h
        }
    };
    mix(prev ^ mix(entry.term.0 ^ mix(payload)))
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
