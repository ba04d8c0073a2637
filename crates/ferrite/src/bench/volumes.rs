//! `ferrite bench volumes`: block volumes over NBD against unreplicated
//! `qemu-nbd --cache=none` on a local file, in the same run, on the same
//! disk (it replaces `bench/volumes.sh`).
//!
//! A 3-member Ferrite serves volume `bench`; fio (`--ioengine=nbd`) drives
//! it through the leader's NBD port, then through a follower's (which
//! forwards writes to the leader), then drives qemu-nbd. Writes run without
//! fsync on both sides: a Ferrite write is on a majority's disks when it is
//! acknowledged, and qemu-nbd with cache=none writes with O_DIRECT. What a
//! flush or FUA costs is measured apart, at QD1, with python3-libnbd, since
//! fio cannot send FUA.
//!
//! The rows are marked against issue 16's targets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use super::cluster::{Cluster, System};
use super::load::percentile;
use super::report::{self, print_table, ratio, stacked, Report, Table};

pub struct Options {
    pub runtime: u64,
    pub size: u64,
    pub report: Option<PathBuf>,
}

/// A fio workload: (label, rw, block size, queue depth, the JSON side).
const WORKLOADS: [(&str, &str, &str, usize, &str); 5] = [
    ("4k randwrite QD1", "randwrite", "4k", 1, "write"),
    ("4k randwrite QD32", "randwrite", "4k", 32, "write"),
    ("4k randread QD1", "randread", "4k", 1, "read"),
    ("4k randread QD32", "randread", "4k", 32, "read"),
    ("1M seq write QD8", "write", "1M", 8, "write"),
];

/// The QD1 latency requests, as the script below names them.
const REQUESTS: [(&str, &str); 3] = [
    ("write", "4k write"),
    ("fua", "4k write with FUA"),
    ("flush", "4k write, then flush"),
];

/// Requests per QD1 latency row.
const LATENCY_REQUESTS: usize = 1000;

/// Times `N` requests of each kind at random 4 KiB-aligned offsets below
/// `SIZE`; prints {"write": [µs...], "fua": [...] or null, "flush": [...]}.
const LATENCY_SCRIPT: &str = r#"
import json, os, random, sys, time
import nbd
uri, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = nbd.NBD()
h.connect_uri(uri)
buf = os.urandom(4096)
blocks = size // 4096
out = {}
for mode in ("write", "fua", "flush"):
    if mode == "fua" and not h.can_fua():
        out[mode] = None
        continue
    lat = []
    for _ in range(n):
        off = random.randrange(blocks) * 4096
        t = time.perf_counter_ns()
        if mode == "fua":
            h.pwrite(buf, off, nbd.CMD_FLAG_FUA)
        else:
            h.pwrite(buf, off)
        if mode == "flush":
            h.flush()
        lat.append((time.perf_counter_ns() - t) // 1000)
    out[mode] = lat
h.shutdown()
print(json.dumps(out))
"#;

/// One fio result.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fio {
    pub iops: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// p50 and p99 in µs of one kind of request; None if not supported.
type Latency = Option<(u64, u64)>;

/// Where fio, qemu-nbd and the libnbd Python binding are; a clear error
/// naming the Debian package of each one missing.
struct Tools {
    python: String,
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

async fn tools() -> anyhow::Result<Tools> {
    let mut missing = Vec::new();
    for (program, package) in [
        ("fio", "fio"),
        ("qemu-nbd", "qemu-utils"),
        ("qemu-img", "qemu-utils"),
        ("nbdinfo", "libnbd-bin"),
    ] {
        if !which(program) && !missing.contains(&package) {
            missing.push(package);
        }
    }
    // A python3 first on PATH (pyenv, a venv) may not see Debian's
    // packages; the system's own is tried next.
    let mut python = None;
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import nbd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            python = Some(candidate.to_string());
            break;
        }
    }
    if python.is_none() {
        missing.push("python3-libnbd");
    }
    match python {
        Some(python) if missing.is_empty() => Ok(Tools { python }),
        _ => anyhow::bail!(
            "missing tools for bench volumes: apt-get install {}",
            missing.join(" ")
        ),
    }
}

/// Runs a command to its end; its standard output, or an error with its
/// standard error.
async fn output(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        );
    }
    Ok(stdout)
}

/// The read or write side of fio's JSON output. fio's NBD engine prints a
/// line before the JSON, so parsing starts at the first `{`.
pub fn parse_fio(text: &str, side: &str) -> anyhow::Result<Fio> {
    let start = text
        .find('{')
        .ok_or_else(|| anyhow::anyhow!("no JSON in fio's output: {text}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text[start..]).context("parse fio's JSON output")?;
    let job = &json["jobs"][0][side];
    anyhow::ensure!(job.is_object(), "fio's output has no {side} side");
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let pct = &job["clat_ns"]["percentile"];
    Ok(Fio {
        iops: f(&job["iops"]),
        mb_per_s: f(&job["bw_bytes"]) / 1e6,
        p50_us: f(&pct["50.000000"]) / 1e3,
        p99_us: f(&pct["99.000000"]) / 1e3,
    })
}

fn uri(addr: std::net::SocketAddr) -> String {
    format!("nbd://{addr}/bench")
}

/// Fills the whole export with 1 MiB sequential writes, so that reads read
/// data and not holes.
async fn prefill(uri: &str, size: u64) -> anyhow::Result<()> {
    output(
        Command::new("fio")
            .args(["--name=fill", "--ioengine=nbd", "--rw=write", "--bs=1M"])
            .args(["--iodepth=16", "--output-format=json"])
            .arg(format!("--uri={uri}"))
            .arg(format!("--size={size}")),
        &format!("fio prefill of {uri}"),
    )
    .await
    .map(drop)
}

async fn fio(
    uri: &str,
    size: u64,
    runtime: u64,
    (_, rw, bs, depth, side): (&str, &str, &str, usize, &str),
) -> anyhow::Result<Fio> {
    let out = output(
        Command::new("fio")
            .args(["--name=bench", "--ioengine=nbd", "--time_based"])
            .args(["--ramp_time=1", "--randrepeat=0", "--output-format=json"])
            .arg(format!("--uri={uri}"))
            .arg(format!("--rw={rw}"))
            .arg(format!("--bs={bs}"))
            .arg(format!("--iodepth={depth}"))
            .arg(format!("--size={size}"))
            .arg(format!("--runtime={runtime}")),
        &format!("fio {rw} {bs} QD{depth} on {uri}"),
    )
    .await?;
    parse_fio(&out, side)
}

/// p50/p99 of the QD1 requests of `REQUESTS`, in that order.
async fn latencies(python: &str, uri: &str, size: u64) -> anyhow::Result<Vec<Latency>> {
    let out = output(
        Command::new(python)
            .args(["-c", LATENCY_SCRIPT, uri])
            .arg(LATENCY_REQUESTS.to_string())
            .arg(size.to_string()),
        &format!("the QD1 latency script on {uri}"),
    )
    .await?;
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).context("parse the latency script's output")?;
    Ok(REQUESTS
        .iter()
        .map(|(key, _)| {
            let mut v: Vec<u32> = json[*key]
                .as_array()?
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x.min(u64::from(u32::MAX)) as u32)
                .collect();
            v.sort_unstable();
            Some((percentile(&v, 0.5), percentile(&v, 0.99)))
        })
        .collect())
}

/// qemu-nbd serving a preallocated raw file of `size` bytes in `dir`,
/// killed when dropped.
async fn start_qemu(dir: &Path, size: u64, addr: std::net::SocketAddr) -> anyhow::Result<Child> {
    let file = dir.join("qemu.raw");
    output(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw", "-o", "preallocation=full"])
            .arg(&file)
            .arg(size.to_string()),
        "qemu-img create",
    )
    .await?;
    let (out, err) = crate::launch::log_to(&dir.join("qemu-nbd.log"))?;
    let child = Command::new("qemu-nbd")
        .args(["--persistent", "--shared=8", "--cache=none", "--aio=native"])
        .args(["-f", "raw", "-x", "bench", "-b"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .context("start qemu-nbd")?;
    for _ in 0..100 {
        let ready = Command::new("nbdinfo")
            .args(["--size", &uri(addr)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("qemu-nbd did not answer on {addr}; see {}", dir.display())
}

/// Everything measured, per workload and per request.
struct Measured {
    /// (leader, follower, qemu) per `WORKLOADS` row.
    fio: Vec<[Fio; 3]>,
    /// (Ferrite on the leader, qemu) per `REQUESTS` row.
    latency: Vec<(Latency, Latency)>,
    leader: String,
    follower: String,
}

async fn measure(
    o: &Options,
    tools: &Tools,
    c: &Cluster,
    qemu: std::net::SocketAddr,
) -> anyhow::Result<Measured> {
    let (leader, _) = c
        .leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| anyhow::anyhow!("ferrite: no leader"))?;
    let follower = (leader + 1) % c.members.len();
    let endpoints = (0..c.members.len()).map(|i| c.endpoint(i)).collect();
    let mut client = ferrite_client::Client::new(endpoints)?;
    client.volume_create("bench", o.size).await?;
    let on_leader = uri(c.members[leader].extra[1]);
    let on_follower = uri(c.members[follower].extra[1]);
    let on_qemu = uri(qemu);
    for u in [&on_leader, &on_qemu] {
        eprintln!("  prefilling {u} ({} MiB)", o.size >> 20);
        prefill(u, o.size).await?;
    }
    let mut rows = Vec::new();
    for w in WORKLOADS {
        let mut row = [Fio::default(); 3];
        for (k, (side, u)) in [
            ("leader", &on_leader),
            ("follower", &on_follower),
            ("qemu-nbd", &on_qemu),
        ]
        .into_iter()
        .enumerate()
        {
            eprintln!("  {}: {side} ({u}), {} s", w.0, o.runtime);
            row[k] = fio(u, o.size, o.runtime, w).await?;
        }
        rows.push(row);
    }
    eprintln!("  QD1 latencies, {LATENCY_REQUESTS} requests each: ferrite (leader)");
    let f = latencies(&tools.python, &on_leader, o.size).await?;
    eprintln!("  QD1 latencies: qemu-nbd");
    let q = latencies(&tools.python, &on_qemu, o.size).await?;
    Ok(Measured {
        fio: rows,
        latency: f.into_iter().zip(q).collect(),
        leader: c.members[leader].name.clone(),
        follower: c.members[follower].name.clone(),
    })
}

fn mark(met: bool, what: &str) -> String {
    format!("{} ({what})", if met { "met" } else { "MISSED" })
}

/// Issue 16's targets for a fio row: leader against qemu where there is
/// one, and follower against leader on every row.
fn fio_targets(label: &str, r: &[Fio; 3]) -> String {
    let [l, f, q] = r;
    let lq = l.iops / q.iops.max(1e-9);
    let fl = f.iops / l.iops.max(1e-9);
    let mut t = Vec::new();
    match label {
        "4k randwrite QD32" => t.push(mark(lq >= 0.6, "L/Q >= 0.6")),
        "1M seq write QD8" => t.push(mark(lq >= 0.3, "L/Q >= 0.3")),
        _ => {}
    }
    t.push(mark(fl >= 0.8, "F/L >= 0.8"));
    t.join(", ")
}

fn fio_table(m: &Measured) -> Table {
    let header = [
        "workload", "L iops", "L MB/s", "L p50", "L p99", "F iops", "F MB/s", "F p50", "F p99",
        "Q iops", "Q MB/s", "Q p50", "Q p99", "L/Q", "F/L", "targets",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let rows = WORKLOADS
        .iter()
        .zip(&m.fio)
        .map(|(w, r)| {
            let mut row = vec![w.0.to_string()];
            for x in r {
                row.extend([
                    format!("{:.0}", x.iops),
                    format!("{:.1}", x.mb_per_s),
                    format!("{:.0}", x.p50_us),
                    format!("{:.0}", x.p99_us),
                ]);
            }
            row.push(ratio(r[0].iops, r[2].iops));
            row.push(ratio(r[1].iops, r[0].iops));
            row.push(fio_targets(w.0, r));
            row
        })
        .collect();
    (header, rows)
}

fn latency_table(m: &Measured) -> Table {
    let header = [
        "request", "F p50", "F p99", "Q p50", "Q p99", "p50 F/Q", "p99 F/Q", "target",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let show = |l: Latency, p99: bool| match l {
        Some((a, b)) => format!("{}", if p99 { b } else { a }),
        None => "n/a".into(),
    };
    let rows = REQUESTS
        .iter()
        .zip(&m.latency)
        .map(|((key, label), (f, q))| {
            let r = |i: usize| match (f, q) {
                (Some(f), Some(q)) => {
                    let (a, b) = if i == 0 { (f.0, q.0) } else { (f.1, q.1) };
                    ratio(a as f64, b as f64)
                }
                _ => "-".into(),
            };
            let target = match (*key, f, q) {
                ("flush", Some(f), Some(q)) => mark(f.0 as f64 <= 2.0 * q.0 as f64, "p50 F/Q <= 2"),
                _ => "-".into(),
            };
            vec![
                label.to_string(),
                show(*f, false),
                show(*f, true),
                show(*q, false),
                show(*q, true),
                r(0),
                r(1),
                target,
            ]
        })
        .collect();
    (header, rows)
}

pub async fn run(o: Options, dir: &Path) -> anyhow::Result<()> {
    let tools = tools().await?;
    let qemu = crate::launch::free_addrs(1)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no free port for qemu-nbd"))?;
    let mut c = Cluster::start(System::Ferrite, 3, dir).await?;
    let mut qemu_child = None;
    let result = async {
        qemu_child = Some(start_qemu(dir, o.size, qemu).await?);
        measure(&o, &tools, &c, qemu).await
    }
    .await;
    if let Some(mut q) = qemu_child {
        let _ = q.start_kill();
        let _ = q.wait().await;
    }
    c.stop().await;
    let m = result?;
    let notes = vec![
        format!(
            "fio over NBD on a {} MiB prefilled export, {} s per row: Ferrite (3 members) attached to the leader {} (L) and to the follower {} (F), and qemu-nbd --cache=none --aio=native on a preallocated local file (Q); writes without fsync on both (a Ferrite write is durable on a majority when acknowledged; qemu-nbd writes O_DIRECT); p50/p99 completion latency in µs",
            o.size >> 20,
            o.runtime,
            m.leader,
            m.follower
        ),
        format!(
            "command: ferrite bench volumes --runtime {} --size {}",
            o.runtime, o.size
        ),
    ];
    let fio = fio_table(&m);
    let lat = latency_table(&m);
    println!();
    println!("{}", notes[0]);
    print_table(&fio.0, &fio.1);
    println!();
    println!(
        "QD1 latency of {LATENCY_REQUESTS} 4 KiB requests at random aligned offsets (µs), python3-libnbd: Ferrite on the leader (F) vs qemu-nbd (Q)"
    );
    print_table(&lat.0, &lat.1);
    if let Some(path) = &o.report {
        let mut charts = Vec::new();
        for (w, r) in WORKLOADS.iter().zip(&m.fio) {
            charts.push(report::Chart {
                title: format!("{}: IOPS", w.0),
                bars: vec![
                    ("leader".into(), Some(r[0].iops)),
                    ("follower".into(), Some(r[1].iops)),
                    ("qemu-nbd".into(), Some(r[2].iops)),
                ],
                higher_is_better: true,
            });
        }
        for ((_, label), (f, q)) in REQUESTS.iter().zip(&m.latency) {
            charts.push(report::Chart {
                title: format!("{label}, QD1: p50 µs"),
                bars: vec![
                    ("ferrite".into(), f.map(|f| f.0 as f64)),
                    ("qemu-nbd".into(), q.map(|q| q.0 as f64)),
                ],
                higher_is_better: false,
            });
        }
        let rows = stacked(&[("fio over NBD", &fio), ("QD1 latency (µs)", &lat)]);
        Report {
            title: "Ferrite vs qemu-nbd: block volumes".into(),
            notes,
            header: vec![String::new(); fio.0.len()],
            rows,
            charts,
        }
        .write(path)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_output_parses_after_the_engine_line() {
        let text = r#"connected to NBD server
{"jobs": [{"write": {"iops": 1000.5, "bw_bytes": 4096000,
  "clat_ns": {"percentile": {"50.000000": 250000, "99.000000": 900000}}}}]}"#;
        let f = parse_fio(text, "write").unwrap();
        assert_eq!(f.iops, 1000.5);
        assert_eq!(f.mb_per_s, 4.096);
        assert_eq!(f.p50_us, 250.0);
        assert_eq!(f.p99_us, 900.0);
        assert!(parse_fio(text, "read").is_err());
        assert!(parse_fio("no json", "write").is_err());
    }

    #[test]
    fn targets_are_those_of_issue_16() {
        let fio = |iops| Fio {
            iops,
            ..Fio::default()
        };
        let t = fio_targets("4k randwrite QD32", &[fio(600.0), fio(500.0), fio(1000.0)]);
        assert_eq!(t, "met (L/Q >= 0.6), met (F/L >= 0.8)");
        let t = fio_targets("1M seq write QD8", &[fio(100.0), fio(90.0), fio(1000.0)]);
        assert_eq!(t, "MISSED (L/Q >= 0.3), met (F/L >= 0.8)");
        let t = fio_targets("4k randread QD1", &[fio(100.0), fio(70.0), fio(100.0)]);
        assert_eq!(t, "MISSED (F/L >= 0.8)");
    }
}
