//! `ferrite server`: one member, until SIGINT or SIGTERM.

use std::collections::BTreeMap;

use anyhow::Context as _;
use ferrite_api::{Server, ServerOptions};
use ferrite_node::NodeConfig;
use ferrite_service::ids::node_id;

use crate::config::ServerConfig;

pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let peers: BTreeMap<_, _> = cfg
        .initial_cluster
        .values()
        .map(|addr| (node_id(addr), addr.clone()))
        .collect();
    // Named by the address peers reach it at, which is where it listens
    // unless it listens on 0.0.0.0 or behind a name.
    let advertised = cfg
        .advertise_peer
        .first()
        .context("no peer address to advertise")?
        .clone();
    let id = node_id(&advertised);
    let mut node = NodeConfig::new(id, peers, cfg.data_dir.clone());
    node.listen_peer = cfg.listen_peer;
    node.tick = cfg.tick;
    node.election_ticks = cfg.election_ticks;
    node.join = cfg.join;
    node.force_new_cluster = cfg.force_new_cluster;
    node.snapshot_entries = cfg.snapshot_entries;
    node.peer_tls = cfg.peer_tls.clone();
    let opts = ServerOptions {
        name: cfg.name.clone(),
        node,
        advertise_peer: cfg.advertise_peer.clone(),
        listen_client: cfg.listen_client,
        advertise_client: cfg.advertise_client.clone(),
        listen_http: cfg.listen_http,
        listen_nbd: cfg.listen_nbd,
        control: cfg.control,
        fault_injection: cfg.fault_injection,
        history_revisions: cfg.history_revisions,
        history_retention: cfg.history_retention,
        watch: ferrite_service::watch::WatchLimits {
            progress_interval: cfg.watch_progress_notify,
        },
        client_tls: cfg.client_tls.clone(),
        auth: cfg.auth,
        quota_backend_bytes: cfg.quota_backend_bytes,
        corrupt_check: cfg.corrupt_check,
    };
    let server = Server::start(opts)
        .await
        .with_context(|| format!("{} cannot start", cfg.name))?;
    tracing::info!(
        name = %cfg.name,
        id = %format!("{:x}", id.0),
        client = %server.client_addr,
        http = %server.http_addr,
        nbd = %server.nbd_addr,
        peer = %cfg.listen_peer,
        %advertised,
        "serving"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}
