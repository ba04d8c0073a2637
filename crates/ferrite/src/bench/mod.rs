//! `ferrite bench`: Ferrite against etcd on the same machine, in the same
//! run, through the same etcd v3 API (Ferrite's protos, compiled without
//! protoc, are etcd's). Figures are ratios: these machines are shared.

mod cluster;
mod failover;
mod lease;
mod load;
mod report;
mod soak;
mod watch;
mod watch_lease;

use std::path::PathBuf;

use anyhow::Context as _;

use cluster::{Cluster, System};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchOp {
    /// Throughput, latency, CPU and memory of a 3-member Ferrite and a
    /// 3-member etcd cluster under the same etcd v3 load, side by side.
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
}

/// The workloads of `ferrite bench etcd`, in order.
const WORKLOADS: [(&str, load::Mix, usize); 7] = [
    ("put", load::Mix::Put, 1),
    ("put", load::Mix::Put, 64),
    ("put", load::Mix::Put, 256),
    ("put", load::Mix::Put, 1024),
    ("get (linearizable)", load::Mix::Get, 1),
    ("get (linearizable)", load::Mix::Get, 256),
    ("50/50 put/get", load::Mix::Half, 256),
];

struct Row {
    ops_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_op: f64,
    errors: u64,
}

/// The workloads to run: all, or those with `clients` clients.
fn workloads(clients: Option<usize>) -> Vec<(&'static str, load::Mix, usize)> {
    WORKLOADS
        .into_iter()
        .filter(|w| clients.is_none_or(|c| c == w.2))
        .collect()
}

async fn throughput(
    system: System,
    seconds: u64,
    only: Option<usize>,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<Row>, (f64, f64))> {
    let mut c = Cluster::start(system, 3, dir).await?;
    let result = async {
        let (leader, _) = c
            .leader(std::time::Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("{}: no leader", system.name()))?;
        let pids: Vec<u32> = (0..3).filter_map(|i| c.pid(i)).collect();
        let endpoint = c.endpoint(leader);
        let mut rows = Vec::new();
        let mut rss = (0.0f64, 0.0f64);
        for (_, mix, clients) in workloads(only) {
            let r = load::run(
                &endpoint,
                &pids,
                mix,
                clients,
                std::time::Duration::from_secs(seconds),
            )
            .await?;
            if mix == load::Mix::Put && clients == 256 {
                rss = (r.rss_mean_mb, r.rss_max_mb);
            }
            rows.push(Row {
                ops_per_s: r.ops as f64 / r.seconds,
                p50_us: r.p50_us,
                p99_us: r.p99_us,
                cpu_us_per_op: r.cpu_seconds * 1e6 / (r.ops.max(1) as f64),
                errors: r.errors,
            });
        }
        Ok::<_, anyhow::Error>((rows, rss))
    }
    .await;
    c.stop().await;
    result
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

pub async fn run(op: BenchOp) -> anyhow::Result<()> {
    match op {
        BenchOp::Etcd {
            seconds,
            ferrite_only,
            clients: only,
        } => {
            let dir = data_dir(None)?;
            let (f, f_rss) = throughput(System::Ferrite, seconds, only, &dir).await?;
            let etcd = if ferrite_only {
                None
            } else {
                Some(throughput(System::Etcd, seconds, only, &dir).await?)
            };
            let _ = std::fs::remove_dir_all(&dir);
            println!();
            println!("3 members each, durable writes, 256-byte values, all clients on the leader, {seconds} s per row");
            println!(
                "{:<20} {:>7} | {:>9} {:>7} {:>7} {:>7} | {:>9} {:>7} {:>7} {:>7} | {:>7} {:>7}",
                "workload",
                "clients",
                "F ops/s",
                "F p50",
                "F p99",
                "F cpu",
                "E ops/s",
                "E p50",
                "E p99",
                "E cpu",
                "ops F/E",
                "p99 F/E"
            );
            for (i, (name, _, clients)) in workloads(only).iter().enumerate() {
                let fr = &f[i];
                let (e_cols, ratio, p99_ratio) = match &etcd {
                    Some((e, _)) => {
                        let er = &e[i];
                        (
                            format!(
                                "{:>9.0} {:>7.2} {:>7.2} {:>7.0}",
                                er.ops_per_s,
                                er.p50_us as f64 / 1000.0,
                                er.p99_us as f64 / 1000.0,
                                er.cpu_us_per_op
                            ),
                            format!("{:.2}", fr.ops_per_s / er.ops_per_s.max(1e-9)),
                            format!("{:.2}", fr.p99_us as f64 / (er.p99_us.max(1) as f64)),
                        )
                    }
                    None => (format!("{:>33}", "-"), "-".into(), "-".into()),
                };
                println!(
                    "{:<20} {:>7} | {:>9.0} {:>7.2} {:>7.2} {:>7.0} | {} | {:>7} {:>7}",
                    name,
                    clients,
                    fr.ops_per_s,
                    fr.p50_us as f64 / 1000.0,
                    fr.p99_us as f64 / 1000.0,
                    fr.cpu_us_per_op,
                    e_cols,
                    ratio,
                    p99_ratio
                );
            }
            println!(
                "(p50/p99 in ms; cpu = µs of CPU per operation, all three members, from /proc)"
            );
            let errors: u64 = f.iter().map(|r| r.errors).sum();
            print!(
                "largest member RSS during the 256-client puts, mean/peak of 1 s samples: ferrite {:.0}/{:.0} MB",
                f_rss.0, f_rss.1
            );
            if let Some((e, e_rss)) = &etcd {
                print!(
                    ", etcd {:.0}/{:.0} MB (ratio of means {:.2})",
                    e_rss.0,
                    e_rss.1,
                    f_rss.0 / e_rss.0.max(1e-9)
                );
                let e_errors: u64 = e.iter().map(|r| r.errors).sum();
                println!("; failed requests: ferrite {errors}, etcd {e_errors}");
            } else {
                println!("; failed requests: ferrite {errors}");
            }
            Ok(())
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
