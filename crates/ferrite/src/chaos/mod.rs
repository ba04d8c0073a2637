//! `ferrite chaos`: fault injection on a real cluster. Starts 5 `ferrite
//! server` processes on loopback, runs concurrent clients through the etcd
//! API and Ferrite's own, and block clients over NBD (`blocks.rs`), attacks the cluster as a data centre would
//! (`nemesis.rs`), then heals it, reads every key once more and checks the
//! whole history for linearizability with the simulator's checker
//! (`ferrite-checker`) — which is also how a lost acknowledged write shows.
//! With `--auth`, etcd auth is on and permissions change under the
//! watchers (`permissions.rs`, which states the rule checked).
//! The seed picks the faults and the operations (the timing of real
//! processes is not reproducible; the seed makes runs comparable, not
//! identical).

mod blocks;
mod cluster;
mod coordination;
mod nbd_client;
mod nemesis;
mod permissions;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ferrite_checker::linearizable;

use cluster::Cluster;
use workload::{kv_key, Recorder};

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long to attack: e.g. 30s, 10m, 1h.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Picks the faults and the operations (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Members: 3 or 5.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    pub clients: u64,
    /// KV keys (and as many registers, and volume blocks) the clients share;
    /// one block client per block.
    #[arg(long, default_value_t = 3)]
    pub keys: u64,
    /// Fault kinds, comma-separated (default all): kill, kill-leader, pause,
    /// isolate-leader, partition, bridge, one-way, slow-disk.
    #[arg(long)]
    pub faults: Option<String>,
    /// Where the members keep data and logs (default: a new temporary
    /// directory, removed after a clean run).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Turn etcd auth on: the clients run as `root`, the watchers as a
    /// limited user whose read permission is revoked and granted back a
    /// few times a minute (no block clients: NBD carries no credentials).
    #[arg(long)]
    pub auth: bool,
}

/// A small seeded generator (xorshift64*): the nemesis and the clients draw
/// from it.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 10m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => return Err(format!("unknown unit {other:?} in {text:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    if args.nodes != 3 && args.nodes != 5 {
        bail!("--nodes {}: 3 or 5", args.nodes);
    }
    if args.keys == 0 || args.clients == 0 {
        bail!("--keys and --clients must be at least 1");
    }
    let kinds: Vec<&str> = match &args.faults {
        None => nemesis::KINDS.to_vec(),
        Some(list) => {
            let mut kinds = Vec::new();
            for k in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                match nemesis::KINDS.iter().find(|known| **known == k) {
                    Some(known) => kinds.push(*known),
                    None => bail!("unknown fault {k:?}; one of {}", nemesis::KINDS.join(", ")),
                }
            }
            if kinds.is_empty() {
                bail!("--faults is empty");
            }
            kinds
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let (dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("ferrite-chaos-{seed}-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    println!(
        "chaos: seed {seed}, {} members, {} clients, {} keys, {:?}, faults {}{}; data and logs in {}",
        args.nodes,
        args.clients,
        args.keys,
        args.duration,
        kinds.join(","),
        if args.auth { ", auth" } else { "" },
        dir.display()
    );
    let mut c = Cluster::start(args.nodes, &dir)?;
    let outcome = attack(&mut c, &args, seed, &kinds).await;
    c.stop().await;
    let clean = match outcome {
        Ok(clean) => clean,
        Err(e) => {
            println!("chaos: the run failed: {e:#}; logs in {}", dir.display());
            return Ok(false);
        }
    };
    if clean && temporary {
        let _ = std::fs::remove_dir_all(&dir);
    } else if !clean {
        println!("chaos: logs kept in {}", dir.display());
    }
    Ok(clean)
}

async fn attack(
    c: &mut Cluster,
    args: &ChaosArgs,
    seed: u64,
    kinds: &[&str],
) -> anyhow::Result<bool> {
    if c.wait_for_leader(Duration::from_secs(30)).await.is_none() {
        bail!("no leader within 30 s of starting");
    }
    // Every KV key starts at "0", the model's initial value.
    let mut setup = ferrite_client::Client::new(c.endpoints())?;
    let mut watch_from = 0;
    for k in 0..args.keys {
        watch_from = setup.put(&kv_key(k), b"0").await? + 1;
    }
    if args.auth {
        permissions::setup(&mut setup).await?;
    } else {
        setup
            .volume_create(blocks::VOLUME, args.keys * blocks::BLOCK)
            .await?;
    }
    let options = if args.auth {
        permissions::root_options()
    } else {
        ferrite_client::ClientOptions::default()
    };
    let root = args.auth.then(permissions::root);
    let nbd: Vec<std::net::SocketAddr> = c.nodes.iter().map(|n| n.addrs.nbd).collect();
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        history: Default::default(),
    });
    let until = Instant::now() + args.duration;
    let mut clients = Vec::new();
    for id in 1..=args.clients {
        clients.push(tokio::spawn(workload::client(
            id,
            c.endpoints(),
            args.keys,
            seed ^ (id << 32),
            until,
            rec.clone(),
            options.clone(),
        )));
    }
    // A watcher per key, and two lease holders.
    let (stop_watchers, watch_target) = tokio::sync::watch::channel(None);
    let mut watchers = Vec::new();
    for k in 0..args.keys {
        let log = Arc::new(tokio::sync::Mutex::new(coordination::WatchLog::default()));
        watchers.push((
            k,
            log.clone(),
            tokio::spawn(coordination::watcher(
                kv_key(k),
                c.endpoints(),
                watch_from,
                watch_target.clone(),
                log,
                args.auth.then(permissions::watcher),
            )),
        ));
    }
    let leases = Arc::new(tokio::sync::Mutex::new(coordination::LeaseLog::default()));
    for h in 0..2u64 {
        clients.push(tokio::spawn(coordination::lease_holder(
            h,
            c.endpoints(),
            seed ^ ((h + 2000) << 32),
            until,
            leases.clone(),
            root.clone(),
        )));
    }
    let churn = args.auth.then(|| {
        tokio::spawn(permissions::churn(
            c.endpoints(),
            seed ^ (3000 << 32),
            rec.start,
            until,
        ))
    });
    let block_clients = if args.auth { 0 } else { args.keys };
    for block in 0..block_clients {
        clients.push(tokio::spawn(blocks::client(
            block,
            args.keys,
            nbd.clone(),
            seed ^ ((block + 1000) << 32),
            until,
            rec.clone(),
        )));
    }
    let mut rng = Rng::new(seed);
    let mut damage = nemesis::Damage::default();
    let mut struck: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < until {
        let (hold, calm) = nemesis::durations(&mut rng);
        let what = nemesis::strike(c, &mut rng, kinds, &mut damage).await;
        let kind = what
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches(':');
        *struck.entry(kind.to_string()).or_default() += 1;
        println!("chaos: {:>6.1}s  {what}", rec.start.elapsed().as_secs_f64());
        tokio::time::sleep(hold.min(until.saturating_duration_since(Instant::now()))).await;
        nemesis::heal(c, &mut damage).await?;
        tokio::time::sleep(calm.min(until.saturating_duration_since(Instant::now()))).await;
    }
    for _ in 0..10 {
        nemesis::heal(c, &mut damage).await?;
        if c.wait_for_leader(Duration::from_secs(3)).await.is_some() {
            break;
        }
    }
    for client in clients {
        let _ = client.await;
    }
    let permission_log = match churn {
        Some(task) => Some(task.await.context("the permission churner")??),
        None => None,
    };
    c.wait_for_leader(Duration::from_secs(30))
        .await
        .context("no leader after healing")?;
    let healed = Instant::now();
    workload::final_reads(0, c.endpoints(), args.keys, &rec, options.clone()).await?;
    if !args.auth {
        blocks::final_reads(args.keys, nbd, &rec).await?;
    }
    let coordination_ok = check_coordination(
        c,
        watchers,
        stop_watchers,
        watch_from,
        &leases,
        healed,
        (options, permission_log.as_ref()),
    )
    .await?;

    let history = std::mem::take(&mut *rec.history.lock().await);
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for op in &history.ops {
        let block = op.key >= blocks::BLOCK_BASE;
        let name = match op.op {
            linearizable::Op::Get if block => "block-read",
            linearizable::Op::Put(_) if block => "block-write",
            linearizable::Op::Get => "get",
            linearizable::Op::Put(_) => "put",
            linearizable::Op::Cas { .. } => "cas",
            linearizable::Op::Add(_) => "add",
        };
        *by_kind.entry(name).or_default() += 1;
    }
    let faults: Vec<String> = struck.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let ops: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!(
        "chaos: operations={} ({}) unknown_outcome={} failed_reads={} faults={} ({})",
        history.ops.len(),
        ops.join(" "),
        history.unknown,
        history.failed_reads,
        struck.values().sum::<u64>(),
        faults.join(" ")
    );
    match linearizable::check(&history.ops) {
        Ok(stats) => {
            println!(
                "chaos: linearizable: yes ({} keys, {} states explored); violations=0 lost_writes=0",
                stats.keys, stats.states_explored
            );
            Ok(coordination_ok)
        }
        Err(v) => {
            println!("chaos: violations=1: {v}");
            Ok(false)
        }
    }
}

type Watchers = Vec<(
    u64,
    Arc<tokio::sync::Mutex<coordination::WatchLog>>,
    tokio::task::JoinHandle<()>,
)>;

/// Lets the watchers catch up to the final revision, reads the reference
/// history, and checks the watchers and the lease holders against it.
async fn check_coordination(
    c: &Cluster,
    watchers: Watchers,
    stop: tokio::sync::watch::Sender<Option<i64>>,
    watch_from: i64,
    leases: &tokio::sync::Mutex<coordination::LeaseLog>,
    healed: Instant,
    (options, permission_log): (
        ferrite_client::ClientOptions,
        Option<&permissions::PermissionLog>,
    ),
) -> anyhow::Result<bool> {
    let endpoint = c.endpoints()[c.leader().await.unwrap_or(0)].clone();
    let root = options.credentials.clone();
    let mut setup = ferrite_client::Client::with_options(vec![endpoint.clone()], options)?;
    let final_revision = setup.put(b"chaos/end", b"1").await?;
    let _ = stop.send(Some(final_revision));
    let reference = coordination::reference(
        &endpoint,
        permissions::WATCH_PREFIX,
        watch_from,
        final_revision,
        root.as_ref(),
    )
    .await?;
    let mut problems = Vec::new();
    let (mut events, mut resumes) = (0, 0);
    let (mut permission_cancels, mut refusals, mut judged) = (0, 0, 0);
    for (k, log, task) in watchers {
        if tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .is_err()
        {
            problems.push(format!(
                "watcher of key {k} did not reach revision {final_revision} within 30 s of healing"
            ));
        }
        let log = log.lock().await;
        events += log.events.len();
        resumes += log.resumes;
        let key = kv_key(k);
        let want = reference.get(&key).map_or(&[][..], Vec::as_slice);
        if let Some(p) = coordination::check_watcher(&key, &log, want, watch_from) {
            problems.push(p);
        }
        permission_cancels += log.permission_cancels;
        refusals += log.permission_refusals;
        if let Some(perms) = permission_log {
            let (n, leaks) =
                permissions::check(&String::from_utf8_lossy(&key), &log, &perms.revokes);
            judged += n;
            problems.extend(leaks);
        }
        if let Some(reason) = &log.canceled {
            println!("chaos: watcher of key {k} was canceled: {reason}");
        }
    }
    let leases = leases.lock().await;
    problems.extend(coordination::check_leases_kept(&leases));
    problems.extend(
        coordination::check_leases_lapsed(&endpoint, &leases, healed, root.as_ref()).await?,
    );
    if let Some(perms) = permission_log {
        let unbounded = perms.revokes.iter().filter(|r| r.bound.is_none()).count();
        println!(
            "chaos: auth: permission_changes={} (revoked {}, granted back {}) unbounded_revokes={unbounded} watches_canceled_for_permission={permission_cancels} creates_refused={refusals} leak_checks={judged}",
            perms.revokes.len() as u64 + perms.grants,
            perms.revokes.len(),
            perms.grants,
        );
    }
    let lapsed = leases.leases.iter().filter(|l| l.lapsed).count();
    println!(
        "chaos: watchers={} events={events} resumes={resumes}; leases={} (lapsed {lapsed}, revoked {}) keepalives={} lease_reads={}; coordination violations={}",
        reference.len().max(1),
        leases.leases.len(),
        leases.leases.len() - lapsed,
        leases.keepalives,
        leases.reads.len(),
        problems.len()
    );
    for p in &problems {
        println!("chaos: violation: {p}");
    }
    Ok(problems.is_empty())
}
