//! Real nodes on loopback: elections, writes through any node (followers
//! forward to the leader), linearizable reads through followers, a leader
//! that stops, and a node that restarts on its data directory and catches up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ferrite_node::{
    wait_for_leader, MachineError, MachineSnapshot, Node, NodeConfig, NodeError, StateMachine,
};
use ferrite_raft::{Index, NodeId};

/// A tiny text machine: "set k v", "add k n" and the query "get k".
#[derive(Default)]
struct Text {
    values: BTreeMap<String, i64>,
    applied: Index,
}

impl StateMachine for Text {
    fn apply(&mut self, index: Index, command: &[u8]) -> Result<Bytes, MachineError> {
        self.applied = index;
        let text = String::from_utf8_lossy(command);
        let words: Vec<&str> = text.split(' ').collect();
        let reply = match words.as_slice() {
            ["set", k, v] => match v.parse() {
                Ok(v) => {
                    self.values.insert(k.to_string(), v);
                    format!("{v}")
                }
                Err(_) => "bad value".into(),
            },
            ["add", k, n] => match n.parse::<i64>() {
                Ok(n) => {
                    let v = self.values.entry(k.to_string()).or_default();
                    *v += n;
                    format!("{v}")
                }
                Err(_) => "bad value".into(),
            },
            _ => "bad command".into(),
        };
        Ok(Bytes::from(reply))
    }
    fn apply_empty(&mut self, index: Index) {
        self.applied = index;
    }
    fn query(&mut self, query: &[u8]) -> Bytes {
        let text = String::from_utf8_lossy(query);
        match text.strip_prefix("get ") {
            Some(k) => Bytes::from(self.values.get(k).copied().unwrap_or(0).to_string()),
            None => Bytes::from_static(b"bad query"),
        }
    }
    fn applied(&self) -> Index {
        self.applied
    }
    fn snapshot(&mut self) -> Result<MachineSnapshot, MachineError> {
        let mut s = format!("{}\n", self.applied.0);
        for (k, v) in &self.values {
            s.push_str(&format!("{k} {v}\n"));
        }
        Ok(MachineSnapshot::complete(Bytes::from(s)))
    }
    fn install(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.recover(data)
    }
    fn recover(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.restore(data)
            .map_err(|e| MachineError::Restore(e.to_string()))
    }
}

impl Text {
    fn restore(&mut self, data: &[u8]) -> Result<(), &'static str> {
        *self = Text::default();
        if data.is_empty() {
            return Ok(());
        }
        let text = std::str::from_utf8(data).map_err(|_| "not text")?;
        let mut lines = text.lines();
        let applied = lines.next().ok_or("empty snapshot")?;
        self.applied = Index(applied.parse().map_err(|_| "bad applied index")?);
        for line in lines {
            let (k, v) = line.split_once(' ').ok_or("bad line")?;
            self.values
                .insert(k.to_string(), v.parse().map_err(|_| "bad value")?);
        }
        Ok(())
    }
}

fn free_port() -> u16 {
    ferrite_node::ports::free_loopback_ports(1).expect("a free loopback port")[0]
}

fn peers(n: u64) -> BTreeMap<NodeId, SocketAddr> {
    (1..=n)
        .map(|i| (NodeId(i), SocketAddr::from(([127, 0, 0, 1], free_port()))))
        .collect()
}

fn config(id: u64, peers: &BTreeMap<NodeId, SocketAddr>, root: &Path) -> NodeConfig {
    let mut cfg = NodeConfig::new(NodeId(id), peers.clone(), root.join(format!("n{id}")));
    cfg.tick = Duration::from_millis(20);
    cfg.snapshot_entries = 50;
    cfg
}

async fn start(cfg: NodeConfig) -> Node {
    // A restarted node may find its old WAL lock not yet released.
    for _ in 0..100 {
        match Node::start(cfg.clone(), Text::default()).await {
            Ok(node) => return node,
            Err(e) => {
                tracing::debug!("retrying start: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("node {} did not start", cfg.id);
}

/// Retries through elections, as a client does.
async fn propose(node: &Node, command: &str) -> String {
    for _ in 0..200 {
        match node.propose(Bytes::from(command.to_string())).await {
            Ok(reply) => return String::from_utf8_lossy(&reply).into_owned(),
            Err(
                NodeError::NoLeader
                | NodeError::Busy(_)
                | NodeError::Timeout
                | NodeError::Superseded,
            ) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(NodeError::NotLeader { .. }) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => panic!("{command}: {e}"),
        }
    }
    panic!("{command}: no answer");
}

async fn read(node: &Node, key: &str, linearizable: bool) -> String {
    for _ in 0..200 {
        match node
            .read(Bytes::from(format!("get {key}")), linearizable)
            .await
        {
            Ok(reply) => return String::from_utf8_lossy(&reply).into_owned(),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!("read {key}: no answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_forward_read_and_survive_a_leader_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let peers = peers(3);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(config(id, &peers, dir.path())).await);
    }
    let leader = wait_for_leader(&nodes[0], Duration::from_secs(10))
        .await
        .expect("a leader is elected");
    let leader_node = nodes
        .iter()
        .find(|n| n.id() == leader)
        .expect("leader is ours")
        .clone();
    let follower = nodes
        .iter()
        .find(|n| n.id() != leader)
        .expect("a follower")
        .clone();

    // Writes through the leader and through a follower (forwarded).
    assert_eq!(propose(&leader_node, "set x 5").await, "5");
    assert_eq!(propose(&follower, "add x 2").await, "7");
    // A linearizable read through a follower sees both.
    assert_eq!(read(&follower, "x", true).await, "7");
    for i in 0..120 {
        propose(&follower, &format!("add n {i}")).await;
    }
    let expected: i64 = (0..120).sum();
    assert_eq!(read(&leader_node, "n", true).await, expected.to_string());

    // The leader stops; the others elect a new one and keep every write.
    leader_node.shutdown().await;
    let survivors: Vec<Node> = nodes.iter().filter(|n| n.id() != leader).cloned().collect();
    let mut new_leader = None;
    for _ in 0..200 {
        if let Ok(s) = survivors[0].status().await {
            if s.leader.is_some() && s.leader != Some(leader) {
                new_leader = s.leader;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(new_leader.is_some(), "a new leader among the survivors");
    assert_eq!(propose(&survivors[1], "add x 1").await, "8");
    assert_eq!(read(&survivors[0], "n", true).await, expected.to_string());

    // The old leader restarts on its data directory and catches up (by
    // snapshot: 120 entries passed the 50-entry snapshot threshold).
    let restarted = start(config(leader.0, &peers, dir.path())).await;
    let mut caught_up = false;
    for _ in 0..400 {
        if read(&restarted, "x", false).await == "8" {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(caught_up, "the restarted node caught up");
    let status = restarted.status().await.expect("status");
    assert!(
        status.snapshot_index > Index(0),
        "it holds a snapshot: {status:?}"
    );
    for n in survivors.iter().chain([&restarted]) {
        n.shutdown().await;
    }
}
