//! `ferrite chaos --auth`: etcd auth on, and permission changes in the mix.
//!
//! Setup, before any fault: user `root` (role `root`), role `chaos-watch`
//! with read on the prefix `chaos/k` (the watched keys), user `watcher`
//! holding it, then `auth enable`. Every workload client, lease holder and
//! the checks run as `root` (the client authenticates again on a stale
//! token); the watchers run as `watcher`. NBD carries no credentials, so
//! the block clients do not run with `--auth` (the state machine refuses
//! anonymous volume access once auth is on).
//!
//! Now and then (every 5 to 15 s, seeded) the permission churner revokes
//! the role's read permission, as `root`, and grants it back 2 to 6 s
//! later. A watcher canceled for permission (cancel reason "etcdserver:
//! permission denied") waits, retrying its create (refused while access is
//! missing) until access is back, and resumes from its last revision + 1:
//! the gap-free, in-order, exactly-once check against the reference
//! history (`coordination.rs`) covers its segments as one stream.
//!
//! The rule (the leak check). Let a revoke be invoked at instant `I` and
//! acknowledged; right after the acknowledgment the churner puts a mark
//! key (not watched) and takes its revision `B`. A watch (a segment: one
//! create on one member) whose created answer arrived before `I` must
//! deliver no event with a revision greater than `B`. Why it is sound,
//! whatever fails over:
//! - the revoke is one entry `P` of the committed log, applied by every
//!   member in the same order; the KV revision current at `P` is the same
//!   everywhere, call it `R`. The mark put was invoked after the revoke was
//!   acknowledged, so it comes after `P` in the log: `B > R`.
//! - the watch existed on its member `M` before `P` was even proposed (its
//!   created answer arrived before `I`). An event of revision `> B` is a
//!   put or delete after the mark, so after `P`: `M` publishes it only
//!   after applying `P`, and a member applying `P` (or jumping over it by a
//!   snapshot) cancels every watch whose user may no longer read its range
//!   before it sends anything later in its apply order. A grant-back right
//!   after does not save the watch: the cancel happens at `P`.
//! - a member that never applies `P` (cut off, killed) publishes nothing
//!   after it either; its stream fails and the watcher resumes elsewhere,
//!   as a new segment, created after `I`, which the rule does not cover.
//!
//! It is meaningful: each watched key is written many times a second, so a
//! watch that survived a revoke would deliver an event past `B` within
//! moments. Segments created after `I` (including those created while the
//! revoke was in flight) are not judged by that revoke. A revoke whose mark
//! put failed is not used (counted as unbounded).

use std::time::{Duration, Instant};

use ferrite_client::{
    permission_range, AuthError, Client, ClientError, ClientOptions, Credentials, KeyRange,
    Permission, PermissionType,
};

use super::coordination::WatchLog;
use super::Rng;

pub const ROOT: &str = "root";
pub const WATCH_USER: &str = "watcher";
pub const WATCH_ROLE: &str = "chaos-watch";
/// The prefix the watch role reads: the watched KV keys.
pub const WATCH_PREFIX: &[u8] = b"chaos/k";
/// Not watched: its revision bounds a revoke.
const MARK_KEY: &[u8] = b"chaos/auth-mark";

pub fn root() -> Credentials {
    Credentials {
        user: ROOT.into(),
        password: "chaos-root".into(),
    }
}

pub fn watcher() -> Credentials {
    Credentials {
        user: WATCH_USER.into(),
        password: "chaos-watcher".into(),
    }
}

pub fn root_options() -> ClientOptions {
    ClientOptions {
        credentials: Some(root()),
        tls: None,
    }
}

fn read_permission() -> Result<Permission, ClientError> {
    let (key, range_end) = permission_range(WATCH_PREFIX, KeyRange::Prefix)?;
    Ok(Permission {
        kind: PermissionType::Read,
        key,
        range_end,
    })
}

/// The users, the roles and `auth enable`, through `setup` (no user yet).
pub async fn setup(setup: &mut Client) -> anyhow::Result<()> {
    let (root, watcher) = (root(), watcher());
    setup.user_add(ROOT, Some(&root.password)).await?;
    match setup.role_add(ROOT).await {
        Ok(()) | Err(ClientError::Auth(AuthError::RoleAlreadyExists)) => {}
        Err(e) => return Err(e.into()),
    }
    setup.user_grant_role(ROOT, ROOT).await?;
    setup.role_add(WATCH_ROLE).await?;
    setup
        .role_grant_permission(WATCH_ROLE, &read_permission()?)
        .await?;
    setup.user_add(WATCH_USER, Some(&watcher.password)).await?;
    setup.user_grant_role(WATCH_USER, WATCH_ROLE).await?;
    setup.auth_enable().await?;
    Ok(())
}

/// An acknowledged revoke: invoked at `invoked`; `bound` is the revision of
/// a write made after its acknowledgment (`None`: that write failed).
#[derive(Clone, Debug)]
pub struct Revoke {
    pub invoked: Instant,
    pub bound: Option<i64>,
}

#[derive(Default, Debug)]
pub struct PermissionLog {
    pub revokes: Vec<Revoke>,
    pub grants: u64,
}

/// How long the churner keeps trying one change before giving up.
const CHANGE_PATIENCE: Duration = Duration::from_secs(120);

/// Revokes and grants back the watch role's read permission until `until`,
/// then makes sure it is granted (the watchers must catch up at the end).
/// An error: the permission could not be restored.
pub async fn churn(
    endpoints: Vec<String>,
    seed: u64,
    start: Instant,
    until: Instant,
) -> anyhow::Result<PermissionLog> {
    let mut c = Client::with_options(endpoints, root_options())?;
    let mut rng = Rng::new(seed);
    let mut log = PermissionLog::default();
    let perm = read_permission()?;
    loop {
        let wait = Duration::from_millis(5_000 + rng.below(10_000));
        if Instant::now() + wait >= until {
            break;
        }
        tokio::time::sleep(wait).await;
        // Revoke, until acknowledged (or found already revoked by an
        // attempt whose answer was lost).
        let invoked = Instant::now();
        let mut revoked = false;
        while invoked.elapsed() < CHANGE_PATIENCE {
            match c
                .role_revoke_permission(WATCH_ROLE, &perm.key, &perm.range_end)
                .await
            {
                Ok(()) | Err(ClientError::Auth(AuthError::PermissionNotGranted)) => {
                    revoked = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!("chaos: revoke: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if !revoked {
            anyhow::bail!("could not revoke the watch role's permission in {CHANGE_PATIENCE:?}");
        }
        let mut bound = None;
        let marked = Instant::now();
        while bound.is_none() && marked.elapsed() < Duration::from_secs(30) {
            match c.put(MARK_KEY, b"revoked").await {
                Ok(rev) => bound = Some(rev),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        println!(
            "chaos: {:>6.1}s  permission revoked (bound revision {})",
            start.elapsed().as_secs_f64(),
            bound.map_or("unknown".to_string(), |b| b.to_string())
        );
        log.revokes.push(Revoke { invoked, bound });
        let hold = Duration::from_millis(2_000 + rng.below(4_000));
        tokio::time::sleep(hold.min(until.saturating_duration_since(Instant::now()))).await;
        grant(&mut c, &perm).await?;
        log.grants += 1;
        println!(
            "chaos: {:>6.1}s  permission granted back",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(log)
}

async fn grant(c: &mut Client, perm: &Permission) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match c.role_grant_permission(WATCH_ROLE, perm).await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > CHANGE_PATIENCE => {
                anyhow::bail!("could not grant the watch role's permission back: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The leak check for one watcher: every (segment, revoke) pair the rule
/// covers; the number of pairs judged and the violations.
pub fn check(name: &str, log: &WatchLog, revokes: &[Revoke]) -> (u64, Vec<String>) {
    let mut judged = 0;
    let mut out = Vec::new();
    for (i, s) in log.segments.iter().enumerate() {
        for r in revokes {
            let Some(bound) = r.bound else { continue };
            if s.created >= r.invoked {
                continue;
            }
            judged += 1;
            if s.max_revision > bound {
                out.push(format!(
                    "watcher of {name}: segment {i} (created before a revoke) delivered revision {} past the revoke's bound {bound}",
                    s.max_revision
                ));
            }
        }
    }
    (judged, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::coordination::Segment;

    #[test]
    fn the_leak_check_judges_only_watches_created_before_a_revoke() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let seg = |created, max_revision| Segment {
            created,
            max_revision,
            canceled_for_permission: false,
        };
        let revokes = vec![Revoke {
            invoked: at(1_000),
            bound: Some(50),
        }];
        // Created before the revoke, stopped in time; created after it,
        // free to go on.
        let mut log = WatchLog {
            segments: vec![seg(t0, 50), seg(at(1_500), 90)],
            ..WatchLog::default()
        };
        assert_eq!(check("k", &log, &revokes), (1, vec![]));
        // Created before the revoke and went past its bound: a leak.
        log.segments.push(seg(at(500), 51));
        let (judged, v) = check("k", &log, &revokes);
        assert_eq!((judged, v.len()), (2, 1));
        // A revoke without a bound judges nothing.
        let unbounded = vec![Revoke {
            invoked: at(1_000),
            bound: None,
        }];
        assert_eq!(check("k", &log, &unbounded).0, 0);
    }
}
