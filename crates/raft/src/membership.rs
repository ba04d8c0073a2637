//! Cluster membership: who votes and who only learns.
//!
//! We change membership one server at a time (Raft dissertation §4.1), not by
//! joint consensus. Any two majorities of configurations that differ by one
//! voter overlap, so a single-server change can never produce two leaders. The
//! known hole of that scheme (a change committed by a leader of an old term
//! interleaving with a change of a newer one, Ongaro's 2015 raft-dev note) is
//! closed by the rule the dissertation's errata give: a leader proposes a
//! change only after it has committed an entry of its own term, and only one
//! change may be uncommitted at a time. A configuration takes effect on every
//! node as soon as it is in that node's log (not when committed), and reverts
//! if the entry is truncated. Crashes are safe because the configuration is
//! derived from the durable log (or snapshot) on restart. Joint consensus
//! would allow arbitrary changes in one step, which the product does not need.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// A configuration: disjoint sets of voters and learners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// One single-server change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node that votes at once. Prefer `AddLearner` then `Promote` for a
    /// node with an empty log, so the cluster does not wait on its catch-up.
    AddVoter(NodeId),
    /// Add a node that receives the log but neither votes nor counts.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

impl Membership {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Voters and learners, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The smallest number of voters that forms a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why the change is invalid.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, String> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddVoter(id) => {
                if self.is_voter(id) {
                    return Err(format!("{id} is already a voter"));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::AddLearner(id) => {
                if self.contains(id) {
                    return Err(format!("{id} is already a member"));
                }
                next.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !self.learners.contains(&id) {
                    return Err(format!("{id} is not a learner"));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return Err(format!("{id} is not a member"));
                }
                if self.voters.len() == 1 && self.is_voter(id) {
                    return Err(format!("{id} is the last voter"));
                }
                next.voters.remove(&id);
                next.learners.remove(&id);
            }
        }
        if next.voters.contains(&NodeId(0)) || next.learners.contains(&NodeId(0)) {
            return Err("node id 0 is reserved".to_string());
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes() {
        assert_eq!(Membership::new([NodeId(1)]).quorum(), 1);
        assert_eq!(Membership::new((1..=3).map(NodeId)).quorum(), 2);
        assert_eq!(Membership::new((1..=4).map(NodeId)).quorum(), 3);
        assert_eq!(Membership::new((1..=5).map(NodeId)).quorum(), 3);
    }

    #[test]
    fn changes_validate() {
        let m = Membership::new([NodeId(1), NodeId(2)]);
        assert!(m.apply(MembershipChange::AddVoter(NodeId(1))).is_err());
        let l = m.apply(MembershipChange::AddLearner(NodeId(3))).unwrap();
        assert!(l.learners.contains(&NodeId(3)));
        assert!(l.apply(MembershipChange::AddLearner(NodeId(3))).is_err());
        let p = l.apply(MembershipChange::Promote(NodeId(3))).unwrap();
        assert!(p.is_voter(NodeId(3)) && p.learners.is_empty());
        assert!(p.apply(MembershipChange::Promote(NodeId(3))).is_err());
        let r = p.apply(MembershipChange::Remove(NodeId(1))).unwrap();
        assert_eq!(r.voters.len(), 2);
        let single = Membership::new([NodeId(1)]);
        assert!(single.apply(MembershipChange::Remove(NodeId(1))).is_err());
        assert!(single.apply(MembershipChange::Remove(NodeId(9))).is_err());
    }
}
