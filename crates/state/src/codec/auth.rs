//! Encoding of principals, auth requests and replies, and the auth store in
//! snapshots.

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::{
    AuthReply, AuthRequest, AuthStore, PermKind, Permission, Principal, Role, User,
    TOKEN_SECRET_BYTES,
};
use crate::codec::wire::{Reader, Writer};
use crate::error::DecodeError;
use crate::limits::{AUTH_NAME_BYTES_MAX, KEY_BYTES_MAX};

/// At most this many users, roles, or permissions of one role, in a reply
/// or a snapshot.
const AUTH_ITEMS_MAX: usize = 1 << 20;
/// A bcrypt hash is 60 bytes; room for other formats.
const PASSWORD_HASH_BYTES_MAX: usize = 1024;

const PRINCIPAL_SYSTEM: u8 = 0;
const PRINCIPAL_ANONYMOUS: u8 = 1;
const PRINCIPAL_USER: u8 = 2;

pub(crate) fn put_principal(w: &mut Writer, p: &Principal) {
    match p {
        Principal::System => w.u8(PRINCIPAL_SYSTEM),
        Principal::Anonymous => w.u8(PRINCIPAL_ANONYMOUS),
        Principal::User { name, revision } => {
            w.u8(PRINCIPAL_USER);
            w.str(name);
            w.u64(*revision);
        }
    }
}

pub(crate) fn get_principal(r: &mut Reader<'_>) -> Result<Principal, DecodeError> {
    Ok(match r.u8()? {
        PRINCIPAL_SYSTEM => Principal::System,
        PRINCIPAL_ANONYMOUS => Principal::Anonymous,
        PRINCIPAL_USER => Principal::User {
            name: name(r, "user name")?,
            revision: r.u64()?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "principal",
                tag,
            })
        }
    })
}

fn name(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    r.string(what, AUTH_NAME_BYTES_MAX)
}

fn put_perm(w: &mut Writer, p: &Permission) {
    w.u8(p.kind.number());
    w.bytes(&p.key);
    w.bytes(&p.range_end);
}

fn get_perm(r: &mut Reader<'_>) -> Result<Permission, DecodeError> {
    let tag = r.u8()?;
    let kind = PermKind::from_number(tag).ok_or(DecodeError::UnknownTag {
        what: "permission type",
        tag,
    })?;
    Ok(Permission {
        kind,
        key: r.bytes("permission key", KEY_BYTES_MAX)?,
        range_end: r.bytes("permission range end", KEY_BYTES_MAX)?,
    })
}

fn put_opt_str(w: &mut Writer, s: &Option<String>) {
    match s {
        None => w.u8(0),
        Some(s) => {
            w.u8(1);
            w.str(s);
        }
    }
}

fn get_opt_hash(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    Ok(match r.bool()? {
        false => None,
        true => Some(r.string("password hash", PASSWORD_HASH_BYTES_MAX)?),
    })
}

fn put_names(w: &mut Writer, names: &[String]) {
    w.len(names.len());
    for n in names {
        w.str(n);
    }
}

fn get_names(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<String>, DecodeError> {
    let n = r.len(what, AUTH_ITEMS_MAX)?;
    let mut names = r.vec_for(n);
    for _ in 0..n {
        names.push(name(r, what)?);
    }
    Ok(names)
}

pub(crate) fn put_request(w: &mut Writer, req: &AuthRequest) {
    match req {
        AuthRequest::Enable { secret } => {
            w.u8(1);
            w.raw(secret);
        }
        AuthRequest::Disable => w.u8(2),
        AuthRequest::Status => w.u8(3),
        AuthRequest::UserAdd {
            name,
            password,
            no_password,
        } => {
            w.u8(4);
            w.str(name);
            put_opt_str(w, password);
            w.bool(*no_password);
        }
        AuthRequest::UserGet { name } => {
            w.u8(5);
            w.str(name);
        }
        AuthRequest::UserList => w.u8(6),
        AuthRequest::UserDelete { name } => {
            w.u8(7);
            w.str(name);
        }
        AuthRequest::UserChangePassword { name, password } => {
            w.u8(8);
            w.str(name);
            w.str(password);
        }
        AuthRequest::UserGrantRole { user, role } => {
            w.u8(9);
            w.str(user);
            w.str(role);
        }
        AuthRequest::UserRevokeRole { user, role } => {
            w.u8(10);
            w.str(user);
            w.str(role);
        }
        AuthRequest::RoleAdd { name } => {
            w.u8(11);
            w.str(name);
        }
        AuthRequest::RoleGet { name } => {
            w.u8(12);
            w.str(name);
        }
        AuthRequest::RoleList => w.u8(13),
        AuthRequest::RoleDelete { name } => {
            w.u8(14);
            w.str(name);
        }
        AuthRequest::RoleGrantPermission { name, perm } => {
            w.u8(15);
            w.str(name);
            put_perm(w, perm);
        }
        AuthRequest::RoleRevokePermission {
            name,
            key,
            range_end,
        } => {
            w.u8(16);
            w.str(name);
            w.bytes(key);
            w.bytes(range_end);
        }
    }
}

pub(crate) fn get_request(r: &mut Reader<'_>) -> Result<AuthRequest, DecodeError> {
    Ok(match r.u8()? {
        1 => {
            let raw = r.take(TOKEN_SECRET_BYTES)?;
            let mut secret = [0; TOKEN_SECRET_BYTES];
            secret.copy_from_slice(raw);
            AuthRequest::Enable { secret }
        }
        2 => AuthRequest::Disable,
        3 => AuthRequest::Status,
        4 => AuthRequest::UserAdd {
            name: name(r, "user name")?,
            password: get_opt_hash(r)?,
            no_password: r.bool()?,
        },
        5 => AuthRequest::UserGet {
            name: name(r, "user name")?,
        },
        6 => AuthRequest::UserList,
        7 => AuthRequest::UserDelete {
            name: name(r, "user name")?,
        },
        8 => AuthRequest::UserChangePassword {
            name: name(r, "user name")?,
            password: r.string("password hash", PASSWORD_HASH_BYTES_MAX)?,
        },
        9 => AuthRequest::UserGrantRole {
            user: name(r, "user name")?,
            role: name(r, "role name")?,
        },
        10 => AuthRequest::UserRevokeRole {
            user: name(r, "user name")?,
            role: name(r, "role name")?,
        },
        11 => AuthRequest::RoleAdd {
            name: name(r, "role name")?,
        },
        12 => AuthRequest::RoleGet {
            name: name(r, "role name")?,
        },
        13 => AuthRequest::RoleList,
        14 => AuthRequest::RoleDelete {
            name: name(r, "role name")?,
        },
        15 => AuthRequest::RoleGrantPermission {
            name: name(r, "role name")?,
            perm: get_perm(r)?,
        },
        16 => AuthRequest::RoleRevokePermission {
            name: name(r, "role name")?,
            key: r.bytes("permission key", KEY_BYTES_MAX)?,
            range_end: r.bytes("permission range end", KEY_BYTES_MAX)?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "auth request",
                tag,
            })
        }
    })
}

pub(crate) fn put_reply(w: &mut Writer, reply: &AuthReply) {
    match reply {
        AuthReply::Done => w.u8(1),
        AuthReply::Status { enabled, revision } => {
            w.u8(2);
            w.bool(*enabled);
            w.u64(*revision);
        }
        AuthReply::UserRoles(roles) => {
            w.u8(3);
            put_names(w, roles);
        }
        AuthReply::Names(names) => {
            w.u8(4);
            put_names(w, names);
        }
        AuthReply::Permissions(perms) => {
            w.u8(5);
            w.len(perms.len());
            for p in perms {
                put_perm(w, p);
            }
        }
    }
}

pub(crate) fn get_reply(r: &mut Reader<'_>) -> Result<AuthReply, DecodeError> {
    Ok(match r.u8()? {
        1 => AuthReply::Done,
        2 => AuthReply::Status {
            enabled: r.bool()?,
            revision: r.u64()?,
        },
        3 => AuthReply::UserRoles(get_names(r, "role name")?),
        4 => AuthReply::Names(get_names(r, "name")?),
        5 => {
            let n = r.len("permissions", AUTH_ITEMS_MAX)?;
            let mut perms = r.vec_for(n);
            for _ in 0..n {
                perms.push(get_perm(r)?);
            }
            AuthReply::Permissions(perms)
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "auth reply",
                tag,
            })
        }
    })
}

/// The whole store, for snapshots.
pub(crate) fn put_store(w: &mut Writer, s: &AuthStore) {
    w.bool(s.enabled);
    w.u64(s.revision);
    w.u64(s.changes);
    w.u64(s.enabled_at);
    w.raw(&s.secret);
    w.len(s.users.len());
    for (name, u) in &s.users {
        w.str(name);
        put_opt_str(w, &u.password);
        w.bool(u.no_password);
        w.u64(u.restricted_at);
        w.len(u.roles.len());
        for role in &u.roles {
            w.str(role);
        }
    }
    w.len(s.roles.len());
    for (name, role) in &s.roles {
        w.str(name);
        w.len(role.perms.len());
        for p in &role.perms {
            put_perm(w, p);
        }
    }
}

pub(crate) fn get_store(r: &mut Reader<'_>) -> Result<AuthStore, DecodeError> {
    let enabled = r.bool()?;
    let revision = r.u64()?;
    let changes = r.u64()?;
    let enabled_at = r.u64()?;
    let mut secret = [0; TOKEN_SECRET_BYTES];
    secret.copy_from_slice(r.take(TOKEN_SECRET_BYTES)?);
    let mut users = BTreeMap::new();
    for _ in 0..r.len("users", AUTH_ITEMS_MAX)? {
        let user_name = name(r, "user name")?;
        let password = get_opt_hash(r)?;
        let no_password = r.bool()?;
        let restricted_at = r.u64()?;
        let mut roles = BTreeSet::new();
        for _ in 0..r.len("user roles", AUTH_ITEMS_MAX)? {
            let role = name(r, "role name")?;
            if roles.last().is_some_and(|last: &String| *last >= role) {
                return Err(DecodeError::Inconsistent("user roles out of order"));
            }
            roles.insert(role);
        }
        if users
            .last_key_value()
            .is_some_and(|(last, _): (&String, _)| *last >= user_name)
        {
            return Err(DecodeError::Inconsistent("users out of order"));
        }
        users.insert(
            user_name,
            User {
                password,
                no_password,
                roles,
                restricted_at,
            },
        );
    }
    let mut roles = BTreeMap::new();
    for _ in 0..r.len("roles", AUTH_ITEMS_MAX)? {
        let role_name = name(r, "role name")?;
        let n = r.len("permissions", AUTH_ITEMS_MAX)?;
        let mut perms = r.vec_for(n);
        for _ in 0..n {
            perms.push(get_perm(r)?);
        }
        if roles
            .last_key_value()
            .is_some_and(|(last, _): (&String, _)| *last >= role_name)
        {
            return Err(DecodeError::Inconsistent("roles out of order"));
        }
        roles.insert(role_name, Role { perms });
    }
    Ok(AuthStore {
        enabled,
        revision,
        changes,
        enabled_at,
        secret,
        users,
        roles,
    })
}
