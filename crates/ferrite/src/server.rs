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
        .map(|addr| (node_id(*addr), *addr))
        .collect();
    let id = node_id(cfg.listen_peer);
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
        listen_client: cfg.listen_client,
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
