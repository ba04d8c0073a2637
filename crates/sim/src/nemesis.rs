//! Faults and operations in the mix: crashes and restarts, partitions
//! (symmetric and one-way) that heal later, leader transfers, and a cycle of
//! membership changes (remove a voter, add a fresh node as a learner, promote
//! it once caught up). Then healing: every fault undone, so that liveness can
//! be required within a bounded time.

use ferrite_raft::{MembershipChange, NodeId};

use crate::world::{Event, World};

/// Where the membership cycle stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminPhase {
    Idle,
    Removing(NodeId),
    Adding(NodeId),
    Promoting(NodeId),
}

const ADMIN_INTERVAL: u64 = 100_000;

impl World {
    pub(crate) fn nemesis_delay(&mut self) -> u64 {
        self.prng.range(1, 2 * self.opts.nemesis_interval)
    }

    pub(crate) fn on_nemesis(&mut self) {
        if self.healing.is_some() {
            return;
        }
        // Now and then a connection resets without anyone dying: a follower
        // wrongly believes its leader gone (liveness only; safety must hold).
        if self.prng.chance(100_000) {
            if let Some((leader, _)) = self.leader() {
                let up: Vec<NodeId> = self
                    .up_nodes()
                    .into_iter()
                    .filter(|n| *n != leader)
                    .collect();
                if let Some(node) = self.prng.pick(&up).copied() {
                    self.schedule(1, Event::Disconnected { node, peer: leader });
                }
            }
        }
        let o = &self.opts;
        let weights = [
            o.crash_weight,
            o.partition_weight,
            o.transfer_weight,
            o.membership_weight,
            o.pause_weight,
        ];
        let total: u64 = weights.iter().sum();
        if total > 0 {
            let mut pick = self.prng.below(total);
            let mut action = 0;
            while pick >= weights[action] {
                pick -= weights[action];
                action += 1;
            }
            match action {
                0 => self.nemesis_crash(),
                1 => self.nemesis_partition(),
                2 => self.nemesis_transfer(),
                4 => self.nemesis_pause(),
                _ => {
                    if self.admin == AdminPhase::Idle {
                        self.admin_step();
                    }
                }
            }
        }
        let next = self.nemesis_delay();
        self.schedule(next, Event::Nemesis);
        self.touched.extend(self.nodes.keys().copied());
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_up())
            .map(|(id, _)| *id)
            .collect()
    }

    /// A node that is up: the leader half of the time, since that is where
    /// bugs hide.
    fn pick_victim(&mut self) -> Option<NodeId> {
        let leader = self.leader().map(|(id, _)| id);
        match leader {
            Some(id) if self.prng.chance(500_000) => Some(id),
            _ => {
                let up = self.up_nodes();
                self.prng.pick(&up).copied()
            }
        }
    }

    fn nemesis_crash(&mut self) {
        let Some(id) = self.pick_victim() else { return };
        self.crash(id);
        let downtime = self.prng.range(10_000, 2_000_000);
        self.schedule(downtime, Event::Restart { node: id });
    }

    fn nemesis_pause(&mut self) {
        let Some(id) = self.pick_victim() else { return };
        let duration = self.prng.range(10_000, 1_500_000);
        let until = self.now + duration;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused_until = node.paused_until.max(until);
        }
        self.pause_end_max = self.pause_end_max.max(until);
        self.stats.pauses += 1;
        self.log(|| format!("PAUSE {id} for {}ms", duration / 1000));
    }

    fn nemesis_partition(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if ids.len() < 2 {
            return;
        }
        self.partition_id += 1;
        self.stats.partitions += 1;
        self.blocked.clear();
        let kind = self.prng.below(3);
        match kind {
            0 => {
                let Some(&lonely) = self.prng.pick(&ids) else {
                    return;
                };
                for &other in &ids {
                    if other != lonely {
                        self.blocked.insert((lonely, other));
                        self.blocked.insert((other, lonely));
                    }
                }
            }
            1 => {
                let side: Vec<bool> = ids.iter().map(|_| self.prng.chance(500_000)).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if side[i] != side[j] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            _ => {
                for &a in &ids {
                    for &b in &ids {
                        if a != b && self.prng.chance(300_000) {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
        }
        let (pid, blocked) = (self.partition_id, self.blocked.len());
        self.log(|| format!("PARTITION #{pid} kind {kind}: {blocked} links cut"));
        let duration = self.prng.range(100_000, 3_000_000);
        self.schedule(duration, Event::Heal { partition: pid });
    }

    pub(crate) fn heal(&mut self, partition: u64) {
        if partition == self.partition_id {
            self.blocked.clear();
            self.log(|| format!("HEAL #{partition}"));
        }
    }

    fn nemesis_transfer(&mut self) {
        let Some((leader_id, leader)) = self.leader() else {
            return;
        };
        let voters: Vec<NodeId> = leader
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|v| *v != leader_id)
            .collect();
        let Some(&to) = self.prng.pick(&voters) else {
            return;
        };
        let Some(running) = self
            .nodes
            .get_mut(&leader_id)
            .and_then(|n| n.running.as_mut())
        else {
            return;
        };
        if running.replica.transfer_leader(to).is_ok() {
            self.stats.transfers += 1;
            self.log(|| format!("TRANSFER {leader_id} -> {to}"));
        }
        self.drive(leader_id);
    }

    pub(crate) fn on_admin(&mut self) {
        self.admin_step();
        self.touched.extend(self.nodes.keys().copied());
    }

    /// Moves the membership cycle forward by one step, re-proposing a change
    /// that was lost to a leader change.
    fn admin_step(&mut self) {
        let Some((leader_id, leader)) = self.leader() else {
            if self.admin != AdminPhase::Idle {
                self.schedule_admin();
            }
            return;
        };
        let m = leader.membership().clone();
        let committed = leader.commit() >= leader.membership_index();
        let change = match self.admin {
            AdminPhase::Idle => {
                let voters: Vec<NodeId> = m.voters.iter().copied().collect();
                if voters.len() < self.opts.voters || self.healing.is_some() {
                    return;
                }
                let Some(&victim) = self.prng.pick(&voters) else {
                    return;
                };
                self.admin = AdminPhase::Removing(victim);
                Some(MembershipChange::Remove(victim))
            }
            AdminPhase::Removing(victim) if !m.contains(victim) && committed => {
                self.nodes.remove(&victim);
                self.safety.forget(victim);
                let fresh = NodeId(self.next_node_id);
                self.next_node_id += 1;
                self.add_node(fresh, None);
                self.admin = AdminPhase::Adding(fresh);
                self.log(|| format!("REMOVED {victim}, joining {fresh}"));
                Some(MembershipChange::AddLearner(fresh))
            }
            AdminPhase::Removing(victim) => m
                .contains(victim)
                .then_some(MembershipChange::Remove(victim)),
            AdminPhase::Adding(n) if m.learners.contains(&n) && committed => {
                self.admin = AdminPhase::Promoting(n);
                Some(MembershipChange::Promote(n))
            }
            AdminPhase::Adding(n) => (!m.contains(n)).then_some(MembershipChange::AddLearner(n)),
            AdminPhase::Promoting(n) if m.is_voter(n) && committed => {
                self.admin = AdminPhase::Idle;
                self.stats.membership_changes += 1;
                self.log(|| format!("PROMOTED {n}"));
                None
            }
            AdminPhase::Promoting(n) => m
                .learners
                .contains(&n)
                .then_some(MembershipChange::Promote(n)),
        };
        if let Some(change) = change {
            if let Some(running) = self
                .nodes
                .get_mut(&leader_id)
                .and_then(|n| n.running.as_mut())
            {
                // Its answer goes to no client: the cycle looks at the
                // leader's membership instead.
                let request = running.replica.change_membership(change);
                self.log(|| format!("MEMBERSHIP {change:?} at {leader_id}: {request:?}"));
                self.drive(leader_id);
            }
        }
        if self.admin != AdminPhase::Idle {
            self.schedule_admin();
        }
    }

    fn schedule_admin(&mut self) {
        self.schedule(ADMIN_INTERVAL, Event::Admin);
    }

    /// Undoes every fault: partitions heal, the network stops losing
    /// messages, crashed nodes restart, and clients finish what they started.
    pub(crate) fn start_healing(&mut self) {
        self.healing = Some(self.now);
        self.blocked.clear();
        self.drop_per_million = 0;
        self.duplicate_per_million = 0;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.is_up())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.restart(id);
        }
        self.log(|| "HEALING".to_string());
    }
}
