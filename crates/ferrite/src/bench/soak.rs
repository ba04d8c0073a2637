//! `ferrite bench soak`: a long put load on a 3-member Ferrite cluster with
//! every member's resident memory sampled as it runs, to show that it stays
//! flat (every queue bounded, history compacted, snapshots replacing the
//! log) rather than to measure speed.

use std::time::Duration;

use super::cluster::Cluster;
use super::load;

/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

pub struct Soak {
    /// (seconds since start, RSS in MB of each member).
    pub samples: Vec<(u64, Vec<f64>)>,
    pub result: load::Result,
}

pub async fn run(c: &Cluster, clients: usize, duration: Duration) -> anyhow::Result<Soak> {
    c.leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let pids: Vec<u32> = (0..c.members.len()).filter_map(|i| c.pid(i)).collect();
    // Clients round-robin over every member, as real clients are.
    let endpoints: Vec<String> = (0..c.members.len()).map(|i| c.endpoint(i)).collect();
    let load = {
        let pids = pids.clone();
        tokio::spawn(async move {
            load::run(&endpoints, &pids, load::Mix::Put, clients, duration).await
        })
    };
    let started = tokio::time::Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(started + SAMPLE_EVERY, SAMPLE_EVERY);
    while started.elapsed() + Duration::from_secs(1) < duration {
        tick.tick().await;
        let rss: Vec<f64> = pids.iter().map(|p| load::rss_mb(*p)).collect();
        let at = started.elapsed().as_secs();
        println!(
            "soak: {at:>5} s  RSS MB {}",
            rss.iter()
                .map(|r| format!("{r:>6.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        samples.push((at, rss));
    }
    let result = load.await??;
    Ok(Soak { samples, result })
}

/// The largest member RSS in the first and in the second half of the
/// samples after the first minute (warm-up: history and log fill to their
/// bounds).
pub fn halves(samples: &[(u64, Vec<f64>)]) -> Option<(f64, f64)> {
    let warm: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| *at >= 60)
        .map(|(_, rss)| rss.iter().copied().fold(0.0, f64::max))
        .collect();
    if warm.len() < 2 {
        return None;
    }
    let (a, b) = warm.split_at(warm.len() / 2);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Some((max(a), max(b)))
}

#[cfg(test)]
mod tests {
    use super::halves;

    #[test]
    fn halves_ignore_the_warm_up_and_take_the_largest_member() {
        let s = vec![
            (30, vec![10.0, 90.0, 10.0]),
            (60, vec![40.0, 41.0, 39.0]),
            (90, vec![42.0, 40.0, 40.0]),
            (120, vec![40.0, 44.0, 40.0]),
            (150, vec![45.0, 40.0, 40.0]),
        ];
        assert_eq!(halves(&s), Some((42.0, 45.0)));
        assert_eq!(halves(&s[..2]), None);
    }
}
