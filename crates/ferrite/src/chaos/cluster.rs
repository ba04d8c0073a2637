//! The cluster under attack: real `ferrite server` processes on loopback,
//! each with its own data directory, log file and free ports, started with
//! `--fault-injection` so that the nemesis can cut links and slow disks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Child;

use crate::launch::Addrs;

pub struct Node {
    pub name: String,
    pub addrs: Addrs,
    pub child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    dir: PathBuf,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn start(n: usize, dir: &Path) -> anyhow::Result<Cluster> {
        let ports = crate::launch::free_addrs(4 * n)?;
        let nodes = ports
            .chunks(4)
            .enumerate()
            .map(|(k, p)| Node {
                name: format!("c{}", k + 1),
                addrs: Addrs {
                    peer: p[0],
                    client: p[1],
                    http: p[2],
                    nbd: p[3],
                },
                child: None,
                paused: false,
            })
            .collect();
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            nodes,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|m| format!("{}={}", m.name, m.addrs.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|m| m.addrs.client.to_string())
            .collect()
    }

    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let cluster = self.initial_cluster();
        let m = &self.nodes[i];
        let log = self.dir.join(format!("{}.log", m.name));
        let child =
            crate::launch::server(&m.name, &self.dir.join(&m.name), &cluster, &m.addrs, &log)?
                .arg("--fault-injection")
                // The watch check reads the whole history at the end.
                .args(["--history-revisions", "0"])
                .spawn()
                .with_context(|| format!("start {}", m.name))?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(pid) = self.nodes[i].child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    pub async fn kill(&mut self, i: usize) {
        self.signal(i, libc::SIGKILL);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.wait().await;
        }
        self.nodes[i].paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].paused {
            self.signal(i, libc::SIGCONT);
            self.nodes[i].paused = false;
        }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Asks member `i`'s fault switch (`/v1/fault/...`).
    pub async fn fault(&self, i: usize, what: &str) -> Result<(), String> {
        let (code, body) = ferrite_api::dashboard::http_post(
            self.nodes[i].addrs.http,
            &format!("/v1/fault/{what}"),
        )
        .await?;
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{}: {body}", self.nodes[i].name))
        }
    }

    /// The member that leads, as the live members see it.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.nodes.iter().enumerate() {
            if !self.is_up(i) || m.paused {
                continue;
            }
            if let Ok(s) = ferrite_client::node_status(&m.addrs.client.to_string()).await {
                if s.role == 3 {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits for a leader that every live member agrees on.
    pub async fn wait_for_leader(&self, within: Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub async fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i).await;
        }
    }
}
