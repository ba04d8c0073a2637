//! `ferrite snapshot save|status|restore`: backups as etcdctl takes them.
//!
//! - `save FILE` streams `Maintenance.Snapshot` from the cluster into
//!   `FILE.part`, checks it, and renames it to FILE (etcdctl's
//!   `snapshot save` writes the same file);
//! - `status FILE` checks the file's SHA-256 and prints what it holds;
//! - `restore FILE --name N --initial-cluster ... --data-dir DIR` makes the
//!   data directory of one member of a NEW cluster from the file. Run it
//!   once per member with the same file and `--initial-cluster`, then start
//!   each member with `ferrite server` and the same flags: every member
//!   builds the same state at the same index, so they agree from the first
//!   election.
//!
//! What a restored member holds: the KV store with its history and
//! revision, leases (their TTLs start again when the new cluster elects a
//! leader), users, roles and auth on or off, registers, the volume table,
//! and the member table rewritten for the new members. Volume contents are
//! not in the file: `save --with-volumes` writes them beside it, in
//! `FILE.volumes/`, and `restore` fills the volumes from there when it
//! finds it (see `volume_backup.rs`, also for the point in time the images
//! hold); without it (or with `--skip-volumes`) restored volumes read as
//! zeros.
//!
//! Disaster recovery when a majority is lost for good is not a restore:
//! restart one survivor with `ferrite server --force-new-cluster` (same
//! flags otherwise), which keeps everything it had committed and makes it
//! the only member; then `member add` each replacement and start it with
//! `--join` on an empty data directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use ferrite_node::PeerAddr;
use ferrite_raft::{HardState, Index, Membership, NodeId, Persist, Snapshot, SnapshotMeta, Term};
use ferrite_service::ids::node_id;
use ferrite_state::backup::{self, Verified};
use ferrite_state::{Command, MemberInfo, Op, StateMachine};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_stream::StreamExt;

use crate::client_args::Endpoints;

#[derive(Subcommand)]
pub enum SnapshotOp {
    /// Stream a backup of the cluster's state into FILE (as `etcdctl
    /// snapshot save`).
    Save {
        file: PathBuf,
        /// Also read every volume's bytes into FILE.volumes/ (raw images and
        /// a manifest with their SHA-256), after the state is captured: stop
        /// writers first for images that match the state.
        #[arg(long)]
        with_volumes: bool,
    },
    /// Check FILE's SHA-256 and print its hash, revision, keys and size.
    Status {
        file: PathBuf,
        /// table, json or simple.
        #[arg(long, short = 'w', default_value = "table")]
        write_out: String,
    },
    /// Make the data directory of one member of a new cluster from FILE.
    Restore {
        file: PathBuf,
        /// This member's name in --initial-cluster.
        #[arg(long)]
        name: String,
        /// The new cluster's members: `n1=http://127.0.0.1:2380,...`.
        #[arg(long)]
        initial_cluster: String,
        /// This member's peer URL; must match its entry in --initial-cluster.
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
        /// The directory to create (must not exist or be empty; default
        /// `ferrite-data/NAME`, as `ferrite server`'s).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Restore the volumes as zeros even if FILE.volumes/ is there.
        #[arg(long)]
        skip_volumes: bool,
    },
}

pub async fn run(op: SnapshotOp, endpoints: Endpoints) -> anyhow::Result<()> {
    match op {
        SnapshotOp::Save { file, with_volumes } => save(&file, with_volumes, endpoints).await,
        SnapshotOp::Status { file, write_out } => status(&file, &write_out),
        SnapshotOp::Restore {
            file,
            name,
            initial_cluster,
            initial_advertise_peer_urls,
            data_dir,
            skip_volumes,
        } => {
            let data_dir =
                data_dir.unwrap_or_else(|| PathBuf::from(format!("ferrite-data/{name}")));
            let cluster = crate::config::parse_cluster(&initial_cluster)?;
            let summary = restore(
                &file,
                &name,
                &cluster,
                initial_advertise_peer_urls.as_deref(),
                &data_dir,
                skip_volumes,
            )?;
            println!("{summary}");
            Ok(())
        }
    }
}

pub(crate) fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn save(file: &Path, with_volumes: bool, endpoints: Endpoints) -> anyhow::Result<()> {
    let mut client = endpoints.client()?;
    let part = PathBuf::from(format!("{}.part", file.display()));
    let mut stream = client
        .snapshot()
        .await
        .context("cannot start the snapshot")?;
    let mut out = std::fs::File::create(&part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut bar: Option<ProgressBar> = None;
    let mut written = 0u64;
    let result: anyhow::Result<()> = async {
        while let Some(piece) = stream.next().await {
            let piece = piece.context("the snapshot stream failed")?;
            let bar = bar.get_or_insert_with(|| {
                progress_bar(piece.blob.len() as u64 + piece.remaining_bytes)
            });
            out.write_all(&piece.blob)
                .with_context(|| format!("cannot write {}", part.display()))?;
            written += piece.blob.len() as u64;
            bar.set_position(written);
        }
        out.sync_all()
            .with_context(|| format!("cannot sync {}", part.display()))?;
        Ok(())
    }
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let verified = result.and_then(|()| verify(&part, with_volumes));
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    let volumes = match &verified.state {
        Some(state) if with_volumes => match StateMachine::restore(state) {
            Ok(sm) => Some(sm.volumes().list()),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                bail!("the state in the snapshot does not decode: {e}");
            }
        },
        _ => None,
    };
    std::fs::rename(&part, file)
        .with_context(|| format!("cannot rename {} to {}", part.display(), file.display()))?;
    let m = &verified.meta;
    println!(
        "Snapshot saved at {}: {} bytes, revision {}, {} keys, raft index {}, sha256 {}",
        file.display(),
        verified.total_len,
        m.revision,
        m.keys,
        m.raft_index,
        backup::hex(&verified.hash)
    );
    if let Some(volumes) = volumes {
        let dir = crate::volume_backup::companion(file);
        let bytes = crate::volume_backup::save(&mut client, &volumes, &verified.hash, &dir).await?;
        println!(
            "Volumes saved in {}: {} volumes, {bytes} bytes (read after the state was captured)",
            dir.display(),
            volumes.len()
        );
    }
    Ok(())
}

/// Reads and checks the backup file at `path`.
fn verify(path: &Path, keep_state: bool) -> anyhow::Result<Verified> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    backup::read(std::io::BufReader::new(f), len, keep_state)
        .with_context(|| format!("{} is not a valid snapshot", path.display()))
}

fn status(file: &Path, write_out: &str) -> anyhow::Result<()> {
    let v = verify(file, false)?;
    let m = &v.meta;
    let hash = backup::hex(&v.hash);
    match write_out {
        "json" => {
            let doc = serde_json::json!({
                "hash": u32::from_be_bytes([v.hash[0], v.hash[1], v.hash[2], v.hash[3]]),
                "revision": m.revision,
                "totalKey": m.keys,
                "totalSize": v.total_len,
                "sha256": hash,
                "raftIndex": m.raft_index,
                "raftTerm": m.raft_term,
                "clusterId": m.cluster_id,
                "memberId": m.member_id,
            });
            println!("{doc}");
        }
        "simple" => println!(
            "{}, {}, {}, {}",
            &hash[..8],
            m.revision,
            m.keys,
            human_bytes(v.total_len)
        ),
        "table" => {
            let rows = [
                ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"].map(String::from),
                [
                    hash[..8].to_string(),
                    m.revision.to_string(),
                    m.keys.to_string(),
                    human_bytes(v.total_len),
                ],
            ];
            print!("{}", table(&rows));
        }
        other => bail!("--write-out {other:?}: expected table, json or simple"),
    }
    Ok(())
}

/// SI units, as etcdctl prints sizes.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// etcdctl's table: a header row and data rows, boxed.
fn table(rows: &[[String; 4]]) -> String {
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let line: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = line.clone();
    for (i, r) in rows.iter().enumerate() {
        for (c, cell) in r.iter().enumerate() {
            let w = widths[c];
            if i == 0 {
                out += &format!("| {cell:^w$} ");
            } else {
                out += &format!("| {cell:>w$} ");
            }
        }
        out += "|\n";
        if i == 0 {
            out += &line;
        }
    }
    out + &line
}

/// Builds DIR for member `name` of the new cluster `cluster`; returns a
/// summary. Creates nothing unless the file checks out, and removes what
/// it created if a later step fails.
pub fn restore(
    file: &Path,
    name: &str,
    cluster: &BTreeMap<String, PeerAddr>,
    advertise: Option<&str>,
    data_dir: &Path,
    skip_volumes: bool,
) -> anyhow::Result<String> {
    let Some(peer) = cluster.get(name).cloned() else {
        bail!("{name} is not in --initial-cluster");
    };
    if let Some(url) = advertise {
        let first = url.split(',').next().unwrap_or_default();
        let addr = PeerAddr::parse(
            first
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/'),
        )
        .with_context(|| format!("--initial-advertise-peer-urls {url:?}: not http://host:port"))?;
        if addr != peer {
            bail!("--initial-advertise-peer-urls {url} differs from {name}'s entry {peer} in --initial-cluster");
        }
    }
    check_empty(data_dir)?;
    let verified = verify(file, true)?;
    let companion = crate::volume_backup::companion(file);
    let images = if skip_volumes || !companion.exists() {
        None
    } else {
        Some(crate::volume_backup::read_manifest(
            &companion,
            &verified.hash,
        )?)
    };
    let state = verified.state.unwrap_or_default();
    let mut sm = StateMachine::restore(&state).with_context(|| {
        format!(
            "{}: the state in the snapshot does not decode",
            file.display()
        )
    })?;
    drop(state);
    let members = new_members(cluster);
    rewrite_members(&mut sm, &members);
    let index = sm.applied_index();
    let existed = data_dir.exists();
    let source = images.as_deref().map(|i| (companion.as_path(), i));
    let written = write_data_dir(&sm, &members, index, data_dir, source);
    let volume_bytes = match written {
        Ok(n) => n,
        Err(e) => {
            // Leave the directory as it was: absent, or empty.
            let _ = std::fs::remove_dir_all(data_dir);
            if existed {
                let _ = std::fs::create_dir(data_dir);
            }
            return Err(e);
        }
    };
    let volumes = sm.volumes().list().len();
    let mut summary = format!(
        "restored {} into {} for member {name} ({:x}) of a new cluster of {}: revision {}, {} keys, {} leases, raft index {}",
        file.display(),
        data_dir.display(),
        node_id(peer.clone()).0,
        members.len(),
        sm.revision(),
        verified.meta.keys,
        sm.kv().leases().len(),
        index,
    );
    if volumes > 0 {
        match (&images, skip_volumes) {
            (Some(_), _) => {
                summary += &format!(
                    "; {volumes} volumes restored from {} ({volume_bytes} bytes, hashes verified)",
                    companion.display()
                )
            }
            (None, true) => {
                summary += &format!(
                    "; {volumes} volumes restored with zero contents (--skip-volumes)"
                )
            }
            (None, false) => {
                summary += &format!(
                    "; {volumes} volumes restored with zero contents ({} not found: a snapshot holds the volume table, not volume data; save with --with-volumes for that)",
                    companion.display()
                )
            }
        }
    }
    Ok(summary)
}

/// Refuses a data directory that exists with anything in it.
fn check_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "data directory {} is not empty; restore into a new one",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// The new cluster's member table entries, as the members will publish
/// them (ids as `ferrite server` derives them).
fn new_members(cluster: &BTreeMap<String, PeerAddr>) -> Vec<MemberInfo> {
    cluster
        .iter()
        .map(|(name, addr)| MemberInfo {
            id: node_id(addr.clone()).0,
            name: name.clone(),
            peer_urls: vec![addr.url("http")],
            client_urls: Vec::new(),
        })
        .collect()
}

/// Forgets the old cluster's members and names the new ones, as entries
/// applied after the snapshot's index: every member restoring the same file
/// for the same cluster reaches the same state at the same index.
fn rewrite_members(sm: &mut StateMachine, members: &[MemberInfo]) {
    let ops = sm
        .members()
        .list()
        .into_iter()
        .map(|m| Op::MemberForget { id: m.id })
        .chain(members.iter().cloned().map(Op::MemberPublish));
    for op in ops {
        let index = sm.applied_index() + 1;
        sm.apply(index, &Command::new(op).encode());
    }
}

/// The WAL of a member that has the snapshot at `index` (term 1) with the
/// new members as voters, and the volume files valid from `index`: zeros,
/// or the images of `images` (companion directory, manifest). Marked valid
/// from `index` (the block store's mark), so the member serves them from
/// its start instead of copying them from a peer. Returns the volume bytes
/// restored from images.
fn write_data_dir(
    sm: &StateMachine,
    members: &[MemberInfo],
    index: u64,
    dir: &Path,
    images: Option<(&Path, &[crate::volume_backup::Image])>,
) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut store = ferrite_state::BlockStore::open(&dir.join("volumes"))?;
    let volumes = sm.volumes().list();
    for v in &volumes {
        store.install_volume(v.id, v.size)?;
    }
    let mut bytes = 0;
    if let Some((from, images)) = images {
        bytes = crate::volume_backup::restore(from, images, &volumes, &mut store)?;
    }
    store.sync(index)?;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: Index(index),
            term: Term(1),
            membership: Membership::new(members.iter().map(|m| NodeId(m.id))),
        },
        data: sm.snapshot(),
    };
    let dir_text = dir.to_string_lossy().into_owned();
    let (mut wal, _) = ferrite_wal::Wal::open(
        ferrite_wal::FileDisk::new(),
        &dir_text,
        ferrite_wal::WalOptions::default(),
    )?;
    wal.write(&Persist {
        hard_state: Some(HardState {
            term: Term(1),
            vote: None,
            commit: Index(index),
        }),
        snapshot: Some(snapshot),
        entries: Vec::new(),
    })?;
    wal.sync()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_and_sizes_read_like_etcdctl() {
        let rows = [
            ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"].map(String::from),
            ["a643f160", "3", "2", "1.1 kB"].map(String::from),
        ];
        assert_eq!(
            table(&rows),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | a643f160 |        3 |          2 |     1.1 kB |\n\
             +----------+----------+------------+------------+\n"
        );
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_100), "1.1 kB");
        assert_eq!(human_bytes(2_500_000), "2.5 MB");
    }

    #[test]
    fn new_members_get_the_ids_the_server_derives() {
        let cluster =
            crate::config::parse_cluster("n1=http://127.0.0.1:2380,n2=127.0.0.1:22380").unwrap();
        let members = new_members(&cluster);
        assert_eq!(members.len(), 2);
        assert_eq!(
            members[0].id,
            node_id("127.0.0.1:2380".parse::<std::net::SocketAddr>().unwrap()).0
        );
        assert_eq!(members[1].peer_urls, ["http://127.0.0.1:22380"]);
    }
}
