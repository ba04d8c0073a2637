//! `ferrite up`: a whole local cluster in one command. Starts N `ferrite
//! server` processes on loopback (the first on etcd's default client address,
//! so `etcdctl` and `ferrite` work with no flags), waits for a leader, prints
//! every endpoint, restarts a member that dies, and stops them all on Ctrl-C.
//! Run it again on the same data directory and the cluster comes back with
//! its data. It also listens on a control address for the dashboard's
//! buttons: stop, kill and restart a member, cut it off and heal it.
//!
//! `up --tls` runs the same cluster with TLS everywhere: it makes a local CA,
//! member certificates and a client certificate for `root` (`certs.rs`),
//! starts every member with etcd's TLS flags (client side with
//! `--client-cert-auth`, and mutual TLS between members) and prints the
//! etcdctl, nbdinfo and curl lines that work with them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::Mutex;

use anyhow::{bail, Context};
use clap::Args;
use tokio::process::Child;

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of members: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where the members keep their data (one directory each) and logs.
    #[arg(long, default_value = "ferrite-data")]
    pub data_dir: PathBuf,
    /// Use ports from P on instead of the standard ones: member k listens
    /// on P+10(k-1) (client), +1 (peer), +2 (HTTP), +3 (NBD); control on P+4.
    #[arg(long)]
    pub ports_from: Option<u16>,
    /// TLS everywhere (client gRPC, HTTP, NBD, peers; client certificates
    /// required), with certificates made under DATA_DIR/tls.
    #[arg(long)]
    pub tls: bool,
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

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn plan(nodes: usize, ports_from: Option<u16>) -> anyhow::Result<Vec<Member>> {
    (1..=nodes as u16)
        .map(|k| {
            let name = format!("n{k}");
            Ok(match ports_from {
                None => {
                    let base = if k == 1 { 2379 } else { k * 10_000 + 2379 };
                    Member {
                        name,
                        client: local(base),
                        peer: local(base + 1),
                        http: local(8079 + k),
                        nbd: local(10808 + k),
                    }
                }
                Some(p) => {
                    let base = (k - 1)
                        .checked_mul(10)
                        .and_then(|o| p.checked_add(o))
                        .filter(|b| *b <= u16::MAX - 9)
                        .with_context(|| {
                            format!("--ports-from {p} leaves no room for {nodes} members")
                        })?;
                    Member {
                        name,
                        client: local(base),
                        peer: local(base + 1),
                        http: local(base + 2),
                        nbd: local(base + 3),
                    }
                }
            })
        })
        .collect()
}

/// Where `up` listens for the dashboard's buttons.
fn control_addr(ports_from: Option<u16>) -> SocketAddr {
    match ports_from {
        None => local(8079),
        Some(p) => local(p.saturating_add(4)),
    }
}

pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",")
}

fn spawn(
    m: &Member,
    cluster: &str,
    data_dir: &Path,
    control: SocketAddr,
    tls: Option<&crate::certs::LocalCerts>,
) -> anyhow::Result<Child> {
    let addrs = crate::launch::Addrs {
        peer: m.peer,
        client: m.client,
        http: m.http,
        nbd: m.nbd,
    };
    let log = data_dir.join(format!("{}.log", m.name));
    let mut command =
        crate::launch::server(&m.name, &data_dir.join(&m.name), cluster, &addrs, &log)?;
    command
        .args(["--control", &control.to_string()])
        .arg("--fault-injection");
    if let Some(certs) = tls {
        let (cert, key) = certs.member(&m.name);
        command
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            .arg("--trusted-ca-file")
            .arg(&certs.ca)
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(&cert)
            .arg("--peer-key-file")
            .arg(&key)
            .arg("--peer-trusted-ca-file")
            .arg(&certs.ca)
            .arg("--peer-client-cert-auth");
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {}", m.name))
}

/// A member's process, and whether a button stopped it (then it is not
/// restarted until the restart button).
struct Proc {
    child: Option<Child>,
    held: bool,
}

struct Supervisor {
    members: Vec<Member>,
    cluster: String,
    data_dir: PathBuf,
    control: SocketAddr,
    tls: Option<crate::certs::LocalCerts>,
    procs: Mutex<Vec<Proc>>,
}

impl Supervisor {
    fn spawn(&self, i: usize) -> anyhow::Result<Child> {
        spawn(
            &self.members[i],
            &self.cluster,
            &self.data_dir,
            self.control,
            self.tls.as_ref(),
        )
    }

    /// Restarts members that died on their own.
    async fn watch(&self) -> anyhow::Result<()> {
        let mut procs = self.procs.lock().await;
        for (i, p) in procs.iter_mut().enumerate() {
            let exited = match &mut p.child {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                p.child = None;
                if !p.held {
                    eprintln!(
                        "ferrite: {} exited ({status}); restarting",
                        self.members[i].name
                    );
                }
            }
            if p.child.is_none() && !p.held {
                p.child = Some(self.spawn(i)?);
            }
        }
        Ok(())
    }

    async fn act(&self, name: &str, action: &str) -> Result<String, (StatusCode, String)> {
        let i = self
            .members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no member named {name:?}")))?;
        let m = &self.members[i];
        let fail = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
        match action {
            "stop" | "kill" => {
                let mut procs = self.procs.lock().await;
                let p = &mut procs[i];
                p.held = true;
                let Some(child) = p.child.as_mut() else {
                    return Ok(format!("{name} is not running"));
                };
                let signal = if action == "stop" {
                    libc::SIGTERM
                } else {
                    libc::SIGKILL
                };
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on the pid of a child we spawned and
                    // have not reaped; no memory is involved.
                    unsafe { libc::kill(pid as libc::pid_t, signal) };
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                let _ = child.start_kill();
                p.child = None;
                eprintln!(
                    "ferrite: {name} {}",
                    if action == "stop" {
                        "stopped"
                    } else {
                        "killed"
                    }
                );
                Ok(format!(
                    "{name} {}",
                    if action == "stop" {
                        "stopped"
                    } else {
                        "killed"
                    }
                ))
            }
            "restart" => {
                let mut procs = self.procs.lock().await;
                let p = &mut procs[i];
                if let Some(mut child) = p.child.take() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                p.held = false;
                p.child = Some(self.spawn(i).map_err(|e| fail(format!("{e:#}")))?);
                eprintln!("ferrite: {name} restarted");
                Ok(format!("{name} restarted"))
            }
            "isolate" | "heal" => {
                let tls = match &self.tls {
                    Some(certs) => Some(
                        client_tls(certs, ferrite_tls::ALPN_HTTP[1..].as_ref())
                            .map_err(|e| fail(format!("{e:#}")))?,
                    ),
                    None => None,
                };
                let (code, body) = ferrite_api::dashboard::http_post_tls(
                    m.http,
                    &format!("/v1/fault/{action}"),
                    tls,
                )
                .await
                .map_err(|e| (StatusCode::BAD_GATEWAY, e))?;
                if code == 200 {
                    eprintln!(
                        "ferrite: {name} {}",
                        if action == "isolate" {
                            "isolated"
                        } else {
                            "healed"
                        }
                    );
                    Ok(format!(
                        "{name} {}",
                        if action == "isolate" {
                            "isolated"
                        } else {
                            "healed"
                        }
                    ))
                } else {
                    Err((StatusCode::BAD_GATEWAY, body))
                }
            }
            other => Err((StatusCode::BAD_REQUEST, format!("unknown action {other:?}"))),
        }
    }
}

async fn control_action(
    State(sup): State<Arc<Supervisor>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
) -> Response {
    match sup.act(&name, &action).await {
        Ok(done) => Json(json!({ "ok": true, "done": done })).into_response(),
        Err((code, e)) => (code, Json(json!({ "error": e }))).into_response(),
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.nodes != 3 && args.nodes != 5 {
        bail!("--nodes {}: a local cluster has 3 or 5 members", args.nodes);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let members = plan(args.nodes, args.ports_from)?;
    let tls = if args.tls {
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        Some(crate::certs::ensure(&args.data_dir, &names)?)
    } else {
        None
    };
    let cluster = initial_cluster(&members);
    let control = control_addr(args.ports_from);
    let listener = tokio::net::TcpListener::bind(control)
        .await
        .with_context(|| format!("cannot listen on {control} (the control address)"))?;
    let sup = Arc::new(Supervisor {
        members: members.clone(),
        cluster,
        data_dir: args.data_dir.clone(),
        control,
        tls: tls.clone(),
        procs: Mutex::new(Vec::new()),
    });
    {
        let mut procs = sup.procs.lock().await;
        for i in 0..members.len() {
            procs.push(Proc {
                child: Some(sup.spawn(i)?),
                held: false,
            });
        }
    }
    let router = axum::Router::new()
        .route("/{name}/{action}", axum::routing::post(control_action))
        .with_state(sup.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("ferrite: the control address stopped: {e}");
        }
    });
    println!(
        "ferrite: starting {} members in {}",
        members.len(),
        args.data_dir.display()
    );
    let client_addrs: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    let leader = match &tls {
        Some(certs) => wait_for_leader_tls(certs, &client_addrs, Duration::from_secs(30)).await?,
        None => crate::status::wait_for_leader(&client_addrs, Duration::from_secs(30)).await,
    };
    match leader {
        Some(leader) => {
            let name = members
                .iter()
                .find(|m| ferrite_service::ids::node_id(m.peer).0 == leader)
                .map_or_else(|| format!("{leader:x}"), |m| m.name.clone());
            println!("ferrite: leader is {name}");
        }
        None => println!(
            "ferrite: no leader yet; see {}/n*.log",
            args.data_dir.display()
        ),
    }
    match &tls {
        None => print_endpoints(&members),
        Some(certs) => print_tls_endpoints(&members, certs),
    }
    println!("ferrite: Ctrl-C stops the cluster");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => sup.watch().await?,
        }
    }
    println!("ferrite: stopping");
    let mut procs = sup.procs.lock().await;
    for p in procs.iter_mut() {
        if let Some(child) = p.child.as_mut() {
            let _ = child.start_kill();
        }
    }
    for p in procs.iter_mut() {
        if let Some(child) = p.child.as_mut() {
            let _ = child.wait().await;
        }
    }
    Ok(())
}

fn print_endpoints(members: &[Member]) {
    for m in members {
        println!(
            "  {}  etcd/grpc {}   http http://{}   nbd {}   peer {}",
            m.name, m.client, m.http, m.nbd, m.peer
        );
    }
    println!("  dashboard: http://{}/", members[0].http);
    println!(
        "  try: etcdctl --endpoints {} put greeting hello",
        members[0].client
    );
    println!(
        "       ferrite volume create disk0 --size 1GiB && nbdinfo nbd://{}/disk0",
        members[0].nbd
    );
}

fn print_tls_endpoints(members: &[Member], certs: &crate::certs::LocalCerts) {
    for m in members {
        println!(
            "  {}  etcd/grpc https://{}   http https://{}   nbd (TLS) {}   peer (mutual TLS) {}",
            m.name, m.client, m.http, m.nbd, m.peer
        );
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| format!("https://{}", m.client))
        .collect();
    println!("  certificates: {}", certs.dir.display());
    println!(
        "  dashboard: https://{}/ (trust {} in the browser; with auth enabled, log in; a client certificate is optional there)",
        members[0].http,
        certs.ca.display()
    );
    println!(
        "  curl: curl --cacert {} --cert {} --key {} https://{}/",
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display(),
        members[0].http
    );
    println!(
        "  etcdctl: etcdctl --endpoints={} --cacert {} --cert {} --key {} put greeting hello",
        endpoints.join(","),
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    println!(
        "  ferrite: ferrite volume create disk0 --size 1GiB --endpoints {} --cacert {} --cert {} --key {}",
        endpoints.join(","),
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    println!(
        "  nbdinfo: nbdinfo 'nbds://{}/disk0?tls-certificates={}'",
        members[0].nbd,
        certs.nbd_dir.display()
    );
}

/// A TLS client config with `root`'s certificate, trusting the local CA.
fn client_tls(
    certs: &crate::certs::LocalCerts,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ferrite_tls::rustls::ClientConfig>> {
    Ok(ferrite_tls::client_config(
        &certs.ca,
        Some((&certs.client_cert, &certs.client_key)),
        alpn,
    )?)
}

/// `status::wait_for_leader` over TLS, with `root`'s client certificate.
async fn wait_for_leader_tls(
    certs: &crate::certs::LocalCerts,
    endpoints: &[SocketAddr],
    within: Duration,
) -> anyhow::Result<Option<u64>> {
    let config = client_tls(certs, ferrite_tls::ALPN_GRPC)?;
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        for e in endpoints {
            if let Ok(Some(leader)) = leader_over_tls(*e, config.clone()).await {
                return Ok(Some(leader));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// One member's idea of the leader, asked over TLS; None if it knows none.
async fn leader_over_tls(
    addr: SocketAddr,
    config: Arc<ferrite_tls::rustls::ClientConfig>,
) -> anyhow::Result<Option<u64>> {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = ferrite_tls::TlsConnector::from(config)
                .connect(ferrite_tls::ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect_with_connector(connector)
        .await?;
    let reply = ferrite_proto::ferrite::v1::status_client::StatusClient::new(channel)
        .node(ferrite_proto::ferrite::v1::NodeStatusRequest {})
        .await?;
    Ok(reply
        .into_inner()
        .node
        .map(|n| n.leader_id)
        .filter(|l| *l != 0))
}
