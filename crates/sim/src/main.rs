//! `ferrite-sim`: run many seeds and print one summary line, or replay one
//! seed with a readable trace, or benchmark the core.
//!
//! ```text
//! ferrite-sim --seeds 0..10000 --steps 5000          # many seeds, 3 and 5 voters
//! ferrite-sim --seed 42 --steps 5000 [--trace]       # replay one exactly
//! ferrite-sim bench                                  # throughput of the core
//! ```

use std::process::ExitCode;
use std::time::Instant;

use ferrite_raft::Canary;
use ferrite_sim::runner::replay_trace;
use ferrite_sim::{run_seeds, Options};
use ferrite_state::watch::WatchCanary;
use ferrite_state::AlarmCanary;

const USAGE: &str =
    "usage: ferrite-sim [--seeds A..B | --seed S] [--steps N] [--voters 3|5] [--threads T] \
                     [--canary NAME] [--storm] [--trace]\n       ferrite-sim bench [--seconds S]";

struct Args {
    seeds: std::ops::Range<u64>,
    single: bool,
    steps: u64,
    voters: usize,
    threads: usize,
    canary: Canary,
    watch_canary: WatchCanary,
    alarm_canary: AlarmCanary,
    trace: bool,
    storm: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        seeds: 0..100,
        single: false,
        steps: 5000,
        voters: 0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        canary: Canary::None,
        watch_canary: WatchCanary::None,
        alarm_canary: AlarmCanary::None,
        trace: false,
        storm: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => {
                let v = value()?;
                let (lo, hi) = v
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds wants A..B, got {v:?}"))?;
                let lo = lo.parse().map_err(|_| format!("bad seed {lo:?}"))?;
                let hi = hi.parse().map_err(|_| format!("bad seed {hi:?}"))?;
                if lo >= hi {
                    return Err(format!("empty seed range {v}"));
                }
                a.seeds = lo..hi;
            }
            "--seed" => {
                let v = value()?;
                let s: u64 = v.parse().map_err(|_| format!("bad seed {v:?}"))?;
                a.seeds = s..s + 1;
                a.single = true;
            }
            "--steps" => a.steps = value()?.parse().map_err(|_| "bad --steps".to_string())?,
            "--threads" => a.threads = value()?.parse().map_err(|_| "bad --threads".to_string())?,
            "--voters" => {
                a.voters = match value()?.as_str() {
                    "3" => 3,
                    "5" => 5,
                    v => return Err(format!("--voters must be 3 or 5, got {v}")),
                }
            }
            "--canary" => {
                let v = value()?;
                if let Some(c) = WatchCanary::all().iter().find(|c| c.name() == v) {
                    a.watch_canary = *c;
                    continue;
                }
                if let Some(c) = AlarmCanary::all().iter().find(|c| c.name() == v) {
                    a.alarm_canary = *c;
                    continue;
                }
                a.canary = *Canary::all()
                    .iter()
                    .find(|c| c.name() == v)
                    .ok_or_else(|| {
                        format!("unknown canary {v:?} (this build knows: {:?})", names())
                    })?;
            }
            "--trace" => a.trace = true,
            "--storm" => a.storm = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn names() -> Vec<&'static str> {
    let watch = WatchCanary::all().iter().skip(1).map(|c| c.name());
    let alarm = AlarmCanary::all().iter().skip(1).map(|c| c.name());
    Canary::all()
        .iter()
        .map(|c| c.name())
        .chain(watch)
        .chain(alarm)
        .collect()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("bench") {
        return ferrite_sim::bench::main(args.skip(1));
    }
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let make = |seed: u64| {
        let mut o = if a.storm {
            Options::storm(seed, a.steps)
        } else {
            Options::swarm(seed, a.steps, a.voters)
        };
        o.canary = a.canary;
        o.watch_canary = a.watch_canary;
        o.alarm_canary = a.alarm_canary;
        o
    };
    if a.single {
        let options = make(a.seeds.start);
        println!("{}", options.describe());
        let (result, trace) = replay_trace(&options, if a.trace { usize::MAX } else { 200 });
        match result {
            Ok(stats) => {
                if a.trace {
                    trace.iter().for_each(|l| println!("{l}"));
                }
                println!("ok: {stats:?}");
                ExitCode::SUCCESS
            }
            Err(v) => {
                trace.iter().for_each(|l| println!("{l}"));
                println!("FAILED seed {}: {v}", options.seed);
                ExitCode::FAILURE
            }
        }
    } else {
        let started = Instant::now();
        println!(
            "ferrite-sim: seeds {}..{} steps {} voters {} threads {} canary {}",
            a.seeds.start,
            a.seeds.end,
            a.steps,
            if a.voters == 0 {
                "3|5".to_string()
            } else {
                a.voters.to_string()
            },
            a.threads,
            if a.alarm_canary != AlarmCanary::None {
                a.alarm_canary.name()
            } else if a.watch_canary != WatchCanary::None {
                a.watch_canary.name()
            } else {
                a.canary.name()
            }
        );
        std::panic::set_hook(Box::new(|_| {}));
        let summary = run_seeds(a.seeds.clone(), a.threads, false, &make);
        let _ = std::panic::take_hook();
        for f in summary.failures.iter().take(5) {
            println!("FAILED seed {}: {}", f.options.seed, f.violation);
            println!("  {}", f.options.describe());
            let (_, trace) = replay_trace(&f.options, 40);
            trace.iter().for_each(|l| println!("  | {l}"));
            let mut flags = voters_flag(a.voters);
            if a.storm {
                flags.push_str(" --storm");
            }
            if a.canary != Canary::None {
                flags.push_str(&format!(" --canary {}", a.canary.name()));
            }
            if a.watch_canary != WatchCanary::None {
                flags.push_str(&format!(" --canary {}", a.watch_canary.name()));
            }
            if a.alarm_canary != AlarmCanary::None {
                flags.push_str(&format!(" --canary {}", a.alarm_canary.name()));
            }
            println!(
                "  replay: ferrite-sim --seed {} --steps {}{flags}",
                f.options.seed, a.steps,
            );
        }
        println!(
            "{} elapsed={:.1}s",
            summary.line(),
            started.elapsed().as_secs_f64()
        );
        if summary.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn voters_flag(voters: usize) -> String {
    if voters == 0 {
        String::new()
    } else {
        format!(" --voters {voters}")
    }
}
