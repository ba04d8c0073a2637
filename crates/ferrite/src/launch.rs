//! Starting `ferrite server` processes on this machine, as `up`, `chaos`
//! and `bench` do: free loopback ports, the command line, a log file.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use anyhow::Context as _;
use tokio::process::Command;

/// Where one member listens.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub http: SocketAddr,
    pub nbd: SocketAddr,
}

/// `n` distinct free loopback addresses, below the ephemeral port range
/// (see `ferrite_node::ports`).
pub fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let ports = ferrite_node::ports::free_loopback_ports(n).context("find free ports")?;
    Ok(ports
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect())
}

/// Standard output and error appended to `path`.
pub fn log_to(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let err = log.try_clone().context("cannot duplicate the log file")?;
    Ok((log.into(), err.into()))
}

/// `ferrite server` for member `name` of `cluster` (`name=peer,...`), with
/// its data in `data_dir` and its output in `log`, killed when dropped; the
/// caller adds flags and spawns it.
pub fn server(
    name: &str,
    data_dir: &Path,
    cluster: &str,
    a: &Addrs,
    log: &Path,
) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find the ferrite binary")?;
    let (out, err) = log_to(log)?;
    let mut c = Command::new(exe);
    c.arg("server")
        .args(["--name", name])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--initial-cluster", cluster])
        .args(["--listen-peer", &a.peer.to_string()])
        .args(["--listen-client", &a.client.to_string()])
        .args(["--listen-http", &a.http.to_string()])
        .args(["--listen-nbd", &a.nbd.to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    Ok(c)
}
