//! Ferrite's replicated volumes as the NBD server sees them: [`Exports`]
//! on `ferrite-service`'s `Context`, and what its typed errors mean in NBD.
//!
//! Who an NBD client is follows the gRPC front end's rule for a client
//! certificate (`Context::principal`): with auth enabled, the verified
//! certificate's common name is the user, at the current auth revision;
//! without a certificate the client is nobody, which the state machine
//! refuses. The principal is taken afresh for every request, and every
//! read, write and zero is made as it, so the state machine checks the
//! permission on `/ferrite/volumes/NAME` when the request applies,
//! linearizably with permission changes. `authorize` checks at connect
//! time too, so that a client without read permission is refused up front
//! and one without write permission gets a read-only export.

use bytes::Bytes;
use ferrite_node::NodeError;
use ferrite_service::volumes::BLOCK_RETRY;
use ferrite_service::{Context, ServiceError};
use ferrite_state::auth::{volume_key, Access};
use ferrite_state::{AuthReply, AuthRequest, Op, Principal, Reply, StateError};

use crate::{Client, ExportAccess, ExportError, Exports};

/// The volumes as the NBD server sees them.
pub struct VolumeExports(pub Context);

/// Attempts of a request whose principal went stale under it (the auth
/// store changed between taking the principal and applying the request):
/// each retry takes the principal at the auth revision read afresh.
const STALE_PRINCIPAL_ATTEMPTS: usize = 5;

/// What the NBD server makes of what failed: a range outside the volume is
/// answered as such (`NBD_ENOSPC` or `NBD_EINVAL`), a missing volume as an
/// unknown export, a refusal of the client as a refusal (`NBD_EPERM`, or
/// `NBD_REP_ERR_POLICY` while negotiating), and the rest as an I/O error
/// the client may retry.
fn export_error(e: ServiceError) -> ExportError {
    match e {
        ServiceError::State(StateError::NoSuchVolume(_)) => ExportError::NotFound,
        ServiceError::State(StateError::VolumeRange { .. } | StateError::VolumeSize { .. })
        | ServiceError::ReadTooLong { .. } => ExportError::OutOfRange,
        ServiceError::State(
            StateError::PermissionDenied | StateError::UserEmpty | StateError::UserNotFound,
        ) => ExportError::Denied(e.to_string()),
        ServiceError::Node(
            NodeError::NoLeader
            | NodeError::NotLeader { .. }
            | NodeError::Superseded
            | NodeError::Timeout
            | NodeError::Unknown(_)
            | NodeError::Busy(_)
            | NodeError::Stopped,
        )
        | ServiceError::State(StateError::AuthOldRevision) => {
            ExportError::Unavailable(e.to_string())
        }
        other => ExportError::Io(other.to_string()),
    }
}

impl VolumeExports {
    /// Who `client` is now, by this member's view of the auth store.
    fn principal(&self, client: &Client) -> Principal {
        let store = self.0.auth.current();
        match (&client.common_name, store.enabled()) {
            (Some(name), true) => Principal::user(name.as_str(), store.revision()),
            _ => Principal::Anonymous,
        }
    }

    /// Who `client` is at the auth store's current revision, read
    /// linearizably (this member's view may trail the leader's).
    async fn fresh_principal(&self, client: &Client) -> Result<Principal, ServiceError> {
        let status = Op::Auth(AuthRequest::Status);
        match self
            .0
            .read_patiently(status, &Principal::System, BLOCK_RETRY)
            .await?
        {
            Reply::Auth(AuthReply::Status { enabled, revision }) => {
                Ok(match (&client.common_name, enabled) {
                    (Some(name), true) => Principal::user(name.as_str(), revision),
                    _ => Principal::Anonymous,
                })
            }
            Reply::Error(e) => Err(ServiceError::State(e)),
            other => Err(ServiceError::unexpected(other)),
        }
    }

    /// Runs `call` as `client`. When the principal was stale by the time
    /// the request applied (nothing was applied then), runs it again as the
    /// client at the auth revision read afresh: the auth store moved on in
    /// between (`AuthOldRevision`), or auth was enabled after this member's
    /// view was taken (a certificate's user taken for nobody).
    async fn as_client<T, F, Fut>(&self, client: &Client, call: F) -> Result<T, ExportError>
    where
        F: Fn(Principal) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let mut who = self.principal(client);
        for _ in 1..STALE_PRINCIPAL_ATTEMPTS {
            match call(who.clone()).await {
                Err(ServiceError::State(StateError::AuthOldRevision)) => {}
                Err(ServiceError::State(StateError::UserEmpty))
                    if who == Principal::Anonymous && client.common_name.is_some() => {}
                done => return done.map_err(export_error),
            }
            who = self.fresh_principal(client).await.map_err(export_error)?;
        }
        call(who).await.map_err(export_error)
    }
}

impl Exports for VolumeExports {
    /// With auth enabled: a client certificate naming a user with read
    /// permission on the volume's key, read-only without write permission.
    /// Checked against the auth store as of a linearizable read, so a
    /// change acknowledged before the client connected is seen.
    async fn authorize(&self, client: &Client, name: &str) -> Result<ExportAccess, ExportError> {
        let who = self.fresh_principal(client).await.map_err(export_error)?;
        let store = self.0.auth.current();
        if !store.enabled() {
            return Ok(ExportAccess::ReadWrite);
        }
        let user = match &who {
            Principal::User { name, .. } => name.clone(),
            _ => {
                return Err(ExportError::Denied(
                    "authentication is enabled: a client certificate naming a user is required"
                        .into(),
                ))
            }
        };
        let key = volume_key(name);
        // The view is at least as new as the revision read: take the user
        // at the view's revision, as requests will.
        let who = Principal::user(user.as_str(), store.revision());
        if store.check(&who, Access::Read, &key, &[]).is_err() {
            return Err(ExportError::Denied(format!(
                "user {user:?} may not read volume {name:?}"
            )));
        }
        Ok(match store.check(&who, Access::Write, &key, &[]) {
            Ok(()) => ExportAccess::ReadWrite,
            Err(_) => ExportAccess::ReadOnly,
        })
    }

    /// Only the volumes `client` may read (the state machine filters).
    async fn list(&self, client: &Client) -> Result<Vec<String>, ExportError> {
        let list = self
            .as_client(client, |who| async move { self.0.volume_list(&who).await })
            .await?;
        Ok(list.into_iter().map(|v| v.name).collect())
    }

    async fn size(&self, client: &Client, name: &str) -> Result<Option<u64>, ExportError> {
        let list = self
            .as_client(client, |who| async move { self.0.volume_list(&who).await })
            .await?;
        Ok(list.into_iter().find(|v| v.name == name).map(|v| v.size))
    }

    async fn read(
        &self,
        client: &Client,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, ExportError> {
        self.as_client(client, |who| async move {
            self.0.volume_read(name, offset, u64::from(len), &who).await
        })
        .await
    }

    async fn write(
        &self,
        client: &Client,
        name: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ExportError> {
        // Writes may apply twice (later overlapping requests wait for this
        // one's reply), so a retry after a partly refused write is safe.
        self.as_client(client, |who| {
            let data = data.clone();
            async move { self.0.volume_write(name, offset, data, &who).await }
        })
        .await
    }

    async fn zero(
        &self,
        client: &Client,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<(), ExportError> {
        self.as_client(client, |who| async move {
            self.0.volume_zero(name, offset, u64::from(len), &who).await
        })
        .await
    }
}
