//! One Ferrite server: the node, the client port (etcd v3 and Ferrite's
//! gRPC services, with etcd's JSON gateway, `/health` and gRPC health on
//! the same port: `client_port.rs`), the HTTP front end and the NBD server
//! (`ferrite-nbd`). Listeners are bound before anything starts, so a busy
//! port is a clear error at start. Two small background tasks keep the
//! member table current: this member publishes its name and advertised
//! URLs (etcd's `--initial-advertise-peer-urls` and
//! `--advertise-client-urls`: where others reach it, which is not where it
//! listens when it listens on 0.0.0.0), and every member learns its peers'
//! addresses from it.
//!
//! With client TLS (`client_tls`), the gRPC, HTTP and NBD ports all serve
//! TLS with the same certificate (etcd serves gRPC and HTTP on its client
//! URLs; here HTTP has its own port), and the member advertises https client
//! URLs (http ones without). With `--client-cert-auth`, gRPC and NBD require a client
//! certificate; the HTTP port only requests one (a browser has none: it
//! logs in with a password, `http_auth`), and a verified one names the user
//! by its common name, as on gRPC. Calls between members (volume-file copies, status, forwarded
//! membership changes) go to the peer port, where a small gRPC server takes
//! the HTTP/2 connections the transport hands over (`peer_grpc`).

use std::net::SocketAddr;
use std::time::Duration;

use ferrite_node::{Node, NodeConfig, PeerAddr};
use ferrite_proto::etcdserverpb::auth_server::AuthServer;
use ferrite_proto::etcdserverpb::cluster_server::ClusterServer;
use ferrite_proto::etcdserverpb::kv_server::KvServer;
use ferrite_proto::etcdserverpb::lease_server::LeaseServer;
use ferrite_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use ferrite_proto::ferrite::v1::registers_server::RegistersServer;
use ferrite_proto::ferrite::v1::status_server::StatusServer;
use ferrite_proto::ferrite::v1::volumes_server::VolumesServer;
use ferrite_proto::v3electionpb::election_server::ElectionServer;
use ferrite_proto::v3lockpb::lock_server::LockServer;
use ferrite_raft::NodeId;
use ferrite_service::copy::PeerCopier;
use ferrite_service::machine::Replicated;
use ferrite_service::members::PeerDialer;
use ferrite_service::Context;
use ferrite_state::{MemberInfo, Op, Principal};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::auth::AuthService;
use crate::cluster::{parse_url, ClusterService};
use crate::concurrency::{ElectionService, LockService};
use crate::kv::KvService;
use crate::lease::{LeaseIds, LeaseService};
use crate::maintenance::{MaintenanceService, PeerMaintenanceService};
use crate::registers::RegistersService;
use crate::require_leader::RequireLeaderLayer;
use crate::status::StatusService;
use crate::volumes::VolumesService;
use crate::watch::{WatchServer, WatchService};
use ferrite_proto::ferrite::v1::peer_maintenance_server::PeerMaintenanceServer;

/// The largest gRPC message accepted: etcd's default request limit (1.5 MiB)
/// plus room for framing.
const GRPC_MESSAGE_BYTES_MAX: usize = 2 << 20;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub name: String,
    pub node: NodeConfig,
    /// This member's peer address as others reach it, published in the
    /// member table (with the scheme peer TLS implies); empty: the address
    /// the peer port is bound to.
    pub advertise_peer: Vec<PeerAddr>,
    pub listen_client: SocketAddr,
    /// The client (gRPC) addresses published in the member table, host and
    /// port (with the scheme client TLS implies); empty: the bound client
    /// address, with the advertised peer host in place of 0.0.0.0.
    pub advertise_client: Vec<PeerAddr>,
    pub listen_http: SocketAddr,
    pub listen_nbd: SocketAddr,
    /// `ferrite up`'s control address (the dashboard's stop/kill/restart).
    pub control: Option<SocketAddr>,
    /// Allow `/v1/fault/isolate|heal` (tests, `ferrite up`).
    pub fault_injection: bool,
    /// Revisions of KV history kept readable (`ferrite_service::compaction`);
    /// 0: all.
    pub history_revisions: u64,
    /// History younger than this is never compacted away (so watchers can
    /// resume after a disconnect).
    pub history_retention: Duration,
    /// Watch progress notifications and limits.
    pub watch: ferrite_service::watch::WatchLimits,
    /// TLS on the client side (gRPC, HTTP, NBD); None: plaintext. Peer TLS
    /// is `node.peer_tls`.
    pub client_tls: Option<ferrite_tls::ClientTls>,
    /// Token lifetime and bcrypt cost (`--auth-token-ttl`, `--bcrypt-cost`).
    pub auth: ferrite_service::auth::AuthConfig,
    /// The space quota in bytes (`--quota-backend-bytes`; 0: etcd's 2 GiB).
    pub quota_backend_bytes: u64,
    /// How often the leader compares every member's HashKV
    /// (`--corrupt-check-time`); None: never.
    pub corrupt_check: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("volume store: {0}")]
    Volumes(String),
    #[error("{0}")]
    Advertise(String),
    #[error(transparent)]
    Node(#[from] ferrite_node::StartError),
}

pub struct Server {
    pub node: Node,
    pub context: Context,
    pub client_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub nbd_addr: SocketAddr,
    /// Set to true: the front ends stop accepting.
    stop: tokio::sync::watch::Sender<bool>,
    /// The front ends (gRPC, HTTP, NBD): each ends once its connections are
    /// done after `stop`.
    front_ends: Vec<tokio::task::JoinHandle<()>>,
    /// Background loops (member publication, address learning,
    /// auto-compaction): aborted at shutdown.
    background: Vec<tokio::task::AbortHandle>,
}

/// HTTP/2 connections from other members waiting for the peer gRPC server.
const PEER_CALLS_QUEUED_MAX: usize = 64;

/// Serves what members ask of each other (volume-file copies, status,
/// forwarded membership changes, hashes for the corruption check) on the connections the peer port hands
/// over, until `stop`.
async fn peer_grpc(
    context: Context,
    files: std::sync::Arc<ferrite_service::machine::VolumeFiles>,
    calls: tokio::sync::mpsc::Receiver<ferrite_node::peer_io::PeerConnection>,
    stop: impl std::future::Future<Output = ()>,
) {
    let incoming =
        ReceiverStream::new(calls).map(|c| Ok::<_, std::io::Error>(crate::tls::PeerConn::from(c)));
    let served = tonic::transport::Server::builder()
        .add_service(ClusterServer::new(ClusterService(context.clone())))
        .add_service(StatusServer::new(StatusService(context.clone())))
        .add_service(PeerMaintenanceServer::new(PeerMaintenanceService(
            context.clone(),
        )))
        .add_service(
            VolumesServer::new(VolumesService {
                ctx: context,
                files,
            })
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    if let Err(e) = served {
        tracing::error!("peer gRPC server stopped: {e}");
    }
}

/// How long the front ends may take to finish what is in flight once they
/// stopped accepting, before the node stops under them.
const DRAIN_MAX: Duration = Duration::from_secs(3);

/// A future that completes once `stop` says so.
fn stopped(stop: &tokio::sync::watch::Sender<bool>) -> impl std::future::Future<Output = ()> {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, what, source })
}

impl Server {
    pub async fn start(opts: ServerOptions) -> Result<Server, ServeError> {
        if opts.advertise_peer.is_empty() && opts.node.listen_peer.ip().is_unspecified() {
            return Err(ServeError::Advertise(format!(
                "listening for peers on {}: say which address to advertise",
                opts.node.listen_peer
            )));
        }
        let client = bind(opts.listen_client, "client gRPC").await?;
        let http = bind(opts.listen_http, "HTTP").await?;
        let nbd = bind(opts.listen_nbd, "NBD").await?;
        let nbd_addr = nbd.local_addr().map_err(|source| ServeError::Listen {
            addr: opts.listen_nbd,
            what: "NBD",
            source,
        })?;
        let client_addr = client.local_addr().map_err(|source| ServeError::Listen {
            addr: opts.listen_client,
            what: "client gRPC",
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| ServeError::Listen {
            addr: opts.listen_http,
            what: "HTTP",
            source,
        })?;
        let advertise_client = advertised_client(&opts, client_addr)?;
        let peers = PeerDialer {
            tls: opts.node.peer_tls.clone(),
            local: Some(opts.node.listen_peer.ip()),
        };
        let copier = PeerCopier::new(
            tokio::runtime::Handle::current(),
            opts.node.id.0,
            peers.clone(),
        );
        let events = ferrite_service::events::EventStream::new();
        let auth = ferrite_service::auth::AuthView::default();
        let maintenance = ferrite_service::maintenance::Maintenance::new(opts.quota_backend_bytes);
        let machine = Replicated::open(
            &opts.node.data_dir.join("volumes"),
            copier,
            events.clone(),
            auth.clone(),
            maintenance.clone(),
        )
        .map_err(ServeError::Volumes)?;
        let volume_files = machine.files();
        let captures = machine.captures();
        let mut node_config = opts.node.clone();
        node_config.lease_proposals = Some(ferrite_node::state_leases::lease_proposals());
        let (peer_http2, peer_calls) = tokio::sync::mpsc::channel(PEER_CALLS_QUEUED_MAX);
        node_config.peer_http2 = Some(peer_http2);
        let election_ms =
            node_config.tick.as_millis() as i64 * i64::from(node_config.election_ticks);
        let node = Node::start(node_config, machine).await?;
        let context = Context {
            node: node.clone(),
            cluster_id: opts.node.cluster_id,
            member_id: opts.node.id.0,
            name: opts.name.clone(),
            events,
            watch_metrics: Default::default(),
            peers,
            auth,
            auth_config: opts.auth,
            captures,
            maintenance,
        };

        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut grpc = tonic::service::Routes::builder();
        grpc.add_service(
            KvServer::new(KvService(context.clone()))
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX),
        )
        .add_service(WatchServer::new(WatchService {
            ctx: context.clone(),
            limits: opts.watch,
            stop: stop_rx,
        }))
        .add_service(LeaseServer::new(LeaseService {
            ctx: context.clone(),
            // etcd's minimum TTL: 1.5 election timeouts, in whole seconds.
            min_ttl: (election_ms * 3 / 2 + 999) / 1000,
            ids: LeaseIds::new(opts.node.id.0),
        }))
        .add_service(LockServer::new(LockService(context.clone())))
        .add_service(ElectionServer::new(ElectionService(context.clone())))
        .add_service(ClusterServer::new(ClusterService(context.clone())))
        .add_service(MaintenanceServer::new(MaintenanceService(context.clone())))
        .add_service(AuthServer::new(AuthService(context.clone())))
        .add_service(RegistersServer::new(RegistersService(context.clone())))
        .add_service(StatusServer::new(StatusService(context.clone())))
        .add_service(
            VolumesServer::new(VolumesService {
                ctx: context.clone(),
                files: volume_files.clone(),
            })
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX),
        )
        .add_service(health_service);
        crate::client_port::add_reflection(&mut grpc);
        let require_leader = RequireLeaderLayer::new(
            context.node.clone(),
            Duration::from_millis(election_ms.max(1) as u64),
        );
        let port = crate::client_port::ClientPort::new(
            context.clone(),
            grpc.routes().prepare(),
            require_leader,
        );
        let mut front_ends = Vec::new();
        front_ends.push(tokio::spawn(crate::client_port::serve(
            client,
            opts.client_tls.clone(),
            port,
            stopped(&stop),
        )));
        front_ends.push(tokio::spawn(crate::client_port::follow_health(
            context.clone(),
            health,
            stopped(&stop),
        )));
        front_ends.push(tokio::spawn(peer_grpc(
            context.clone(),
            volume_files.clone(),
            peer_calls,
            stopped(&stop),
        )));
        let dashboard =
            crate::dashboard::Dashboard::start(context.clone(), opts.control, opts.fault_injection);
        let router = crate::http::router(context.clone(), opts.client_tls.is_some())
            .merge(dashboard.router());
        let http_stopped = stopped(&stop);
        let http_tls = opts.client_tls.clone();
        front_ends.push(tokio::spawn(async move {
            let served = match &http_tls {
                Some(tls) => {
                    let listener = crate::tls::TlsListener {
                        accepted: ferrite_tls::accept_loop(
                            http,
                            // Requested, not required: browsers have no
                            // certificate, and log in instead.
                            tls.server_config_cert_optional(ferrite_tls::ALPN_HTTP),
                            "HTTP",
                        ),
                        local: http_addr,
                    };
                    let service =
                        router.into_make_service_with_connect_info::<crate::tls::HttpConnectInfo>();
                    axum::serve(listener, service)
                        .with_graceful_shutdown(http_stopped)
                        .await
                }
                None => {
                    axum::serve(http, router)
                        .with_graceful_shutdown(http_stopped)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::error!("HTTP server stopped: {e}");
            }
        }));
        front_ends.push(tokio::spawn(ferrite_nbd::serve(
            nbd,
            std::sync::Arc::new(ferrite_nbd::VolumeExports(context.clone())),
            opts.client_tls.as_ref().map(|tls| tls.server_config(&[])),
            stopped(&stop),
        )));

        let peer_scheme = match opts.node.peer_tls {
            Some(_) => "https",
            None => "http",
        };
        let client_scheme = match opts.client_tls {
            Some(_) => "https",
            None => "http",
        };
        let advertise_peer = match opts.advertise_peer.as_slice() {
            [] => vec![PeerAddr::from(node.peer_addr())],
            given => given.to_vec(),
        };
        let me = MemberInfo {
            id: opts.node.id.0,
            name: opts.name.clone(),
            peer_urls: advertise_peer.iter().map(|a| a.url(peer_scheme)).collect(),
            // With the scheme, as etcd publishes them (clients that build
            // request URLs from the member list need it).
            client_urls: advertise_client
                .iter()
                .map(|a| a.url(client_scheme))
                .collect(),
        };
        let mut background = vec![
            tokio::spawn(publish(context.clone(), me)).abort_handle(),
            tokio::spawn(learn_addresses(context.clone())).abort_handle(),
            tokio::spawn(ferrite_service::compaction::run(
                context.clone(),
                opts.history_revisions,
                opts.history_retention,
            ))
            .abort_handle(),
        ];
        if let Some(period) = opts.corrupt_check.filter(|p| !p.is_zero()) {
            background.push(
                tokio::spawn(ferrite_service::maintenance::corruption_check_loop(
                    context.clone(),
                    period,
                ))
                .abort_handle(),
            );
        }
        Ok(Server {
            node,
            context,
            client_addr,
            http_addr,
            nbd_addr,
            stop,
            front_ends,
            background,
        })
    }

    /// Stops the member, as etcd does on SIGTERM: the front ends stop
    /// accepting and finish what is in flight (at most `DRAIN_MAX`), then
    /// the node hands leadership over, answers what still waits, drains
    /// and syncs storage, and joins its threads (`Node::shutdown`).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        let mut front_ends = self.front_ends;
        let drained = tokio::time::timeout(DRAIN_MAX, async {
            for task in &mut front_ends {
                let _ = task.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("front ends still busy after {DRAIN_MAX:?}; stopping under them");
        }
        self.node.shutdown().await;
        for task in front_ends {
            task.abort();
        }
    }
}

/// The client addresses this member publishes: the given ones, else the
/// bound client address, with the advertised peer host in place of an
/// unspecified IP (listening everywhere, it is reached where its peer port
/// is).
fn advertised_client(
    opts: &ServerOptions,
    client_addr: SocketAddr,
) -> Result<Vec<PeerAddr>, ServeError> {
    if !opts.advertise_client.is_empty() {
        return Ok(opts.advertise_client.clone());
    }
    if !client_addr.ip().is_unspecified() {
        return Ok(vec![PeerAddr::from(client_addr)]);
    }
    let host = match opts.advertise_peer.first() {
        Some(peer) => peer.host(),
        None => PeerAddr::from(opts.node.listen_peer).host(),
    };
    let addr = PeerAddr::new(&host, client_addr.port())
        .map_err(|e| ServeError::Advertise(format!("no client address to advertise: {e}")))?;
    Ok(vec![addr])
}

/// Makes this member's entry in the member table current, retrying until a
/// leader takes it. Peer URLs set by `member add` or `member update` stay
/// (as in etcd, a member publishes its name and client URLs; its peer URLs
/// are the cluster's to change).
async fn publish(ctx: Context, mut me: MemberInfo) {
    loop {
        // Linearizable: a member restarted behind the log must not publish
        // peer URLs that a `member update` replaced while it was down.
        if let Ok(table) = ctx.member_table_read(true).await {
            let set = table
                .iter()
                .find(|m| m.id == me.id && !m.peer_urls.is_empty());
            if let Some(entry) = set {
                me.peer_urls = entry.peer_urls.clone();
            }
            if table.contains(&me) {
                return;
            }
        }
        if ctx
            .write(Op::MemberPublish(me.clone()), None, &Principal::System)
            .await
            .is_ok()
        {
            tracing::info!(name = %me.name, "published this member's addresses");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Teaches the transport every member's peer address from the table, so
/// that members added later are reachable from every node.
async fn learn_addresses(ctx: Context) {
    loop {
        if let Ok(table) = ctx.member_table().await {
            for m in table {
                if m.id == ctx.member_id {
                    continue;
                }
                if let Some(addr) = m.peer_urls.first().and_then(|u| parse_url(u).ok()) {
                    ctx.node.set_peer_address(NodeId(m.id), addr);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
