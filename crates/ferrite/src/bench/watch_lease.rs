//! `ferrite bench watch`: etcd's Watch and Lease services on a 3-member
//! Ferrite and a 3-member etcd, in the same run, with the same load
//! generator: events delivered per second to 1, 100 and 1,000 watchers,
//! put-to-event latency, lease keepalives per second, and member memory
//! with many watchers and many leases. The target is etcd's figure on
//! every row; rows that miss it are marked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cluster::{Cluster, System};
use super::report::{self, Report};
use super::{lease, load, watch};

/// Watchers of the throughput rows.
const THROUGHPUT_WATCHERS: [usize; 3] = [1, 100, 1000];
/// Watchers of the latency rows, and the pace of the puts there (a steady
/// load well below either system's capacity, so latency is not queueing).
const LATENCY_WATCHERS: usize = 100;
const LATENCY_PUTS_PER_S: f64 = 500.0;

/// Leases of the second keepalive row, each renewed many times.
const WARM_LEASES: usize = 1000;

pub struct Options {
    pub seconds: u64,
    pub ferrite_only: bool,
    /// Idle watchers open for the first memory row.
    pub watchers: usize,
    /// Leases granted for the second memory row and the keepalives.
    pub leases: usize,
    pub report: Option<PathBuf>,
}

/// One measured figure of one system.
struct Figure {
    name: String,
    higher_is_better: bool,
    value: f64,
}

/// One system's figures, in table order, and what went wrong on the way
/// (missed or repeated events, failed requests).
struct Measured {
    figures: Vec<Figure>,
    problems: Vec<String>,
}

impl Measured {
    fn add(&mut self, name: String, higher_is_better: bool, value: f64) {
        self.figures.push(Figure {
            name,
            higher_is_better,
            value,
        });
    }

    /// Records a watch run's figures' problems: every watcher must have
    /// received each of `d.revisions` revisions exactly once.
    fn check(&mut self, row: &str, d: &watch::Delivery) {
        let r = &d.received;
        if r.watchers_wrong > 0 || r.failed > 0 {
            self.problems.push(format!(
                "{row}: {} of {} watchers missed or repeated events ({} missed, {} duplicated over all), {} failed",
                r.watchers_wrong, r.watchers, r.missed, r.duplicated, r.failed
            ));
        }
        if let Some(why) = &r.failure {
            self.problems.push(format!("{row}: {why}"));
        }
        if d.puts.errors > 0 {
            self.problems
                .push(format!("{row}: {} puts failed", d.puts.errors));
        }
    }
}

async fn measure(system: System, o: &Options, dir: &Path) -> anyhow::Result<Measured> {
    let mut c = Cluster::start(system, 3, dir).await?;
    let result = measure_on(&c, o).await;
    c.stop().await;
    result
}

async fn measure_on(c: &Cluster, o: &Options) -> anyhow::Result<Measured> {
    let name = c.system.name();
    let (leader, _) = c
        .leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| anyhow::anyhow!("{name}: no leader"))?;
    let members = watch::Members::connect(c).await?;
    let duration = Duration::from_secs(o.seconds);
    let mut m = Measured {
        figures: Vec::new(),
        problems: Vec::new(),
    };
    for n in THROUGHPUT_WATCHERS {
        let d = watch::deliver(&members, leader, n, duration, None).await?;
        let per_s = d.received.events as f64 / d.seconds;
        eprintln!(
            "  {name}: {n} watchers: {} puts ({} revisions), {} events in {:.1} s",
            d.puts.ok, d.revisions, d.received.events, d.seconds
        );
        m.check(&format!("{n} watchers"), &d);
        m.add(format!("watch events/s, {n} watchers"), true, per_s);
    }
    let d = watch::deliver(
        &members,
        leader,
        LATENCY_WATCHERS,
        duration,
        Some(LATENCY_PUTS_PER_S),
    )
    .await?;
    m.check("latency", &d);
    let mut lat = d.received.latencies_us;
    lat.sort_unstable();
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        m.add(
            format!(
                "put->event {label} ms ({LATENCY_WATCHERS} watchers, {LATENCY_PUTS_PER_S} puts/s)"
            ),
            false,
            load::percentile(&lat, q) as f64 / 1000.0,
        );
    }
    let rss = watch::rss_with(c, &members, leader, o.watchers).await?;
    eprintln!("  {name}: {} watchers open: {rss:.0} MB", o.watchers);
    m.add(
        format!("max member RSS MB, {} watchers", o.watchers),
        false,
        rss,
    );
    let (ids, grants_per_s) = lease::grant(&members, o.leases).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = watch::largest_rss(c);
    eprintln!(
        "  {name}: {} leases granted at {grants_per_s:.0}/s: {rss:.0} MB",
        o.leases
    );
    m.add(
        format!("max member RSS MB, {} leases", o.leases),
        false,
        rss,
    );
    m.add("lease grants/s".into(), true, grants_per_s);
    // Across all the leases (most renewed for the first time), then a
    // few leases renewed over and over, as clients keep theirs alive.
    let few = ids.len().min(WARM_LEASES);
    for (set, what) in [(&ids[..], "all"), (&ids[..few], "renewed repeatedly")] {
        let k = lease::keepalive(&members, set, duration).await;
        if k.errors > 0 {
            m.problems.push(format!(
                "keepalives ({} leases): {} failed or expired",
                set.len(),
                k.errors
            ));
        }
        m.add(
            format!("lease keepalives/s ({} leases, {what})", set.len()),
            true,
            k.renewed as f64 / k.seconds,
        );
    }
    Ok(m)
}

/// Whether a ratio ferrite/etcd misses the target on a row.
fn misses(ratio: f64, higher_is_better: bool) -> bool {
    if higher_is_better {
        ratio < 1.0
    } else {
        ratio > 1.0
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let dir = super::data_dir(None)?;
    let f = measure(System::Ferrite, &o, &dir).await;
    let e = if o.ferrite_only || f.is_err() {
        None
    } else {
        Some(measure(System::Etcd, &o, &dir).await)
    };
    let _ = std::fs::remove_dir_all(&dir);
    let f = f?;
    let e = e.transpose()?;
    let seconds = o.seconds;
    let notes = vec![
        format!(
            "3 members each, durable writes, default timeouts; watchers and clients round-robin over all members; {} put clients, 64-byte values; {} keepalive streams; {seconds} s per load",
            watch::PUT_CLIENTS,
            lease::KEEPALIVE_STREAMS
        ),
        format!(
            "command: ferrite bench watch --seconds {seconds} --watchers {} --leases {}",
            o.watchers, o.leases
        ),
    ];
    let header: Vec<String> = ["row", "ferrite", "etcd", "F/E", "target"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    let mut charts = Vec::new();
    for (i, fig) in f.figures.iter().enumerate() {
        let ev = e.as_ref().map(|e| e.figures[i].value);
        let ratio = ev.map(|ev| fig.value / ev.max(1e-9));
        let target = match ratio {
            Some(r) if misses(r, fig.higher_is_better) => "MISS",
            Some(_) => "ok",
            None => "-",
        };
        rows.push(vec![
            fig.name.clone(),
            report::format_value(fig.value),
            ev.map_or("-".into(), report::format_value),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            format!(
                "{target} ({})",
                if fig.higher_is_better { ">= 1" } else { "<= 1" }
            ),
        ]);
        charts.push(report::Chart {
            title: fig.name.clone(),
            bars: vec![("ferrite".into(), Some(fig.value)), ("etcd".into(), ev)],
            higher_is_better: fig.higher_is_better,
        });
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
    println!(
        "{:<52} {:>10} {:>10} {:>6}  {}",
        header[0], header[1], header[2], header[3], header[4]
    );
    for r in &rows {
        println!(
            "{:<52} {:>10} {:>10} {:>6}  {}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    let mut problems = Vec::new();
    for (system, m) in [(System::Ferrite, Some(&f)), (System::Etcd, e.as_ref())] {
        let Some(m) = m else { continue };
        if m.problems.is_empty() {
            println!(
                "{}: every watcher received every event exactly once, in order; no request failed",
                system.name()
            );
        }
        for p in &m.problems {
            println!("{}: PROBLEM: {p}", system.name());
            problems.push(format!("{}: {p}", system.name()));
        }
    }
    if let Some(path) = &o.report {
        let mut notes = notes;
        notes.extend(problems);
        Report {
            title: "Ferrite vs etcd: watch and lease".into(),
            notes,
            header,
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
    use super::misses;

    #[test]
    fn a_row_misses_when_ferrite_is_worse_than_etcd() {
        assert!(misses(0.9, true));
        assert!(!misses(1.0, true));
        assert!(misses(1.1, false));
        assert!(!misses(0.5, false));
    }
}
