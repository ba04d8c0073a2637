//! `ferrite up`: a whole local cluster in one command. Starts N `ferrite
//! server` processes on loopback (the first on etcd's default client address,
//! so `etcdctl` and `ferrite` work with no flags), waits for a leader, prints
//! every endpoint, restarts a member that dies, and stops them all on Ctrl-C.
//! Run it again on the same data directory and the cluster comes back with
//! its data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::process::{Child, Command};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of members: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where the members keep their data (one directory each) and logs.
    #[arg(long, default_value = "ferrite-data")]
    pub data_dir: PathBuf,
}

/// One member's addresses in a local cluster: member 1 takes etcd's
/// defaults (2379 client, 2380 peer); member k takes k·10000 + 2379/2380,
/// as etcd's own local-cluster Procfile does; HTTP ports count up from 8080
/// and NBD ports from 10809 (NBD's registered port).
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    pub nbd: SocketAddr,
}

pub fn plan(nodes: usize) -> Vec<Member> {
    (1..=nodes as u16)
        .map(|k| {
            let base = if k == 1 { 2379 } else { k * 10_000 + 2379 };
            Member {
                name: format!("n{k}"),
                client: SocketAddr::from(([127, 0, 0, 1], base)),
                peer: SocketAddr::from(([127, 0, 0, 1], base + 1)),
                http: SocketAddr::from(([127, 0, 0, 1], 8079 + k)),
                nbd: SocketAddr::from(([127, 0, 0, 1], 10808 + k)),
            }
        })
        .collect()
}

pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",")
}

fn spawn(exe: &Path, m: &Member, cluster: &str, data_dir: &Path) -> anyhow::Result<Child> {
    let log_path = data_dir.join(format!("{}.log", m.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let err = log.try_clone().context("cannot duplicate the log file")?;
    Command::new(exe)
        .arg("server")
        .args(["--name", &m.name])
        .arg("--data-dir")
        .arg(data_dir.join(&m.name))
        .args(["--initial-cluster", cluster])
        .args(["--listen-peer", &m.peer.to_string()])
        .args(["--listen-client", &m.client.to_string()])
        .args(["--listen-http", &m.http.to_string()])
        .args(["--listen-nbd", &m.nbd.to_string()])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", m.name))
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.nodes != 3 && args.nodes != 5 {
        bail!("--nodes {}: a local cluster has 3 or 5 members", args.nodes);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the ferrite binary")?;
    let members = plan(args.nodes);
    let cluster = initial_cluster(&members);
    let mut children = Vec::new();
    for m in &members {
        children.push(spawn(&exe, m, &cluster, &args.data_dir)?);
    }
    println!(
        "ferrite: starting {} members in {}",
        members.len(),
        args.data_dir.display()
    );
    let client_addrs: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    match crate::status::wait_for_leader(&client_addrs, Duration::from_secs(30)).await {
        Some(leader) => {
            let name = members
                .iter()
                .find(|m| ferrite_api::ids::node_id(m.peer).0 == leader)
                .map_or_else(|| format!("{leader:x}"), |m| m.name.clone());
            println!("ferrite: leader is {name}");
        }
        None => println!(
            "ferrite: no leader yet; see {}/n*.log",
            args.data_dir.display()
        ),
    }
    for m in &members {
        println!(
            "  {}  etcd/grpc {}   http http://{}   nbd {}   peer {}",
            m.name, m.client, m.http, m.nbd, m.peer
        );
    }
    println!("  dashboard: http://{}/", members[0].http);
    println!("  try: etcdctl put greeting hello && etcdctl get greeting");
    println!(
        "       ferrite volume create disk0 --size 1GiB && nbdinfo nbd://{}/disk0",
        members[0].nbd
    );
    println!("ferrite: Ctrl-C stops the cluster");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, child) in children.iter_mut().enumerate() {
                    if let Ok(Some(status)) = child.try_wait() {
                        let m = &members[i];
                        eprintln!("ferrite: {} exited ({status}); restarting", m.name);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        *child = spawn(&exe, m, &cluster, &args.data_dir)?;
                    }
                }
            }
        }
    }
    println!("ferrite: stopping");
    for child in &mut children {
        let _ = child.start_kill();
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    Ok(())
}
