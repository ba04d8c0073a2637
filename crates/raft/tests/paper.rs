//! Scenario tests: one claim of the Raft paper (or of this core's contract)
//! per test, each in three parts: setup, step, check.

mod harness;

use ferrite_raft::{
    Body, Config, DurableState, Entry, Index, MembershipChange, Message, NodeId, Payload,
    ProposeError, Role, StepError, Term,
};
use harness::{data, nid, Cluster, Input, Recorded};

const MIN: usize = ferrite_raft::ELECTION_TICKS_MIN as usize;

/// Ticks `id` and delivers until quiet, `n` times.
fn tick_and_deliver(c: &mut Cluster, id: u64, n: usize) {
    for _ in 0..n {
        c.tick(id);
        c.deliver_all();
    }
}

/// Every message a node put in one of its outputs.
fn all_sent(history: &[Recorded]) -> impl Iterator<Item = (bool, &Message)> {
    history.iter().flat_map(|r| {
        r.send
            .iter()
            .map(|m| (false, m))
            .chain(r.send_after_persist.iter().map(|m| (true, m)))
    })
}

// ---- 1. Figure 7 -----------------------------------------------------------

#[test]
fn figure_7_leader_makes_every_follower_log_match_its_own() {
    // Setup: the leader of Figure 7 (node 1, about to campaign for term 8)
    // and followers (a)..(f) as nodes 2..7.
    let logs: [(u64, &[u64], u64); 7] = [
        (1, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6], 7),
        (2, &[1, 1, 1, 4, 4, 5, 5, 6, 6], 6), // (a) missing one
        (3, &[1, 1, 1, 4], 4),                // (b) missing many
        (4, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 6), // (c) one extra
        (5, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 7), // (d) two extra of term 7
        (6, &[1, 1, 1, 4, 4, 4, 4], 4),       // (e) missing and extra
        (7, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3), // (f) missing and extra
    ];
    let mut c = Cluster::from_logs(&logs, 3);

    // Step: node 1 wins term 8 (with the votes of (a), (b), (e), (f); (c)
    // and (d) hold more up-to-date logs and refuse) and replicates its no-op.
    c.elect(1);
    let appends: Vec<usize> = (2..=7)
        .map(|id| c.delivered_to(id, "Append").len())
        .collect();
    tick_and_deliver(&mut c, 1, 1); // the heartbeat that carries the commit

    // Check: every follower holds exactly the leader's log, everything is
    // committed, and the conflict hints found each match point in at most
    // two AppendEntries (without hints (f) alone would need seven).
    assert_eq!(c.term(1), 8);
    assert_eq!(c.log_terms(1), [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]);
    c.assert_same_logs(&[1, 2, 3, 4, 5, 6, 7]);
    for id in 1..=7 {
        assert_eq!(c.commit(id), 11, "commit of {id}");
        assert_eq!(c.term(id), 8, "term of {id}");
    }
    assert_eq!(
        appends,
        [2, 2, 1, 1, 2, 2],
        "AppendEntries per follower (a)..(f)"
    );
    // (c) and (d) hold more up-to-date logs than the leader and refused.
    let votes: Vec<(u64, bool)> = c
        .delivered_to(1, "VoteResponse")
        .iter()
        .map(|m| {
            (
                m.from.0,
                matches!(m.body, Body::VoteResponse { granted: true }),
            )
        })
        .collect();
    assert_eq!(
        votes,
        [
            (2, true),
            (3, true),
            (4, false),
            (5, false),
            (6, true),
            (7, true)
        ]
    );
    // The extra entries of (c), (d), (e) and (f) are gone everywhere.
    for id in 1..=7 {
        assert!(c
            .entries(id)
            .iter()
            .all(|e| e.term != Term(7) && e.term != Term(2)));
    }
}

// ---- 2. Figure 8 -----------------------------------------------------------

/// Figure 8 (c): S1, leader of term 4, has replicated its term-2 entry at
/// index 2 to S2 and S3 (a majority), but not its own entry at index 3.
/// S4 and S5 are cut off; S5 holds a term-3 entry at index 2.
fn figure_8_c() -> Cluster {
    let logs: [(u64, &[u64], u64); 5] = [
        (1, &[1, 2], 3),
        (2, &[1], 3),
        (3, &[1], 3),
        (4, &[1], 3),
        (5, &[1, 3], 3),
    ];
    // One entry per AppendEntries, so that index 2 can travel without 3.
    let mut c = Cluster::from_logs_with(&logs, 1, |cfg| cfg.append_entries_max = 1);
    c.partition(&[1, 2, 3], &[4, 5]);
    // S1's entry at index 3 reaches nobody who already holds index 2 (the
    // first probe, carrying 3 after index 2, is let through: S2 and S3 lack 2
    // and reject it).
    c.drop_if(|c, m| {
        matches!(&m.body, Body::Append { entries, .. } if entries.iter().any(|e| e.index == Index(3)))
            && c.last_index(m.to.0) >= 2
    });
    c.elect(1);
    tick_and_deliver(&mut c, 1, 3);
    c
}

#[test]
fn figure_8_entry_of_earlier_term_on_a_majority_commits_only_with_one_of_the_current_term() {
    // Setup: Figure 8 (c).
    let mut c = figure_8_c();
    assert_eq!(c.term(1), 4);
    assert_eq!(c.log_terms(1), [1, 2, 4]);
    assert_eq!(c.log_terms(2), [1, 2]);
    assert_eq!(c.log_terms(3), [1, 2]);
    for id in [2, 3] {
        assert_eq!(c.raft(1).progress(nid(id)).unwrap().match_index, Index(2));
    }
    // Check (counting): index 2 is on 3 of 5 servers, yet not committed.
    assert_eq!(c.commit(1), 1);
    assert_eq!(c.commit(2), 1);

    // Step: the current term's entry gets through.
    c.clear_filter();
    let ticks = (1..=5).find(|_| {
        tick_and_deliver(&mut c, 1, 1);
        c.commit(1) == 3
    });

    // Check: index 2 committed together with index 3, never on its own.
    assert!(
        ticks.is_some(),
        "the no-op commits once it reaches a majority"
    );
    let leader_commits: Vec<u64> = c
        .history
        .iter()
        .filter(|r| r.node == 1)
        .filter_map(|r| r.persist.hard_state.map(|hs| hs.commit.0))
        .collect();
    assert!(leader_commits.contains(&3));
    assert!(
        !leader_commits.contains(&2),
        "commit went 1 -> 2: {leader_commits:?}"
    );
}

#[test]
fn figure_8_uncommitted_earlier_term_entry_on_a_majority_can_be_overwritten() {
    // Setup: Figure 8 (c), then S1 crashes and the partition heals.
    let mut c = figure_8_c();
    assert_eq!(c.commit(1), 1);
    c.crash(1);
    c.heal();

    // Step: Figure 8 (d): S5 (last term 3) is elected by S2, S3, S4.
    c.elect(5);
    tick_and_deliver(&mut c, 5, 1);

    // Check: the term-2 entry that sat on a majority is replaced by term 3
    // everywhere, which is why counting replicas could not commit it.
    assert_eq!(c.term(5), 5);
    for id in 2..=5 {
        assert_eq!(c.log_terms(id), [1, 3, 5], "log of {id}");
        assert_eq!(c.commit(id), 3);
    }
}

// ---- 3 and 4. Who can be elected -------------------------------------------

/// Whether `candidate` wins when `voter` is the only other node it can reach.
fn wins_with_only(logs: &[(u64, &[u64], u64)], commit: u64, candidate: u64, voter: u64) -> bool {
    let mut c = Cluster::from_logs(logs, commit);
    for &(id, _, _) in logs {
        if id != candidate && id != voter {
            c.isolate(id);
        }
    }
    let won = c.try_elect(candidate);
    if !won {
        // A refused candidate changes no term (pre-vote) and no log.
        for &(id, terms, term) in logs {
            assert_eq!(c.term(id), term, "term of {id}");
            assert_eq!(c.log_terms(id), terms, "log of {id}");
        }
    }
    won
}

#[test]
fn logs_1124_112_11333_election_follows_the_up_to_date_rule() {
    // Setup: A = 1124 (last term 4), B = 112 (last term 2), C = 11333 (last
    // term 3). By the up-to-date rule A > C > B.
    let (a, b, cc) = (1, 2, 3);
    let logs: [(u64, &[u64], u64); 3] = [
        (a, &[1, 1, 2, 4], 4),
        (b, &[1, 1, 2], 4),
        (cc, &[1, 1, 3, 3, 3], 4),
    ];

    // Step and check: each pair (candidate, only voter).
    assert!(wins_with_only(&logs, 2, a, b));
    assert!(wins_with_only(&logs, 2, a, cc));
    assert!(wins_with_only(&logs, 2, cc, b));
    assert!(
        !wins_with_only(&logs, 2, cc, a),
        "A's last term 4 beats C's 3"
    );
    assert!(!wins_with_only(&logs, 2, b, a));
    assert!(!wins_with_only(&logs, 2, b, cc));

    // Step and check: in the full cluster B cannot win at all.
    let mut c = Cluster::from_logs(&logs, 2);
    assert!(!c.try_elect(b));

    // Step and check: A wins with both votes; all logs become 1124 + no-op.
    let mut c = Cluster::from_logs(&logs, 2);
    c.elect(a);
    tick_and_deliver(&mut c, a, 1);
    for id in [a, b, cc] {
        assert_eq!(c.log_terms(id), [1, 1, 2, 4, 5], "log of {id}");
        assert_eq!(c.commit(id), 5);
    }

    // Step and check: C wins with B's vote against A's refusal; all logs
    // become 11333 + no-op (A loses its entries of terms 2 and 4).
    let mut c = Cluster::from_logs(&logs, 2);
    c.elect(cc);
    tick_and_deliver(&mut c, cc, 1);
    for id in [a, b, cc] {
        assert_eq!(c.log_terms(id), [1, 1, 3, 3, 3, 5], "log of {id}");
        assert_eq!(c.commit(id), 6);
    }
}

#[test]
fn logs_1111_111_11111_longest_log_is_most_up_to_date() {
    // Setup: A = 1111, B = 111, C = 11111: all end in term 1, so the longer
    // log is the more up to date: C > A > B.
    let (a, b, cc) = (1, 2, 3);
    let logs: [(u64, &[u64], u64); 3] = [
        (a, &[1, 1, 1, 1], 1),
        (b, &[1, 1, 1], 1),
        (cc, &[1, 1, 1, 1, 1], 1),
    ];

    // Step and check: each pair (candidate, only voter).
    assert!(wins_with_only(&logs, 3, cc, a));
    assert!(wins_with_only(&logs, 3, cc, b));
    assert!(wins_with_only(&logs, 3, a, b));
    assert!(!wins_with_only(&logs, 3, a, cc), "C's log is longer");
    assert!(!wins_with_only(&logs, 3, b, a));
    assert!(!wins_with_only(&logs, 3, b, cc));

    // Step and check: C wins the full cluster; every log is 11111 + no-op.
    let mut c = Cluster::from_logs(&logs, 3);
    assert!(!c.try_elect(b));
    c.elect(cc);
    tick_and_deliver(&mut c, cc, 1);
    for id in [a, b, cc] {
        assert_eq!(c.log_terms(id), [1, 1, 1, 1, 1, 2], "log of {id}");
        assert_eq!(c.commit(id), 6);
    }

    // Step and check: A wins with B while C is away; when C returns its
    // fifth entry (term 1, never committed) gives way to A's no-op.
    let mut c = Cluster::from_logs(&logs, 3);
    c.isolate(cc);
    c.elect(a);
    c.heal();
    tick_and_deliver(&mut c, a, 2);
    c.assert_same_logs(&[a, b, cc]);
    assert_eq!(c.log_terms(cc), [1, 1, 1, 1, 2]);
    assert_eq!(c.commit(cc), 5);
}

// ---- 5. Split votes ----------------------------------------------------------

#[test]
fn split_vote_resolves_with_exactly_one_leader_per_term() {
    // Setup: four voters; nodes 1 and 2 campaign at the same time, and in
    // the first round node 3 hears only 1 and node 4 only 2.
    let mut c = Cluster::new(&[1, 2, 3, 4]);
    c.cut_link(1, 4);
    c.cut_link(2, 3);
    assert!(c.tick_until_campaign(1));
    assert!(c.tick_until_campaign(2));
    c.deliver_all();
    assert!(c.leaders().is_empty(), "2 votes of 4 is no majority");
    assert_eq!((c.role(1), c.term(1)), (Role::Candidate, 1));
    assert_eq!((c.role(2), c.term(2)), (Role::Candidate, 1));
    assert_eq!(c.raft(3).vote(), Some(nid(1)));
    assert_eq!(c.raft(4).vote(), Some(nid(2)));

    // Step: the network heals and time passes.
    c.heal();
    let ticks = c.run_until(10 * 2 * MIN, |c| c.leader().is_some());

    // Check: a leader within bounded ticks, in a later term; term 1 had none;
    // no term ever had two (the harness checks after every input).
    let ticks = ticks.expect("a leader within ten election timeouts");
    assert!(ticks <= 4 * MIN, "took {ticks} ticks");
    let leader = c.leader().unwrap();
    assert!(c.term(leader) >= 2);
    assert!(!c.leaders_by_term.contains_key(&1));
    assert!(c.leaders_by_term.values().all(|l| l.len() == 1));
    c.run(3);
    for id in 1..=4 {
        assert_eq!(
            c.leader_of(id),
            Some(leader),
            "node {id} follows the leader"
        );
        assert_eq!(c.term(id), c.term(leader));
    }
}

// ---- 6. Stale leader ---------------------------------------------------------

#[test]
fn stale_leader_steps_down_on_higher_term_and_loses_its_uncommitted_entries() {
    // Setup: node 1 leads term 1 and commits "a"; cut off, it takes two more
    // proposals; the rest elect node 2 in term 2, which commits "fresh".
    let mut c = Cluster::new(&[1, 2, 3, 4, 5]);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    c.isolate(1);
    c.propose(1, "stale-1");
    c.propose(1, "stale-2");
    c.deliver_all();
    assert_eq!(c.commit(1), 2);
    c.elect(2);
    c.propose(2, "fresh");
    c.deliver_all();
    assert_eq!((c.role(1), c.term(1)), (Role::Leader, 1));

    // Step: the link heals and the stale leader sends its term-1 heartbeats.
    c.heal();
    tick_and_deliver(&mut c, 1, 1);

    // Check: it stepped down on hearing term 2, without a leader of term 1
    // changing anybody else.
    assert_eq!((c.role(1), c.term(1)), (Role::Follower, 2));
    for id in 2..=5 {
        assert_eq!(c.log_data(id), ["a", "fresh"], "log of {id}");
    }

    // Step: the new leader's heartbeat reaches it.
    tick_and_deliver(&mut c, 2, 2);

    // Check: its uncommitted entries are replaced by the new leader's.
    assert_eq!(c.leader_of(1), Some(2));
    c.assert_same_logs(&[1, 2, 3, 4, 5]);
    assert_eq!(c.log_data(1), ["a", "fresh"]);
    assert_eq!(c.log_terms(1), [1, 1, 2, 2]);
    assert_eq!(c.commit(1), 4);
    assert!(c.applied_data(1).iter().all(|d| !d.starts_with("stale")));
}

// ---- 7. Delayed AppendEntries ------------------------------------------------

#[test]
fn delayed_append_from_old_term_is_rejected_and_changes_nothing() {
    // Setup: leader 1 (term 1) proposes "old"; its AppendEntries to node 3 is
    // held in the network. Node 1 is cut off; node 2 wins term 2 and commits
    // "new" at the index "old" was meant for.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.propose(1, "old");
    let delayed = c.hold(|m| m.to == nid(3) && m.kind() == "Append");
    assert_eq!(delayed.len(), 1);
    c.isolate(1);
    c.deliver_all();
    c.elect(2);
    c.propose(2, "new");
    c.deliver_all();
    let (terms, commit, entries) = (c.log_terms(3), c.commit(3), c.entries(3));
    assert_eq!(terms, [1, 2, 2]);
    assert_eq!(commit, 3);
    let outputs_before = c.history.len();

    // Step: the delayed term-1 message finally arrives.
    let delayed = delayed.into_iter().next().unwrap();
    assert!(matches!(&delayed.body, Body::Append { entries, .. } if entries[0].index == Index(2)));
    c.step(3, delayed).expect("a stale message is not garbage");

    // Check: nothing changed; the only answer tells the sender of term 2.
    assert_eq!(c.entries(3), entries);
    assert_eq!(c.commit(3), commit);
    assert_eq!(
        (c.term(3), c.leader_of(3), c.role(3)),
        (2, Some(2), Role::Follower)
    );
    let outputs: Vec<&Recorded> = c.history[outputs_before..]
        .iter()
        .filter(|r| r.node == 3)
        .collect();
    assert!(outputs
        .iter()
        .all(|r| r.persist.is_empty() && r.apply.is_empty()));
    let answers: Vec<&Message> = all_sent(&c.history[outputs_before..])
        .map(|(_, m)| m)
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].to, answers[0].term, answers[0].kind()),
        (nid(1), Term(2), "HeartbeatResponse")
    );
}

// ---- 8. Minority leader ------------------------------------------------------

#[test]
fn minority_leader_cannot_commit_steps_down_and_loses_its_entries() {
    // Setup: leader 1 of five commits "a", then is partitioned with node 2.
    let mut c = Cluster::new(&[1, 2, 3, 4, 5]);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let (commit, term) = (c.commit(1), c.term(1));
    c.partition(&[1, 2], &[3, 4, 5]);

    // Step: it takes a proposal, and time passes on its side.
    let (index, _) = c.propose(1, "minority");
    c.deliver_all();
    assert_eq!(
        c.raft(1).progress(nid(2)).unwrap().match_index,
        Index(index)
    );
    let mut stepped_down = None;
    for t in 1..=3 * MIN {
        c.tick(1);
        c.tick(2);
        c.deliver_all();
        assert_eq!(c.commit(1), commit, "2 of 5 is no quorum");
        if c.role(1) != Role::Leader {
            stepped_down = Some(t);
            break;
        }
    }

    // Check: check-quorum deposed it within two periods (the first may still
    // count acknowledgements from before the partition); terms did not move.
    let t = stepped_down.expect("the minority leader steps down");
    assert!(t <= 2 * MIN, "stepped down after {t} ticks");
    assert_eq!((c.term(1), c.term(2)), (term, term));

    // Step: the majority elects node 3, which commits; the partition heals.
    c.elect(3);
    c.propose(3, "majority");
    c.deliver_all();
    c.heal();
    tick_and_deliver(&mut c, 3, 2);

    // Check: the minority's entry is overwritten everywhere.
    c.assert_same_logs(&[1, 2, 3, 4, 5]);
    assert_eq!(c.log_data(1), ["a", "majority"]);
    assert_eq!(c.raft(1).log().term_at(Index(index)), Some(Term(c.term(3))));
    for id in 1..=5 {
        assert!(!c.applied_data(id).contains(&"minority".to_string()));
        assert_eq!(c.commit(id), c.commit(3));
    }
}

// ---- 9. Pre-vote ---------------------------------------------------------------

#[test]
fn pre_vote_keeps_a_partitioned_node_from_raising_its_term_or_deposing_the_leader() {
    // Setup: leader 1 of three; node 3 is cut off.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let term = c.term(1);
    c.isolate(3);

    // Step: ten election timeouts pass; the majority keeps working.
    for _ in 0..10 * 2 * MIN {
        c.tick_all();
        c.deliver_all();
        assert_ne!(c.role(3), Role::Candidate);
    }
    c.propose(1, "b");
    c.deliver_all();

    // Check: node 3 asked for pre-votes again and again but never moved to a
    // new term nor sent a real vote request.
    assert_eq!(c.term(3), term);
    let prevotes = c
        .dropped
        .iter()
        .filter(|m| m.from == nid(3) && m.kind() == "PreVote")
        .count();
    assert!(prevotes >= 10, "only {prevotes} pre-votes");
    assert!(!c
        .dropped
        .iter()
        .any(|m| m.from == nid(3) && m.kind() == "Vote"));

    // Step: it rejoins and time passes.
    c.heal();
    c.run(5 * 2 * MIN);

    // Check: same leader, same term, and node 3 caught up.
    assert_eq!(c.leader(), Some(1));
    assert_eq!(
        c.leaders_by_term.keys().copied().collect::<Vec<_>>(),
        [term]
    );
    for id in 1..=3 {
        assert_eq!(c.term(id), term);
        assert_eq!(c.leader_of(id), Some(1));
    }
    c.assert_same_logs(&[1, 2, 3]);
    assert_eq!(c.log_data(3), ["a", "b"]);
}

// ---- 10. Snapshot catch-up -----------------------------------------------------

#[test]
fn follower_behind_compacted_log_catches_up_by_chunked_snapshot() {
    // Setup: 4-byte snapshot chunks; node 3 is away while five entries
    // commit; the leader compacts past node 3's log and appends one more.
    let mut c = Cluster::with_config(&[1, 2, 3], |cfg| cfg.snapshot_chunk_bytes = 4);
    c.elect(1);
    c.isolate(3);
    for i in 0..5 {
        c.propose(1, &format!("v{i}"));
    }
    c.deliver_all();
    assert_eq!((c.commit(1), c.raft(1).applied().0), (6, 6));
    let snapshot = b"state-at-index-6!!"; // 18 bytes: 5 chunks
    let meta = c.compact(1, 6, snapshot);
    c.propose(1, "after");
    c.deliver_all();
    assert_eq!(c.log_terms(3), [1]);

    // Step: node 3 returns.
    c.heal();
    tick_and_deliver(&mut c, 1, 3);

    // Check: it received the snapshot in 4-byte chunks that add up to the
    // leader's data, persisted it, and then got the entry after it.
    let mut chunks: Vec<(u64, Vec<u8>)> = c
        .delivered_to(3, "Snapshot")
        .iter()
        .map(|m| match &m.body {
            Body::Snapshot {
                offset,
                data,
                total_bytes,
                meta: m_meta,
            } => {
                assert_eq!((*total_bytes, m_meta), (18, &meta));
                assert!(data.len() <= 4);
                (*offset, data.to_vec())
            }
            _ => unreachable!(),
        })
        .collect();
    chunks.sort();
    chunks.dedup();
    assert_eq!(
        chunks.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 4, 8, 12, 16]
    );
    assert_eq!(
        chunks
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect::<Vec<u8>>(),
        snapshot
    );
    let persisted: Vec<&Recorded> = c
        .history
        .iter()
        .filter(|r| r.node == 3 && r.persist.snapshot.is_some())
        .collect();
    assert_eq!(persisted.len(), 1);
    let s = persisted[0].persist.snapshot.as_ref().unwrap();
    assert_eq!((&s.meta, &s.data[..]), (&meta, &snapshot[..]));
    assert_eq!(
        c.node(3).durable.snapshot.as_ref().unwrap().data,
        &snapshot[..]
    );
    assert_eq!(c.snapshot_index(3), 6);
    c.assert_same_logs(&[1, 3]);
    assert_eq!(c.log_data(3), ["after"]);
    assert_eq!(c.commit(3), 7);
    assert_eq!(c.applied_data(3), ["after"]);
}

// ---- 11. Durability ------------------------------------------------------------

#[test]
fn votes_and_acks_wait_for_persist_and_leader_counts_itself_only_when_durable() {
    // Setup: three nodes; node 1 (the candidate) and node 2 sync only when
    // told; node 3 syncs at once.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.set_manual_sync(1, true);
    c.set_manual_sync(2, true);

    // Step: node 1 campaigns; its pre-votes are released and answered.
    assert!(c.tick_until_campaign(1));
    c.sync(1);
    c.deliver_all();

    // Check: it is a candidate whose Vote requests wait for its new term and
    // vote to be durable.
    assert_eq!((c.role(1), c.term(1)), (Role::Candidate, 1));
    assert!(c.queued("Vote").is_empty());
    let last = c.history.iter().rfind(|r| r.node == 1).unwrap();
    assert_eq!(
        last.persist.hard_state.map(|hs| (hs.term, hs.vote)),
        Some((Term(1), Some(nid(1))))
    );
    assert_eq!(
        last.send_after_persist
            .iter()
            .filter(|m| m.kind() == "Vote")
            .count(),
        2
    );
    assert!(last.send.is_empty());

    // Step: the term and vote become durable; the votes go out.
    c.sync(1);
    c.deliver_all();

    // Check: node 3's grant made node 1 leader; node 2's grant waits on its
    // disk. The leader's AppendEntries left at once, node 3 acknowledged,
    // but the no-op is not committed: the leader's own copy is not durable.
    assert_eq!(c.role(1), Role::Leader);
    assert_eq!(c.raft(2).vote(), Some(nid(1)));
    let pending_2: Vec<&Message> = c.node(2).pending.iter().flat_map(|(_, m)| m).collect();
    assert!(pending_2.iter().any(|m| m.kind() == "VoteResponse"));
    assert_eq!(c.raft(1).progress(nid(3)).unwrap().match_index, Index(1));
    assert_eq!(c.raft(1).persisted(), Index(0));
    assert_eq!(
        c.commit(1),
        0,
        "leader + one follower is a quorum only with the leader's own write"
    );

    // Step: the leader's write becomes durable.
    c.sync(1);
    c.deliver_all();

    // Check: now it commits.
    assert_eq!(c.commit(1), 1);
    c.sync(2);
    c.deliver_all();
    tick_and_deliver(&mut c, 1, 1);
    assert_eq!(c.commit(2), 1);

    // Check, over the whole run: votes, vote answers and append answers were
    // only ever in `send_after_persist`.
    for (after_persist, m) in all_sent(&c.history) {
        if matches!(m.kind(), "Vote" | "VoteResponse" | "AppendResponse") {
            assert!(after_persist, "{m:?} in send");
        }
    }
}

// ---- 12. ReadIndex -------------------------------------------------------------

#[test]
fn read_index_batches_reads_into_one_heartbeat_round() {
    // Setup: leader 1 of three with its no-op committed; the cluster is quiet.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let commit = c.commit(1);

    // Step: three reads before one take_output.
    for ctx in [11, 12, 13] {
        c.raft_mut(1).read_index(ctx).unwrap();
    }
    c.collect(1);

    // Check: one heartbeat per follower, all of the same round.
    let rounds: Vec<(NodeId, u64)> = c
        .queue
        .iter()
        .map(|m| match m.body {
            Body::Heartbeat { read_round, .. } => (m.to, read_round),
            _ => panic!("unexpected {m:?}"),
        })
        .collect();
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0].1, rounds[1].1);
    assert!(c.node(1).reads.is_empty());

    // Step: node 2 answers (node 3's answer is still on its way).
    assert!(c.deliver_one()); // heartbeat to 2
    assert!(c.deliver_one()); // heartbeat to 3
    assert!(c.node(1).reads.is_empty());
    assert!(c.deliver_one()); // node 2's answer

    // Check: all three confirmed together at the commit index.
    let outputs: Vec<&Recorded> = c.history.iter().filter(|r| !r.reads.is_empty()).collect();
    assert_eq!(outputs.len(), 1);
    let reads: Vec<(u64, u64)> = outputs[0]
        .reads
        .iter()
        .map(|r| (r.ctx, r.index.0))
        .collect();
    assert_eq!(reads, [(11, commit), (12, commit), (13, commit)]);
    c.deliver_all();
    assert_eq!(c.node(1).reads.len(), 3);
}

#[test]
fn read_index_waits_for_the_new_leaders_no_op() {
    // Setup: node 1 just won; its no-op is not yet replicated.
    let mut c = Cluster::new(&[1, 2, 3]);
    assert!(c.tick_until_campaign(1));
    assert!(c.deliver_until(|c| c.role(1) == Role::Leader));
    let noop = c.raft(1).log().last_index();
    assert_eq!(c.commit(1), 0);

    // Step: a read arrives.
    c.raft_mut(1).read_index(7).unwrap();
    c.collect(1);

    // Check: no heartbeat round for it yet.
    // Followers that were sent the round (a commit notice may repeat it).
    let round_heartbeats = |c: &Cluster| {
        c.history
            .iter()
            .flat_map(|r| &r.send)
            .filter_map(|m| match m.body {
                Body::Heartbeat { read_round, .. } if read_round > 0 => Some((m.to, read_round)),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(round_heartbeats(&c), 0);
    assert!(c.node(1).reads.is_empty());

    // Step: the no-op commits.
    c.deliver_all();

    // Check: only now is the read served, at the no-op's index.
    assert_eq!(c.commit(1), noop.0);
    assert_eq!(round_heartbeats(&c), 2);
    let reads: Vec<(u64, Index)> = c.node(1).reads.iter().map(|r| (r.ctx, r.index)).collect();
    assert_eq!(reads, [(7, noop)]);
}

// ---- 13. Leader transfer -------------------------------------------------------

#[test]
fn leader_transfer_hands_over_in_the_next_term_and_blocks_proposals_meanwhile() {
    // Setup: leader 1 of three; node 2 missed the last entry.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.cut_link(1, 2);
    c.propose(1, "x");
    c.deliver_all();
    c.heal();
    let term = c.term(1);
    assert!(c.raft(1).progress(nid(2)).unwrap().match_index < c.raft(1).log().last_index());

    // Step: transfer to node 2.
    c.raft_mut(1).transfer_leader(nid(2)).unwrap();

    // Check: proposals are refused while it is in progress.
    assert_eq!(
        c.raft_mut(1).propose(data("y")),
        Err(ProposeError::TransferInProgress)
    );
    assert_eq!(
        c.raft_mut(1)
            .propose_membership(MembershipChange::Remove(nid(3))),
        Err(ProposeError::TransferInProgress)
    );

    // Step: the old leader's heartbeats bring node 2 up to date.
    let ticks = (1..=3).find(|_| {
        tick_and_deliver(&mut c, 1, 1);
        c.role(2) == Role::Leader
    });

    // Check: node 2 leads the next term after a TimeoutNow, within a few
    // heartbeats and no election timeout.
    assert!(ticks.is_some(), "transfer did not complete in 3 heartbeats");
    assert_eq!(c.term(2), term + 1);
    assert!(!c.delivered_to(2, "TimeoutNow").is_empty());
    assert_eq!(c.leader_of(1), Some(2));
    assert_eq!(
        c.raft_mut(1).propose(data("y")),
        Err(ProposeError::NotLeader { leader: nid(2) })
    );
    c.propose(2, "y");
    c.deliver_all();
    c.assert_same_logs(&[1, 2, 3]);
    assert_eq!(c.log_data(3), ["x", "y"]);
}

// ---- 14. Membership ------------------------------------------------------------

#[test]
fn membership_learner_promote_one_change_at_a_time_and_leader_removal() {
    // Setup: voters 1, 2, 3 (leader 1, promotion allowed within 3 entries)
    // and node 4 starting empty.
    let mut c = Cluster::with_config(&[1, 2, 3], |cfg| cfg.learner_lag_max = 3);
    c.elect(1);
    let mut cfg4 = Config::new(nid(4));
    cfg4.learner_lag_max = 3;
    c.add_node(4, cfg4, DurableState::joining());

    // Step: add node 4 as a learner.
    c.raft_mut(1)
        .propose_membership(MembershipChange::AddLearner(nid(4)))
        .unwrap();
    c.collect(1);
    c.deliver_all();

    // Check: it holds the whole log and knows itself a learner.
    c.assert_same_logs(&[1, 4]);
    assert!(c.raft(4).membership().learners.contains(&nid(4)));
    assert_eq!(c.commit(4), c.commit(1));

    // Step: with voters 2 and 3 cut off, the leader proposes; the learner acks.
    c.partition(&[1], &[2, 3]);
    let (y, _) = c.propose(1, "y");
    c.deliver_all();

    // Check: the learner's acknowledgement does not count toward a quorum.
    assert_eq!(c.raft(1).progress(nid(4)).unwrap().match_index, Index(y));
    assert!(c.commit(1) < y);
    c.heal();
    tick_and_deliver(&mut c, 1, 2);
    assert_eq!(c.commit(1), y);

    // Check: a learner never campaigns and is never asked to vote.
    c.tick_muted(4, 10 * MIN as u32);
    assert_eq!((c.role(4), c.term(4)), (Role::Follower, c.term(1)));
    assert!(c
        .dropped
        .iter()
        .all(|m| !(m.from == nid(4) && m.kind().contains("Vote"))));
    assert!(c
        .delivered
        .iter()
        .all(|m| !(m.to == nid(4) && m.kind().contains("Vote"))));

    // Step: node 4 falls five entries behind; promote it.
    c.isolate(4);
    for i in 0..5 {
        c.propose(1, &format!("p{i}"));
    }
    c.deliver_all();
    let refused = c
        .raft_mut(1)
        .propose_membership(MembershipChange::Promote(nid(4)));

    // Check: refused while behind.
    assert_eq!(
        refused,
        Err(ProposeError::LearnerBehind {
            node: nid(4),
            behind: 5
        })
    );

    // Step: it catches up; promote again, and try a second change at once.
    c.heal();
    tick_and_deliver(&mut c, 1, 2);
    assert_eq!(
        c.raft(1).progress(nid(4)).unwrap().match_index,
        c.raft(1).log().last_index()
    );
    let (promote, _) = c
        .raft_mut(1)
        .propose_membership(MembershipChange::Promote(nid(4)))
        .unwrap();
    let second = c
        .raft_mut(1)
        .propose_membership(MembershipChange::AddLearner(nid(5)));

    // Check: the promotion is accepted, the second change refused until it
    // commits; afterwards node 4 votes everywhere.
    assert_eq!(
        second,
        Err(ProposeError::MembershipChangePending { index: promote })
    );
    c.collect(1);
    c.deliver_all();
    assert!(c.commit(1) >= promote.0);
    for id in 1..=4 {
        assert!(c.raft(id).membership().is_voter(nid(4)), "node {id}");
    }

    // Step: remove the leader itself.
    let (remove, _) = c
        .raft_mut(1)
        .propose_membership(MembershipChange::Remove(nid(1)))
        .unwrap();
    c.collect(1);
    assert_eq!(
        c.role(1),
        Role::Leader,
        "still leads until the change commits"
    );
    c.deliver_all();

    // Check: it stepped down once the change committed; the rest elect a
    // new leader among themselves, which node 1 never disturbs.
    assert!(c.commit(1) >= remove.0);
    assert_eq!(c.role(1), Role::Follower);
    let old_term = c.term(1);
    let ticks = c.run_until(10 * 2 * MIN, |c| c.leader().is_some());
    assert!(ticks.is_some(), "no new leader");
    let leader = c.leader().unwrap();
    assert!([2, 3, 4].contains(&leader));
    assert!(c.term(leader) > old_term);
    assert_eq!(
        c.raft(leader).membership().voters,
        [nid(2), nid(3), nid(4)].into()
    );
    assert_eq!(c.term(1), old_term, "a removed node does not campaign");
    c.propose(leader, "z");
    c.deliver_all();
    assert_eq!(c.commit(leader), c.raft(leader).log().last_index().0);
}

// ---- 15. Limits and typed errors ------------------------------------------------

#[test]
fn limits_and_garbage_give_typed_errors_and_change_nothing() {
    // Setup: 16-byte entries at most, 32 bytes uncommitted at most.
    let mut c = Cluster::with_config(&[1, 2, 3], |cfg| {
        cfg.entry_bytes_max = 16;
        cfg.uncommitted_bytes_max = 32;
    });

    // Step and check: no leader yet.
    assert_eq!(
        c.raft_mut(2).propose(data("x")),
        Err(ProposeError::NoLeader)
    );
    c.elect(1);

    // Step and check: a follower names the leader.
    assert_eq!(
        c.raft_mut(2).propose(data("x")),
        Err(ProposeError::NotLeader { leader: nid(1) })
    );
    assert_eq!(
        c.raft_mut(2).read_index(1),
        Err(ProposeError::NotLeader { leader: nid(1) })
    );

    // Step and check: an entry over the limit.
    let big = "x".repeat(17);
    assert_eq!(
        c.raft_mut(1).propose(data(&big)),
        Err(ProposeError::EntryTooLarge {
            size: 17,
            limit: 16
        })
    );

    // Step and check: the uncommitted budget (nothing is delivered).
    let sixteen = "y".repeat(16);
    c.raft_mut(1).propose(data(&sixteen)).unwrap();
    c.raft_mut(1).propose(data(&sixteen)).unwrap();
    assert_eq!(
        c.raft_mut(1).propose(data("z")),
        Err(ProposeError::ProposalQueueFull {
            uncommitted_bytes: 32,
            limit: 32
        })
    );
    c.collect(1);
    c.deliver_all();
    c.raft_mut(1)
        .propose(data("z"))
        .expect("room again once committed");
    c.collect(1);
    c.deliver_all();

    // Setup for garbage: a snapshot of node 2.
    let snapshot = |c: &Cluster| {
        (
            c.entries(2),
            c.commit(2),
            c.raft(2).hard_state(),
            c.role(2),
            c.leader_of(2),
        )
    };
    let before = snapshot(&c);
    let (term, last) = (Term(c.term(2)), c.raft(2).log().last_index());
    let entry = |index: u64, term: u64| Entry {
        index: Index(index),
        term: Term(term),
        payload: Payload::Normal(data("g")),
    };
    let append = |entries: Vec<Entry>, msg_term: Term| Message {
        from: nid(1),
        to: nid(2),
        term: msg_term,
        body: Body::Append {
            prev_index: last,
            prev_term: term,
            entries,
            commit: last,
        },
    };
    let outputs_before = c.history.len();

    // Step: garbage, each with a higher term that a valid message would adopt.
    let wrong_recipient = Message {
        to: nid(3),
        ..append(vec![entry(last.0 + 1, term.0 + 1)], term.next())
    };
    let gap = append(
        vec![entry(last.0 + 1, term.0 + 1), entry(last.0 + 3, term.0 + 1)],
        term.next(),
    );
    let future_term = append(vec![entry(last.0 + 1, term.0 + 5)], term.next());
    let results = [
        c.step(2, wrong_recipient),
        c.step(2, gap),
        c.step(2, future_term),
    ];

    // Check: typed errors, and node 2 is exactly as before with no output.
    assert_eq!(
        results[0],
        Err(StepError::WrongRecipient {
            to: nid(3),
            me: nid(2)
        })
    );
    assert!(
        matches!(&results[1], Err(StepError::Malformed { from, reason }) if *from == nid(1) && reason.contains("contiguous"))
    );
    assert!(
        matches!(&results[2], Err(StepError::Malformed { from, reason }) if *from == nid(1) && reason.contains("term"))
    );
    assert_eq!(snapshot(&c), before);
    assert_eq!(c.history.len(), outputs_before, "garbage produced output");
}

// ---- 16. Determinism -----------------------------------------------------------

/// A fixed script of elections, proposals, partitions, crashes and reads.
fn scripted_run(seed: u64) -> (Vec<Recorded>, Vec<Input>) {
    let ids = [1, 2, 3, 4, 5];
    let nodes = ids
        .iter()
        .map(|&id| {
            (
                id,
                Config::new(nid(id)),
                DurableState::bootstrap(ids.map(NodeId)),
            )
        })
        .collect();
    let mut c = Cluster::build(nodes, seed);
    c.run_until(20 * MIN, |c| c.leader().is_some())
        .expect("a leader");
    for round in 0..4u64 {
        let leader = c.leader().expect("a leader");
        c.propose(leader, &format!("w{round}"));
        let _ = c.raft_mut(leader).read_index(round);
        c.collect(leader);
        c.run(3);
        c.isolate(leader);
        c.run(3 * MIN);
        c.heal();
        c.crash(1 + round % 5);
        c.run(MIN);
        c.restart(1 + round % 5);
        c.run_until(20 * MIN, |c| c.leader().is_some())
            .expect("a leader");
    }
    c.run(2 * MIN);
    let leader = c.leader().expect("a leader");
    assert!(c.commit(leader) >= 4, "the script makes progress");
    (c.history, c.inputs)
}

#[test]
fn same_seeds_and_inputs_give_identical_outputs() {
    // Setup and step: the same script twice with the same seed.
    let (a, inputs_a) = scripted_run(7);
    let (b, inputs_b) = scripted_run(7);

    // Check: every input and every output identical, in order.
    assert!(
        a.len() > 100,
        "the script is not trivial: {} outputs",
        a.len()
    );
    assert_eq!(inputs_a, inputs_b);
    assert_eq!(a, b);

    // Check: the seed is what varies a run.
    let (other, _) = scripted_run(8);
    assert_ne!(a, other);
}
