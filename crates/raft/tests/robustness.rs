//! Scenarios beyond the paper's figures: pacing of snapshot transfer, and
//! what garbage from a peer or repeated client calls can do. Tests marked
//! `ignore = "BUG: ..."` show a defect of the core; they pass once it is
//! fixed.

mod harness;

use ferrite_raft::{
    AppendResult, Body, Entry, Index, Membership, Message, Payload, Role, SnapshotMeta, StepError,
    Term,
};
use harness::{data, nid, Cluster};

const MIN: usize = ferrite_raft::ELECTION_TICKS_MIN as usize;

/// Leader 1 of three with 4-byte snapshot chunks, compacted to index 6 with a
/// snapshot of `size` bytes while node 3 was away; node 3 is back.
fn snapshot_needed(size: usize) -> Cluster {
    let mut c = Cluster::with_config(&[1, 2, 3], |cfg| cfg.snapshot_chunk_bytes = 4);
    c.elect(1);
    c.isolate(3);
    for i in 0..5 {
        c.propose(1, &format!("v{i}"));
    }
    c.deliver_all();
    c.compact(1, 6, &vec![7u8; size]);
    c.heal();
    c
}

/// Delivers what is in flight now and nothing sent meanwhile: one network hop.
fn one_hop(c: &mut Cluster) {
    for _ in 0..c.queue.len() {
        c.deliver_one();
    }
    for id in c.ids() {
        c.collect(id);
    }
}

#[test]
fn snapshot_transfer_keeps_one_chunk_in_flight() {
    // Setup: node 3 needs a 64-byte snapshot, sent in 4-byte chunks.
    let mut c = snapshot_needed(64);

    // Step: the leader ticks once per network hop until node 3 has it.
    let mut most_in_flight = 0;
    for _ in 0..100 {
        c.tick(1);
        one_hop(&mut c);
        let in_flight = c.queue.iter().filter(|m| m.kind() == "Snapshot").count();
        most_in_flight = most_in_flight.max(in_flight);
        if c.snapshot_index(3) == 6 {
            break;
        }
    }

    // Check: installed, with one chunk in flight at a time and each of the
    // 16 chunks sent about once (nothing was lost).
    assert_eq!(c.snapshot_index(3), 6);
    let sent = c.delivered_to(3, "Snapshot").len();
    assert!(
        most_in_flight <= 1,
        "{most_in_flight} chunks in flight at once"
    );
    assert!(sent <= 2 * 16, "{sent} chunks sent for a 16-chunk snapshot");
}

#[test]
fn garbage_acknowledgement_does_not_count_for_check_quorum() {
    // Setup: leader 1 of three, cut off from both followers.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.isolate(1);
    let garbage = |c: &Cluster| Message {
        from: nid(2),
        to: nid(1),
        term: Term(c.term(1)),
        body: Body::AppendResponse(AppendResult::Success {
            match_index: Index(c.last_index(1) + 100),
        }),
    };

    // Step: each tick, node 2 sends it an acknowledgement of entries it
    // does not have; every one is refused.
    for _ in 0..3 * MIN {
        if c.role(1) != Role::Leader {
            break;
        }
        let msg = garbage(&c);
        assert!(matches!(c.step(1, msg), Err(StepError::Malformed { .. })));
        c.tick(1);
        c.deliver_all();
    }

    // Check: it heard from no quorum, so check-quorum deposed it.
    assert_ne!(c.role(1), Role::Leader);
}

#[test]
fn append_with_entry_term_below_prev_term_is_malformed() {
    // Setup: logs 1,2 everywhere; node 1 leads term 3; node 2's log is
    // 1,2,3 (the no-op of term 3 at index 3).
    let logs: [(u64, &[u64], u64); 3] = [(1, &[1, 2], 2), (2, &[1, 2], 2), (3, &[1, 2], 2)];
    let mut c = Cluster::from_logs(&logs, 2);
    c.elect(1);
    assert_eq!((c.log_terms(2), c.term(2)), (vec![1, 2, 3], 3));
    let before = (c.entries(2), c.commit(2), c.raft(2).hard_state());

    // Step: an Append in term 3 that matches at (3, term 3) and then carries
    // an entry of term 1.
    let garbage = Message {
        from: nid(1),
        to: nid(2),
        term: Term(3),
        body: Body::Append {
            prev_index: Index(3),
            prev_term: Term(3),
            entries: vec![Entry {
                index: Index(4),
                term: Term(1),
                payload: Payload::Normal(data("g")),
            }],
            commit: Index(3),
        },
    };
    let result = c.step(2, garbage);

    // Check: refused as malformed, nothing changed.
    assert!(
        matches!(result, Err(StepError::Malformed { .. })),
        "{result:?}"
    );
    assert_eq!((c.entries(2), c.commit(2), c.raft(2).hard_state()), before);
}

#[test]
fn snapshot_of_a_term_above_the_message_term_is_malformed() {
    // Setup: leader 1 of three in term 1; node 2 follows with log [1].
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    assert_eq!((c.term(2), c.log_terms(2)), (1, vec![1]));
    let before = (c.entries(2), c.commit(2), c.raft(2).hard_state());

    // Step: a one-chunk snapshot at index 5 of term 9, sent in term 1.
    let garbage = Message {
        from: nid(1),
        to: nid(2),
        term: Term(1),
        body: Body::Snapshot {
            meta: SnapshotMeta {
                index: Index(5),
                term: Term(9),
                membership: Membership::new([nid(1), nid(2), nid(3)]),
            },
            offset: 0,
            total_bytes: 3,
            data: data("abc"),
        },
    };
    let result = c.step(2, garbage);

    // Check: refused as malformed, nothing changed, and the node restarts.
    assert!(
        matches!(result, Err(StepError::Malformed { .. })),
        "{result:?}"
    );
    assert_eq!((c.entries(2), c.commit(2), c.raft(2).hard_state()), before);
    c.crash(2);
    c.restart(2);
}

#[test]
fn repeated_transfer_requests_do_not_suspend_check_quorum() {
    // Setup: leader 1 of three, cut off from both followers.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.isolate(1);

    // Step: ten election timeouts pass; every 5 ticks the caller retries a
    // transfer to node 2 (which cannot arrive).
    for t in 0..10 * MIN {
        if t % 5 == 0 && c.role(1) == Role::Leader {
            c.raft_mut(1).transfer_leader(nid(2)).unwrap();
            c.collect(1);
        }
        c.tick(1);
        c.deliver_all();
    }

    // Check: check-quorum still deposed it.
    assert_ne!(c.role(1), Role::Leader);
}

#[test]
fn snapshot_transfer_recovers_from_lost_chunks() {
    // Setup: node 3 needs a 20-byte snapshot; every other chunk is lost the
    // first time it is sent.
    let mut c = snapshot_needed(20);
    let lost = std::rc::Rc::new(std::cell::RefCell::new(std::collections::BTreeSet::new()));
    let seen = lost.clone();
    c.drop_if(move |_, m| match &m.body {
        Body::Snapshot { offset, .. } if (offset / 4) % 2 == 1 => seen.borrow_mut().insert(*offset),
        _ => false,
    });

    // Step: the leader keeps ticking.
    let ticks = c.run_until(4 * MIN, |c| c.snapshot_index(3) == 6);

    // Check: installed despite the losses, then the log follows.
    assert!(ticks.is_some(), "snapshot never installed");
    assert_eq!(lost.borrow().len(), 2);
    c.propose(1, "after");
    c.deliver_all();
    c.run(1);
    c.assert_same_logs(&[1, 3]);
    assert_eq!(c.log_data(3), ["after"]);
    assert_eq!(c.commit(3), 7);
    assert_eq!(c.node(3).sm_snapshot.as_ref().unwrap().data.len(), 20);
}

#[test]
fn crash_before_sync_loses_only_unacknowledged_state() {
    // Setup: leader 1 of three; follower 2 syncs only when told.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.set_manual_sync(2, true);
    c.cut_link(1, 3);

    // Step: an entry reaches node 2's memory but not its disk; it crashes.
    let (x, _) = c.propose(1, "x");
    c.deliver_all();
    assert_eq!(c.last_index(2), x);
    assert!(c.commit(1) < x, "node 2 never acknowledged");
    c.crash(2);
    c.restart(2);
    c.set_manual_sync(2, false);

    // Check: node 2 restarts without it, then receives it again; it commits
    // only now, and is applied once everywhere.
    assert_eq!(c.last_index(2), x - 1);
    c.heal();
    c.run(3);
    assert_eq!(c.commit(1), x);
    c.assert_same_logs(&[1, 2, 3]);
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), ["x"], "node {id}");
    }
}

/// Regression (found by the simulator, seed 158 of 5-voter runs): a
/// duplicated first chunk used to restart the follower's assembly while the
/// leader had moved on, so each kept asking the other for a different offset
/// forever.
#[test]
fn duplicate_first_snapshot_chunk_does_not_restart_the_transfer() {
    use bytes::Bytes;
    use ferrite_raft::{Config, DurableState, Membership, Raft, SnapshotMeta};

    // Setup: a fresh follower and a 12-byte snapshot sent in 4-byte chunks.
    let ids = [nid(1), nid(2), nid(3)];
    let mut f = Raft::new(Config::new(nid(2)), DurableState::bootstrap(ids), 1).unwrap();
    let meta = SnapshotMeta {
        index: Index(10),
        term: Term(1),
        membership: Membership::new(ids),
    };
    let data = Bytes::from_static(b"abcdefghijkl");
    let chunk = |f: &mut Raft, offset: usize| {
        let msg = Message {
            from: nid(1),
            to: nid(2),
            term: Term(1),
            body: Body::Snapshot {
                meta: meta.clone(),
                offset: offset as u64,
                total_bytes: 12,
                data: data.slice(offset..offset + 4),
            },
        };
        f.step(msg).unwrap();
        let out = f.take_output();
        let reply = out.send_after_persist.last().map(|m| m.body.clone());
        (reply, out.persist.snapshot)
    };
    let next = |reply: Option<Body>| match reply {
        Some(Body::SnapshotResponse { next_offset, .. }) => next_offset,
        other => panic!("expected a snapshot response, got {other:?}"),
    };

    // Step: chunks 0 and 4, then a duplicate of chunk 0, then chunk 8.
    assert_eq!(next(chunk(&mut f, 0).0), 4);
    assert_eq!(next(chunk(&mut f, 4).0), 8);
    let (dup, _) = chunk(&mut f, 0);

    // Check: the duplicate is answered with what the follower has, and the
    // last chunk completes the snapshot with the right bytes.
    assert_eq!(next(dup), 8);
    let (done, installed) = chunk(&mut f, 8);
    assert!(matches!(
        done,
        Some(Body::SnapshotResponse { done: true, .. })
    ));
    assert_eq!(installed.map(|s| s.data), Some(data));
}

/// Ticks followers 2 and 3 (leader 1 is down) until one of them leads, for
/// at most an election timeout: which one, and after how many ticks.
fn ticks_to_new_leader(c: &mut Cluster) -> (Option<u64>, usize) {
    let new_leader = |c: &Cluster| [2, 3].into_iter().find(|&id| c.role(id) == Role::Leader);
    let mut ticks = 0;
    while new_leader(c).is_none() && ticks < MIN {
        for id in [2, 3] {
            c.tick(id);
        }
        c.deliver_all();
        ticks += 1;
    }
    (new_leader(c), ticks)
}

/// A leader's process dies and TCP tells its followers at once: a follower
/// stands within `DISCONNECT_WAIT_TICKS_MAX` ticks instead of a whole
/// election timeout, and is elected since the other follower, told too,
/// grants its votes.
#[test]
fn a_closed_leader_connection_starts_an_election_within_a_few_ticks() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.crash(1);
    for id in [2, 3] {
        c.raft_mut(id).report_disconnected(nid(1));
        c.collect(id);
    }
    let (leader, ticks) = ticks_to_new_leader(&mut c);
    assert!(leader.is_some(), "no new leader in {ticks} ticks");
    assert!(
        ticks <= ferrite_raft::DISCONNECT_WAIT_TICKS_MAX as usize + 1,
        "took {ticks} ticks"
    );
}

/// A spurious report (the leader is alive) costs nothing: the other
/// follower still hears the leader and refuses the pre-vote, so no term
/// changes and the leader stays.
#[test]
fn a_spurious_disconnect_does_not_depose_a_live_leader() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    let term = c.term(1);
    c.raft_mut(2).report_disconnected(nid(1));
    c.collect(2);
    for _ in 0..MIN {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.term(1), term);
    assert_eq!(c.leader_of(2), Some(1), "node 2 follows the leader again");
}

/// As above, with the follower that stands first one entry behind: its
/// pre-vote is refused, and the other, up to date, is elected soon after.
#[test]
fn after_a_closed_leader_connection_the_up_to_date_follower_is_elected_soon() {
    for behind in [2, 3] {
        let mut c = Cluster::new(&[1, 2, 3]);
        c.elect(1);
        c.cut_link(1, behind);
        c.propose(1, "last");
        c.deliver_all();
        c.crash(1);
        c.heal();
        for id in [2, 3] {
            c.raft_mut(id).report_disconnected(nid(1));
            c.collect(id);
        }
        let (leader, ticks) = ticks_to_new_leader(&mut c);
        let up_to_date = 5 - behind;
        assert_eq!(leader, Some(up_to_date), "behind={behind}, {ticks} ticks");
        assert!(
            ticks <= ferrite_raft::DISCONNECT_WAIT_TICKS_MAX as usize + 1,
            "behind={behind}: took {ticks} ticks"
        );
    }
}

#[test]
fn the_same_snapshot_bytes_may_replace_the_held_copy_and_are_then_sent() {
    // Setup: node 3 needs the 64-byte snapshot at 6, which the leader holds.
    let mut c = snapshot_needed(64);
    let same = bytes::Bytes::from(vec![7u8; 64]);

    // Step: the held copy is offered elsewhere: for another index, with
    // another length, then the same bytes for the right index.
    assert!(!c.raft_mut(1).use_snapshot_data(Index(5), same.clone()));
    assert!(!c
        .raft_mut(1)
        .use_snapshot_data(Index(6), bytes::Bytes::from(vec![7u8; 63])));
    assert!(c.raft_mut(1).use_snapshot_data(Index(6), same));

    // Check: node 3 still gets the snapshot, whole.
    for _ in 0..100 {
        c.tick(1);
        one_hop(&mut c);
        if c.snapshot_index(3) == 6 {
            break;
        }
    }
    assert_eq!(c.snapshot_index(3), 6);
}
