//! Disaster recovery: etcd's `--force-new-cluster`. A member of a cluster
//! that lost a majority for good restarts from its own data as the only
//! voter of a cluster of one.
//!
//! As etcd does: what this member's log holds beyond its commit index is
//! dropped (it was never known to be committed, and nobody is left to
//! commit it), and a configuration entry naming this member alone is
//! appended after the commit index and counted as committed. Everything the
//! member had committed (its snapshot and the entries after it) is kept and
//! applied as on any restart. The rewrite is durable before the node
//! starts, so a crash right after leaves a member that restarts normally as
//! the cluster of one.
//!
//! Afterwards the others are added back one at a time (`etcdctl member add`
//! or `ferrite member add`, then each started with `--join` on an empty
//! data directory); the members that were lost must never be restarted on
//! their old data.

use ferrite_raft::{DurableState, Entry, HardState, Membership, NodeId, Payload, Persist};
use ferrite_wal::{Disk, Wal};

use crate::error::StartError;

/// Rewrites `durable` (and the WAL under it) so that `id` is the only
/// voter.
pub fn force_new_cluster<D: Disk>(
    wal: &mut Wal<D>,
    mut durable: DurableState,
    id: NodeId,
) -> Result<DurableState, StartError> {
    let snapshot_index = durable
        .snapshot
        .as_ref()
        .map_or(Default::default(), |s| s.meta.index);
    if durable.snapshot.is_none() && durable.entries.is_empty() {
        return Err(StartError::Config(
            "--force-new-cluster needs this member's existing data; the data directory is empty"
                .into(),
        ));
    }
    let commit = durable.hard_state.commit.max(snapshot_index);
    let dropped = durable.entries.iter().filter(|e| e.index > commit).count();
    durable.entries.retain(|e| e.index <= commit);
    let term = durable.hard_state.term.max(
        durable
            .entries
            .last()
            .map(|e| e.term)
            .or(durable.snapshot.as_ref().map(|s| s.meta.term))
            .unwrap_or_default(),
    );
    let entry = Entry {
        index: commit.next(),
        term,
        payload: Payload::Membership(Membership::new([id])),
    };
    let hard_state = HardState {
        term,
        vote: durable.hard_state.vote,
        commit: entry.index,
    };
    // Replaces whatever the log held from `entry.index` on.
    wal.write(&Persist {
        hard_state: Some(hard_state),
        snapshot: None,
        entries: vec![entry.clone()],
    })?;
    wal.sync()?;
    tracing::warn!(
        %id,
        commit = commit.0,
        dropped_uncommitted = dropped,
        "forced a new cluster of one from this member's data"
    );
    durable.entries.push(entry);
    durable.hard_state = hard_state;
    Ok(durable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferrite_raft::{Config, Index, Raft, Term};
    use ferrite_wal::{MemDisk, WalOptions};

    fn entry(i: u64, term: u64) -> Entry {
        Entry {
            index: Index(i),
            term: Term(term),
            payload: Payload::Normal(Bytes::from(vec![i as u8])),
        }
    }

    #[test]
    fn keeps_the_committed_log_drops_the_rest_and_names_one_voter() {
        let (mut wal, _) = Wal::open(MemDisk::new(), "d", WalOptions::default()).unwrap();
        let founders = DurableState::bootstrap([NodeId(1), NodeId(2), NodeId(3)]);
        let snapshot = founders.snapshot.clone().unwrap();
        wal.save_snapshot(&snapshot).unwrap();
        wal.write(&Persist {
            hard_state: Some(HardState {
                term: Term(3),
                vote: Some(NodeId(2)),
                commit: Index(4),
            }),
            snapshot: None,
            entries: (1..=6).map(|i| entry(i, 2)).collect(),
        })
        .unwrap();
        wal.sync().unwrap();
        let disk = wal.into_disk();
        let (mut wal, recovered) = Wal::open(disk, "d", WalOptions::default()).unwrap();
        let forced = force_new_cluster(&mut wal, recovered.durable, NodeId(2)).unwrap();
        let indexes: Vec<u64> = forced.entries.iter().map(|e| e.index.0).collect();
        assert_eq!(
            indexes,
            [1, 2, 3, 4, 5],
            "entries 5 and 6 were not committed"
        );
        assert_eq!(forced.hard_state.commit, Index(5));
        assert_eq!(forced.hard_state.term, Term(3));
        let raft = Raft::new(Config::new(NodeId(2)), forced, 1).unwrap();
        assert_eq!(raft.membership().voters, [NodeId(2)].into());

        // Durable: a restart without the flag finds the cluster of one.
        let (_, again) = Wal::open(wal.into_disk(), "d", WalOptions::default()).unwrap();
        assert_eq!(again.durable.entries.len(), 5);
        assert_eq!(again.durable.hard_state.commit, Index(5));
        let raft = Raft::new(Config::new(NodeId(2)), again.durable, 1).unwrap();
        assert_eq!(raft.membership().voters, [NodeId(2)].into());
    }

    #[test]
    fn an_empty_directory_is_refused() {
        let (mut wal, recovered) = Wal::open(MemDisk::new(), "d", WalOptions::default()).unwrap();
        assert!(force_new_cluster(&mut wal, recovered.durable, NodeId(1)).is_err());
    }
}
