//! `ferrite-wal`: look inside, check, and measure a Ferrite data directory.
//!
//! ```text
//! ferrite-wal inspect DIR                 every segment record and snapshot file
//! ferrite-wal verify DIR                  read-only recovery; exit 0 ok, 1 corrupt
//! ferrite-wal bench DIR [--seconds S]     group commit vs the raw fdatasync rate
//! ```

use std::process::ExitCode;

use ferrite_wal::{bench, inspect, FileDisk};

const USAGE: &str = "usage:
  ferrite-wal inspect DIR               print every segment record and snapshot file
  ferrite-wal verify DIR                recover read-only and check every checksum
                                        (exit 0: ok, 1: corrupt or unreadable)
  ferrite-wal bench DIR [--seconds S]   measure group commit against the disk's raw
                                        fdatasync rate (S seconds per row, default 1)";

fn usage(problem: &str) -> ExitCode {
    eprintln!("ferrite-wal: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["inspect", dir] => match inspect::inspect(&FileDisk::new(), dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrite-wal: {e}");
                ExitCode::from(1)
            }
        },
        ["verify", dir] => match inspect::verify(&mut FileDisk::new(), dir) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrite-wal: verify failed: {e}");
                ExitCode::from(1)
            }
        },
        ["bench", dir, rest @ ..] => {
            let seconds = match rest {
                [] => 1.0,
                ["--seconds", s] => match s.parse::<f64>() {
                    Ok(v) if v > 0.0 && v.is_finite() => v,
                    _ => return usage(&format!("--seconds wants a positive number, not {s:?}")),
                },
                _ => return usage(&format!("unexpected arguments {rest:?}")),
            };
            match bench::run(dir, seconds, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrite-wal: bench failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        [] => usage("missing command"),
        [command, ..] => usage(&format!("bad arguments for {command:?}")),
    }
}
