//! `ferrite bench`: Ferrite against etcd on the same machine, in the same
//! run, through the same etcd v3 API (Ferrite's protos, compiled without
//! protoc, are etcd's). Figures are ratios: these machines are shared.

mod cluster;
mod failover;
mod kv;
mod lease;
mod load;
mod report;
mod scale;
mod soak;
mod volumes;
mod watch;
mod watch_lease;

use std::path::PathBuf;

use anyhow::Context as _;

use cluster::{Cluster, System};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchOp {
    /// Throughput, latency, CPU and memory of a 3-member Ferrite and a
    /// 3-member etcd cluster under the same etcd v3 load, side by side:
    /// clients spread over all members (the default table), all on the
    /// leader, and what forwarding from a follower costs.
    Etcd {
        /// Seconds per workload.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Only Ferrite (no etcd needed).
        #[arg(long)]
        ferrite_only: bool,
        /// Only the rows with this many clients (e.g. 256 while profiling).
        #[arg(long)]
        clients: Option<usize>,
        /// Also write a small HTML report with charts here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// etcd's Watch and Lease services on a 3-member Ferrite and a
    /// 3-member etcd under the same load, side by side: events per second
    /// to 1, 100 and 1,000 watchers (each checked to get every event once),
    /// put-to-event latency, keepalives per second, and member memory with
    /// many watchers and many leases.
    Watch {
        /// Seconds per load.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Only Ferrite (no etcd needed).
        #[arg(long)]
        ferrite_only: bool,
        /// Idle watchers open while memory is sampled.
        #[arg(long, default_value_t = 10_000)]
        watchers: usize,
        /// Leases granted (memory is sampled, then they are kept alive).
        #[arg(long, default_value_t = 100_000)]
        leases: usize,
        /// Also write a small HTML report with charts here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// A long put load on a 3-member Ferrite cluster, sampling each member's
    /// resident memory every 30 s: it should stay flat.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        #[arg(long, default_value_t = 1024)]
        clients: usize,
    },
    /// Kill -9 the leader of a 3-member Ferrite and a 3-member etcd cluster
    /// repeatedly; time until a new leader and until the next write.
    Failover {
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Only Ferrite (no etcd needed).
        #[arg(long)]
        ferrite_only: bool,
        /// Where the clusters keep data and logs (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Block volumes over NBD: fio against a 3-member Ferrite, attached to
    /// the leader and to a follower, and against unreplicated `qemu-nbd
    /// --cache=none` on a local file, in the same run; then the QD1
    /// latency of a write, a write with FUA and a write followed by a
    /// flush. Needs fio, qemu-utils, libnbd-bin and python3-libnbd.
    Volumes {
        /// Seconds per fio workload.
        #[arg(long, default_value_t = 10)]
        runtime: u64,
        /// The size of each export (e.g. 1GiB, 256MiB).
        #[arg(long, value_parser = crate::volume::parse_size, default_value = "1GiB")]
        size: u64,
        /// Also write a small HTML report with charts here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Loads N keys of V bytes into a 3-member Ferrite and a 3-member etcd
    /// (8 GiB quota each); reports the load rate, every member's memory
    /// and disk use, and how long a follower killed with -9 takes to serve
    /// again.
    Scale {
        /// Distinct keys to load.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        /// Concurrent clients, each round-robin over all members.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Only Ferrite (no etcd needed).
        #[arg(long)]
        ferrite_only: bool,
        /// Also write a small HTML report with charts here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

/// Where the clusters keep data and logs: `given`, or a new temporary
/// directory (removed by the caller when done).
fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = given.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ferrite-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// A new directory for data that must be on a real disk (fsync and
/// O_DIRECT costs are measured): under the temporary directory unless that
/// is a tmpfs, else under `./target`.
fn disk_dir() -> anyhow::Result<PathBuf> {
    let tmp = std::env::temp_dir();
    let base = if is_tmpfs(&tmp) {
        std::env::current_dir()
            .context("find the current directory")?
            .join("target")
    } else {
        tmp
    };
    data_dir(Some(
        base.join(format!("ferrite-bench-{}", std::process::id())),
    ))
}

fn is_tmpfs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass; `c` is a valid
    // NUL-terminated path.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    rc == 0 && s.f_type == libc::TMPFS_MAGIC
}

pub async fn run(op: BenchOp) -> anyhow::Result<()> {
    match op {
        BenchOp::Volumes {
            runtime,
            size,
            report,
        } => {
            let dir = disk_dir()?;
            let result = volumes::run(
                volumes::Options {
                    runtime,
                    size,
                    report,
                },
                &dir,
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        BenchOp::Scale {
            keys,
            value_bytes,
            clients,
            ferrite_only,
            report,
        } => {
            let dir = disk_dir()?;
            let result = scale::run(
                scale::Options {
                    keys,
                    value_bytes,
                    clients,
                    ferrite_only,
                    report,
                },
                &dir,
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        BenchOp::Etcd {
            seconds,
            ferrite_only,
            clients: only,
            report,
        } => {
            let dir = data_dir(None)?;
            let result = kv::run(
                kv::Options {
                    seconds,
                    ferrite_only,
                    clients: only,
                    report,
                },
                &dir,
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        BenchOp::Watch {
            seconds,
            ferrite_only,
            watchers,
            leases,
            report,
        } => {
            watch_lease::run(watch_lease::Options {
                seconds,
                ferrite_only,
                watchers,
                leases,
                report,
            })
            .await
        }
        BenchOp::Soak { minutes, clients } => {
            let dir = data_dir(None)?;
            let mut c = Cluster::start(System::Ferrite, 3, &dir).await?;
            let result = soak::run(&c, clients, std::time::Duration::from_secs(minutes * 60)).await;
            c.stop().await;
            let _ = std::fs::remove_dir_all(&dir);
            let s = result?;
            let r = &s.result;
            println!(
                "soak: {clients} clients, {minutes} min: {:.0} puts/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
                r.ops as f64 / r.seconds,
                r.p50_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.errors
            );
            match soak::halves(&s.samples) {
                Some((first, second)) => println!(
                    "largest member RSS after the first minute: first half {first:.1} MB, second half {second:.1} MB (growth {:+.1}%)",
                    (second / first.max(1e-9) - 1.0) * 100.0
                ),
                None => println!("too short to compare halves (run at least 2 minutes)"),
            }
            Ok(())
        }
        BenchOp::Failover {
            reps,
            ferrite_only,
            data_dir,
        } => {
            let temporary = data_dir.is_none();
            let dir = self::data_dir(data_dir)?;
            let mut systems = vec![System::Ferrite];
            if !ferrite_only {
                systems.push(System::Etcd);
            }
            let mut rows = Vec::new();
            for system in systems {
                let mut c = Cluster::start(system, 3, &dir).await?;
                let result = failover::measure(&mut c, reps).await;
                c.stop().await;
                let times = result?;
                rows.push((
                    system,
                    failover::summary(&times.leader),
                    failover::summary(&times.write),
                ));
            }
            println!();
            println!(
                "failover after kill -9 of the leader, {reps} times each, default timeouts (ms)"
            );
            println!(
                "{:<8} {:>14} {:>12} {:>16} {:>14}",
                "system", "leader median", "leader p99", "write median", "write p99"
            );
            for (system, (lm, lp), (wm, wp)) in &rows {
                println!("{:<8} {lm:>14} {lp:>12} {wm:>16} {wp:>14}", system.name());
            }
            if let [(_, _, (fw, _)), (_, _, (ew, _))] = rows.as_slice() {
                println!(
                    "ferrite/etcd write-unavailability median ratio: {:.2}",
                    *fw as f64 / (*ew).max(1) as f64
                );
            }
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Ok(())
        }
    }
}
