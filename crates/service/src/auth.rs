//! Who a request is from, as the front ends tell it: etcd's tokens and
//! client-certificate names turned into a `Principal`, which every command
//! carries to the state machine, where permission is checked (see
//! `ferrite_state::auth`).
//!
//! - The applied auth store is mirrored here ([`AuthView`]): the machine
//!   replaces it on every change it applies, so checking a token is local
//!   and cheap on every member.
//! - [`Context::authenticate`] runs on the member that receives it: a
//!   linearizable read (so a user just added can log in anywhere), a bcrypt
//!   check off the async threads, then a signed token.
//! - A token is opaque to clients: the user, the auth revision it was issued
//!   at and its expiry, signed with HMAC-SHA256 under the store's secret
//!   (drawn by the member that proposed `AuthEnable`, so disabling and
//!   enabling again voids every token). Every member verifies it without a
//!   log round trip, in constant time. A bad, forged or expired token is
//!   etcd's "invalid auth token", on which etcd's clients authenticate again.
//! - Passwords are hashed on the member that proposes the change: the log
//!   carries the bcrypt hash, never the password.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ferrite_state::auth::TOKEN_SECRET_BYTES;
use ferrite_state::{AuthRequest, AuthStore, Op, Principal, StateError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::context::Context;
use crate::error::ServiceError;

/// etcd's default `--auth-token-ttl`.
pub const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(300);
/// etcd's default `--bcrypt-cost` (bcrypt's own default).
pub const BCRYPT_COST_DEFAULT: u32 = 10;
/// A token longer than this is not one of ours (and is not parsed).
const TOKEN_BYTES_MAX: usize = 4096;
const TOKEN_FORMAT: u8 = 1;

/// The auth settings of a member.
#[derive(Clone, Copy, Debug)]
pub struct AuthConfig {
    /// How long a token is valid after it is issued.
    pub token_ttl: Duration,
    /// The bcrypt cost of the hashes this member makes (4..=31).
    pub bcrypt_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            token_ttl: TOKEN_TTL_DEFAULT,
            bcrypt_cost: BCRYPT_COST_DEFAULT,
        }
    }
}

/// The applied auth store, as the front ends read it. The machine replaces
/// it in apply order; readers take a shared, immutable copy.
#[derive(Clone, Default)]
pub struct AuthView {
    current: Arc<RwLock<Arc<AuthStore>>>,
}

impl AuthView {
    pub fn current(&self) -> Arc<AuthStore> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, store: Arc<AuthStore>) {
        match self.current.write() {
            Ok(mut g) => *g = store,
            Err(poisoned) => *poisoned.into_inner() = store,
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8; TOKEN_SECRET_BYTES], payload: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(payload);
    m
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A token for `name` at auth `revision`, valid until `expires`.
pub fn sign_token(
    secret: &[u8; TOKEN_SECRET_BYTES],
    name: &str,
    revision: u64,
    expires: SystemTime,
) -> String {
    let mut payload = Vec::with_capacity(17 + name.len());
    payload.push(TOKEN_FORMAT);
    payload.extend_from_slice(&revision.to_le_bytes());
    payload.extend_from_slice(&unix_ms(expires).to_le_bytes());
    payload.extend_from_slice(name.as_bytes());
    let tag = mac(secret, &payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The principal a token speaks for, if it is ours, intact and unexpired
/// at `now`.
pub fn verify_token(
    secret: &[u8; TOKEN_SECRET_BYTES],
    token: &str,
    now: SystemTime,
) -> Result<Principal, StateError> {
    let bad = StateError::InvalidAuthToken;
    if token.len() > TOKEN_BYTES_MAX {
        return Err(bad);
    }
    let (payload, tag) = token.split_once('.').ok_or(bad.clone())?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad.clone())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad.clone())?;
    // Constant time: `verify_slice` compares with `subtle`.
    mac(secret, &payload)
        .verify_slice(&tag)
        .map_err(|_| bad.clone())?;
    let (&format, rest) = payload.split_first().ok_or(bad.clone())?;
    if format != TOKEN_FORMAT {
        return Err(bad);
    }
    let (revision, rest) = rest.split_first_chunk::<8>().ok_or(bad.clone())?;
    let (expires, name) = rest.split_first_chunk::<8>().ok_or(bad.clone())?;
    if u64::from_le_bytes(*expires) <= unix_ms(now) {
        return Err(bad);
    }
    let name = std::str::from_utf8(name).map_err(|_| bad.clone())?;
    Ok(Principal::user(name, u64::from_le_bytes(*revision)))
}

/// A bcrypt hash of `password` (off the async threads: it takes tens of
/// milliseconds at cost 10).
pub async fn hash_password(password: String, cost: u32) -> Result<String, ServiceError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| ServiceError::Internal(format!("password hashing stopped: {e}")))?
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

impl Context {
    /// Who a request is from: its token (etcd's `token` metadata), else the
    /// common name of its verified client certificate (at the current auth
    /// revision, as etcd does), else nobody. While auth is disabled, as in
    /// etcd, credentials are not looked at.
    pub fn principal(
        &self,
        token: Option<&str>,
        common_name: Option<&str>,
    ) -> Result<Principal, ServiceError> {
        let store = self.auth.current();
        if !store.enabled() {
            return Ok(Principal::Anonymous);
        }
        if let Some(token) = token {
            return verify_token(store.token_secret(), token, SystemTime::now())
                .map_err(ServiceError::State);
        }
        Ok(match common_name {
            Some(name) => Principal::user(name, store.revision()),
            None => Principal::Anonymous,
        })
    }

    /// etcd's Authenticate: a token for `name` if `password` is its
    /// password. Runs on this member, after a linearizable read.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, ServiceError> {
        // The linearization point: the view is at least this fresh after.
        self.read(Op::Auth(AuthRequest::Status), &Principal::System, false)
            .await?;
        let store = self.auth.current();
        if !store.enabled() {
            return Err(ServiceError::State(StateError::AuthNotEnabled));
        }
        let failed = || ServiceError::State(StateError::AuthFailed);
        let user = store.user(name).ok_or_else(failed)?;
        let hash = match (&user.password, user.no_password) {
            (Some(hash), false) => hash.clone(),
            _ => return Err(failed()),
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| ServiceError::Internal(format!("password check stopped: {e}")))?
            .unwrap_or(false);
        if !ok {
            return Err(failed());
        }
        let expires = SystemTime::now() + self.auth_config.token_ttl;
        Ok(sign_token(
            store.token_secret(),
            name,
            store.revision(),
            expires,
        ))
    }

    /// A fresh secret for `AuthEnable`.
    pub fn new_token_secret() -> Result<[u8; TOKEN_SECRET_BYTES], ServiceError> {
        let mut secret = [0; TOKEN_SECRET_BYTES];
        getrandom::fill(&mut secret)
            .map_err(|e| ServiceError::Internal(format!("no randomness for the secret: {e}")))?;
        Ok(secret)
    }

    /// A bcrypt hash of `password` at this member's cost.
    pub async fn hash_password(&self, password: &str) -> Result<String, ServiceError> {
        hash_password(password.to_string(), self.auth_config.bcrypt_cost).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let secret = [9; TOKEN_SECRET_BYTES];
        let now = SystemTime::now();
        let token = sign_token(&secret, "alice", 7, now + Duration::from_secs(60));
        assert_eq!(
            verify_token(&secret, &token, now),
            Ok(Principal::user("alice", 7))
        );
        assert_eq!(
            verify_token(&secret, &token, now + Duration::from_secs(61)),
            Err(StateError::InvalidAuthToken)
        );
    }

    #[test]
    fn a_forged_or_foreign_token_is_refused() {
        let secret = [9; TOKEN_SECRET_BYTES];
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let token = sign_token(&secret, "alice", 7, later);
        // Another secret (auth disabled and enabled again).
        assert!(verify_token(&[8; TOKEN_SECRET_BYTES], &token, now).is_err());
        // Another user or revision under the same signature.
        let (_, tag) = token.split_once('.').unwrap();
        let other = sign_token(&secret, "root", 7, later);
        let (payload, _) = other.split_once('.').unwrap();
        assert!(verify_token(&secret, &format!("{payload}.{tag}"), now).is_err());
        for garbage in ["", ".", "abc", "a.b", &"x".repeat(10_000), "é.é"] {
            assert_eq!(
                verify_token(&secret, garbage, now),
                Err(StateError::InvalidAuthToken),
                "{garbage:?}"
            );
        }
    }

    #[tokio::test]
    async fn hashes_check_against_their_password() {
        let hash = hash_password("pw".into(), 4).await.unwrap();
        assert!(bcrypt::verify("pw", &hash).unwrap());
        assert!(!bcrypt::verify("other", &hash).unwrap());
    }
}
