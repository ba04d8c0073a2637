//! Three-member clusters of either system, as real processes on loopback
//! with their default timeouts and durable writes: Ferrite (`ferrite
//! server`) and etcd (the `etcd` binary, Debian package `etcd-server`).
//! Both are driven through the same etcd v3 API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Ferrite,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Ferrite => "ferrite",
            System::Etcd => "etcd",
        }
    }
}

pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub extra: [SocketAddr; 2],
    pub child: Option<Child>,
}

pub struct Cluster {
    pub system: System,
    dir: PathBuf,
    pub members: Vec<Member>,
    /// Flags added to every member's command line (e.g. a quota).
    extra_args: Vec<String>,
}

impl Cluster {
    pub async fn start(system: System, n: usize, dir: &Path) -> anyhow::Result<Cluster> {
        Cluster::start_with(system, n, dir, &[]).await
    }

    /// As `start`, with `extra_args` added to every member's command line
    /// (also when a member is restarted).
    pub async fn start_with(
        system: System,
        n: usize,
        dir: &Path,
        extra_args: &[String],
    ) -> anyhow::Result<Cluster> {
        if system == System::Etcd && which("etcd").is_none() {
            anyhow::bail!("etcd is not installed (apt-get install etcd-server)");
        }
        let ports = crate::launch::free_addrs(n * 4)?;
        let members = (0..n)
            .map(|i| Member {
                name: format!("{}{}", &system.name()[..1], i + 1),
                client: ports[4 * i],
                peer: ports[4 * i + 1],
                extra: [ports[4 * i + 2], ports[4 * i + 3]],
                child: None,
            })
            .collect();
        let mut c = Cluster {
            system,
            dir: dir.join(system.name()),
            members,
            extra_args: extra_args.to_vec(),
        };
        std::fs::create_dir_all(&c.dir).with_context(|| format!("create {}", c.dir.display()))?;
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let cluster = self
            .members
            .iter()
            .map(|m| match self.system {
                System::Ferrite => format!("{}={}", m.name, m.peer),
                System::Etcd => format!("{}=http://{}", m.name, m.peer),
            })
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log = self.dir.join(format!("{}.log", m.name));
        let mut cmd = match self.system {
            System::Ferrite => {
                let addrs = crate::launch::Addrs {
                    peer: m.peer,
                    client: m.client,
                    http: m.extra[0],
                    nbd: m.extra[1],
                };
                crate::launch::server(&m.name, &data, &cluster, &addrs, &log)?
            }
            System::Etcd => {
                let (out, err) = crate::launch::log_to(&log)?;
                let mut c = Command::new("etcd");
                let client = format!("http://{}", m.client);
                let peer = format!("http://{}", m.peer);
                c.args(["--name", &m.name])
                    .arg("--data-dir")
                    .arg(&data)
                    .args([
                        "--listen-client-urls",
                        &client,
                        "--advertise-client-urls",
                        &client,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer,
                        "--initial-advertise-peer-urls",
                        &peer,
                    ])
                    .args([
                        "--initial-cluster",
                        &cluster,
                        "--initial-cluster-state",
                        "new",
                    ])
                    .args(["--logger", "zap", "--log-level", "warn"])
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .kill_on_drop(true);
                c
            }
        };
        cmd.args(&self.extra_args);
        let child = cmd.spawn().with_context(|| format!("start {}", m.name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.members[i].name)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().and_then(Child::id)
    }

    pub async fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i).await;
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.members[i].client)
    }

    /// The status of member `i` (member id in the header, leader id).
    pub async fn status(&self, i: usize, within: Duration) -> Option<pb::StatusResponse> {
        let channel = channel(&self.endpoint(i), within).await?;
        let mut client = MaintenanceClient::new(channel);
        match tokio::time::timeout(within, client.status(pb::StatusRequest {})).await {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }

    /// The index of the member that leads, once a live member names it.
    pub async fn leader(&self, within: Duration) -> Option<(usize, u64)> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let mut ids = Vec::new();
            let mut leader = 0;
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    ids.push(0);
                    continue;
                }
                match self.status(i, Duration::from_millis(500)).await {
                    Some(s) => {
                        ids.push(s.header.map_or(0, |h| h.member_id));
                        if s.leader != 0 {
                            leader = s.leader;
                        }
                    }
                    None => ids.push(0),
                }
            }
            if let Some(i) = ids.iter().position(|id| *id == leader && leader != 0) {
                return Some((i, leader));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

pub async fn channel(endpoint: &str, within: Duration) -> Option<Channel> {
    let ep = Endpoint::from_shared(endpoint.to_string())
        .ok()?
        .connect_timeout(within)
        .timeout(within.max(Duration::from_secs(5)));
    ep.connect().await.ok()
}

/// A connection for long-lived streams (watch, lease keepalive): no
/// per-request timeout, which would end a stream that outlives it.
pub async fn stream_channel(endpoint: &str, within: Duration) -> Option<Channel> {
    let ep = Endpoint::from_shared(endpoint.to_string())
        .ok()?
        .connect_timeout(within);
    ep.connect().await.ok()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
