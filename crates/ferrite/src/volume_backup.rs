//! Volume contents beside a backup: `ferrite snapshot save FILE
//! --with-volumes` writes `FILE.volumes/`, and `ferrite snapshot restore
//! FILE` finds it there and fills the restored member's volume files.
//!
//! FILE itself is unchanged (etcdctl reads and writes the same file). The
//! companion directory holds one raw image per volume of the snapshot's
//! volume table (`NNNN.img`, sparse where the volume reads as zeros) and
//! `manifest.json`: the SHA-256 of FILE it belongs to, and per image the
//! volume's name, id, size, file name and the SHA-256 of its bytes.
//!
//! Point in time: the images are NOT taken at the snapshot's raft index.
//! The state is captured first (FILE); each volume is then read through the
//! Volumes service, `VOLUME_IO_BYTES_MAX` bytes per read, each read served
//! at the cluster's state of that moment. So every chunk holds the volume's
//! bytes as of when it was read — at or after the state's index, never
//! before. A write that lands while the save runs may be in the images
//! though FILE's state predates it, and two chunks of one volume may
//! straddle it (a torn image, like a crash-consistent copy of a running
//! disk). For images that match the state exactly, stop the writers
//! (unmount, or disconnect the NBD clients) before the save; point-in-time
//! volume snapshots (issue 17) will remove that need. A volume deleted or
//! shrunk while the save runs fails it; one created after the state was
//! captured is not saved (it is not in FILE's volume table).
//!
//! Memory: one chunk at a time, both ways.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ferrite_client::{Client, VOLUME_IO_BYTES_MAX};
use ferrite_state::backup;
use ferrite_state::{BlockStore, VolumeInfo};
use sha2::{Digest, Sha256};

const MANIFEST: &str = "manifest.json";
const FORMAT: u64 = 1;

/// The companion directory of backup file `file`.
pub fn companion(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.volumes", file.display()))
}

/// One volume image as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub id: u64,
    pub size: u64,
    pub file: String,
    pub sha256: String,
}

fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|b| *b == 0)
}

/// Writes every volume of `volumes` (the snapshot's table) into
/// `dir` (created; must not exist), reading through `client`, then the
/// manifest naming `file_hash`. Returns the bytes read. On error the
/// directory is removed.
pub async fn save(
    client: &mut Client,
    volumes: &[VolumeInfo],
    file_hash: &[u8],
    dir: &Path,
) -> anyhow::Result<u64> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => bail!(
            "{} exists; remove it or save to another file",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
    }
    std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = save_into(client, volumes, file_hash, dir).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn save_into(
    client: &mut Client,
    volumes: &[VolumeInfo],
    file_hash: &[u8],
    dir: &Path,
) -> anyhow::Result<u64> {
    let total: u64 = volumes.iter().map(|v| v.size).sum();
    let bar = crate::snapshot::progress_bar(total);
    let mut images = Vec::new();
    let mut done = 0u64;
    let result: anyhow::Result<()> = async {
        for (k, v) in volumes.iter().enumerate() {
            bar.set_message(v.name.clone());
            let file = format!("{k:04}.img");
            let path = dir.join(&file);
            let out = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut hasher = Sha256::new();
            let mut at = 0u64;
            while at < v.size {
                let n = (v.size - at).min(VOLUME_IO_BYTES_MAX as u64);
                let data = client.volume_read(&v.name, at, n).await.with_context(|| {
                    format!(
                        "cannot read volume {} at {at} (deleted or resized during the save? stop writers first)",
                        v.name
                    )
                })?;
                if data.len() as u64 != n {
                    bail!(
                        "volume {}: asked for {n} bytes at {at}, got {}",
                        v.name,
                        data.len()
                    );
                }
                hasher.update(&data);
                if !is_zero(&data) {
                    std::os::unix::fs::FileExt::write_all_at(&out, &data, at)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                at += n;
                done += n;
                bar.set_position(done);
            }
            out.set_len(v.size)
                .and_then(|()| out.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            images.push(Image {
                name: v.name.clone(),
                id: v.id,
                size: v.size,
                file,
                sha256: backup::hex(&hasher.finalize()),
            });
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    result?;
    write_manifest(dir, file_hash, &images)?;
    Ok(done)
}

fn write_manifest(dir: &Path, file_hash: &[u8], images: &[Image]) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "format": FORMAT,
        "snapshot_sha256": backup::hex(file_hash),
        "volumes": images.iter().map(|i| serde_json::json!({
            "name": i.name,
            "id": i.id,
            "size": i.size,
            "file": i.file,
            "sha256": i.sha256,
        })).collect::<Vec<_>>(),
    });
    let path = dir.join(MANIFEST);
    let mut f = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(format!("{doc:#}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads and checks the manifest in `dir`: it must name `file_hash`.
pub fn read_manifest(dir: &Path, file_hash: &[u8]) -> anyhow::Result<Vec<Image>> {
    let path = dir.join(MANIFEST);
    let meta =
        std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > 64 << 20 {
        bail!("{} is too large for a manifest", path.display());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
    if doc["format"].as_u64() != Some(FORMAT) {
        return Err(bad("unknown format"));
    }
    if doc["snapshot_sha256"].as_str() != Some(backup::hex(file_hash).as_str()) {
        return Err(bad(
            "made for another snapshot file (its snapshot_sha256 differs)",
        ));
    }
    let list = doc["volumes"]
        .as_array()
        .ok_or_else(|| bad("no volumes list"))?;
    let mut images = Vec::new();
    for v in list {
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("a volume without {k}")))
        };
        let num = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| bad(&format!("a volume without {k}")))
        };
        let file = text("file")?;
        if file.contains('/') || file.starts_with('.') {
            return Err(bad(&format!("image file name {file:?}")));
        }
        images.push(Image {
            name: text("name")?,
            id: num("id")?,
            size: num("size")?,
            file,
            sha256: text("sha256")?,
        });
    }
    Ok(images)
}

/// Fills `store` (the restored member's volume files, already created at
/// their sizes) from the images in `dir`, checking each image's size and
/// SHA-256 against the manifest. Every volume of `volumes` must have its
/// image. Returns the bytes written.
pub fn restore(
    dir: &Path,
    images: &[Image],
    volumes: &[VolumeInfo],
    store: &mut BlockStore,
) -> anyhow::Result<u64> {
    let total: u64 = volumes.iter().map(|v| v.size).sum();
    let bar = crate::snapshot::progress_bar(total);
    let result = restore_into(dir, images, volumes, store, &bar);
    bar.finish_and_clear();
    result
}

fn restore_into(
    dir: &Path,
    images: &[Image],
    volumes: &[VolumeInfo],
    store: &mut BlockStore,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut done = 0u64;
    let mut buf = vec![0u8; VOLUME_IO_BYTES_MAX];
    for v in volumes {
        let Some(image) = images.iter().find(|i| i.name == v.name) else {
            bail!(
                "{} has no image of volume {}; use --skip-volumes to restore every volume as zeros",
                dir.display(),
                v.name
            );
        };
        if image.id != v.id || image.size != v.size {
            bail!(
                "image of volume {} is for id {:x}, {} bytes; the snapshot has id {:x}, {} bytes",
                v.name,
                image.id,
                image.size,
                v.id,
                v.size
            );
        }
        bar.set_message(v.name.clone());
        let path = dir.join(&image.file);
        let mut f = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        if len != v.size {
            bail!(
                "{} holds {len} bytes; volume {} has {}",
                path.display(),
                v.name,
                v.size
            );
        }
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        while at < v.size {
            let n = (v.size - at).min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("cannot read {}", path.display()))?;
            hasher.update(&buf[..n]);
            if !is_zero(&buf[..n]) {
                store.install_chunk(v.id, at, &buf[..n])?;
            }
            at += n as u64;
            done += n as u64;
            bar.set_position(done);
        }
        let hash = backup::hex(&hasher.finalize());
        if hash != image.sha256 {
            bail!(
                "{}: SHA-256 {hash} differs from the manifest's {} (damaged image)",
                path.display(),
                image.sha256
            );
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_names_its_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let images = vec![Image {
            name: "disk0".into(),
            id: 7,
            size: 4096,
            file: "0000.img".into(),
            sha256: "ab".into(),
        }];
        write_manifest(dir.path(), &[1, 2], &images).expect("write");
        assert_eq!(read_manifest(dir.path(), &[1, 2]).expect("read"), images);
        let err = read_manifest(dir.path(), &[1, 3]).expect_err("other file");
        assert!(err.to_string().contains("another snapshot"), "{err}");
    }
}
