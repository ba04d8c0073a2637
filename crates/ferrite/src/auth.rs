//! `ferrite auth|user|role`: etcd's authentication administration, with
//! etcdctl's arguments and its output ("User alice created", "Role app
//! updated", `role get`'s permission lines), so that scripts written for
//! one work with the other. The texts are made here once and printed by
//! both the one-shot commands and `ferrite shell`.

use std::io::BufRead;

use anyhow::bail;
use clap::{ArgAction, Subcommand};
use ferrite_client::{
    permission_range, AuthError, Client, ClientError, KeyRange, Permission, PermissionType,
};

#[derive(Subcommand)]
pub enum AuthOp {
    /// Enable authentication (creating the root role for root if needed).
    Enable,
    /// Disable authentication.
    Disable,
    /// Whether authentication is enabled, and the auth store's revision.
    Status,
}

/// etcdctl's `--interactive`: a bool that may be given bare or as
/// `--interactive=false`.
#[derive(clap::Args, Clone, Copy)]
pub struct Interactive {
    /// Ask for the password on the terminal; with `--interactive=false`,
    /// read it from standard input.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    interactive: bool,
}

#[derive(Subcommand)]
pub enum UserOp {
    /// Add a user: NAME or NAME:PASSWORD.
    Add {
        name: String,
        /// The new user's password (instead of asking for it).
        #[arg(long)]
        new_user_password: Option<String>,
        /// A user without password (it authenticates by its TLS client
        /// certificate's common name only).
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        interactive: Interactive,
    },
    /// A user's roles.
    Get {
        name: String,
        /// Also print the permissions of each role.
        #[arg(long)]
        detail: bool,
    },
    /// Every user.
    List,
    Delete {
        name: String,
    },
    /// Change a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        interactive: Interactive,
    },
    GrantRole {
        user: String,
        role: String,
    },
    RevokeRole {
        user: String,
        role: String,
    },
}

#[derive(Subcommand)]
pub enum RoleOp {
    Add {
        name: String,
    },
    /// A role's permissions.
    Get {
        name: String,
    },
    /// Every role.
    List,
    Delete {
        name: String,
    },
    /// Grant access to KEY, [KEY, END), a prefix or every key from KEY on.
    GrantPermission {
        role: String,
        /// read, write or readwrite.
        perm_type: String,
        key: String,
        range_end: Option<String>,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Every key from KEY on (byte order).
        #[arg(long)]
        from_key: bool,
    },
    /// Revoke a permission, given as it was granted.
    RevokePermission {
        role: String,
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
}

/// etcdctl's reading of `KEY [END] [--prefix] [--from-key]`.
pub fn key_range<'a>(
    key: &str,
    end: Option<&'a str>,
    prefix: bool,
    from_key: bool,
) -> anyhow::Result<KeyRange<'a>> {
    if prefix && from_key {
        bail!("--from-key and --prefix flags are mutually exclusive");
    }
    Ok(match (end, prefix, from_key) {
        (Some(_), true, _) if !key.is_empty() => {
            bail!("unexpected endkey argument with --prefix flag")
        }
        (Some(_), _, true) if !key.is_empty() => {
            bail!("unexpected endkey argument with --from-key flag")
        }
        (_, true, _) => KeyRange::Prefix,
        (_, _, true) => KeyRange::FromKey,
        (Some(end), _, _) => KeyRange::Until(end.as_bytes()),
        (None, _, _) => KeyRange::Key,
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `role get`'s text, etcdctl's: `Role NAME`, then the read and the write
/// permissions, one per line.
pub fn role_text(name: &str, perms: &[Permission]) -> String {
    let mut out = format!("Role {name}\n");
    if name == "root" && perms.is_empty() {
        out.push_str("KV Read:\n\t[, <open ended>\nKV Write:\n\t[, <open ended>");
        return out;
    }
    let line = |p: &Permission| {
        if p.range_end.is_empty() {
            return format!("\t{}\n", text(&p.key));
        }
        let mut l = if p.range_end == [0] {
            format!("\t[{}, <open ended>", text(&p.key))
        } else {
            format!("\t[{}, {})", text(&p.key), text(&p.range_end))
        };
        if !p.key.is_empty() && p.range_end == ferrite_client::prefix_end(&p.key) {
            l.push_str(&format!(" (prefix {})", text(&p.key)));
        }
        l.push('\n');
        l
    };
    out.push_str("KV Read:\n");
    for p in perms.iter().filter(|p| p.kind.reads()) {
        out.push_str(&line(p));
    }
    out.push_str("KV Write:\n");
    for p in perms.iter().filter(|p| p.kind.writes()) {
        out.push_str(&line(p));
    }
    out.trim_end_matches('\n').to_string()
}

/// `user get`'s text: `User: NAME` and `Roles: r1 r2`.
pub fn user_text(name: &str, roles: &[String]) -> String {
    let mut out = format!("User: {name}\nRoles:");
    for r in roles {
        out.push(' ');
        out.push_str(r);
    }
    out
}

/// `auth enable`, as etcdctl does it: when the server answers that root
/// lacks the root role, make the role, grant it, and enable again.
pub async fn enable(c: &mut Client) -> anyhow::Result<String> {
    let mut repaired = false;
    loop {
        match c.auth_enable().await {
            Ok(()) => return Ok("Authentication Enabled".to_string()),
            Err(ClientError::Auth(AuthError::RootRoleNotExist)) if !repaired => {
                repaired = true;
                match c.role_add("root").await {
                    Ok(()) | Err(ClientError::Auth(AuthError::RoleAlreadyExists)) => {}
                    Err(e) => return Err(e.into()),
                }
                c.user_grant_role("root", "root").await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn status(c: &mut Client) -> anyhow::Result<String> {
    let s = c.auth_status().await?;
    Ok(format!(
        "Authentication Status: {}\nAuthRevision: {}",
        s.enabled, s.revision
    ))
}

pub async fn auth(c: &mut Client, op: AuthOp) -> anyhow::Result<String> {
    match op {
        AuthOp::Enable => enable(c).await,
        AuthOp::Disable => {
            c.auth_disable().await?;
            Ok("Authentication Disabled".to_string())
        }
        AuthOp::Status => status(c).await,
    }
}

/// A new password: asked twice on the terminal (no echo), or read from
/// standard input with `--interactive=false` (its first word, as etcdctl).
fn new_password(name: &str, interactive: bool) -> anyhow::Result<String> {
    if !interactive {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return match line.split_whitespace().next() {
            Some(p) => Ok(p.to_string()),
            None => bail!("no password on standard input"),
        };
    }
    let hint = format!(
        "give {name}:PASSWORD or --new-user-password, or --interactive=false with the password on standard input"
    );
    let first = crate::client_args::ask_secret(&format!("Password of {name}: "), &hint)?;
    if first.is_empty() {
        bail!("empty password");
    }
    let again = crate::client_args::ask_secret(
        &format!("Type password of {name} again for confirmation: "),
        &hint,
    )?;
    if first != again {
        bail!("given passwords are different");
    }
    Ok(first)
}

pub async fn user_add(
    c: &mut Client,
    name: &str,
    password: Option<&str>,
) -> anyhow::Result<String> {
    c.user_add(name, password).await?;
    Ok(format!("User {name} created"))
}

pub async fn user_passwd(c: &mut Client, name: &str, password: &str) -> anyhow::Result<String> {
    c.user_change_password(name, password).await?;
    Ok("Password updated".to_string())
}

pub async fn user(c: &mut Client, op: UserOp) -> anyhow::Result<String> {
    match op {
        UserOp::Add {
            name,
            new_user_password,
            no_password,
            interactive,
        } => {
            if no_password {
                return user_add(c, &name, None).await;
            }
            let (name, password) = match (new_user_password, name.split_once(':')) {
                (Some(p), _) => (name.clone(), p),
                (None, Some((n, p))) => {
                    if n.is_empty() {
                        bail!("empty user name is not allowed");
                    }
                    (n.to_string(), p.to_string())
                }
                (None, None) => (name.clone(), new_password(&name, interactive.interactive)?),
            };
            user_add(c, &name, Some(&password)).await
        }
        UserOp::Get { name, detail } => {
            let roles = c.user_get(&name).await?;
            if !detail {
                return Ok(user_text(&name, &roles));
            }
            let mut out = format!("User: {name}");
            for role in roles {
                let perms = c.role_get(&role).await?;
                out.push_str(&format!("\n\n{}", role_text(&role, &perms)));
            }
            Ok(out)
        }
        UserOp::List => Ok(c.user_list().await?.join("\n")),
        UserOp::Delete { name } => {
            c.user_delete(&name).await?;
            Ok(format!("User {name} deleted"))
        }
        UserOp::Passwd { name, interactive } => {
            let password = new_password(&name, interactive.interactive)?;
            user_passwd(c, &name, &password).await
        }
        UserOp::GrantRole { user, role } => grant_role(c, &user, &role).await,
        UserOp::RevokeRole { user, role } => revoke_role(c, &user, &role).await,
    }
}

pub async fn grant_role(c: &mut Client, user: &str, role: &str) -> anyhow::Result<String> {
    c.user_grant_role(user, role).await?;
    Ok(format!("Role {role} is granted to user {user}"))
}

pub async fn revoke_role(c: &mut Client, user: &str, role: &str) -> anyhow::Result<String> {
    c.user_revoke_role(user, role).await?;
    Ok(format!("Role {role} is revoked from user {user}"))
}

pub async fn grant_permission(
    c: &mut Client,
    role: &str,
    kind: &str,
    key: &str,
    range: KeyRange<'_>,
) -> anyhow::Result<String> {
    let kind: PermissionType = kind.parse()?;
    let (key, range_end) = permission_range(key.as_bytes(), range)?;
    c.role_grant_permission(
        role,
        &Permission {
            kind,
            key,
            range_end,
        },
    )
    .await?;
    Ok(format!("Role {role} updated"))
}

pub async fn revoke_permission(
    c: &mut Client,
    role: &str,
    key: &str,
    range: KeyRange<'_>,
) -> anyhow::Result<String> {
    let (encoded_key, range_end) = permission_range(key.as_bytes(), range)?;
    c.role_revoke_permission(role, &encoded_key, &range_end)
        .await?;
    Ok(if range_end.is_empty() {
        format!("Permission of key {key} is revoked from role {role}")
    } else if range_end == [0] {
        format!("Permission of range [{key}, <open ended> is revoked from role {role}")
    } else {
        format!(
            "Permission of range [{key}, {}) is revoked from role {role}",
            text(&range_end)
        )
    })
}

pub async fn role(c: &mut Client, op: RoleOp) -> anyhow::Result<String> {
    match op {
        RoleOp::Add { name } => {
            c.role_add(&name).await?;
            Ok(format!("Role {name} created"))
        }
        RoleOp::Get { name } => {
            let perms = c.role_get(&name).await?;
            Ok(role_text(&name, &perms))
        }
        RoleOp::List => Ok(c.role_list().await?.join("\n")),
        RoleOp::Delete { name } => {
            c.role_delete(&name).await?;
            Ok(format!("Role {name} deleted"))
        }
        RoleOp::GrantPermission {
            role,
            perm_type,
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let range = key_range(&key, range_end.as_deref(), prefix, from_key)?;
            grant_permission(c, &role, &perm_type, &key, range).await
        }
        RoleOp::RevokePermission {
            role,
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let range = key_range(&key, range_end.as_deref(), prefix, from_key)?;
            revoke_permission(c, &role, &key, range).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermissionType, key: &[u8], end: &[u8]) -> Permission {
        Permission {
            kind,
            key: key.to_vec(),
            range_end: end.to_vec(),
        }
    }

    #[test]
    fn role_text_is_etcdctls() {
        let perms = [
            perm(PermissionType::ReadWrite, b"app/", b"app0"),
            perm(PermissionType::Read, b"k", b""),
            perm(PermissionType::Write, b"a", b"c"),
            perm(PermissionType::Read, b"z", b"\0"),
        ];
        assert_eq!(
            role_text("app", &perms),
            "Role app\nKV Read:\n\t[app/, app0) (prefix app/)\n\tk\n\t[z, <open ended>\n\
             KV Write:\n\t[app/, app0) (prefix app/)\n\t[a, c)"
        );
        assert_eq!(
            role_text("root", &[]),
            "Role root\nKV Read:\n\t[, <open ended>\nKV Write:\n\t[, <open ended>"
        );
        assert_eq!(
            user_text("alice", &["a".into(), "b".into()]),
            "User: alice\nRoles: a b"
        );
    }

    #[test]
    fn key_ranges_are_read_as_etcdctl_does() {
        assert_eq!(
            key_range("a/", None, true, false).ok(),
            Some(KeyRange::Prefix)
        );
        assert_eq!(
            key_range("a", None, false, true).ok(),
            Some(KeyRange::FromKey)
        );
        assert_eq!(
            key_range("a", Some("c"), false, false).ok(),
            Some(KeyRange::Until(b"c"))
        );
        assert_eq!(key_range("a", None, false, false).ok(), Some(KeyRange::Key));
        assert!(key_range("a", None, true, true).is_err());
        assert!(key_range("a", Some("c"), true, false).is_err());
        assert!(key_range("a", Some("c"), false, true).is_err());
    }
}
