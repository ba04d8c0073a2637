//! Copying volume files from a peer, for a member whose files are not valid
//! for its state (it installed a snapshot from the leader, or a copy was cut
//! short by a crash). Runs on the apply thread, which must not go on until
//! the files are there; it asks each peer in turn, and keeps asking, since a
//! member without its volume bytes has nothing else useful to do.
//!
//! Peers serve the copy with `Volumes/Copy` on their peer port (see
//! `volumes.rs` in `ferrite-api`, and `PeerDialer`): with peer TLS it is
//! mutual TLS with the member certificates, like Raft traffic. A copy is streamed straight into the
//! files, one chunk of at most `COPY_CHUNK_BYTES` in memory at a time.

use std::time::Duration;

use ferrite_proto::ferrite::v1 as fv;
use ferrite_proto::ferrite::v1::volumes_client::VolumesClient;
use ferrite_state::{BlockStore, MemberInfo, VolumeInfo};

/// Bytes per copied chunk.
pub const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Pause after every peer refused or failed, before asking them again.
const ROUND_PAUSE: Duration = Duration::from_secs(1);

pub struct PeerCopier {
    runtime: tokio::runtime::Handle,
    /// This member, which is not asked.
    me: u64,
    peers: crate::members::PeerDialer,
}

impl PeerCopier {
    pub fn new(
        runtime: tokio::runtime::Handle,
        me: u64,
        peers: crate::members::PeerDialer,
    ) -> PeerCopier {
        PeerCopier { runtime, me, peers }
    }

    /// Replaces every file in `store` by a copy of `volumes` from a peer that
    /// has applied at least `applied`, then marks the store valid from it.
    pub fn copy_all(
        &self,
        members: &[MemberInfo],
        volumes: &[VolumeInfo],
        applied: u64,
        store: &mut BlockStore,
    ) -> Result<(), String> {
        let fail = |e: ferrite_state::StoreError| e.to_string();
        let mut round = 0u64;
        // Empty files of the right sizes: what a copy fills in.
        let fresh = |store: &mut BlockStore| -> Result<(), String> {
            store.begin_install().map_err(fail)?;
            for v in volumes {
                store.install_volume(v.id, v.size).map_err(fail)?;
            }
            Ok(())
        };
        loop {
            fresh(store)?;
            if volumes.is_empty() {
                store.sync(applied).map_err(fail)?;
                return Ok(());
            }
            for m in members.iter().filter(|m| m.id != self.me) {
                let Some(url) = m.peer_urls.first() else {
                    continue;
                };
                match self
                    .runtime
                    .block_on(copy_from(&self.peers, url, volumes, applied, store))
                {
                    Ok(bytes) => {
                        store.sync(applied).map_err(fail)?;
                        tracing::info!(from = %m.name, bytes, volumes = volumes.len(), "copied volume files");
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(from = %m.name, "volume copy failed: {e}");
                        // Start over from a clean slate with the next peer.
                        fresh(store)?;
                    }
                }
            }
            round += 1;
            if round % 10 == 1 {
                tracing::warn!(
                    round,
                    "no peer could give a copy of the volume files yet; retrying"
                );
            }
            std::thread::sleep(ROUND_PAUSE);
        }
    }
}

async fn copy_from(
    peers: &crate::members::PeerDialer,
    url: &str,
    volumes: &[VolumeInfo],
    applied: u64,
    store: &mut BlockStore,
) -> Result<u64, String> {
    // No deadline on the whole call: a large volume takes as long as it takes.
    let channel = peers
        .channel(url, Duration::from_secs(1), Duration::from_secs(24 * 3600))
        .await?;
    let mut client = VolumesClient::new(channel).max_decoding_message_size(COPY_CHUNK_BYTES + 4096);
    let mut total = 0u64;
    for v in volumes {
        let request = fv::VolumeCopyRequest {
            id: v.id,
            size: v.size,
            min_applied: applied,
        };
        let mut stream = client
            .copy(request)
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| e.message().to_string())?
        {
            let end = chunk.offset.checked_add(chunk.data.len() as u64);
            if end.is_none_or(|end| end > v.size) || chunk.data.len() > COPY_CHUNK_BYTES {
                return Err(format!(
                    "chunk {}+{} outside volume {} of {} bytes",
                    chunk.offset,
                    chunk.data.len(),
                    v.name,
                    v.size
                ));
            }
            store
                .install_chunk(v.id, chunk.offset, &chunk.data)
                .map_err(|e| e.to_string())?;
            total += chunk.data.len() as u64;
        }
    }
    Ok(total)
}
