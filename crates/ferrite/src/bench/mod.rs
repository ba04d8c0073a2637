//! `ferrite bench`: Ferrite against etcd on the same machine, in the same
//! run, through the same etcd v3 API (Ferrite's protos, compiled without
//! protoc, are etcd's). Figures are ratios: these machines are shared.

mod cluster;
mod failover;

use std::path::PathBuf;

use anyhow::Context as _;

use cluster::{Cluster, System};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchOp {
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

pub async fn run(op: BenchOp) -> anyhow::Result<()> {
    match op {
        BenchOp::Failover {
            reps,
            ferrite_only,
            data_dir,
        } => {
            let temporary = data_dir.is_none();
            let dir = data_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("ferrite-bench-{}", std::process::id()))
            });
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
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
