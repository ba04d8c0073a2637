//! Whole-cluster simulation under faults: the CI slice of the seed sweep,
//! exact replay of a seed, and the proof that the checkers bite (each
//! deliberately broken core is caught within a bounded number of seeds).

use ferrite_raft::Canary;
use ferrite_sim::runner::replay_trace;
use ferrite_sim::{run_seed, run_seeds, Options};
use ferrite_state::watch::WatchCanary;
use ferrite_state::AlarmCanary;

const STEPS: u64 = 5000;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn assert_clean(summary: &ferrite_sim::Summary) {
    if let Some(f) = summary.failures.first() {
        let (_, trace) = replay_trace(&f.options, 60);
        panic!(
            "seed {} failed: {}\n{}\n{}\nreplay: ferrite-sim --seed {} --steps {}",
            f.options.seed,
            f.violation,
            f.options.describe(),
            trace.join("\n"),
            f.options.seed,
            f.options.steps
        );
    }
}

#[test]
fn three_node_clusters_stay_safe_and_linearizable() {
    let summary = run_seeds(0..100, threads(), true, &|seed| {
        Options::swarm(seed, STEPS, 3)
    });
    assert_clean(&summary);
    assert_eq!(summary.seeds, 100);
    println!("{}", summary.line());
    assert!(
        summary.stats.commits > 100 * 20,
        "the clusters made progress: {}",
        summary.line()
    );
    assert!(
        summary.stats.crashes > 0 && summary.stats.partitions > 0,
        "faults happened"
    );
    let s = &summary.stats;
    assert!(
        s.forwarded > 0,
        "followers forwarded writes: {}",
        summary.line()
    );
    assert!(
        s.unknown > 0,
        "some writes ended unknown: {}",
        summary.line()
    );
    assert!(
        s.superseded > 0,
        "some entries were superseded: {}",
        summary.line()
    );
    assert!(
        s.leases_granted > 0 && s.keepalives > 0 && s.revokes > 0,
        "leases were granted, kept alive and revoked: {}",
        summary.line()
    );
    assert!(
        s.watch_events > 0 && s.watch_catch_ups > 0 && s.watch_lags > 0 && s.watcher_resumes > 0,
        "watchers received events, lagged, caught up and resumed: {}",
        summary.line()
    );
}

#[test]
fn five_node_clusters_stay_safe_and_linearizable() {
    let summary = run_seeds(1000..1100, threads(), true, &|seed| {
        Options::swarm(seed, STEPS, 5)
    });
    assert_clean(&summary);
    assert_eq!(summary.seeds, 100);
    println!("{}", summary.line());
    let s = &summary.stats;
    assert!(
        s.membership_changes > 0,
        "membership changes happened: {}",
        summary.line()
    );
    assert!(s.transfers > 0, "leader transfers happened");
    assert!(s.snapshots_installed > 0, "snapshots were installed");
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options::swarm(77, 3000, 0);
    let (first, trace_a) = replay_trace(&options, usize::MAX);
    let (second, trace_b) = replay_trace(&options, usize::MAX);
    let (a, b) = (
        first.expect("seed 77 passes"),
        second.expect("seed 77 passes"),
    );
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(
        trace_a.len() > 1000,
        "a real trace: {} lines",
        trace_a.len()
    );
    assert_eq!(trace_a, trace_b);
    // And tracing does not change the run.
    let untraced = run_seed(&options, false).expect("seed 77 passes");
    assert_eq!(format!("{untraced:?}"), format!("{a:?}"));
}

/// Runs seeds of the storm profile with `canary` until one fails; returns
/// the first failing seed and its violation kind.
fn first_catch(canary: Canary, seeds: u64) -> (u64, &'static str) {
    let summary = run_seeds(0..seeds, threads(), true, &|seed| {
        let mut o = Options::storm(seed, 20_000);
        o.canary = canary;
        o
    });
    match summary.failures.first() {
        Some(f) => (f.options.seed, f.violation.kind),
        None => panic!(
            "{} survived {} seeds: the checkers did not catch it",
            canary.name(),
            summary.seeds
        ),
    }
}

#[test]
fn catches_commit_of_an_earlier_term_by_counting() {
    let (seed, kind) = first_catch(Canary::CommitEarlierTerm, 400);
    println!("commit-earlier-term caught at seed {seed}: {kind}");
}

#[test]
fn catches_votes_granted_without_the_log_check() {
    let (seed, kind) = first_catch(Canary::VoteWithoutLogCheck, 100);
    println!("vote-without-log-check caught at seed {seed}: {kind}");
}

#[test]
fn catches_acknowledgement_before_persist() {
    let (seed, kind) = first_catch(Canary::AckBeforePersist, 400);
    println!("ack-before-persist caught at seed {seed}: {kind}");
}

#[test]
fn catches_an_ignored_apply_budget() {
    let (seed, kind) = first_catch(Canary::IgnoreApplyBudget, 100);
    assert_eq!(kind, "apply budget", "seed {seed}");
    println!("ignore-apply-budget caught at seed {seed}: {kind}");
}

#[test]
fn catches_a_server_that_reproposes_writes_of_unknown_outcome() {
    let (seed, kind) = first_catch(Canary::ReproposeUnknown, 400);
    assert!(
        kind == "linearizability" || kind == "reply",
        "seed {seed}: {kind}"
    );
    println!("repropose-unknown caught at seed {seed}: {kind}");
}

#[test]
fn catches_a_read_answered_before_apply_reaches_its_index() {
    let (seed, kind) = first_catch(Canary::ReadBeforeApplied, 400);
    assert_eq!(kind, "linearizability", "seed {seed}");
    println!("read-before-applied caught at seed {seed}: {kind}");
}

#[test]
fn a_healthy_core_survives_the_storm_profile() {
    let summary = run_seeds(0..60, threads(), true, &|seed| Options::storm(seed, 20_000));
    assert_clean(&summary);
}

#[test]
fn catches_stale_reads_served_without_read_index() {
    let summary = run_seeds(0..200, threads(), true, &|seed| {
        let mut o = Options::swarm(seed, STEPS, 0);
        o.stale_reads = true;
        o
    });
    let f = summary
        .failures
        .first()
        .expect("stale reads must be caught");
    assert_eq!(f.violation.kind, "linearizability", "{}", f.violation);
    println!("stale reads caught at seed {}", f.options.seed);
}

#[test]
fn catches_acknowledgements_without_fdatasync() {
    // The core is right, but the node acknowledges writes its WAL never
    // synced: crashes tear them away, and the checks must notice.
    let summary = run_seeds(0..400, threads(), true, &|seed| {
        let mut o = Options::storm(seed, 20_000);
        o.skip_sync = true;
        o
    });
    let f = summary
        .failures
        .first()
        .expect("unsynced acknowledgements must be caught");
    println!(
        "skip-sync caught at seed {}: {}",
        f.options.seed, f.violation
    );
}

#[test]
fn the_wal_recovers_torn_tails_in_simulation() {
    let summary = run_seeds(0..100, threads(), true, &|seed| {
        Options::storm(seed, 20_000)
    });
    assert_clean(&summary);
    assert!(
        summary.stats.torn_tails > 0,
        "crashes tore unsynced writes: {}",
        summary.line()
    );
}

#[test]
fn catches_leases_not_extended_when_a_new_leader_promotes() {
    // The new leader's lessor expires leases as if granted when it applied
    // the grant: a failover revokes a lease a client just kept alive.
    let (seed, kind) = first_catch(Canary::NoLeaseExtendOnPromote, 400);
    assert_eq!(kind, "lease safety", "seed {seed}");
    println!("no-lease-extend-on-promote caught at seed {seed}: {kind}");
}

#[test]
fn catches_a_watch_stream_that_drops_entries_its_reader_missed() {
    // A lag notice is ignored: the entries that fell out of the member's
    // event ring are skipped, and the watch checker must see the gap.
    let summary = run_seeds(0..400, threads(), true, &|seed| {
        let mut o = Options::storm(seed, 20_000);
        o.watch_canary = WatchCanary::DropLagged;
        o
    });
    let f = summary
        .failures
        .first()
        .expect("a watch stream that drops lagged entries must be caught");
    assert_eq!(f.violation.kind, "watch", "{}", f.violation);
    println!(
        "watch-drop-lagged caught at seed {}: {}",
        f.options.seed, f.violation
    );
}

#[test]
fn catches_watches_that_outlive_their_permission() {
    // Auth changes reach the stream but never cancel a watch: a watcher
    // whose read permission was revoked goes on receiving events, and the
    // leak check must see it.
    let summary = run_seeds(0..200, threads(), true, &|seed| {
        let mut o = Options::swarm(seed, STEPS, 0);
        o.auth = true;
        o.kv_clients = o.kv_clients.max(2);
        o.watchers = o.watchers.max(2);
        o.watch_canary = WatchCanary::IgnoreAuth;
        o
    });
    let f = summary
        .failures
        .first()
        .expect("a watch stream that ignores revoked permissions must be caught");
    assert_eq!(f.violation.kind, "watch auth", "{}", f.violation);
    println!(
        "watch-ignore-auth caught at seed {}: {}",
        f.options.seed, f.violation
    );
}

#[test]
fn auth_in_the_mix_keeps_watches_exact() {
    // The same workload with the real stream: permission changes cancel
    // watches (and they resume when access is back), nothing leaks, and
    // every other checker stays quiet.
    let summary = run_seeds(0..200, threads(), false, &|seed| {
        let mut o = Options::swarm(seed, STEPS, 0);
        o.auth = true;
        o.kv_clients = o.kv_clients.max(2);
        o.watchers = o.watchers.max(2);
        o
    });
    assert!(summary.failures.is_empty(), "{}", summary.line());
    assert!(summary.stats.auth_changes > 0, "{}", summary.line());
    assert!(summary.stats.watch_auth_cancels > 0, "{}", summary.line());
}

#[test]
fn catches_leases_that_never_expire() {
    // The lessor cannot propose revokes: after healing, leases outlive
    // their bound, and the lifetime check must say so.
    let summary = run_seeds(0..100, threads(), true, &|seed| {
        let mut o = Options::swarm(seed, STEPS, 0);
        o.lease_revokes_off = true;
        o
    });
    let f = summary
        .failures
        .first()
        .expect("leases that never expire must be caught");
    assert_eq!(f.violation.kind, "lease lifetime", "{}", f.violation);
    println!(
        "lease-revokes-off caught at seed {}: {}",
        f.options.seed, f.violation
    );
}

#[test]
fn catches_puts_applied_under_nospace() {
    // The machine applies KV puts while NOSPACE is raised: the alarm
    // checker must see a member apply one between the alarm's ACTIVATE
    // and DEACTIVATE.
    let summary = run_seeds(0..100, threads(), true, &|seed| {
        let mut o = Options::swarm(seed, STEPS, 0);
        o.alarms = true;
        o.kv_clients = o.kv_clients.max(2);
        o.alarm_canary = AlarmCanary::IgnoreNoSpace;
        o
    });
    let f = summary
        .failures
        .first()
        .expect("a machine that applies puts under NOSPACE must be caught");
    assert_eq!(f.violation.kind, "alarm", "{}", f.violation);
    println!(
        "alarm-ignore-nospace caught at seed {}: {}",
        f.options.seed, f.violation
    );
}

#[test]
fn alarms_in_the_mix_refuse_puts_and_stay_linearizable() {
    // NOSPACE raised and cleared through the log under faults, with the
    // real machine: puts are refused while it is raised, no member applies
    // one, and every other checker stays quiet.
    let summary = run_seeds(0..150, threads(), false, &|seed| {
        let mut o = Options::swarm(seed, STEPS, 0);
        o.alarms = true;
        o.kv_clients = o.kv_clients.max(2);
        o
    });
    assert_clean(&summary);
    assert!(summary.stats.alarms_raised > 0, "{}", summary.line());
    assert!(summary.stats.puts_refused_nospace > 0, "{}", summary.line());
}
