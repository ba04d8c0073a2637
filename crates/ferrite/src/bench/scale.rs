//! `ferrite bench scale`: what a large data set costs. N distinct keys of
//! V bytes are loaded into a 3-member Ferrite, then into a 3-member etcd
//! (both with an 8 GiB quota, so that the load fits), by clients that send
//! their requests round-robin over all members, as etcd's client balancer
//! does. Then, per member: resident memory right after the load and after
//! 5 s of rest, and the disk its data directory takes; and how long a
//! follower killed with -9 takes to serve again once restarted.
//!
//! The largest member's memory is marked against issue 16's target (no
//! more than etcd's).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

use super::cluster::{channel, Cluster, System};
use super::load::{connections, CLIENTS_PER_CONNECTION};
use super::load::{rss_file_mb, rss_mb};
use super::report::{self, Report};
use super::report::{print_table, Table};

pub struct Options {
    pub keys: u64,
    pub value_bytes: usize,
    pub clients: usize,
    pub ferrite_only: bool,
    pub report: Option<PathBuf>,
}

/// Both systems' space quota: 8 GiB, so that 1 GiB of values and their
/// history fit.
const QUOTA_BYTES: u64 = 8 << 30;
/// Attempts at one put before the load gives up.
const PUT_ATTEMPTS_MAX: u32 = 50;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_secs(5);
const RESTART_WITHIN: Duration = Duration::from_secs(300);

fn key(i: u64) -> Vec<u8> {
    format!("scale/{i:08}").into_bytes()
}

/// Key `i`'s value: its number, repeated to `len` bytes (so that a read
/// can be checked).
fn value(i: u64, len: usize) -> Vec<u8> {
    format!("{i:08}")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// The members in the order the table shows them: the leader, the
/// follower that is killed and restarted, then the others.
const ROLES: [&str; 3] = ["leader", "follower (restarted)", "other follower"];

#[derive(Clone, Debug, Default)]
struct Measured {
    keys_per_s: f64,
    mb_per_s: f64,
    /// Failed put attempts (each retried).
    errors: u64,
    /// Per member, in `ROLES` order.
    rss_loaded_mb: Vec<f64>,
    rss_settled_mb: Vec<f64>,
    /// Of `rss_settled_mb`, pages of mapped files.
    rss_file_settled_mb: Vec<f64>,
    disk_mb: Vec<f64>,
    restart_s: f64,
    rss_restarted_mb: f64,
}

/// Bytes that the files under `dir` take on disk (allocated blocks, so a
/// sparse or preallocated file counts for what it really uses).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match std::fs::symlink_metadata(e.path()) {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Loads keys `0..o.keys`, each client taking the next key and sending its
/// successive puts round-robin over `endpoints`; a line on stderr every
/// few seconds. Returns (seconds, failed attempts).
async fn load(endpoints: &[String], o: &Options, system: &str) -> anyhow::Result<(f64, u64)> {
    let per_member = o.clients.div_ceil(CLIENTS_PER_CONNECTION).max(1);
    let channels = connections(endpoints, per_member).await?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..o.clients.max(1) {
        let mut members: Vec<KvClient<Channel>> = channels
            .iter()
            .map(|to_member| KvClient::new(to_member[c % per_member].clone()))
            .collect();
        let (next, done) = (next.clone(), done.clone());
        let (keys, len) = (o.keys, o.value_bytes);
        tasks.spawn(async move {
            let mut errors = 0u64;
            let mut turn = c;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<u64, anyhow::Error>(errors);
                }
                let req = pb::PutRequest {
                    key: key(i),
                    value: value(i, len),
                    ..Default::default()
                };
                let mut attempts = 0;
                loop {
                    let at = turn % members.len();
                    turn = turn.wrapping_add(1);
                    match members[at].put(req.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            errors += 1;
                            attempts += 1;
                            if attempts >= PUT_ATTEMPTS_MAX {
                                anyhow::bail!("put of key {i} failed {attempts} times: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut errors = 0;
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(e))) => errors += e,
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => anyhow::bail!("a load client failed: {e}"),
            },
            _ = tick.tick() => {
                let n = done.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), n);
                eprintln!(
                    "  {system}: {n}/{} keys loaded, {rate:.0} keys/s",
                    o.keys
                );
            }
        }
    }
    Ok((started.elapsed().as_secs_f64(), errors))
}

/// Whether member `endpoint` answers a linearizable get, and then a
/// serializable get of `key` with `expected`.
async fn serves(endpoint: &str, key: &[u8], expected: &[u8]) -> bool {
    let Some(ch) = channel(endpoint, Duration::from_millis(500)).await else {
        return false;
    };
    let mut kv = KvClient::new(ch);
    let range = |serializable| pb::RangeRequest {
        key: key.to_vec(),
        serializable,
        ..Default::default()
    };
    if kv.range(range(false)).await.is_err() {
        return false;
    }
    kv.range(range(true))
        .await
        .ok()
        .and_then(|r| r.into_inner().kvs.into_iter().next())
        .is_some_and(|kv| kv.value == expected)
}

async fn measure(system: System, o: &Options, dir: &Path) -> anyhow::Result<Measured> {
    let quota = [format!("--quota-backend-bytes={QUOTA_BYTES}")];
    let mut c = Cluster::start_with(system, 3, dir, &quota).await?;
    let result = measure_on(&mut c, o).await;
    c.stop().await;
    result
}

async fn measure_on(c: &mut Cluster, o: &Options) -> anyhow::Result<Measured> {
    let name = c.system.name();
    let (leader, _) = c
        .leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| anyhow::anyhow!("{name}: no leader"))?;
    let n = c.members.len();
    let order: Vec<usize> = (0..n).map(|k| (leader + k) % n).collect();
    let follower = order[1];
    let endpoints: Vec<String> = (0..n).map(|i| c.endpoint(i)).collect();
    eprintln!(
        "  {name}: loading {} keys of {} bytes with {} clients",
        o.keys, o.value_bytes, o.clients
    );
    let (seconds, errors) = load(&endpoints, o, name).await?;
    let rss = |c: &Cluster| -> Vec<f64> {
        order
            .iter()
            .map(|i| c.pid(*i).map_or(0.0, rss_mb))
            .collect()
    };
    let rss_loaded_mb = rss(&*c);
    tokio::time::sleep(SETTLE).await;
    let rss_settled_mb = rss(&*c);
    let rss_file_settled_mb = order
        .iter()
        .map(|i| c.pid(*i).map_or(0.0, rss_file_mb))
        .collect();
    let disk_mb = order
        .iter()
        .map(|i| disk_bytes(&c.data_dir(*i)) as f64 / 1e6)
        .collect();
    let last = o.keys.saturating_sub(1);
    eprintln!(
        "  {name}: kill -9 of follower {}, restart",
        c.members[follower].name
    );
    c.kill(follower).await;
    let started = Instant::now();
    c.spawn(follower)?;
    let endpoint = c.endpoint(follower);
    let expected = value(last, o.value_bytes);
    loop {
        if serves(&endpoint, &key(last), &expected).await {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < RESTART_WITHIN,
            "{name}: the restarted follower did not serve within {RESTART_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_s = started.elapsed().as_secs_f64();
    let rss_restarted_mb = c.pid(follower).map_or(0.0, rss_mb);
    let bytes = o.keys as f64 * o.value_bytes as f64;
    Ok(Measured {
        keys_per_s: o.keys as f64 / seconds.max(1e-9),
        mb_per_s: bytes / 1e6 / seconds.max(1e-9),
        errors,
        rss_loaded_mb,
        rss_settled_mb,
        rss_file_settled_mb,
        disk_mb,
        restart_s,
        rss_restarted_mb,
    })
}

fn largest(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// The side-by-side table: (metric, Ferrite, etcd, F/E, target).
fn table(f: &Measured, e: Option<&Measured>, logical_mb: f64) -> Table {
    let header = ["metric", "ferrite", "etcd", "F/E", "target"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    let mut row = |metric: String, get: &dyn Fn(&Measured) -> f64, digits: usize, target: bool| {
        let fv = get(f);
        let mut r = vec![metric, format!("{fv:.digits$}")];
        match e {
            Some(e) => {
                let ev = get(e);
                let ratio = fv / ev.max(1e-9);
                r.push(format!("{ev:.digits$}"));
                r.push(format!("{ratio:.2}"));
                r.push(if target {
                    format!("{} (<= 1.0x)", if ratio <= 1.0 { "met" } else { "MISSED" })
                } else {
                    "-".into()
                });
            }
            None => r.extend(std::iter::repeat_n("-".to_string(), 3)),
        }
        rows.push(r);
    };
    row("load keys/s".into(), &|m| m.keys_per_s, 0, false);
    row("load MB/s (values)".into(), &|m| m.mb_per_s, 1, false);
    row(
        "failed put attempts (retried)".into(),
        &|m| m.errors as f64,
        0,
        false,
    );
    for (k, role) in ROLES.iter().enumerate() {
        row(
            format!("RSS MB after load, {role}"),
            &|m| m.rss_loaded_mb.get(k).copied().unwrap_or(0.0),
            0,
            false,
        );
    }
    for (k, role) in ROLES.iter().enumerate() {
        row(
            format!("RSS MB after {} s rest, {role}", SETTLE.as_secs()),
            &|m| m.rss_settled_mb.get(k).copied().unwrap_or(0.0),
            0,
            false,
        );
    }
    for (k, role) in ROLES.iter().enumerate() {
        row(
            format!("  of which mapped files, {role}"),
            &|m| m.rss_file_settled_mb.get(k).copied().unwrap_or(0.0),
            0,
            false,
        );
    }
    row(
        "largest member RSS MB after rest".into(),
        &|m| largest(&m.rss_settled_mb),
        0,
        true,
    );
    for (k, role) in ROLES.iter().enumerate() {
        row(
            format!("disk MB, {role}"),
            &|m| m.disk_mb.get(k).copied().unwrap_or(0.0),
            0,
            false,
        );
    }
    row(
        "logical data MB (keys x value)".into(),
        &|_| logical_mb,
        0,
        false,
    );
    row(
        "restart after kill -9 until serving, s".into(),
        &|m| m.restart_s,
        2,
        false,
    );
    row(
        "RSS MB of the restarted follower then".into(),
        &|m| m.rss_restarted_mb,
        0,
        false,
    );
    (header, rows)
}

pub async fn run(o: Options, dir: &Path) -> anyhow::Result<()> {
    let f = measure(System::Ferrite, &o, dir).await?;
    let e = if o.ferrite_only {
        None
    } else {
        Some(measure(System::Etcd, &o, dir).await?)
    };
    let logical_mb = o.keys as f64 * o.value_bytes as f64 / 1e6;
    let notes = vec![
        format!(
            "{} keys of {} bytes loaded into 3 members each (quota 8 GiB), {} clients round-robin over all members; RSS from /proc, disk = allocated blocks of each data directory; restart = from the restart of a follower killed with -9 until a linearizable get through it answers and a serializable get there returns the last key's value",
            o.keys, o.value_bytes, o.clients
        ),
        format!(
            "command: ferrite bench scale --keys {} --value-bytes {} --clients {}{}",
            o.keys,
            o.value_bytes,
            o.clients,
            if o.ferrite_only { " --ferrite-only" } else { "" }
        ),
    ];
    let t = table(&f, e.as_ref(), logical_mb);
    println!();
    println!("{}", notes[0]);
    print_table(&t.0, &t.1);
    if let Some(path) = &o.report {
        let bars = |get: &dyn Fn(&Measured) -> f64| {
            vec![
                ("ferrite".to_string(), Some(get(&f))),
                ("etcd".to_string(), e.as_ref().map(get)),
            ]
        };
        let charts = vec![
            report::Chart {
                title: "load keys/s".into(),
                bars: bars(&|m| m.keys_per_s),
                higher_is_better: true,
            },
            report::Chart {
                title: "largest member RSS MB after rest".into(),
                bars: bars(&|m| largest(&m.rss_settled_mb)),
                higher_is_better: false,
            },
            report::Chart {
                title: "disk MB, all members".into(),
                bars: bars(&|m| m.disk_mb.iter().sum()),
                higher_is_better: false,
            },
            report::Chart {
                title: "restart after kill -9 until serving, s".into(),
                bars: bars(&|m| m.restart_s),
                higher_is_better: false,
            },
        ];
        Report {
            title: "Ferrite vs etcd: scale".into(),
            notes,
            header: t.0.clone(),
            rows: t.1.clone(),
            charts,
        }
        .write(path)
        .with_context(|| format!("write the report to {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_repeat_their_key_number_to_the_length() {
        assert_eq!(value(7, 10), b"0000000700".to_vec());
        assert_eq!(value(12, 0), Vec::<u8>::new());
        assert_eq!(key(3), b"scale/00000003".to_vec());
    }

    #[test]
    fn the_memory_row_is_marked_against_etcd() {
        let m = |rss: f64| Measured {
            rss_settled_mb: vec![rss, rss / 2.0, rss / 2.0],
            ..Measured::default()
        };
        let (h, rows) = table(&m(300.0), Some(&m(400.0)), 1.0);
        assert!(rows.iter().all(|r| r.len() == h.len()));
        let marked: Vec<_> = rows.iter().filter(|r| r[4] != "-").collect();
        assert_eq!(marked.len(), 1);
        assert!(marked[0][4].starts_with("met"));
        let (_, rows) = table(&m(500.0), Some(&m(400.0)), 1.0);
        assert!(rows.iter().any(|r| r[4].starts_with("MISSED")));
        let (_, rows) = table(&m(500.0), None, 1.0);
        assert!(rows.iter().all(|r| r[2] == "-"));
    }

    #[test]
    fn disk_use_counts_allocated_blocks_of_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 8192]).unwrap();
        std::fs::File::create(dir.path().join("sparse"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let n = disk_bytes(dir.path());
        assert!((8192..65536).contains(&n), "n={n}");
    }
}
