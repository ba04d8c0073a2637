//! Failover as a client sees it: kill -9 the leader of a 3-member cluster
//! and measure the time until a new leader exists and until the next write
//! succeeds (the client retries every member with 250 ms attempts), many
//! times, for Ferrite and for etcd, with each one's default timeouts.

use std::time::{Duration, Instant};

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use ferrite_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

use super::cluster::{channel, Cluster};

const ATTEMPT: Duration = Duration::from_millis(250);

pub struct Times {
    pub leader: Vec<Duration>,
    pub write: Vec<Duration>,
}

async fn put(ch: Channel, n: u64) -> bool {
    let req = pb::PutRequest {
        key: b"failover".to_vec(),
        value: n.to_string().into_bytes(),
        ..Default::default()
    };
    matches!(
        tokio::time::timeout(ATTEMPT, KvClient::new(ch).put(req)).await,
        Ok(Ok(_))
    )
}

/// Runs `reps` kills of the leader; returns the measured times.
pub async fn measure(c: &mut Cluster, reps: usize) -> anyhow::Result<Times> {
    let mut times = Times {
        leader: Vec::new(),
        write: Vec::new(),
    };
    let n = c.members.len();
    for rep in 0..reps {
        let (old, old_id) = c
            .leader(Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader before kill {rep}"))?;
        let survivors: Vec<usize> = (0..n).filter(|&i| i != old).collect();
        let mut channels = Vec::new();
        for &i in &survivors {
            let ch = channel(&c.endpoint(i), Duration::from_secs(2))
                .await
                .ok_or_else(|| anyhow::anyhow!("cannot reach {}", c.members[i].name))?;
            channels.push((i, ch));
        }
        // The cluster takes writes before the kill.
        let mut ok = false;
        for _ in 0..40 {
            if put(channels[0].1.clone(), 0).await {
                ok = true;
                break;
            }
        }
        if !ok {
            anyhow::bail!("the cluster takes no writes before kill {rep}");
        }
        c.kill(old).await;
        let t0 = Instant::now();
        let leader_seen = {
            let statuses = channels.clone();
            tokio::spawn(async move {
                loop {
                    for (_, ch) in &statuses {
                        let mut client = MaintenanceClient::new(ch.clone());
                        let ask = client.status(pb::StatusRequest {});
                        if let Ok(Ok(s)) = tokio::time::timeout(ATTEMPT, ask).await {
                            let s = s.into_inner();
                            if s.leader != 0 && s.leader != old_id {
                                return t0.elapsed();
                            }
                        }
                    }
                    if t0.elapsed() > Duration::from_secs(60) {
                        return t0.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let mut k = 0usize;
        let write = loop {
            let (_, ch) = &channels[k % channels.len()];
            k += 1;
            if put(ch.clone(), k as u64).await {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("no write succeeded within 60 s of kill {rep}");
            }
        };
        let leader = leader_seen.await.unwrap_or(Duration::from_secs(60));
        println!(
            "  {} kill {:>2}: {} killed; new leader after {:>5} ms, next write after {:>5} ms",
            c.system.name(),
            rep + 1,
            c.members[old].name,
            leader.as_millis(),
            write.as_millis()
        );
        times.leader.push(leader);
        times.write.push(write);
        c.spawn(old)?;
        // Let it rejoin before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..100 {
            if c.status(old, Duration::from_millis(500))
                .await
                .is_some_and(|s| s.leader != 0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(times)
}

/// Median and p99 (nearest rank) of some durations, in milliseconds.
pub fn summary(d: &[Duration]) -> (u128, u128) {
    let mut v: Vec<u128> = d.iter().map(Duration::as_millis).collect();
    v.sort_unstable();
    if v.is_empty() {
        return (0, 0);
    }
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99))
}
