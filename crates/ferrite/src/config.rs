//! `ferrite server` configuration: flags, optionally on top of a TOML file
//! with the same keys. Everything is validated up front, so a mistake is one
//! clear line at start rather than a surprise later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use ferrite_node::PeerAddr;
use serde::Deserialize;

/// Defaults: etcd's. A 100 ms heartbeat and a 1 s election timeout ride out
/// a busy laptop's scheduling hiccups yet fail over within a couple of
/// seconds.
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_MS: u64 = 1000;

#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerArgs {
    /// A TOML file with any of these options (flags win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This member's name, as in the initial cluster.
    #[arg(long)]
    pub name: Option<String>,
    /// Where this member keeps its WAL and snapshots.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Founding members and their peer URLs, as etcd's: `n1=http://h1:2380,n2=http://10.0.0.2:2380,...` (host names or IP addresses; the scheme may be left out).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// URLs to listen on for peers (etcd's; e.g. `http://0.0.0.0:2380`; IP addresses; the first is used). Default: this member's advertised peer address, when it is an IP address.
    #[arg(long)]
    pub listen_peer_urls: Option<String>,
    /// This member's peer URLs as the others reach it (etcd's; a host name or an IP address, never 0.0.0.0; the first is dialed and names the member). Default: its URL in --initial-cluster.
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// Peer (Raft) address to listen on, IP:port (the same as --listen-peer-urls http://IP:port).
    #[arg(long)]
    pub listen_peer: Option<SocketAddr>,
    /// URLs to listen on for clients: gRPC, etcd v3 API and Ferrite's services (etcd's; e.g. `http://0.0.0.0:2379`; IP addresses; the first is used). Default: 127.0.0.1:2379.
    #[arg(long)]
    pub listen_client_urls: Option<String>,
    /// Client URLs published in the member list (etcd's; host names or IP addresses). Default: the client listen address, or with 0.0.0.0 the advertised peer host and the client port.
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
    /// Client gRPC address, IP:port (the same as --listen-client-urls http://IP:port).
    #[arg(long)]
    pub listen_client: Option<SocketAddr>,
    /// HTTP address (JSON API, dashboard, /metrics, /healthz).
    #[arg(long)]
    pub listen_http: Option<SocketAddr>,
    /// NBD address (block volumes as network block devices; default 127.0.0.1:10809).
    #[arg(long)]
    pub listen_nbd: Option<SocketAddr>,
    /// The control address of the `ferrite up` that runs this member (set by `up`).
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// Allow cutting this member off from its peers over HTTP (`/v1/fault/isolate`); for tests and `ferrite up`.
    #[arg(long)]
    #[serde(default)]
    pub fault_injection: bool,
    /// Take a snapshot (and compact the log) every this many applied entries (default 10000).
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// Revisions of KV history kept readable: the leader compacts older ones away, as etcd's revision-mode auto-compaction (default 10000; 0 keeps all history, in memory).
    #[arg(long)]
    pub history_revisions: Option<u64>,
    /// Seconds of KV history never compacted away, whatever --history-revisions says, so a watcher that reconnects within them resumes (default 75; costs memory under write load: about seconds × writes/s × (value + 100 B)).
    #[arg(long)]
    pub history_seconds: Option<u64>,
    /// Interval of watch progress notifications, in milliseconds (etcd's `--experimental-watch-progress-notify-interval`; default 600000, ten minutes).
    #[arg(long)]
    pub watch_progress_notify_ms: Option<u64>,
    /// Heartbeat interval in milliseconds (default 100).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in milliseconds (default 1000).
    #[arg(long)]
    pub election_ms: Option<u64>,
    /// Join an existing cluster (after `ferrite member add`) instead of founding one.
    #[arg(long)]
    #[serde(default)]
    pub join: bool,
    /// Restart from this member's existing data as a one-member cluster, after a majority is lost for good (etcd's --force-new-cluster); add the others back with `member add` and `--join`.
    #[arg(long)]
    #[serde(default)]
    pub force_new_cluster: bool,
    /// TLS certificate for the client side: gRPC, HTTP and NBD (etcd's --cert-file).
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (etcd's --key-file).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA that client certificates must chain to, with --client-cert-auth (etcd's --trusted-ca-file).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --trusted-ca-file; its common name names the user (etcd's --client-cert-auth).
    #[arg(long)]
    #[serde(default)]
    pub client_cert_auth: bool,
    /// This member's certificate for peer traffic, presented both ways: peer TLS is always mutual (etcd's --peer-cert-file).
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Its private key (etcd's --peer-key-file).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA that peers' certificates must chain to (etcd's --peer-trusted-ca-file; required with --peer-cert-file).
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a valid certificate (etcd's --peer-client-cert-auth; with peer TLS this is always so).
    #[arg(long)]
    #[serde(default)]
    pub peer_client_cert_auth: bool,
    /// Only peers whose certificate has this common name may connect (etcd's --peer-cert-allowed-cn).
    #[arg(long)]
    pub peer_cert_allowed_cn: Option<String>,
    /// Only peers whose certificate is valid for this host name may connect (etcd's --peer-cert-allowed-hostname).
    #[arg(long)]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Seconds an auth token stays valid after Authenticate (etcd's `--auth-token-ttl`; default 300).
    #[arg(long)]
    pub auth_token_ttl: Option<u64>,
    /// The bcrypt cost of password hashes this member makes, 4..=31 (etcd's `--bcrypt-cost`; default 10).
    #[arg(long)]
    pub bcrypt_cost: Option<u32>,
    /// Space quota in bytes (etcd's `--quota-backend-bytes`; default 2147483648, 2 GiB; 0: the default). A write that would take this member's db size over it raises a NOSPACE alarm, and writes that grow the state are refused until `etcdctl alarm disarm`.
    #[arg(long)]
    pub quota_backend_bytes: Option<u64>,
    /// How often the leader compares every member's HashKV and raises a CORRUPT alarm naming a member that disagrees, e.g. `60s`, `5m`, `500ms` (etcd's `--experimental-corrupt-check-time`; default 0: off, as etcd).
    #[arg(long)]
    pub corrupt_check_time: Option<String>,
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Founding members by name, with their peer addresses.
    pub initial_cluster: BTreeMap<String, PeerAddr>,
    pub listen_peer: SocketAddr,
    /// This member's advertised peer addresses; never empty, never
    /// 0.0.0.0. The first is this member's id and where peers dial it.
    pub advertise_peer: Vec<PeerAddr>,
    pub listen_client: SocketAddr,
    /// The client addresses published in the member list; empty: derived
    /// from the bound client address (`ferrite_api::ServerOptions`).
    pub advertise_client: Vec<PeerAddr>,
    pub listen_http: SocketAddr,
    pub listen_nbd: SocketAddr,
    pub control: Option<SocketAddr>,
    pub fault_injection: bool,
    pub snapshot_entries: u64,
    pub history_revisions: u64,
    pub history_retention: Duration,
    pub watch_progress_notify: Duration,
    pub tick: Duration,
    pub election_ticks: u32,
    pub join: bool,
    pub force_new_cluster: bool,
    /// Client-side TLS (gRPC, HTTP, NBD), files loaded and checked.
    pub client_tls: Option<ferrite_tls::ClientTls>,
    /// Peer TLS, files loaded and checked.
    pub peer_tls: Option<ferrite_tls::PeerTls>,
    pub auth: ferrite_service::auth::AuthConfig,
    pub quota_backend_bytes: u64,
    /// None: no periodic corruption check.
    pub corrupt_check: Option<Duration>,
}

/// A duration as etcd's flags write them: a number and a unit (`ms`, `s`,
/// `m`, `h`); a bare `0` is zero.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?}: expected a number and a unit, e.g. 60s"))?;
    let ms = match unit {
        "" if n == 0 => 0,
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => bail!("{text:?}: unit must be ms, s, m or h"),
    };
    Ok(Duration::from_millis(ms))
}

impl ServerArgs {
    /// Merges the TOML file (if any) under the flags, then validates.
    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => load(path)?,
            None => ServerArgs::default(),
        };
        let urls = Urls::from_flags_or_file(&self, &file);
        let name = self.name.or(file.name).context("--name is required")?;
        if name.is_empty() || name.contains([',', '=']) {
            bail!("--name {name:?}: must be non-empty, without ',' or '='");
        }
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("ferrite-data/{name}")));
        let cluster_text = self
            .initial_cluster
            .or(file.initial_cluster)
            .context("--initial-cluster is required (e.g. n1=127.0.0.1:2380,n2=127.0.0.1:22380)")?;
        let initial_cluster = parse_cluster(&cluster_text)?;
        let join = self.join || file.join;
        let force_new_cluster = self.force_new_cluster || file.force_new_cluster;
        if join && force_new_cluster {
            bail!("--force-new-cluster starts from this member's data; it cannot --join");
        }
        let advertise_peer = advertised_peer(&name, &initial_cluster, &urls, join)?;
        let listen_peer = match urls.listen_peer()? {
            Some(addr) => addr,
            None => advertise_peer[0].socket_addr().with_context(|| {
                format!(
                    "{name}'s peer address {} is a host name: give --listen-peer-urls (e.g. http://0.0.0.0:{})",
                    advertise_peer[0],
                    advertise_peer[0].port()
                )
            })?,
        };
        if let (None, Some(entry)) = (
            &urls.advertise_peer,
            initial_cluster.get(&name).and_then(PeerAddr::socket_addr),
        ) {
            if !join && !listen_peer.ip().is_unspecified() && listen_peer != entry {
                bail!("--listen-peer {listen_peer} differs from {name}'s address in --initial-cluster ({entry}); give --initial-advertise-peer-urls if peers reach it elsewhere");
            }
        }
        let listen_client = urls
            .listen_client()?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2379)));
        let advertise_client = match &urls.advertise_client {
            Some(text) => advertised_urls("--advertise-client-urls", text)?,
            None => Vec::new(),
        };
        let listen_http = self
            .listen_http
            .or(file.listen_http)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let listen_nbd = self
            .listen_nbd
            .or(file.listen_nbd)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 10809)));
        let snapshot_entries = self
            .snapshot_entries
            .or(file.snapshot_entries)
            .unwrap_or(10_000);
        if snapshot_entries == 0 {
            bail!("--snapshot-entries must be at least 1");
        }
        let heartbeat_ms = self
            .heartbeat_ms
            .or(file.heartbeat_ms)
            .unwrap_or(HEARTBEAT_MS);
        let election_ms = self.election_ms.or(file.election_ms).unwrap_or(ELECTION_MS);
        if heartbeat_ms == 0 || heartbeat_ms > 10_000 {
            bail!("--heartbeat-ms {heartbeat_ms}: must be within 1..=10000");
        }
        if election_ms < 2 * heartbeat_ms || election_ms > 60_000 {
            bail!("--election-ms {election_ms}: must be at least twice the heartbeat ({heartbeat_ms} ms) and at most 60000");
        }
        let progress_ms = self
            .watch_progress_notify_ms
            .or(file.watch_progress_notify_ms)
            .unwrap_or(600_000);
        if progress_ms < 100 {
            bail!("--watch-progress-notify-ms {progress_ms}: must be at least 100");
        }
        let token_ttl = self
            .auth_token_ttl
            .or(file.auth_token_ttl)
            .unwrap_or(ferrite_service::auth::TOKEN_TTL_DEFAULT.as_secs());
        if token_ttl == 0 || token_ttl > 86_400 * 365 {
            bail!("--auth-token-ttl {token_ttl}: must be within 1..=31536000 seconds");
        }
        let bcrypt_cost = self
            .bcrypt_cost
            .or(file.bcrypt_cost)
            .unwrap_or(ferrite_service::auth::BCRYPT_COST_DEFAULT);
        if !(4..=31).contains(&bcrypt_cost) {
            bail!("--bcrypt-cost {bcrypt_cost}: must be within 4..=31");
        }
        let quota_backend_bytes = match self
            .quota_backend_bytes
            .or(file.quota_backend_bytes)
            .unwrap_or(0)
        {
            0 => ferrite_service::maintenance::QUOTA_BYTES_DEFAULT,
            n => n,
        };
        let corrupt_check = match self.corrupt_check_time.or(file.corrupt_check_time) {
            None => None,
            Some(text) => {
                let d = parse_duration(&text).context("--corrupt-check-time")?;
                if !d.is_zero() && d < Duration::from_millis(100) {
                    bail!("--corrupt-check-time {text}: at least 100ms (or 0: off)");
                }
                Some(d).filter(|d| !d.is_zero())
            }
        };
        let addrs = [listen_peer, listen_client, listen_http, listen_nbd];
        for (i, a) in addrs.iter().enumerate() {
            if addrs[..i].contains(a) {
                bail!("address {a} is given for two listeners");
            }
        }
        let client_tls = client_tls_options(
            self.cert_file.or(file.cert_file),
            self.key_file.or(file.key_file),
            self.trusted_ca_file.or(file.trusted_ca_file),
            self.client_cert_auth || file.client_cert_auth,
        )?
        .map(|o| o.load())
        .transpose()?;
        let peer_tls = peer_tls_options(PeerFlags {
            cert_file: self.peer_cert_file.or(file.peer_cert_file),
            key_file: self.peer_key_file.or(file.peer_key_file),
            trusted_ca_file: self.peer_trusted_ca_file.or(file.peer_trusted_ca_file),
            client_cert_auth: self.peer_client_cert_auth || file.peer_client_cert_auth,
            allowed_cn: self.peer_cert_allowed_cn.or(file.peer_cert_allowed_cn),
            allowed_hostname: self
                .peer_cert_allowed_hostname
                .or(file.peer_cert_allowed_hostname),
        })?
        .map(|o| o.load())
        .transpose()?;
        urls.check_schemes(peer_tls.is_some(), client_tls.is_some())?;
        Ok(ServerConfig {
            client_tls,
            peer_tls,
            name,
            data_dir,
            initial_cluster,
            listen_peer,
            advertise_peer,
            listen_client,
            advertise_client,
            listen_http,
            listen_nbd,
            control: self.control.or(file.control),
            fault_injection: self.fault_injection || file.fault_injection,
            snapshot_entries,
            history_revisions: self
                .history_revisions
                .or(file.history_revisions)
                .unwrap_or(10_000),
            history_retention: Duration::from_secs(
                self.history_seconds.or(file.history_seconds).unwrap_or(75),
            ),
            watch_progress_notify: Duration::from_millis(progress_ms),
            tick: Duration::from_millis(heartbeat_ms),
            election_ticks: (election_ms / heartbeat_ms) as u32,
            join,
            force_new_cluster,
            auth: ferrite_service::auth::AuthConfig {
                token_ttl: Duration::from_secs(token_ttl),
                bcrypt_cost,
            },
            quota_backend_bytes,
            corrupt_check,
        })
    }
}

/// The listen and advertise flags, from the command line or else (as a
/// group, so that flags and file never mix) from the file.
struct Urls {
    listen_peer: Option<SocketAddr>,
    listen_peer_urls: Option<String>,
    advertise_peer: Option<String>,
    listen_client: Option<SocketAddr>,
    listen_client_urls: Option<String>,
    advertise_client: Option<String>,
}

impl Urls {
    fn from_flags_or_file(flags: &ServerArgs, file: &ServerArgs) -> Urls {
        let pick = |f: &ServerArgs| Urls {
            listen_peer: f.listen_peer,
            listen_peer_urls: f.listen_peer_urls.clone(),
            advertise_peer: f.initial_advertise_peer_urls.clone(),
            listen_client: f.listen_client,
            listen_client_urls: f.listen_client_urls.clone(),
            advertise_client: f.advertise_client_urls.clone(),
        };
        let (flags, file) = (pick(flags), pick(file));
        // Each listen pair comes whole from one place: a flag overrides
        // the file's address in either spelling.
        let peer = match flags.listen_peer.is_some() || flags.listen_peer_urls.is_some() {
            true => &flags,
            false => &file,
        };
        let client = match flags.listen_client.is_some() || flags.listen_client_urls.is_some() {
            true => &flags,
            false => &file,
        };
        Urls {
            listen_peer: peer.listen_peer,
            listen_peer_urls: peer.listen_peer_urls.clone(),
            advertise_peer: flags.advertise_peer.clone().or(file.advertise_peer.clone()),
            listen_client: client.listen_client,
            listen_client_urls: client.listen_client_urls.clone(),
            advertise_client: flags
                .advertise_client
                .clone()
                .or(file.advertise_client.clone()),
        }
    }

    fn listen_peer(&self) -> anyhow::Result<Option<SocketAddr>> {
        listen_addr(
            ("--listen-peer", self.listen_peer),
            ("--listen-peer-urls", self.listen_peer_urls.as_deref()),
        )
    }

    fn listen_client(&self) -> anyhow::Result<Option<SocketAddr>> {
        listen_addr(
            ("--listen-client", self.listen_client),
            ("--listen-client-urls", self.listen_client_urls.as_deref()),
        )
    }

    /// A URL's scheme, when it has one, must say what the member serves:
    /// https with TLS, http without (etcd refuses the mismatch too).
    fn check_schemes(&self, peer_tls: bool, client_tls: bool) -> anyhow::Result<()> {
        let groups = [
            (
                "--listen-peer-urls",
                &self.listen_peer_urls,
                peer_tls,
                "--peer-cert-file",
            ),
            (
                "--initial-advertise-peer-urls",
                &self.advertise_peer,
                peer_tls,
                "--peer-cert-file",
            ),
            (
                "--listen-client-urls",
                &self.listen_client_urls,
                client_tls,
                "--cert-file",
            ),
            (
                "--advertise-client-urls",
                &self.advertise_client,
                client_tls,
                "--cert-file",
            ),
        ];
        for (flag, text, tls, cert_flag) in groups {
            for url in split_urls(text.as_deref().unwrap_or("")) {
                match url
                    .split_once("://")
                    .map(|(scheme, _)| scheme.to_ascii_lowercase())
                {
                    Some(s) if s == "https" && !tls => {
                        bail!("{flag} {url}: https needs TLS ({cert_flag} and its key)")
                    }
                    Some(s) if s == "http" && tls => {
                        bail!("{flag} {url}: this member serves TLS there ({cert_flag} is given): write https://")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn split_urls(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Where to listen: `--listen-x IP:port` or the first of `--listen-x-urls`
/// (an IP address, or `localhost`), not both.
fn listen_addr(
    (addr_flag, addr): (&str, Option<SocketAddr>),
    (urls_flag, urls): (&str, Option<&str>),
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(urls) = urls else {
        return Ok(addr);
    };
    if addr.is_some() {
        bail!("give {addr_flag} or {urls_flag}, not both");
    }
    let first = split_urls(urls)
        .next()
        .with_context(|| format!("{urls_flag} is empty"))?;
    let url = PeerAddr::parse(first).with_context(|| urls_flag.to_string())?;
    let ip = match url.ip() {
        Some(ip) => ip,
        None if url.host() == "localhost" => [127, 0, 0, 1].into(),
        None => bail!(
            "{urls_flag} {first}: listen on an IP address (0.0.0.0 for every interface), not a host name"
        ),
    };
    Ok(Some(SocketAddr::new(ip, url.port())))
}

/// Advertised URLs: host names or IP addresses, never an unspecified one.
fn advertised_urls(flag: &str, text: &str) -> anyhow::Result<Vec<PeerAddr>> {
    let mut out = Vec::new();
    for url in split_urls(text) {
        let addr = PeerAddr::parse(url).with_context(|| flag.to_string())?;
        if addr.ip().is_some_and(|ip| ip.is_unspecified()) {
            bail!("{flag} {url}: advertise the address others reach this member at, not {addr}");
        }
        out.push(addr);
    }
    if out.is_empty() {
        bail!("{flag} is empty");
    }
    Ok(out)
}

/// This member's advertised peer addresses: `--initial-advertise-peer-urls`
/// (which must agree with its entry in the initial cluster), else that
/// entry, else the listen address when it is a specific one.
fn advertised_peer(
    name: &str,
    initial_cluster: &BTreeMap<String, PeerAddr>,
    urls: &Urls,
    join: bool,
) -> anyhow::Result<Vec<PeerAddr>> {
    let entry = initial_cluster.get(name);
    if entry.is_none() && !join {
        bail!("{name} is not in --initial-cluster");
    }
    if let Some(text) = &urls.advertise_peer {
        let given = advertised_urls("--initial-advertise-peer-urls", text)?;
        match entry {
            Some(entry) if *entry != given[0] => bail!(
                "--initial-advertise-peer-urls {} differs from {name}'s URL in --initial-cluster ({entry}): peers would not know this member",
                given[0]
            ),
            _ => return Ok(given),
        }
    }
    if let Some(entry) = entry {
        return Ok(vec![entry.clone()]);
    }
    match urls.listen_peer()? {
        Some(addr) if !addr.ip().is_unspecified() => Ok(vec![PeerAddr::from(addr)]),
        Some(addr) => bail!(
            "{name} listens for peers on {addr}: give --initial-advertise-peer-urls (the address peers reach it at)"
        ),
        None => bail!("{name} is not in --initial-cluster; give --listen-peer-urls and --initial-advertise-peer-urls"),
    }
}

/// etcd's client-side TLS flags, checked for consistency (the files are
/// read by the caller).
fn client_tls_options(
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: bool,
) -> anyhow::Result<Option<ferrite_tls::ClientTlsOptions>> {
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(ferrite_tls::ClientTlsOptions {
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth,
        })),
        (Some(_), None) => bail!("--cert-file needs --key-file"),
        (None, Some(_)) => bail!("--key-file needs --cert-file"),
        (None, None) if trusted_ca_file.is_some() || client_cert_auth => {
            bail!("--trusted-ca-file and --client-cert-auth need --cert-file and --key-file")
        }
        (None, None) => Ok(None),
    }
}

struct PeerFlags {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: bool,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
}

/// etcd's peer TLS flags, checked for consistency. Peer TLS here is always
/// mutual, so it needs the CA that peers' certificates chain to.
fn peer_tls_options(f: PeerFlags) -> anyhow::Result<Option<ferrite_tls::PeerTlsOptions>> {
    match (f.cert_file, f.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let trusted_ca_file = f.trusted_ca_file.context(
                "--peer-cert-file needs --peer-trusted-ca-file (peer TLS is mutual: members verify each other)",
            )?;
            Ok(Some(ferrite_tls::PeerTlsOptions {
                cert_file,
                key_file,
                trusted_ca_file,
                client_cert_auth: f.client_cert_auth,
                allowed_cn: f.allowed_cn,
                allowed_hostname: f.allowed_hostname,
            }))
        }
        (Some(_), None) => bail!("--peer-cert-file needs --peer-key-file"),
        (None, Some(_)) => bail!("--peer-key-file needs --peer-cert-file"),
        (None, None)
            if f.trusted_ca_file.is_some()
                || f.client_cert_auth
                || f.allowed_cn.is_some()
                || f.allowed_hostname.is_some() =>
        {
            bail!("--peer-trusted-ca-file, --peer-client-cert-auth and --peer-cert-allowed-* need --peer-cert-file and --peer-key-file")
        }
        (None, None) => Ok(None),
    }
}

fn load(path: &Path) -> anyhow::Result<ServerArgs> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid configuration", path.display()))
}

/// Parses `n1=http://h1:2380,n2=10.0.0.2:2380,...` (etcd's form; the
/// scheme may be left out).
pub fn parse_cluster(text: &str) -> anyhow::Result<BTreeMap<String, PeerAddr>> {
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, addr) = item
            .split_once('=')
            .with_context(|| format!("{item:?}: expected name=http://host:port"))?;
        let addr = PeerAddr::parse(addr).with_context(|| format!("{item:?}"))?;
        if addr.ip().is_some_and(|ip| ip.is_unspecified()) {
            bail!("{item:?}: a member is reached at a real address, not {addr}");
        }
        if members.insert(name.to_string(), addr).is_some() {
            bail!("{name} appears twice in the initial cluster");
        }
    }
    if members.is_empty() {
        bail!("the initial cluster is empty");
    }
    let mut seen = std::collections::BTreeSet::new();
    for addr in members.values() {
        if !seen.insert(addr) {
            bail!("peer address {addr} appears twice in the initial cluster");
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str, cluster: &str) -> ServerArgs {
        ServerArgs {
            name: Some(name.into()),
            initial_cluster: Some(cluster.into()),
            ..ServerArgs::default()
        }
    }

    #[test]
    fn quota_and_corruption_check_flags() {
        let cfg = args("n1", "n1=127.0.0.1:2380").resolve().unwrap();
        assert_eq!(cfg.quota_backend_bytes, 2_147_483_648, "etcd's default");
        assert_eq!(cfg.corrupt_check, None, "off by default, as etcd");
        let mut a = args("n1", "n1=127.0.0.1:2380");
        a.quota_backend_bytes = Some(65536);
        a.corrupt_check_time = Some("2s".into());
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.quota_backend_bytes, 65536);
        assert_eq!(cfg.corrupt_check, Some(Duration::from_secs(2)));
        for bad in ["2", "s", "5x", "10ms", "-1s"] {
            let mut a = args("n1", "n1=127.0.0.1:2380");
            a.corrupt_check_time = Some(bad.into());
            assert!(a.resolve().is_err(), "{bad} is refused");
        }
        let mut a = args("n1", "n1=127.0.0.1:2380");
        a.corrupt_check_time = Some("0".into());
        assert_eq!(a.resolve().unwrap().corrupt_check, None);
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn resolves_defaults_and_validates() {
        let cfg = args("n1", "n1=127.0.0.1:2380,n2=127.0.0.1:22380")
            .resolve()
            .unwrap();
        assert_eq!(cfg.listen_peer, "127.0.0.1:2380".parse().unwrap());
        assert_eq!(cfg.election_ticks, 10);
        assert_eq!(cfg.tick, Duration::from_millis(100));
        assert!(
            args("n9", "n1=127.0.0.1:2380").resolve().is_err(),
            "not a member"
        );
        assert!(args("n1", "n1=nowhere").resolve().is_err(), "bad address");
        assert!(
            args("n1", "n1=127.0.0.1:1,n1=127.0.0.1:2")
                .resolve()
                .is_err(),
            "duplicate"
        );
        assert!(
            args("n1", "n1=127.0.0.1:1,n2=127.0.0.1:1")
                .resolve()
                .is_err(),
            "same address"
        );
        let mut a = args("n1", "n1=127.0.0.1:2380");
        a.election_ms = Some(100);
        assert!(a.resolve().is_err(), "election below two heartbeats");
        let mut a = args("n1", "n1=127.0.0.1:2380");
        a.listen_client = Some("127.0.0.1:2380".parse().unwrap());
        assert!(a.resolve().is_err(), "two listeners on one address");
        let mut a = args("n1", "n1=127.0.0.1:2380");
        a.force_new_cluster = true;
        assert!(a.clone().resolve().unwrap().force_new_cluster);
        a.join = true;
        assert!(a.resolve().is_err(), "--force-new-cluster with --join");
    }

    #[test]
    fn listen_and_advertise_urls_are_separate() {
        let cluster = "m1=http://m1.example:2380,m2=http://10.0.0.2:2380";
        let mut a = args("m1", cluster);
        a.listen_peer_urls = Some("http://0.0.0.0:2380".into());
        a.listen_client_urls = Some("http://0.0.0.0:2379,http://127.0.0.1:2379".into());
        a.advertise_client_urls = Some("http://m1.example:2379,http://10.9.9.9:2379".into());
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.listen_peer, "0.0.0.0:2380".parse().unwrap());
        assert_eq!(cfg.listen_client, "0.0.0.0:2379".parse().unwrap());
        assert_eq!(
            cfg.advertise_peer,
            vec![PeerAddr::parse("m1.example:2380").unwrap()]
        );
        let client: Vec<String> = cfg.advertise_client.iter().map(|a| a.to_string()).collect();
        assert_eq!(client, ["m1.example:2379", "10.9.9.9:2379"]);
        assert_eq!(cfg.initial_cluster["m2"].to_string(), "10.0.0.2:2380");

        // A member whose address is an IP listens there by default, as before.
        let cfg = args("m2", cluster).resolve().unwrap();
        assert_eq!(cfg.listen_peer, "10.0.0.2:2380".parse().unwrap());
        assert!(cfg.advertise_client.is_empty());
        // Behind a name, it must be told where to listen.
        let e = format!("{:#}", args("m1", cluster).resolve().unwrap_err());
        assert!(e.contains("--listen-peer-urls"), "{e}");
    }

    #[test]
    fn listen_and_advertise_mistakes_are_refused() {
        let cluster = "n1=http://127.0.0.1:2380";
        let with = |f: &dyn Fn(&mut ServerArgs)| {
            let mut a = args("n1", cluster);
            f(&mut a);
            a.resolve().map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        let e = with(&|a| a.initial_advertise_peer_urls = Some("http://0.0.0.0:2380".into()));
        assert!(e.unwrap_err().contains("not 0.0.0.0:2380"));
        let e = with(&|a| a.advertise_client_urls = Some("http://0.0.0.0:2379".into()));
        assert!(e.unwrap_err().contains("not 0.0.0.0:2379"));
        let e = with(&|a| a.initial_advertise_peer_urls = Some("http://127.0.0.1:2381".into()));
        assert!(e.unwrap_err().contains("differs from n1's URL"));
        let e = with(&|a| a.listen_peer_urls = Some("http://some.host:2380".into()));
        assert!(e.unwrap_err().contains("not a host name"));
        let e = with(&|a| {
            a.listen_peer_urls = Some("http://127.0.0.1:2380".into());
            a.listen_peer = Some("127.0.0.1:2380".parse().unwrap());
        });
        assert!(e.unwrap_err().contains("not both"));
        let e = with(&|a| a.listen_client_urls = Some("https://127.0.0.1:2379".into()));
        assert!(e.unwrap_err().contains("https needs TLS"));
        let e = with(&|a| a.listen_peer = Some("127.0.0.1:2381".parse().unwrap()));
        assert!(e.unwrap_err().contains("differs from n1's address"));
        // Another listen address is fine when the advertised one is given.
        with(&|a| {
            a.listen_peer = Some("0.0.0.0:2380".parse().unwrap());
            a.initial_advertise_peer_urls = Some("http://127.0.0.1:2380".into());
        })
        .unwrap();
        let e = args("n1", "n1=http://0.0.0.0:2380").resolve().unwrap_err();
        assert!(format!("{e:#}").contains("real address"));
        let e = args("n1", "n1=ftp://h:1").resolve().unwrap_err();
        assert!(format!("{e:#}").contains("expected host:port"), "{e:#}");
    }

    #[test]
    fn toml_file_under_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.toml");
        std::fs::write(
            &path,
            "name = \"n1\"\ninitial_cluster = \"n1=127.0.0.1:2380\"\nheartbeat_ms = 50\nelection_ms = 500\n",
        )
        .unwrap();
        let cfg = ServerArgs {
            config: Some(path.clone()),
            heartbeat_ms: Some(20),
            ..ServerArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.tick, Duration::from_millis(20), "the flag wins");
        assert_eq!(cfg.election_ticks, 25);
        // The listen pair comes from the flags or the file, never mixed.
        std::fs::write(
            &path,
            "name = \"n1\"\ninitial_cluster = \"n1=http://h1:2380\"\nlisten_peer_urls = \"http://0.0.0.0:2380\"\nadvertise_client_urls = \"http://h1:2379\"\n",
        )
        .unwrap();
        let cfg = ServerArgs {
            config: Some(path.clone()),
            ..ServerArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.listen_peer, "0.0.0.0:2380".parse().unwrap());
        assert_eq!(cfg.advertise_client[0].to_string(), "h1:2379");
        let cfg = ServerArgs {
            config: Some(path.clone()),
            listen_peer: Some("10.1.1.1:2380".parse().unwrap()),
            ..ServerArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            cfg.listen_peer,
            "10.1.1.1:2380".parse().unwrap(),
            "the flag wins"
        );
        std::fs::write(&path, "name = \"n1\"\nbogus = 1\n").unwrap();
        let err = ServerArgs {
            config: Some(path),
            ..ServerArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn tls_flags_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let with = |f: &dyn Fn(&mut ServerArgs)| {
            let mut a = args("n1", "n1=127.0.0.1:2380");
            f(&mut a);
            a.resolve().map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        let e = with(&|a| a.cert_file = Some(garbage.clone())).unwrap_err();
        assert!(e.contains("--cert-file needs --key-file"), "{e}");
        let e = with(&|a| a.client_cert_auth = true).unwrap_err();
        assert!(e.contains("need --cert-file"), "{e}");
        let e = with(&|a| {
            a.cert_file = Some(garbage.clone());
            a.key_file = Some(garbage.clone());
        })
        .unwrap_err();
        assert!(
            e.contains("garbage.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = with(&|a| {
            a.peer_cert_file = Some(dir.path().join("missing.pem"));
            a.peer_key_file = Some(garbage.clone());
        })
        .unwrap_err();
        assert!(e.contains("--peer-trusted-ca-file"), "{e}");
        let e = with(&|a| a.peer_cert_allowed_cn = Some("n2".into())).unwrap_err();
        assert!(e.contains("need --peer-cert-file"), "{e}");
    }
}
