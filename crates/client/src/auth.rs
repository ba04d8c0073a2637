//! etcd's authentication, client side: a user and password are traded for
//! a token (`Auth.Authenticate`), the token rides in the `token` metadata
//! of every request, and, as etcd's clientv3 does, a request refused
//! because the token went stale ("invalid auth token", "revision of auth
//! store is old", or "user name is empty" while credentials are known) is
//! retried once after authenticating again.
//!
//! Also the Auth service's administration calls (users, roles, key-range
//! permissions), with permissions encoded as etcdctl encodes them.
//!
//! The server's auth errors arrive as etcd's fixed messages; `AuthError`
//! turns each into a variant, as clientv3's `rpctypes` does, so callers
//! never compare strings.

use std::sync::{Arc, Mutex};

use ferrite_proto::authpb;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::auth_client::AuthClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use crate::{Client, ClientError, Retry};

/// The gRPC metadata key etcd's clients put the token in.
pub const TOKEN_METADATA: &str = "token";

/// A user name and password (`--user name:password`). The password never
/// shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// An auth failure, one variant per etcd error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed: invalid user name or password")]
    AuthFailed,
    #[error("permission denied")]
    PermissionDenied,
    #[error("the auth token is invalid or has expired (etcdserver: invalid auth token)")]
    InvalidToken,
    #[error(
        "the auth store changed under the request (etcdserver: revision of auth store is old)"
    )]
    OldRevision,
    #[error("user name is empty: authentication is enabled, give --user")]
    UserEmpty,
    #[error("authentication is not enabled")]
    NotEnabled,
    #[error("root user does not exist (add it first: user add root)")]
    RootUserNotExist,
    #[error("root user does not have root role")]
    RootRoleNotExist,
    #[error("user name already exists")]
    UserAlreadyExists,
    #[error("user name not found")]
    UserNotFound,
    #[error("role name already exists")]
    RoleAlreadyExists,
    #[error("role name not found")]
    RoleNotFound,
    #[error("role name is empty")]
    RoleEmpty,
    #[error("role is not granted to the user")]
    RoleNotGranted,
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    #[error("permission not given")]
    PermissionNotGiven,
    #[error("invalid auth management (root must keep the root role)")]
    InvalidAuthManagement,
}

impl AuthError {
    /// etcd's message for each error (`rpctypes`), as servers send them.
    const MESSAGES: &'static [(&'static str, AuthError)] = &[
        (
            "etcdserver: authentication failed, invalid user ID or password",
            AuthError::AuthFailed,
        ),
        ("etcdserver: permission denied", AuthError::PermissionDenied),
        ("etcdserver: invalid auth token", AuthError::InvalidToken),
        (
            "etcdserver: revision of auth store is old",
            AuthError::OldRevision,
        ),
        ("etcdserver: user name is empty", AuthError::UserEmpty),
        (
            "etcdserver: authentication is not enabled",
            AuthError::NotEnabled,
        ),
        (
            "etcdserver: root user does not exist",
            AuthError::RootUserNotExist,
        ),
        (
            "etcdserver: root user does not have root role",
            AuthError::RootRoleNotExist,
        ),
        (
            "etcdserver: user name already exists",
            AuthError::UserAlreadyExists,
        ),
        ("etcdserver: user name not found", AuthError::UserNotFound),
        (
            "etcdserver: role name already exists",
            AuthError::RoleAlreadyExists,
        ),
        ("etcdserver: role name not found", AuthError::RoleNotFound),
        ("etcdserver: role name is empty", AuthError::RoleEmpty),
        (
            "etcdserver: role is not granted to the user",
            AuthError::RoleNotGranted,
        ),
        (
            "etcdserver: permission is not granted to the role",
            AuthError::PermissionNotGranted,
        ),
        (
            "etcdserver: permission not given",
            AuthError::PermissionNotGiven,
        ),
        (
            "etcdserver: invalid auth management",
            AuthError::InvalidAuthManagement,
        ),
    ];

    /// The auth error a server's message names. Also accepts the form a
    /// watch's cancel reason takes ("rpc error: code = ... desc = MSG").
    pub fn from_message(message: &str) -> Option<AuthError> {
        let desc = message
            .rsplit_once("desc = ")
            .map_or(message, |(_, d)| d)
            .trim();
        Self::MESSAGES
            .iter()
            .find(|(m, _)| *m == desc)
            .map(|(_, e)| e.clone())
    }

    /// The auth error of a gRPC status, if it is one.
    pub fn from_status(status: &tonic::Status) -> Option<AuthError> {
        match status.code() {
            Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition => AuthError::from_message(status.message()),
            _ => None,
        }
    }
}

/// What a request refused for an auth reason should do next, decided as
/// etcd's clientv3 does (`shouldRefreshToken`), and at most once per
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthRetry {
    /// Authenticate again (the token is stale or was never had), then
    /// send the request again.
    Reauthenticate,
    /// Send the request again as it is (a stale auth revision with no
    /// password to authenticate with: the server checks again).
    Resend,
    /// Not an auth retry: the error stands.
    No,
}

/// Decides, for one request, whether an auth refusal is retried. It says
/// yes at most once: a second stale-token answer right after a fresh
/// authentication is the server's final word.
#[derive(Debug, Default)]
pub(crate) struct AuthRetries {
    done: bool,
}

impl AuthRetries {
    pub(crate) fn on_refusal(
        &mut self,
        error: Option<&AuthError>,
        has_credentials: bool,
    ) -> AuthRetry {
        if self.done {
            return AuthRetry::No;
        }
        let decision = match error {
            Some(AuthError::InvalidToken | AuthError::OldRevision) if has_credentials => {
                AuthRetry::Reauthenticate
            }
            Some(AuthError::OldRevision) => AuthRetry::Resend,
            Some(AuthError::UserEmpty) if has_credentials => AuthRetry::Reauthenticate,
            _ => AuthRetry::No,
        };
        if decision != AuthRetry::No {
            self.done = true;
        }
        decision
    }
}

/// What the client holds of its token.
#[derive(Clone, Debug, Default)]
enum TokenState {
    /// Not authenticated yet (or the token was dropped as stale).
    #[default]
    None,
    Token(MetadataValue<Ascii>),
    /// The server said authentication is not enabled: requests go without
    /// a token until a refusal says otherwise.
    NotEnabled,
}

/// Credentials and the token they earned, shared by a client and its
/// siblings (keep-alive tasks, watches).
#[derive(Clone, Default)]
pub(crate) struct Auth {
    credentials: Option<Credentials>,
    state: Arc<Mutex<TokenState>>,
}

/// Puts the token, when there is one, in a request's metadata.
#[derive(Clone)]
pub struct TokenInterceptor(Arc<Mutex<TokenState>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let TokenState::Token(t) = &*state {
            request.metadata_mut().insert(TOKEN_METADATA, t.clone());
        }
        Ok(request)
    }
}

/// A channel whose every request carries the client's token.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

impl Auth {
    pub(crate) fn new(credentials: Option<Credentials>) -> Auth {
        Auth {
            credentials,
            state: Arc::default(),
        }
    }

    pub(crate) fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    pub(crate) fn wrap(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, TokenInterceptor(self.state.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request must wait for `authenticate` first.
    pub(crate) fn needs_token(&self) -> bool {
        self.credentials.is_some() && matches!(*self.lock(), TokenState::None)
    }

    /// Drops the token: the next request authenticates again.
    pub(crate) fn forget(&self) {
        *self.lock() = TokenState::None;
    }

    /// Trades the credentials for a token on `channel`. A server without
    /// authentication enabled is not an error (etcd's clients go on
    /// without a token). An error is the server's or the connection's.
    pub(crate) async fn authenticate(&self, channel: Channel) -> Result<(), tonic::Status> {
        let Some(c) = &self.credentials else {
            return Ok(());
        };
        let request = pb::AuthenticateRequest {
            name: c.user.clone(),
            password: c.password.clone(),
        };
        match AuthClient::new(channel).authenticate(request).await {
            Ok(r) => {
                let token = MetadataValue::try_from(r.into_inner().token)
                    .map_err(|_| tonic::Status::internal("the server's auth token is not ASCII"))?;
                *self.lock() = TokenState::Token(token);
                Ok(())
            }
            Err(s) if AuthError::from_status(&s) == Some(AuthError::NotEnabled) => {
                *self.lock() = TokenState::NotEnabled;
                Ok(())
            }
            Err(s) => Err(s),
        }
    }
}

/// A permission's kind, etcdctl's `read`, `write`, `readwrite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionType {
    Read,
    Write,
    ReadWrite,
}

impl PermissionType {
    fn proto(self) -> authpb::permission::Type {
        match self {
            PermissionType::Read => authpb::permission::Type::Read,
            PermissionType::Write => authpb::permission::Type::Write,
            PermissionType::ReadWrite => authpb::permission::Type::Readwrite,
        }
    }

    fn from_proto(t: i32) -> PermissionType {
        match authpb::permission::Type::try_from(t) {
            Ok(authpb::permission::Type::Write) => PermissionType::Write,
            Ok(authpb::permission::Type::Readwrite) => PermissionType::ReadWrite,
            _ => PermissionType::Read,
        }
    }

    pub fn reads(self) -> bool {
        self != PermissionType::Write
    }

    pub fn writes(self) -> bool {
        self != PermissionType::Read
    }
}

impl std::str::FromStr for PermissionType {
    type Err = ClientError;

    /// Case-insensitive, as etcd's `StrToPermissionType`.
    fn from_str(s: &str) -> Result<PermissionType, ClientError> {
        match s.to_ascii_uppercase().as_str() {
            "READ" => Ok(PermissionType::Read),
            "WRITE" => Ok(PermissionType::Write),
            "READWRITE" => Ok(PermissionType::ReadWrite),
            _ => Err(ClientError::BadArgument(format!(
                "invalid permission type {s:?} (read, write or readwrite)"
            ))),
        }
    }
}

/// Access to the keys in `[key, range_end)`: one key when `range_end` is
/// empty; every key from `key` on when it is `"\0"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub kind: PermissionType,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// How a permission's keys were given: etcdctl's `KEY [END]`, `--prefix`
/// and `--from-key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// One key, or `[key, end)` with an end.
    #[default]
    Key,
    Until(&'a [u8]),
    Prefix,
    FromKey,
}

/// `(key, range_end)` as etcdctl's `role grant-permission` encodes them.
/// An empty key with `--prefix` or `--from-key` is the whole key space
/// (`["\0", "\0")`); an empty key alone is the key `"\0"`.
pub fn permission_range(
    key: &[u8],
    range: KeyRange<'_>,
) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    if key.is_empty() {
        return match range {
            KeyRange::Prefix | KeyRange::FromKey => Ok((vec![0], vec![0])),
            KeyRange::Key => Ok((vec![0], Vec::new())),
            KeyRange::Until(end) => Ok((vec![0], end.to_vec())),
        };
    }
    Ok(match range {
        KeyRange::Key => (key.to_vec(), Vec::new()),
        KeyRange::Until(end) => (key.to_vec(), end.to_vec()),
        KeyRange::Prefix => (key.to_vec(), crate::watch::prefix_end(key)),
        KeyRange::FromKey => (key.to_vec(), vec![0]),
    })
}

/// `auth status`: whether authentication is on, and the auth store's
/// revision (bumped by every user, role or permission change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthStatus {
    pub enabled: bool,
    pub revision: u64,
}

impl Client {
    /// Turns authentication on. The server refuses without a user `root`
    /// holding the role `root` (`RootUserNotExist`, `RootRoleNotExist`).
    pub async fn auth_enable(&mut self) -> Result<(), ClientError> {
        self.call_with(Retry::Always, |ch| async move {
            AuthClient::new(ch)
                .auth_enable(pb::AuthEnableRequest {})
                .await
        })
        .await
        .map(|_| ())
    }

    pub async fn auth_disable(&mut self) -> Result<(), ClientError> {
        self.call_with(Retry::Always, |ch| async move {
            AuthClient::new(ch)
                .auth_disable(pb::AuthDisableRequest {})
                .await
        })
        .await
        .map(|_| ())
    }

    /// etcd 3.5's AuthStatus (3.4 answers `Unimplemented`).
    pub async fn auth_status(&mut self) -> Result<AuthStatus, ClientError> {
        let r = self
            .call(|ch| async move {
                AuthClient::new(ch)
                    .auth_status(pb::AuthStatusRequest {})
                    .await
            })
            .await?
            .into_inner();
        Ok(AuthStatus {
            enabled: r.enabled,
            revision: r.auth_revision,
        })
    }

    /// Adds a user; with `password` `None`, one that can only authenticate
    /// by its TLS client certificate's common name.
    pub async fn user_add(
        &mut self,
        name: &str,
        password: Option<&str>,
    ) -> Result<(), ClientError> {
        let req = pb::AuthUserAddRequest {
            name: name.to_string(),
            password: password.unwrap_or_default().to_string(),
            options: Some(authpb::UserAddOptions {
                no_password: password.is_none(),
            }),
            hashed_password: String::new(),
        };
        self.call_with(Retry::IfNotApplied, |ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_add(req).await }
        })
        .await
        .map(|_| ())
    }

    /// The roles granted to a user.
    pub async fn user_get(&mut self, name: &str) -> Result<Vec<String>, ClientError> {
        let req = pb::AuthUserGetRequest {
            name: name.to_string(),
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { AuthClient::new(ch).user_get(req).await }
            })
            .await?;
        Ok(r.into_inner().roles)
    }

    pub async fn user_list(&mut self) -> Result<Vec<String>, ClientError> {
        let r = self
            .call(|ch| async move {
                AuthClient::new(ch)
                    .user_list(pb::AuthUserListRequest {})
                    .await
            })
            .await?;
        Ok(r.into_inner().users)
    }

    pub async fn user_delete(&mut self, name: &str) -> Result<(), ClientError> {
        let req = pb::AuthUserDeleteRequest {
            name: name.to_string(),
        };
        self.call_with(Retry::IfNotApplied, |ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_delete(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn user_change_password(
        &mut self,
        name: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        let req = pb::AuthUserChangePasswordRequest {
            name: name.to_string(),
            password: password.to_string(),
            hashed_password: String::new(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_change_password(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn user_grant_role(&mut self, user: &str, role: &str) -> Result<(), ClientError> {
        let req = pb::AuthUserGrantRoleRequest {
            user: user.to_string(),
            role: role.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_grant_role(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<(), ClientError> {
        let req = pb::AuthUserRevokeRoleRequest {
            name: user.to_string(),
            role: role.to_string(),
        };
        self.call_with(Retry::IfNotApplied, |ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_revoke_role(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn role_add(&mut self, name: &str) -> Result<(), ClientError> {
        let req = pb::AuthRoleAddRequest {
            name: name.to_string(),
        };
        self.call_with(Retry::IfNotApplied, |ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_add(req).await }
        })
        .await
        .map(|_| ())
    }

    /// A role's permissions.
    pub async fn role_get(&mut self, name: &str) -> Result<Vec<Permission>, ClientError> {
        let req = pb::AuthRoleGetRequest {
            role: name.to_string(),
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { AuthClient::new(ch).role_get(req).await }
            })
            .await?;
        Ok(r.into_inner()
            .perm
            .into_iter()
            .map(|p| Permission {
                kind: PermissionType::from_proto(p.perm_type),
                key: p.key,
                range_end: p.range_end,
            })
            .collect())
    }

    pub async fn role_list(&mut self) -> Result<Vec<String>, ClientError> {
        let r = self
            .call(|ch| async move {
                AuthClient::new(ch)
                    .role_list(pb::AuthRoleListRequest {})
                    .await
            })
            .await?;
        Ok(r.into_inner().roles)
    }

    pub async fn role_delete(&mut self, name: &str) -> Result<(), ClientError> {
        let req = pb::AuthRoleDeleteRequest {
            role: name.to_string(),
        };
        self.call_with(Retry::IfNotApplied, |ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_delete(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Grants `[key, range_end)` (see `permission_range`) to a role.
    pub async fn role_grant_permission(
        &mut self,
        role: &str,
        permission: &Permission,
    ) -> Result<(), ClientError> {
        let req = pb::AuthRoleGrantPermissionRequest {
            name: role.to_string(),
            perm: Some(authpb::Permission {
                perm_type: permission.kind.proto() as i32,
                key: permission.key.clone(),
                range_end: permission.range_end.clone(),
            }),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_grant_permission(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn role_revoke_permission(
        &mut self,
        role: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ClientError> {
        let req = pb::AuthRoleRevokePermissionRequest {
            role: role.to_string(),
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        };
        self.call_with(Retry::IfNotApplied, |ch| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_revoke_permission(req).await }
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_messages_become_variants() {
        let status = tonic::Status::permission_denied("etcdserver: permission denied");
        assert_eq!(
            AuthError::from_status(&status),
            Some(AuthError::PermissionDenied)
        );
        let status = tonic::Status::unauthenticated("etcdserver: invalid auth token");
        assert_eq!(
            AuthError::from_status(&status),
            Some(AuthError::InvalidToken)
        );
        let failed = tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        );
        assert_eq!(AuthError::from_status(&failed), Some(AuthError::AuthFailed));
        // A watch's cancel reason carries the whole gRPC error text.
        let reason =
            "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old";
        assert_eq!(
            AuthError::from_message(reason),
            Some(AuthError::OldRevision)
        );
        // Not an auth error: another code, or another message.
        let status = tonic::Status::unavailable("etcdserver: permission denied");
        assert_eq!(AuthError::from_status(&status), None);
        let status = tonic::Status::invalid_argument("etcdserver: key is not provided");
        assert_eq!(AuthError::from_status(&status), None);
    }

    /// A stale token is refreshed once, and only once per request.
    #[test]
    fn a_stale_token_is_refreshed_once() {
        let mut r = AuthRetries::default();
        assert_eq!(
            r.on_refusal(Some(&AuthError::InvalidToken), true),
            AuthRetry::Reauthenticate
        );
        assert_eq!(
            r.on_refusal(Some(&AuthError::InvalidToken), true),
            AuthRetry::No
        );

        let mut r = AuthRetries::default();
        assert_eq!(
            r.on_refusal(Some(&AuthError::OldRevision), true),
            AuthRetry::Reauthenticate
        );
        assert_eq!(
            r.on_refusal(Some(&AuthError::OldRevision), true),
            AuthRetry::No
        );
    }

    /// "user name is empty" means the token is missing: worth a new one
    /// only when there is a password to get it with.
    #[test]
    fn an_empty_user_is_retried_only_with_credentials() {
        let mut r = AuthRetries::default();
        assert_eq!(
            r.on_refusal(Some(&AuthError::UserEmpty), true),
            AuthRetry::Reauthenticate
        );
        let mut r = AuthRetries::default();
        assert_eq!(
            r.on_refusal(Some(&AuthError::UserEmpty), false),
            AuthRetry::No
        );
    }

    /// Without a password (a TLS common name identifies the user), a stale
    /// auth revision is worth sending again as is; a bad token is not.
    #[test]
    fn without_credentials_only_an_old_revision_is_resent() {
        let mut r = AuthRetries::default();
        assert_eq!(
            r.on_refusal(Some(&AuthError::OldRevision), false),
            AuthRetry::Resend
        );
        let mut r = AuthRetries::default();
        assert_eq!(
            r.on_refusal(Some(&AuthError::InvalidToken), false),
            AuthRetry::No
        );
    }

    #[test]
    fn refusals_that_a_new_token_cannot_fix_are_final() {
        for e in [
            AuthError::PermissionDenied,
            AuthError::AuthFailed,
            AuthError::UserNotFound,
        ] {
            let mut r = AuthRetries::default();
            assert_eq!(r.on_refusal(Some(&e), true), AuthRetry::No, "{e:?}");
        }
        let mut r = AuthRetries::default();
        assert_eq!(r.on_refusal(None, true), AuthRetry::No);
    }

    #[test]
    fn permissions_are_encoded_as_etcdctl_does() {
        let range = |k: &[u8], r| permission_range(k, r).expect("range");
        assert_eq!(
            range(b"app/", KeyRange::Prefix),
            (b"app/".to_vec(), b"app0".to_vec())
        );
        assert_eq!(range(b"a", KeyRange::FromKey), (b"a".to_vec(), vec![0]));
        assert_eq!(range(b"a", KeyRange::Key), (b"a".to_vec(), Vec::new()));
        assert_eq!(
            range(b"a", KeyRange::Until(b"c")),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(range(b"", KeyRange::Prefix), (vec![0], vec![0]));
        assert_eq!(range(b"", KeyRange::FromKey), (vec![0], vec![0]));
        assert_eq!(range(b"", KeyRange::Key), (vec![0], Vec::new()));
        assert_eq!(
            range(b"\xff", KeyRange::Prefix),
            (b"\xff".to_vec(), vec![0])
        );
    }

    #[test]
    fn permission_types_parse_like_etcds() {
        assert_eq!(
            "read".parse::<PermissionType>().ok(),
            Some(PermissionType::Read)
        );
        assert_eq!(
            "READWRITE".parse::<PermissionType>().ok(),
            Some(PermissionType::ReadWrite)
        );
        assert_eq!(
            "Write".parse::<PermissionType>().ok(),
            Some(PermissionType::Write)
        );
        assert!("rw".parse::<PermissionType>().is_err());
    }

    #[test]
    fn a_password_never_shows_in_debug() {
        let c = Credentials {
            user: "alice".into(),
            password: "s3cret".into(),
        };
        let text = format!("{c:?}");
        assert!(text.contains("alice") && !text.contains("s3cret"), "{text}");
    }
}
