//! `ferrite bench etcd`: KV throughput, latency and CPU of a 3-member
//! Ferrite and a 3-member etcd under the same load, in three placements of
//! the clients:
//!
//! - **spread** (the default table): every client sends its requests
//!   round-robin over all members, as etcd's client balancer does, so two
//!   requests in three arrive at a follower and are forwarded;
//! - **leader**: every client on the leader (the placement of etcd's own
//!   benchmark tool, and of our first figures);
//! - **follower**: every client on one follower, so that every write is
//!   forwarded. Against the leader rows this gives what forwarding costs:
//!   extra latency, lost throughput and extra CPU per put.
//!
//! The spread rows are marked against issue 16's targets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cluster::{Cluster, System};
use super::load::{self, Mix};
use super::report::{self, print_table, ratio, stacked, Report, Table};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Spread,
    Leader,
    Follower,
}

impl Placement {
    fn describe(self) -> &'static str {
        match self {
            Placement::Spread => "clients round-robin over all members (as etcd's client balancer)",
            Placement::Leader => "all clients on the leader",
            Placement::Follower => "all clients on one follower (every write forwarded)",
        }
    }
}

/// The workloads of the spread and leader tables, in order.
const WORKLOADS: [(&str, Mix, usize); 7] = [
    ("put", Mix::Put, 1),
    ("put", Mix::Put, 64),
    ("put", Mix::Put, 256),
    ("put", Mix::Put, 1024),
    ("get (linearizable)", Mix::Get, 1),
    ("get (linearizable)", Mix::Get, 256),
    ("50/50 put/get", Mix::Half, 256),
];

/// The workloads of the forwarding table (run on the leader and on a
/// follower).
const FORWARDING: [(&str, Mix, usize); 3] = [
    ("put", Mix::Put, 1),
    ("put", Mix::Put, 256),
    ("get (linearizable)", Mix::Get, 256),
];

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub ops_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub cpu_us_per_op: f64,
    pub errors: u64,
}

/// What one system measured.
struct Measured {
    spread: Vec<Row>,
    leader: Vec<Row>,
    /// (on the leader, on a follower), per `FORWARDING` row.
    forwarding: Vec<(Row, Row)>,
    /// The largest member's RSS during the spread 256-client puts (mean, peak).
    rss: (f64, f64),
}

pub struct Options {
    pub seconds: u64,
    pub ferrite_only: bool,
    pub clients: Option<usize>,
    pub report: Option<PathBuf>,
}

fn selected(
    table: &[(&'static str, Mix, usize)],
    only: Option<usize>,
) -> Vec<(&'static str, Mix, usize)> {
    table
        .iter()
        .copied()
        .filter(|w| only.is_none_or(|c| c == w.2))
        .collect()
}

async fn rows(
    c: &Cluster,
    endpoints: &[String],
    table: &[(&'static str, Mix, usize)],
    seconds: u64,
    placement: Placement,
) -> anyhow::Result<(Vec<Row>, (f64, f64))> {
    let pids: Vec<u32> = (0..c.members.len()).filter_map(|i| c.pid(i)).collect();
    let mut out = Vec::new();
    let mut rss = (0.0, 0.0);
    for (name, mix, clients) in table {
        eprintln!(
            "  {}: {name}, {clients} clients, {}",
            c.system.name(),
            placement.describe()
        );
        let r = load::run(
            endpoints,
            &pids,
            *mix,
            *clients,
            Duration::from_secs(seconds),
        )
        .await?;
        if *mix == Mix::Put && *clients == 256 {
            rss = (r.rss_mean_mb, r.rss_max_mb);
        }
        out.push(Row {
            ops_per_s: r.ops as f64 / r.seconds,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            cpu_us_per_op: r.cpu_seconds * 1e6 / (r.ops.max(1) as f64),
            errors: r.errors,
        });
    }
    Ok((out, rss))
}

async fn measure(system: System, o: &Options, dir: &Path) -> anyhow::Result<Measured> {
    let mut c = Cluster::start(system, 3, dir).await?;
    let result = async {
        let (leader, _) = c
            .leader(Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("{}: no leader", system.name()))?;
        let follower = (leader + 1) % c.members.len();
        let all: Vec<String> = (0..c.members.len()).map(|i| c.endpoint(i)).collect();
        let on_leader = [c.endpoint(leader)];
        let on_follower = [c.endpoint(follower)];
        let table = selected(&WORKLOADS, o.clients);
        let (spread, rss) = rows(&c, &all, &table, o.seconds, Placement::Spread).await?;
        let (leader_rows, _) = rows(&c, &on_leader, &table, o.seconds, Placement::Leader).await?;
        let fwd = selected(&FORWARDING, o.clients);
        let (fl, _) = rows(&c, &on_leader, &fwd, o.seconds, Placement::Leader).await?;
        let (ff, _) = rows(&c, &on_follower, &fwd, o.seconds, Placement::Follower).await?;
        Ok::<_, anyhow::Error>(Measured {
            spread,
            leader: leader_rows,
            forwarding: fl.into_iter().zip(ff).collect(),
            rss,
        })
    }
    .await;
    c.stop().await;
    result
}

/// Issue 16's target for a spread row, as (description, met).
fn target(name: &str, mix: Mix, clients: usize, f: &Row, e: &Row) -> Option<(String, bool)> {
    let ops = f.ops_per_s / e.ops_per_s.max(1e-9);
    let p99 = f.p99_us as f64 / e.p99_us.max(1) as f64;
    let p50 = f.p50_us as f64 / e.p50_us.max(1) as f64;
    let cpu = f.cpu_us_per_op / e.cpu_us_per_op.max(1e-9);
    match (mix, clients) {
        (Mix::Put, 1) => Some(("p50 <= 0.6x".into(), p50 <= 0.6)),
        (Mix::Put, 256 | 1024) => Some((
            "ops >= 2.5x, p99 <= 0.5x, cpu <= 0.35x".into(),
            ops >= 2.5 && p99 <= 0.5 && cpu <= 0.35,
        )),
        (Mix::Get, 256) if name.starts_with("get") => Some(("ops >= 3x".into(), ops >= 3.0)),
        _ => None,
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// One table of (workload, clients) rows: Ferrite's columns, etcd's,
/// their ratios, and a target column when `targets`.
fn table(
    workloads: &[(&'static str, Mix, usize)],
    f: &[Row],
    e: Option<&[Row]>,
    targets: bool,
) -> Table {
    let mut header: Vec<String> = [
        "workload", "clients", "F ops/s", "F p50", "F p99", "F cpu", "E ops/s", "E p50", "E p99",
        "E cpu", "ops F/E", "p99 F/E", "cpu F/E",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if targets {
        header.push("target".into());
    }
    let mut rows = Vec::new();
    for (i, (name, mix, clients)) in workloads.iter().enumerate() {
        let fr = &f[i];
        let mut row = vec![
            name.to_string(),
            clients.to_string(),
            format!("{:.0}", fr.ops_per_s),
            ms(fr.p50_us),
            ms(fr.p99_us),
            format!("{:.0}", fr.cpu_us_per_op),
        ];
        match e.map(|e| &e[i]) {
            Some(er) => {
                row.extend([
                    format!("{:.0}", er.ops_per_s),
                    ms(er.p50_us),
                    ms(er.p99_us),
                    format!("{:.0}", er.cpu_us_per_op),
                    ratio(fr.ops_per_s, er.ops_per_s),
                    ratio(fr.p99_us as f64, er.p99_us as f64),
                    ratio(fr.cpu_us_per_op, er.cpu_us_per_op),
                ]);
                if targets {
                    row.push(match target(name, *mix, *clients, fr, er) {
                        Some((t, true)) => format!("met ({t})"),
                        Some((t, false)) => format!("MISSED ({t})"),
                        None => "-".into(),
                    });
                }
            }
            None => {
                row.extend(std::iter::repeat_n("-".to_string(), 7));
                if targets {
                    row.push("-".into());
                }
            }
        }
        rows.push(row);
    }
    (header, rows)
}

/// The forwarding table: per workload and system, leader vs follower.
fn forwarding_table(
    workloads: &[(&'static str, Mix, usize)],
    f: &Measured,
    e: Option<&Measured>,
) -> Table {
    let header: Vec<String> = [
        "workload",
        "clients",
        "system",
        "leader ops/s",
        "follower ops/s",
        "follower/leader",
        "leader p50",
        "follower p50",
        "added p50 µs",
        "leader cpu",
        "follower cpu",
        "added cpu µs",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut rows = Vec::new();
    for (i, (name, _, clients)) in workloads.iter().enumerate() {
        for (system, m) in [("ferrite", Some(f)), ("etcd", e)] {
            let Some(m) = m else { continue };
            let (l, fo) = &m.forwarding[i];
            rows.push(vec![
                name.to_string(),
                clients.to_string(),
                system.to_string(),
                format!("{:.0}", l.ops_per_s),
                format!("{:.0}", fo.ops_per_s),
                ratio(fo.ops_per_s, l.ops_per_s),
                ms(l.p50_us),
                ms(fo.p50_us),
                format!("{}", fo.p50_us as i64 - l.p50_us as i64),
                format!("{:.0}", l.cpu_us_per_op),
                format!("{:.0}", fo.cpu_us_per_op),
                format!("{:.0}", fo.cpu_us_per_op - l.cpu_us_per_op),
            ]);
        }
    }
    (header, rows)
}

pub async fn run(o: Options, dir: &Path) -> anyhow::Result<()> {
    let f = measure(System::Ferrite, &o, dir).await?;
    let e = if o.ferrite_only {
        None
    } else {
        Some(measure(System::Etcd, &o, dir).await?)
    };
    let seconds = o.seconds;
    let workloads = selected(&WORKLOADS, o.clients);
    let forwarding = selected(&FORWARDING, o.clients);
    let mut notes = vec![
        format!("3 members each, durable writes, 256-byte values over 1,000 keys, {seconds} s per row; F = Ferrite, E = etcd; p50/p99 in ms; cpu = µs of CPU per operation, all three members together, from /proc"),
        format!(
            "command: ferrite bench etcd --seconds {seconds}{}",
            o.clients
                .map_or(String::new(), |c| format!(" --clients {c}"))
        ),
    ];
    let spread = table(
        &workloads,
        &f.spread,
        e.as_ref().map(|e| &e.spread[..]),
        true,
    );
    let leader = table(
        &workloads,
        &f.leader,
        e.as_ref().map(|e| &e.leader[..]),
        false,
    );
    let fwd = forwarding_table(&forwarding, &f, e.as_ref());
    println!();
    println!("{}", notes[0]);
    for (title, (header, rows)) in [
        (Placement::Spread.describe(), &spread),
        (Placement::Leader.describe(), &leader),
    ] {
        println!();
        println!("{title}:");
        print_table(header, rows);
    }
    println!();
    println!("what forwarding costs: all clients on the leader, then all on one follower:");
    print_table(&fwd.0, &fwd.1);
    println!();
    let mut memory = format!(
        "largest member RSS during the spread 256-client puts, mean/peak of 1 s samples: ferrite {:.0}/{:.0} MB",
        f.rss.0, f.rss.1
    );
    let errors = |m: &Measured| -> u64 {
        m.spread
            .iter()
            .chain(&m.leader)
            .chain(m.forwarding.iter().flat_map(|(a, b)| [a, b]))
            .map(|r| r.errors)
            .sum()
    };
    match &e {
        Some(e) => {
            memory.push_str(&format!(
                ", etcd {:.0}/{:.0} MB (ratio of means {:.2}); failed requests: ferrite {}, etcd {}",
                e.rss.0,
                e.rss.1,
                f.rss.0 / e.rss.0.max(1e-9),
                errors(&f),
                errors(e)
            ));
        }
        None => memory.push_str(&format!("; failed requests: ferrite {}", errors(&f))),
    }
    println!("{memory}");
    notes.push(memory);
    if let Some(path) = &o.report {
        let mut charts = Vec::new();
        for (i, (name, _, clients)) in workloads.iter().enumerate() {
            charts.push(report::Chart {
                title: format!("{name}, {clients} clients, spread: ops/s"),
                bars: vec![
                    ("ferrite".into(), Some(f.spread[i].ops_per_s)),
                    ("etcd".into(), e.as_ref().map(|e| e.spread[i].ops_per_s)),
                ],
                higher_is_better: true,
            });
            charts.push(report::Chart {
                title: format!("{name}, {clients} clients, spread: p99 ms"),
                bars: vec![
                    ("ferrite".into(), Some(f.spread[i].p99_us as f64 / 1000.0)),
                    (
                        "etcd".into(),
                        e.as_ref().map(|e| e.spread[i].p99_us as f64 / 1000.0),
                    ),
                ],
                higher_is_better: false,
            });
        }
        let rows = stacked(&[
            (Placement::Spread.describe(), &spread),
            (Placement::Leader.describe(), &leader),
            ("what forwarding costs (leader, then follower)", &fwd),
        ]);
        let width = rows.first().map_or(0, Vec::len);
        Report {
            title: "Ferrite vs etcd: KV".into(),
            notes,
            header: vec![String::new(); width],
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

    fn row(ops: f64, p50: u64, p99: u64, cpu: f64) -> Row {
        Row {
            ops_per_s: ops,
            p50_us: p50,
            p99_us: p99,
            cpu_us_per_op: cpu,
            errors: 0,
        }
    }

    #[test]
    fn targets_are_those_of_issue_16() {
        let e = row(1000.0, 1000, 10_000, 100.0);
        let good = row(2600.0, 500, 4000, 30.0);
        let slow = row(2400.0, 500, 4000, 30.0);
        assert!(target("put", Mix::Put, 256, &good, &e).is_some_and(|t| t.1));
        assert!(target("put", Mix::Put, 1024, &slow, &e).is_some_and(|t| !t.1));
        assert!(target("put", Mix::Put, 1, &good, &e).is_some_and(|t| t.1));
        assert!(target("get (linearizable)", Mix::Get, 256, &slow, &e).is_some_and(|t| !t.1));
        assert!(target("put", Mix::Put, 64, &good, &e).is_none());
    }

    #[test]
    fn a_table_has_one_row_per_workload_and_marks_targets() {
        let f = vec![row(2600.0, 500, 4000, 30.0)];
        let e = vec![row(1000.0, 1000, 10_000, 100.0)];
        let (h, rows) = table(&[("put", Mix::Put, 256)], &f, Some(&e), true);
        assert_eq!(h.len(), rows[0].len());
        assert_eq!(rows[0][10], "2.60");
        assert!(rows[0][13].starts_with("met"));
        let (_, rows) = table(&[("put", Mix::Put, 256)], &f, None, true);
        assert_eq!(rows[0][6], "-");
    }
}
