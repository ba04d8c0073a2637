//! Running seeds: one, replayed with a trace, or many, spread over threads,
//! with one summary line at the end. A panic inside the core (a failed
//! assertion) is a failure of its seed like any violated invariant.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::check::Violation;
use crate::options::Options;
use crate::world::{Stats, World};

#[derive(Debug, Clone)]
pub struct Failure {
    pub options: Options,
    pub violation: Violation,
    /// The last lines of the replayed run's trace.
    pub trace: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub seeds: u64,
    pub stats: Stats,
    pub failures: Vec<Failure>,
}

impl Summary {
    pub fn line(&self) -> String {
        let s = &self.stats;
        format!(
            "seeds={} steps={} elections={} commits={} operations={} crashes={} partitions={} transfers={} \
             membership_changes={} snapshots_taken={} snapshots_installed={} torn_tails={} pauses={} forwarded={} reads_forwarded={} read_batches={} snapshots_mapped={} unknown={} superseded={} \
             leases_granted={} keepalives={} revokes={} watch_events={} watch_catch_ups={} watch_lags={} watcher_resumes={} watch_compacted={} auth_changes={} watch_auth_cancels={} alarms_raised={} puts_refused_nospace={} \
             virtual_s={} violations={}",
            self.seeds,
            s.steps,
            s.elections,
            s.commits,
            s.operations,
            s.crashes,
            s.partitions,
            s.transfers,
            s.membership_changes,
            s.snapshots_taken,
            s.snapshots_installed,
            s.torn_tails,
            s.pauses,
            s.forwarded,
            s.reads_forwarded,
            s.read_batches,
            s.snapshots_mapped,
            s.unknown,
            s.superseded,
            s.leases_granted,
            s.keepalives,
            s.revokes,
            s.watch_events,
            s.watch_catch_ups,
            s.watch_lags,
            s.watcher_resumes,
            s.watch_compacted,
            s.auth_changes,
            s.watch_auth_cancels,
            s.alarms_raised,
            s.puts_refused_nospace,
            s.virtual_ms / 1000,
            self.failures.len()
        )
    }
}

/// Runs one seed. With `trace`, the world records every event, and the
/// failure carries the last `trace_lines` of them.
pub fn run_seed(options: &Options, trace: bool) -> Result<Stats, Violation> {
    let opts = options.clone();
    let result = catch_unwind(AssertUnwindSafe(move || {
        let mut world = World::new(opts, trace);
        let result = world.run();
        (result, world.trace().to_vec())
    }));
    match result {
        Ok((result, _)) => result,
        Err(panic) => Err(Violation::new("panic", panic_message(&panic))),
    }
}

/// Replays a seed with tracing on and returns the tail of its trace.
pub fn replay_trace(
    options: &Options,
    trace_lines: usize,
) -> (Result<Stats, Violation>, Vec<String>) {
    let opts = options.clone();
    let result = catch_unwind(AssertUnwindSafe(move || {
        let mut world = World::new(opts, true);
        let result = world.run();
        (result, world.trace().to_vec())
    }));
    match result {
        Ok((result, trace)) => {
            let skip = trace.len().saturating_sub(trace_lines);
            (result, trace[skip..].to_vec())
        }
        Err(panic) => (
            Err(Violation::new("panic", panic_message(&panic))),
            Vec::new(),
        ),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Runs `seeds` on `threads` threads. `make` gives each seed its options.
/// With `stop_at_first`, stops handing out seeds after a failure.
pub fn run_seeds(
    seeds: std::ops::Range<u64>,
    threads: usize,
    stop_at_first: bool,
    make: &(dyn Fn(u64) -> Options + Sync),
) -> Summary {
    let next = AtomicU64::new(seeds.start);
    let stop = AtomicBool::new(false);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let options = make(seed);
                let result = run_seed(&options, false);
                let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                s.seeds += 1;
                match result {
                    Ok(stats) => s.stats.add(&stats),
                    Err(violation) => {
                        s.failures.push(Failure {
                            options,
                            violation,
                            trace: Vec::new(),
                        });
                        if stop_at_first {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    summary.failures.sort_by_key(|f| f.options.seed);
    summary
}
