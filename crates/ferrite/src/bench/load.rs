//! The load generator: many concurrent clients over the etcd v3 API,
//! putting 256-byte values, reading linearizably, or both; latencies of
//! every request, and the CPU the members used, read from /proc.
//!
//! Clients are placed as etcd's own client places them: with several
//! endpoints, each client sends its successive requests round-robin over
//! all of them (clientv3's gRPC round-robin balancer), so that most
//! requests reach followers and are forwarded; with one endpoint, all go
//! there. Every member gets one HTTP/2 connection per 32 clients, as etcd's
//! benchmark tool opens them.

use std::time::{Duration, Instant};

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

use super::cluster::channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Put,
    Get,
    Half,
}

pub struct Result {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU seconds (user + system) the members used meanwhile.
    pub cpu_seconds: f64,
    /// The largest member's resident memory (MB), sampled every second
    /// while the load ran: the mean and the peak of those samples.
    pub rss_mean_mb: f64,
    pub rss_max_mb: f64,
}

const KEYS: u64 = 1000;
/// Clients sharing one HTTP/2 connection, as etcd's benchmark tool does.
pub const CLIENTS_PER_CONNECTION: usize = 32;

/// CPU seconds used so far by these processes.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// Resident memory of a process in MB.
pub fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// The part of a process's resident memory that is pages of mapped files
/// (the kernel may drop them at will; a snapshot map is counted here).
pub fn rss_file_mb(pid: u32) -> f64 {
    status_mb(pid, "RssFile:")
}

/// A `/proc/PID/status` figure given in kB, in MB (0 if unreadable).
fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `q` quantile (nearest rank) of sorted samples; 0 if there are none.
pub fn percentile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    u64::from(sorted[i])
}

async fn one(client: &mut KvClient<Channel>, put: bool, key: u64, value: &[u8]) -> bool {
    let key = format!("bench/{key:04}").into_bytes();
    if put {
        let req = pb::PutRequest {
            key,
            value: value.to_vec(),
            ..Default::default()
        };
        client.put(req).await.is_ok()
    } else {
        let req = pb::RangeRequest {
            key,
            ..Default::default()
        };
        client.range(req).await.is_ok()
    }
}

/// `per_member` connections to each endpoint: `[m][j]` is connection `j`
/// to member `m`.
pub async fn connections(
    endpoints: &[String],
    per_member: usize,
) -> anyhow::Result<Vec<Vec<Channel>>> {
    let mut channels = Vec::new();
    for endpoint in endpoints {
        let mut to_member = Vec::new();
        for _ in 0..per_member {
            to_member.push(
                channel(endpoint, Duration::from_secs(2))
                    .await
                    .ok_or_else(|| anyhow::anyhow!("cannot connect to {endpoint}"))?,
            );
        }
        channels.push(to_member);
    }
    Ok(channels)
}

pub async fn run(
    endpoints: &[String],
    pids: &[u32],
    mix: Mix,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Result> {
    anyhow::ensure!(!endpoints.is_empty(), "no endpoint to load");
    let per_member = clients.div_ceil(CLIENTS_PER_CONNECTION).max(1);
    let channels = connections(endpoints, per_member).await?;
    let cpu_before = cpu_seconds(pids);
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        // This client's connection to each member, used in turn.
        let mut members: Vec<KvClient<Channel>> = channels
            .iter()
            .map(|to_member| KvClient::new(to_member[i % per_member].clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; 256];
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = i as u64;
            let mut turn = i;
            while Instant::now() < until {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let put = match mix {
                    Mix::Put => true,
                    Mix::Get => false,
                    Mix::Half => n >> 63 == 1,
                };
                let at = turn % members.len();
                let client = &mut members[at];
                turn = turn.wrapping_add(1);
                let t = Instant::now();
                if one(client, put, (n >> 20) % KEYS, &value).await {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() + Duration::from_secs(1) < until {
        tick.tick().await;
        rss.push(pids.iter().map(|p| rss_mb(*p)).fold(0.0, f64::max));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds(pids) - cpu_before;
    all.sort_unstable();
    let pct = |q: f64| percentile(&all, q);
    Ok(Result {
        ops: all.len() as u64,
        errors,
        seconds,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        cpu_seconds,
        rss_mean_mb: rss.iter().sum::<f64>() / (rss.len().max(1) as f64),
        rss_max_mb: rss.iter().copied().fold(0.0, f64::max),
    })
}
