//! Real `ferrite server` processes on loopback, with ports picked free, a
//! data directory each, and kill -9 / restart. Every wait is bounded.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrite");

/// A port no other test of this process was given, free when asked, and
/// below the ephemeral range, so that no outgoing connection takes it
/// before the member binds it.
pub fn free_port() -> u16 {
    ferrite_node::ports::free_loopback_ports(1).expect("a free loopback port")[0]
}

pub struct Member {
    pub name: String,
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub http: SocketAddr,
    pub nbd: SocketAddr,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// `n` members, each started with `extra` flags too.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let members = (1..=n)
            .map(|k| Member {
                name: format!("n{k}"),
                peer: addr(free_port()),
                client: addr(free_port()),
                http: addr(free_port()),
                nbd: addr(free_port()),
                child: None,
            })
            .collect();
        let mut c = Cluster { dir, members };
        for i in 0..n {
            c.spawn_with(i, extra);
        }
        c
    }

    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    /// Adds a member that will join (after `member add`), not yet started.
    pub fn add_joiner(&mut self, name: &str) -> usize {
        self.members.push(Member {
            name: name.to_string(),
            peer: addr(free_port()),
            client: addr(free_port()),
            http: addr(free_port()),
            nbd: addr(free_port()),
            child: None,
        });
        self.members.len() - 1
    }

    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    pub fn spawn_with(&mut self, i: usize, extra: &[&str]) {
        let cluster = self.initial_cluster();
        let data = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("log file");
        let m = &mut self.members[i];
        let child = Command::new(BIN)
            .arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(data)
            .args(["--initial-cluster", &cluster])
            .args(["--listen-peer", &m.peer.to_string()])
            .args(["--listen-client", &m.client.to_string()])
            .args(["--listen-http", &m.http.to_string()])
            .args(["--listen-nbd", &m.nbd.to_string()])
            .args(["--heartbeat-ms", "50", "--election-ms", "500"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start ferrite server");
        m.child = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `nbd://host:port/name` of member `i`.
    pub fn nbd_uri(&self, i: usize, volume: &str) -> String {
        format!("nbd://{}/{volume}", self.members[i].nbd)
    }

    /// Runs the `ferrite` binary against the cluster.
    pub fn ferrite(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .args(args)
            .args(["--endpoints", &self.endpoints().join(",")])
            .output()
            .expect("run ferrite");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.to_string()).collect()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    /// The index of the member that leads, once every live member agrees.
    pub async fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let mut ids = Vec::new();
            let mut leader_id = None;
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                if let Ok(s) = ferrite_client::node_status(&m.client.to_string()).await {
                    ids.push(s.id);
                    if s.role == 3 {
                        leader_id = Some(s.id);
                    }
                }
            }
            if let Some(id) = leader_id {
                for (i, m) in self.members.iter().enumerate() {
                    if m.child.is_some() {
                        if let Ok(s) = ferrite_client::node_status(&m.client.to_string()).await {
                            if s.id == id {
                                return i;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let logs: Vec<String> = (0..self.members.len()).map(|i| self.log(i)).collect();
        panic!(
            "no leader within {within:?}; logs:\n{}",
            logs.join("\n----\n")
        );
    }

    pub fn etcdctl(&self, endpoint: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint, "--command-timeout", "10s"])
            .args(args)
            .output()
            .expect("etcdctl is installed (apt-get install etcd-client)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A plain HTTP/1.1 request on loopback; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The first document of the dashboard's live stream (`/v1/watch`) of the
/// member at `addr`.
pub fn watch_once(addr: SocketAddr) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req =
        format!("GET /v1/watch HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let reader = BufReader::new(s);
    for line in reader.lines() {
        let line = line.expect("read the stream");
        // Chunked transfer: data lines come whole inside chunks.
        if let Some(data) = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
        {
            if data.trim() == "{}" {
                continue; // the sampler's first round is not in yet
            }
            return serde_json::from_str(data).expect("a JSON document");
        }
    }
    panic!("the stream ended without a document");
}
