//! Ferrite's replicated volumes as the NBD server sees them: [`Exports`]
//! on `ferrite-service`'s `Context`, and what its typed errors mean in NBD.

use bytes::Bytes;
use ferrite_node::NodeError;
use ferrite_service::{Context, ServiceError};
use ferrite_state::{Principal, StateError};

use crate::{ExportError, Exports};

/// The volumes as the NBD server sees them.
pub struct VolumeExports(pub Context);

/// Who NBD clients are: the protocol carries no credentials, so nobody.
/// While auth is disabled that is everyone's right; once it is enabled,
/// the state machine refuses anonymous volume access (a listing shows
/// nothing, reads and writes fail) rather than letting NBD bypass the
/// permissions on `/ferrite/volumes/NAME`.
const NBD_CLIENT: Principal = Principal::Anonymous;

/// What the NBD server makes of what failed: a range outside the volume is
/// answered as such (`NBD_ENOSPC` or `NBD_EINVAL`), a missing volume as an
/// unknown export, and the rest as an I/O error the client may retry.
fn export_error(e: ServiceError) -> ExportError {
    match e {
        ServiceError::State(StateError::NoSuchVolume(_)) => ExportError::NotFound,
        ServiceError::State(StateError::VolumeRange { .. } | StateError::VolumeSize { .. })
        | ServiceError::ReadTooLong { .. } => ExportError::OutOfRange,
        ServiceError::Node(
            NodeError::NoLeader
            | NodeError::NotLeader { .. }
            | NodeError::Superseded
            | NodeError::Timeout
            | NodeError::Unknown(_)
            | NodeError::Busy(_)
            | NodeError::Stopped,
        ) => ExportError::Unavailable(e.to_string()),
        other => ExportError::Io(other.to_string()),
    }
}

impl Exports for VolumeExports {
    async fn list(&self) -> Result<Vec<String>, ExportError> {
        let list = self
            .0
            .volume_list(&NBD_CLIENT)
            .await
            .map_err(export_error)?;
        Ok(list.into_iter().map(|v| v.name).collect())
    }

    async fn size(&self, name: &str) -> Result<Option<u64>, ExportError> {
        let list = self
            .0
            .volume_list(&NBD_CLIENT)
            .await
            .map_err(export_error)?;
        Ok(list.into_iter().find(|v| v.name == name).map(|v| v.size))
    }

    async fn read(&self, name: &str, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        self.0
            .volume_read(name, offset, u64::from(len), &NBD_CLIENT)
            .await
            .map_err(export_error)
    }

    async fn write(&self, name: &str, offset: u64, data: Bytes) -> Result<(), ExportError> {
        self.0
            .volume_write(name, offset, data, &NBD_CLIENT)
            .await
            .map_err(export_error)
    }

    async fn zero(&self, name: &str, offset: u64, len: u32) -> Result<(), ExportError> {
        self.0
            .volume_zero(name, offset, u64::from(len), &NBD_CLIENT)
            .await
            .map_err(export_error)
    }
}
