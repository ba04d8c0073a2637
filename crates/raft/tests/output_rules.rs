//! The rules the core's output carries for its executor: what must be
//! fdatasynced (etcd's `MustSync`) and how much may wait for apply (etcd's
//! `maxApplyingEntsSize`).

use bytes::Bytes;
use ferrite_raft::{Config, DurableState, NodeId, Raft, Role};

fn single(apply_bytes_max: usize) -> Raft {
    let mut cfg = Config::new(NodeId(1));
    cfg.apply_bytes_max = apply_bytes_max;
    Raft::new(cfg, DurableState::bootstrap([NodeId(1)]), 7).expect("valid")
}

/// Ticks a single voter until it leads, persisting as it goes.
fn lead(raft: &mut Raft) {
    for _ in 0..100 {
        raft.tick();
        let out = raft.take_output();
        if let Some(hs) = out.persist.hard_state {
            assert!(out.must_sync, "a new term or vote is synced: {hs:?}");
        }
        if let Some((i, t)) = out.persist.last() {
            raft.on_persisted(i, t);
        }
        if raft.role() == Role::Leader {
            return;
        }
    }
    panic!("never led");
}

#[test]
fn entries_and_votes_must_sync_a_commit_index_alone_need_not() {
    let mut raft = single(1 << 20);
    lead(&mut raft);
    // Settle the leader's no-op.
    for _ in 0..3 {
        let out = raft.take_output();
        if let Some((i, t)) = out.persist.last() {
            raft.on_persisted(i, t);
        }
    }
    let (index, term) = raft.propose(Bytes::from_static(b"x")).expect("leader");
    let out = raft.take_output();
    assert_eq!(out.persist.entries.len(), 1);
    assert!(out.must_sync, "entries must be synced");
    raft.on_persisted(index, term);
    let out = raft.take_output();
    let hs = out.persist.hard_state.expect("the commit index moved");
    assert_eq!(hs.commit, index);
    assert!(out.persist.entries.is_empty());
    assert!(!out.must_sync, "a commit index alone is written unsynced");
    assert_eq!(out.apply.len(), 1, "and the entry goes to apply");
}

#[test]
fn no_more_than_the_apply_budget_waits_for_apply() {
    let mut raft = single(100);
    lead(&mut raft);
    let mut handed = 0;
    for _ in 0..3 {
        let out = raft.take_output();
        handed += out.apply.len();
        if let Some((i, t)) = out.persist.last() {
            raft.on_persisted(i, t);
        }
    }
    assert_eq!(raft.applying_bytes(), 0, "the no-op has no payload");
    raft.on_applied(raft.commit());
    // Ten 40-byte entries commit at once.
    let mut last = None;
    for _ in 0..10 {
        last = Some(raft.propose(Bytes::from(vec![7u8; 40])).expect("leader"));
    }
    let out = raft.take_output();
    if let Some((i, t)) = out.persist.last() {
        raft.on_persisted(i, t);
    }
    let out = raft.take_output();
    assert_eq!(
        out.apply.len(),
        2,
        "two 40-byte entries fit a 100-byte budget"
    );
    assert_eq!(raft.applying_bytes(), 80);
    assert!(
        raft.take_output().apply.is_empty(),
        "nothing more until applied"
    );
    // Applying frees the budget.
    raft.on_applied(out.apply[1].index);
    assert_eq!(raft.applying_bytes(), 0);
    let out = raft.take_output();
    assert_eq!(out.apply.len(), 2);
    // Drain the rest, then one entry larger than the whole budget still
    // goes when nothing waits.
    let mut upto = out.apply[1].index;
    loop {
        raft.on_applied(upto);
        let out = raft.take_output();
        match out.apply.last() {
            Some(e) => upto = e.index,
            None => break,
        }
    }
    assert_eq!(Some(upto), last.map(|(i, _)| i));
    let (i, t) = raft.propose(Bytes::from(vec![1u8; 500])).expect("leader");
    let _ = raft.take_output();
    raft.on_persisted(i, t);
    let out = raft.take_output();
    assert_eq!(out.apply.len(), 1, "an oversize entry alone is handed out");
    assert_eq!(raft.applying_bytes(), 500);
    assert!(handed >= 1);
}
