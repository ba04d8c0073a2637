//! One node's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrite_raft::NodeId;

use crate::lessor::LeaseProposals;
use crate::peer_addr::PeerAddr;

/// Defaults are etcd's: a 100 ms heartbeat and a 1 s election timeout (10
/// ticks), long enough to ride out a scheduling hiccup on a loaded laptop,
/// short enough that a failover takes a second or two.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every peer message carries it; a node of another cluster is refused.
    pub cluster_id: u64,
    /// Peer addresses of the initial members (this node included), as
    /// they advertise them: IP addresses or host names.
    pub peers: BTreeMap<NodeId, PeerAddr>,
    /// Where this node listens for peers (0.0.0.0: everywhere). A specific
    /// IP address is also where its connections to peers leave from.
    pub listen_peer: SocketAddr,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub heartbeat_ticks: u32,
    pub election_ticks: u32,
    /// Take a snapshot after this many entries applied since the last.
    pub snapshot_entries: u64,
    /// Start empty and wait to be added, instead of founding the cluster.
    pub join: bool,
    /// Restart from this member's data as a cluster of one (etcd's
    /// `--force-new-cluster`; see `force_new_cluster.rs`).
    pub force_new_cluster: bool,
    /// How long a client request may wait for a reply.
    pub request_timeout: Duration,
    /// How the node proposes lease revokes and checkpoints in the state
    /// machine's command format; None: leases are disabled.
    pub lease_proposals: Option<LeaseProposals>,
    /// Mutual TLS for every connection between members (etcd's `--peer-*`
    /// certificate flags); None: plain TCP.
    pub peer_tls: Option<ferrite_tls::PeerTls>,
    /// Where HTTP/2 connections arriving on the peer port go (the gRPC
    /// calls members make of each other); None: they are closed.
    pub peer_http2: Option<crate::peer_io::PeerConnections>,
}

impl NodeConfig {
    /// Listens on this node's address in `peers` when it is an IP address
    /// (else on 127.0.0.1, port 0: set `listen_peer`).
    pub fn new<A: Into<PeerAddr>>(
        id: NodeId,
        peers: BTreeMap<NodeId, A>,
        data_dir: PathBuf,
    ) -> NodeConfig {
        let peers: BTreeMap<NodeId, PeerAddr> =
            peers.into_iter().map(|(id, a)| (id, a.into())).collect();
        let listen_peer = peers
            .get(&id)
            .and_then(PeerAddr::socket_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        NodeConfig {
            id,
            cluster_id: 0x6665_7272_6974_6500, // "ferrite\0"
            peers,
            listen_peer,
            data_dir,
            tick: TICK,
            heartbeat_ticks: 1,
            election_ticks: 10,
            snapshot_entries: 10_000,
            join: false,
            force_new_cluster: false,
            request_timeout: Duration::from_secs(5),
            lease_proposals: None,
            peer_tls: None,
            peer_http2: None,
        }
    }
}
