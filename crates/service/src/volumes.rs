//! Block volumes as the front ends see them: the operations on `Context`,
//! shared by Ferrite's `Volumes` gRPC service and the NBD server.
//!
//! Writes and zeroes are idempotent as the NBD server issues them (a later
//! overlapping request waits for the earlier one's reply), so they are
//! retried through failovers without sessions, and a client only sees a
//! leader change as latency.

use std::time::Duration;

use bytes::Bytes;
use ferrite_state::limits::{VOLUME_READ_BYTES_MAX, VOLUME_WRITE_BYTES_MAX};
use ferrite_state::{Op, Principal, Reply, VolumeInfo};

use crate::context::Context;
use crate::error::ServiceError;

/// How long a block request keeps retrying through elections before it
/// fails: well beyond a failover (about 1.5 s), short of a client's own
/// timeouts (the Linux NBD client's default is 30 s).
pub const BLOCK_RETRY: Duration = Duration::from_secs(20);

/// Every operation is made as `who`: the state machine checks its
/// permission on the volume's key (`/ferrite/volumes/NAME`), and a list
/// shows only the volumes `who` may read.
impl Context {
    pub async fn volume_create(
        &self,
        name: &str,
        size: u64,
        who: &Principal,
    ) -> Result<VolumeInfo, ServiceError> {
        let op = Op::VolumeCreate {
            name: name.to_string(),
            size,
        };
        volume(self.write(op, None, who).await?)
    }

    pub async fn volume_resize(
        &self,
        name: &str,
        size: u64,
        who: &Principal,
    ) -> Result<VolumeInfo, ServiceError> {
        let op = Op::VolumeResize {
            name: name.to_string(),
            size,
        };
        volume(self.write(op, None, who).await?)
    }

    pub async fn volume_delete(
        &self,
        name: &str,
        who: &Principal,
    ) -> Result<VolumeInfo, ServiceError> {
        let op = Op::VolumeDelete {
            name: name.to_string(),
        };
        volume(self.write(op, None, who).await?)
    }

    /// Every volume, linearizably.
    pub async fn volume_list(&self, who: &Principal) -> Result<Vec<VolumeInfo>, ServiceError> {
        match self
            .read_patiently(Op::VolumeList, who, BLOCK_RETRY)
            .await?
        {
            Reply::Volumes(list) => Ok(list),
            other => Err(ServiceError::unexpected(other)),
        }
    }

    /// Writes `data` at `offset`, in commands of at most
    /// `VOLUME_WRITE_BYTES_MAX` proposed together; returns once all are
    /// committed and applied.
    pub async fn volume_write(
        &self,
        name: &str,
        offset: u64,
        data: Bytes,
        who: &Principal,
    ) -> Result<(), ServiceError> {
        let mut parts = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let n = (data.len() - at).min(VOLUME_WRITE_BYTES_MAX);
            let op = Op::VolumeWrite {
                name: name.to_string(),
                offset: offset + at as u64,
                data: data.slice(at..at + n),
            };
            parts.push(self.write_idempotent(op, who, BLOCK_RETRY));
            at += n;
        }
        for reply in futures_util::future::try_join_all(parts).await? {
            done(reply)?;
        }
        Ok(())
    }

    pub async fn volume_zero(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        who: &Principal,
    ) -> Result<(), ServiceError> {
        let op = Op::VolumeZero {
            name: name.to_string(),
            offset,
            len,
        };
        done(self.write_idempotent(op, who, BLOCK_RETRY).await?)
    }

    /// `len` bytes at `offset`, linearizably (ReadIndex, no log write).
    pub async fn volume_read(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        who: &Principal,
    ) -> Result<Bytes, ServiceError> {
        if len > VOLUME_READ_BYTES_MAX {
            return Err(ServiceError::ReadTooLong {
                max: VOLUME_READ_BYTES_MAX,
            });
        }
        let op = Op::VolumeRead {
            name: name.to_string(),
            offset,
            len,
        };
        match self.read_patiently(op, who, BLOCK_RETRY).await? {
            Reply::Data(data) if data.len() as u64 == len => Ok(data),
            Reply::Data(data) => Err(ServiceError::ReadLength {
                got: data.len(),
                wanted: len,
            }),
            other => Err(ServiceError::unexpected(other)),
        }
    }
}

fn volume(reply: Reply) -> Result<VolumeInfo, ServiceError> {
    match reply {
        Reply::Volume(v) => Ok(v),
        other => Err(ServiceError::unexpected(other)),
    }
}

fn done(reply: Reply) -> Result<(), ServiceError> {
    match reply {
        Reply::Done => Ok(()),
        other => Err(ServiceError::unexpected(other)),
    }
}
