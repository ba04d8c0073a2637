//! etcd's authentication and role-based access control, as a replicated
//! state machine: users (a bcrypt hash, or no password; roles), roles
//! (key-range permissions, `perms.rs`), whether auth is enabled, the auth
//! revision, and the secret that signs tokens.
//!
//! Every command says who asks (a [`Principal`]), and permission is checked
//! here, when a write is applied and when a read is answered, so that a
//! check is linearizable with the permission changes around it (etcd checks
//! in its apply loop the same way). The rules are etcd's (`auth/store.go`,
//! `etcdserver/apply_auth.go`): while auth is disabled everything is
//! allowed; once enabled, a request without a user is refused with
//! "user name is empty", a token issued at an older auth revision with
//! "revision of auth store is old" (etcd's clients then authenticate again
//! and retry), and a user without the permission with "permission denied".
//! The `root` role allows everything; auth management, compaction, member
//! changes and the maintenance calls etcd reserves for admins need it.
//!
//! Ferrite's own data uses the same permissions through a key per name:
//! register `NAME` is the key `/ferrite/registers/NAME` and volume `NAME`
//! the key `/ferrite/volumes/NAME` ([`register_key`], [`volume_key`]). A
//! register get or list needs read on it, a set, add or compare-and-set
//! write; a volume read or list needs read, a write, zero, resize, create or
//! delete write. Lists show a limited user only what it may read.
//!
//! The auth revision is etcd's: it starts at 1 and every change bumps it
//! except enabling auth (etcd's `AuthEnable` keeps it) and requests that
//! change nothing (granting a role a user already has). `changes` counts
//! every change, enabling included: watch streams use it to tell whether
//! they have seen the current state (see `watch.rs`).

mod authorize;
mod perms;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

pub use perms::{covers, valid_range, Access, PermKind, Permission};

use crate::error::StateError;

/// The user and role that etcd treats specially: the root role allows
/// everything, and auth cannot be enabled without a root user holding it.
pub const ROOT: &str = "root";

/// The key that stands for register `name` in permissions.
pub const REGISTER_KEY_PREFIX: &str = "/ferrite/registers/";
/// The key that stands for volume `name` in permissions.
pub const VOLUME_KEY_PREFIX: &str = "/ferrite/volumes/";

pub fn register_key(name: &str) -> Bytes {
    Bytes::from(format!("{REGISTER_KEY_PREFIX}{name}"))
}

pub fn volume_key(name: &str) -> Bytes {
    Bytes::from(format!("{VOLUME_KEY_PREFIX}{name}"))
}

/// The length of the token-signing secret.
pub const TOKEN_SECRET_BYTES: usize = 32;

/// Who a command is from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Principal {
    /// The member's own work (lease expiries and checkpoints, member
    /// publication, auto-compaction, volume copies): never checked.
    #[default]
    System,
    /// A client that presented no credentials (etcd's empty user).
    Anonymous,
    /// A user, as of the auth revision its token was issued at (or the
    /// current one, for a client certificate's common name).
    User { name: String, revision: u64 },
}

impl Principal {
    pub fn user(name: impl Into<String>, revision: u64) -> Principal {
        Principal::User {
            name: name.into(),
            revision,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::User { name, .. } => Some(name),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The bcrypt hash of the password, as the proposing member made it.
    pub password: Option<String>,
    /// etcd's `UserAddOptions.no_password`: the user cannot authenticate
    /// (it is meant for client certificates).
    pub no_password: bool,
    pub roles: BTreeSet<String>,
    /// `changes` when this user last may have lost a permission (created,
    /// a role revoked, a role of theirs deleted or narrowed).
    pub restricted_at: u64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("password", &self.password.as_ref().map(|_| "<hash>"))
            .field("no_password", &self.no_password)
            .field("roles", &self.roles)
            .field("restricted_at", &self.restricted_at)
            .finish()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// In key order (etcd keeps them sorted by key).
    pub perms: Vec<Permission>,
}

/// A change to the auth store or a read of it (etcd's Auth service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    /// `secret` signs tokens from now on; the proposing member drew it.
    Enable {
        secret: [u8; TOKEN_SECRET_BYTES],
    },
    Disable,
    Status,
    /// `password` is the bcrypt hash (the log never carries a password);
    /// `None` with `no_password`.
    UserAdd {
        name: String,
        password: Option<String>,
        no_password: bool,
    },
    UserGet {
        name: String,
    },
    UserList,
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleGet {
        name: String,
    },
    RoleList,
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Permission,
    },
    RoleRevokePermission {
        name: String,
        key: Bytes,
        range_end: Bytes,
    },
}

impl AuthRequest {
    /// Reads change nothing and may be answered locally.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            AuthRequest::Status
                | AuthRequest::UserGet { .. }
                | AuthRequest::UserList
                | AuthRequest::RoleGet { .. }
                | AuthRequest::RoleList
        )
    }
}

/// What an auth request answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthReply {
    /// A change was made (or there was nothing to change).
    Done,
    Status {
        enabled: bool,
        revision: u64,
    },
    /// A user's roles, sorted.
    UserRoles(Vec<String>),
    /// User or role names, sorted.
    Names(Vec<String>),
    /// A role's permissions, in key order.
    Permissions(Vec<Permission>),
}

#[derive(Clone, PartialEq, Eq)]
pub struct AuthStore {
    pub(crate) enabled: bool,
    pub(crate) revision: u64,
    pub(crate) changes: u64,
    /// `changes` when auth was last enabled.
    pub(crate) enabled_at: u64,
    pub(crate) secret: [u8; TOKEN_SECRET_BYTES],
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore {
            enabled: false,
            // etcd's store starts at revision 1.
            revision: 1,
            changes: 0,
            enabled_at: 0,
            secret: [0; TOKEN_SECRET_BYTES],
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("enabled", &self.enabled)
            .field("revision", &self.revision)
            .field("changes", &self.changes)
            .field("enabled_at", &self.enabled_at)
            .field("users", &self.users)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl AuthStore {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// etcd's auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many changes were applied (enabling included).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// `changes` when auth was last enabled.
    pub fn enabled_at(&self) -> u64 {
        self.enabled_at
    }

    /// The key tokens are signed with (valid while enabled).
    pub fn token_secret(&self) -> &[u8; TOKEN_SECRET_BYTES] {
        &self.secret
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn users(&self) -> impl Iterator<Item = (&str, &User)> {
        self.users.iter().map(|(n, u)| (n.as_str(), u))
    }

    pub fn roles(&self) -> impl Iterator<Item = (&str, &Role)> {
        self.roles.iter().map(|(n, r)| (n.as_str(), r))
    }

    fn is_root(user: &User) -> bool {
        user.roles.contains(ROOT)
    }

    /// Whether `name` holds `role`.
    pub fn has_role(&self, name: &str, role: &str) -> bool {
        self.users.get(name).is_some_and(|u| u.roles.contains(role))
    }

    /// etcd's `IsAdminPermitted`: the root role is needed (no check of the
    /// token's revision, as in etcd).
    pub fn check_admin(&self, who: &Principal) -> Result<(), StateError> {
        let name = match who {
            Principal::System => return Ok(()),
            _ if !self.enabled => return Ok(()),
            Principal::Anonymous => return Err(StateError::UserEmpty),
            Principal::User { name, .. } => name,
        };
        match self.users.get(name) {
            None => Err(StateError::UserNotFound),
            Some(u) if Self::is_root(u) => Ok(()),
            Some(_) => Err(StateError::PermissionDenied),
        }
    }

    /// A known user with a current token (what lease calls need), or
    /// `None` when nothing is checked (System, auth disabled, or root).
    /// Otherwise the user to check permissions against.
    fn authenticated(&self, who: &Principal) -> Result<Option<&User>, StateError> {
        let (name, revision) = match who {
            Principal::System => return Ok(None),
            _ if !self.enabled => return Ok(None),
            Principal::Anonymous => return Err(StateError::UserEmpty),
            Principal::User { name, revision } => (name, *revision),
        };
        if revision == 0 {
            return Err(StateError::UserEmpty);
        }
        if revision < self.revision {
            return Err(StateError::AuthOldRevision);
        }
        match self.users.get(name) {
            None => Err(StateError::PermissionDenied),
            Some(u) if Self::is_root(u) => Ok(None),
            Some(u) => Ok(Some(u)),
        }
    }

    /// Any known user with a current token (etcd lets every user grant
    /// and renew leases).
    pub fn check_user(&self, who: &Principal) -> Result<(), StateError> {
        self.authenticated(who).map(|_| ())
    }

    /// etcd's `isOpPermitted`: `need` on every key `(key, range_end)` names.
    pub fn check(
        &self,
        who: &Principal,
        need: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), StateError> {
        match self.authenticated(who)? {
            None => Ok(()),
            Some(user) if self.user_covers(user, need, key, range_end) => Ok(()),
            Some(_) => Err(StateError::PermissionDenied),
        }
    }

    /// Whether `name` may read `(key, range_end)` now, whatever revision its
    /// token had: what a live watch is re-checked with after a change.
    pub fn may_still_read(&self, who: &Principal, key: &[u8], range_end: &[u8]) -> bool {
        match who {
            Principal::System => true,
            _ if !self.enabled => true,
            Principal::Anonymous => false,
            Principal::User { name, .. } => self.users.get(name).is_some_and(|u| {
                Self::is_root(u) || self.user_covers(u, Access::Read, key, range_end)
            }),
        }
    }

    fn user_covers(&self, user: &User, need: Access, key: &[u8], range_end: &[u8]) -> bool {
        let perms = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter());
        covers(perms, need, key, range_end)
    }

    /// Answers a read (`AuthRequest::is_read`); a change is refused with
    /// `LocalReadOnly` (it must go through the log).
    pub fn answer(&self, req: &AuthRequest) -> Result<AuthReply, StateError> {
        match req {
            AuthRequest::Status => Ok(AuthReply::Status {
                enabled: self.enabled,
                revision: self.revision,
            }),
            AuthRequest::UserGet { name } => {
                let user = self.users.get(name).ok_or(StateError::UserNotFound)?;
                Ok(AuthReply::UserRoles(user.roles.iter().cloned().collect()))
            }
            AuthRequest::UserList => Ok(AuthReply::Names(self.users.keys().cloned().collect())),
            AuthRequest::RoleGet { name } => {
                let role = self.roles.get(name).ok_or(StateError::RoleNotFound)?;
                Ok(AuthReply::Permissions(role.perms.clone()))
            }
            AuthRequest::RoleList => Ok(AuthReply::Names(self.roles.keys().cloned().collect())),
            _ => Err(StateError::LocalReadOnly),
        }
    }

    /// Applies or answers `req` (the caller checked who may).
    pub(crate) fn execute(&mut self, req: &AuthRequest) -> Result<AuthReply, StateError> {
        match req {
            AuthRequest::Enable { secret } => self.enable(secret),
            AuthRequest::Disable => {
                if self.enabled {
                    self.enabled = false;
                    self.bump();
                }
                Ok(AuthReply::Done)
            }
            AuthRequest::UserAdd {
                name,
                password,
                no_password,
            } => self.user_add(name, password, *no_password),
            AuthRequest::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(StateError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(StateError::UserNotFound)?;
                self.bump();
                Ok(AuthReply::Done)
            }
            AuthRequest::UserChangePassword { name, password } => {
                let user = self.users.get_mut(name).ok_or(StateError::UserNotFound)?;
                user.password = Some(password.clone());
                self.bump();
                Ok(AuthReply::Done)
            }
            AuthRequest::UserGrantRole { user, role } => self.grant_role(user, role),
            AuthRequest::UserRevokeRole { user, role } => self.revoke_role(user, role),
            AuthRequest::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(StateError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(StateError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                self.bump();
                Ok(AuthReply::Done)
            }
            AuthRequest::RoleDelete { name } => self.role_delete(name),
            AuthRequest::RoleGrantPermission { name, perm } => self.grant_permission(name, perm),
            AuthRequest::RoleRevokePermission {
                name,
                key,
                range_end,
            } => self.revoke_permission(name, key, range_end),
            AuthRequest::Status
            | AuthRequest::UserGet { .. }
            | AuthRequest::UserList
            | AuthRequest::RoleGet { .. }
            | AuthRequest::RoleList => self.answer(req),
        }
    }

    fn bump(&mut self) {
        self.revision += 1;
        self.changes += 1;
    }

    fn enable(&mut self, secret: &[u8; TOKEN_SECRET_BYTES]) -> Result<AuthReply, StateError> {
        if self.enabled {
            return Ok(AuthReply::Done);
        }
        let root = self.users.get(ROOT).ok_or(StateError::RootUserNotExist)?;
        if !Self::is_root(root) {
            return Err(StateError::RootRoleNotExist);
        }
        self.enabled = true;
        self.secret = *secret;
        // etcd keeps the revision; a new secret voids every older token.
        self.changes += 1;
        self.enabled_at = self.changes;
        Ok(AuthReply::Done)
    }

    fn user_add(
        &mut self,
        name: &str,
        password: &Option<String>,
        no_password: bool,
    ) -> Result<AuthReply, StateError> {
        if name.is_empty() {
            return Err(StateError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(StateError::UserAlreadyExist);
        }
        self.bump();
        self.users.insert(
            name.to_string(),
            User {
                password: if no_password { None } else { password.clone() },
                no_password,
                roles: BTreeSet::new(),
                restricted_at: self.changes,
            },
        );
        Ok(AuthReply::Done)
    }

    fn grant_role(&mut self, user: &str, role: &str) -> Result<AuthReply, StateError> {
        if !self.users.contains_key(user) {
            return Err(StateError::UserNotFound);
        }
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(StateError::RoleNotFound);
        }
        let Some(u) = self.users.get_mut(user) else {
            return Err(StateError::UserNotFound);
        };
        if u.roles.insert(role.to_string()) {
            self.bump();
        }
        Ok(AuthReply::Done)
    }

    fn revoke_role(&mut self, user: &str, role: &str) -> Result<AuthReply, StateError> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(StateError::InvalidAuthMgmt);
        }
        let u = self.users.get_mut(user).ok_or(StateError::UserNotFound)?;
        if !u.roles.remove(role) {
            return Err(StateError::RoleNotGranted);
        }
        self.bump();
        if let Some(u) = self.users.get_mut(user) {
            u.restricted_at = self.changes;
        }
        Ok(AuthReply::Done)
    }

    fn role_delete(&mut self, name: &str) -> Result<AuthReply, StateError> {
        if self.enabled && name == ROOT {
            return Err(StateError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(StateError::RoleNotFound)?;
        self.bump();
        let changes = self.changes;
        for u in self.users.values_mut() {
            if u.roles.remove(name) {
                u.restricted_at = changes;
            }
        }
        Ok(AuthReply::Done)
    }

    fn grant_permission(&mut self, name: &str, perm: &Permission) -> Result<AuthReply, StateError> {
        if !valid_range(&perm.key, &perm.range_end) {
            return Err(StateError::InvalidAuthMgmt);
        }
        let role = self.roles.get_mut(name).ok_or(StateError::RoleNotFound)?;
        let same = role
            .perms
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end);
        let narrowed = match same {
            Some(p) => {
                let lost = |need| p.kind.grants(need) && !perm.kind.grants(need);
                let narrowed = lost(Access::Read) || lost(Access::Write);
                p.kind = perm.kind;
                narrowed
            }
            None => {
                let at = role.perms.partition_point(|p| p.key <= perm.key);
                role.perms.insert(at, perm.clone());
                false
            }
        };
        self.bump();
        if narrowed {
            self.restrict_holders(name);
        }
        Ok(AuthReply::Done)
    }

    fn revoke_permission(
        &mut self,
        name: &str,
        key: &Bytes,
        range_end: &Bytes,
    ) -> Result<AuthReply, StateError> {
        let role = self.roles.get_mut(name).ok_or(StateError::RoleNotFound)?;
        let before = role.perms.len();
        role.perms
            .retain(|p| p.key != *key || p.range_end != *range_end);
        if role.perms.len() == before {
            return Err(StateError::PermissionNotGranted);
        }
        self.bump();
        self.restrict_holders(name);
        Ok(AuthReply::Done)
    }

    /// Marks every holder of `role` as possibly having lost a permission.
    fn restrict_holders(&mut self, role: &str) {
        let changes = self.changes;
        for u in self.users.values_mut() {
            if u.roles.contains(role) {
                u.restricted_at = changes;
            }
        }
    }

    /// Whether `who` may have lost a permission after the store was at
    /// `changes` (so a watch that missed the changes in between cannot tell
    /// whether it was allowed all along).
    pub fn restricted_since(&self, who: &Principal, changes: u64) -> bool {
        match who {
            Principal::System => false,
            _ if !self.enabled => false,
            _ if self.enabled_at > changes => true,
            Principal::Anonymous => true,
            Principal::User { name, .. } => self
                .users
                .get(name)
                .is_none_or(|u| u.restricted_at > changes),
        }
    }

    /// The invariants a snapshot must satisfy.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.revision < 1 {
            return Err("auth revision below 1");
        }
        if self.enabled && !self.users.get(ROOT).is_some_and(Self::is_root) {
            return Err("auth enabled without a root user holding the root role");
        }
        for role in self.roles.values() {
            if role
                .perms
                .iter()
                .any(|p| !valid_range(&p.key, &p.range_end))
            {
                return Err("a permission with an invalid range");
            }
            if role.perms.windows(2).any(|w| w[0].key > w[1].key) {
                return Err("permissions out of key order");
            }
        }
        for (name, user) in &self.users {
            if name.is_empty() {
                return Err("a user without a name");
            }
            if user
                .roles
                .iter()
                .any(|r| r != ROOT && !self.roles.contains_key(r))
            {
                return Err("a user holds a role that does not exist");
            }
            if user.restricted_at > self.changes {
                return Err("a user restricted after the last change");
            }
        }
        if self.roles.keys().any(String::is_empty) {
            return Err("a role without a name");
        }
        if self.enabled_at > self.changes {
            return Err("auth enabled after the last change");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
