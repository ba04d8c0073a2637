//! `ferrite kv watch`, `ferrite lease ...`, `ferrite lock` and `ferrite
//! elect`: etcd's coordination services from the command line. Output
//! follows etcdctl's where it has one (lease lines, hex lease ids); events
//! and leaders print one line each, so that scripts can read them.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use clap::Subcommand;
use ferrite_client::{Client, EventKind, KeyValue, Notice, WatchEvent, WatchOptions};

/// The lease TTL `lock` and `elect` use unless told otherwise (seconds).
pub const SESSION_TTL_S: i64 = 10;

#[derive(Subcommand)]
pub enum LeaseOp {
    /// Grant a lease of TTL seconds; prints its id (hex).
    Grant { ttl: i64 },
    /// Revoke a lease (by hex id): its keys are deleted.
    Revoke { id: String },
    /// Keep a lease alive until Ctrl-C, printing each renewal; exits 1 when
    /// the lease expires or is revoked.
    KeepAlive {
        id: String,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// A lease's granted and remaining TTL; exits 1 if it does not exist.
    Ttl {
        id: String,
        /// Also list the keys bound to it.
        #[arg(long)]
        keys: bool,
    },
    /// Every lease's id.
    List,
}

/// A lease id as etcdctl prints and reads it: hex, `0x` optional.
pub fn lease_id(text: &str) -> anyhow::Result<i64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map(|id| id as i64)
        .map_err(|_| {
            anyhow::anyhow!("{text:?} is not a lease id (hex, as `ferrite lease grant` prints)")
        })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `PUT key = value (revision 7)`, `DELETE key (revision 8)`; with the
/// previous value: `(revision 8, was v1)`.
pub fn event_line(e: &WatchEvent) -> String {
    let was = e
        .prev_kv
        .as_ref()
        .map_or(String::new(), |p| format!(", was {}", text(&p.value)));
    match e.kind {
        EventKind::Put => format!(
            "PUT {} = {} (revision {}{was})",
            text(&e.kv.key),
            text(&e.kv.value),
            e.revision()
        ),
        EventKind::Delete => format!(
            "DELETE {} (revision {}{was})",
            text(&e.kv.key),
            e.revision()
        ),
    }
}

/// `ferrite kv watch`: prints events until Ctrl-C (exit 0) or until the
/// watch fails (a compaction, no member reachable: exit 1).
pub async fn watch(
    client: &mut Client,
    key: &str,
    prefix: bool,
    rev: Option<i64>,
    prev_kv: bool,
) -> anyhow::Result<ExitCode> {
    client.on_notice(|n| {
        if let Notice::WatchResumed { url, revision } = n {
            eprintln!("(watch resumed on {url} from revision {revision})");
        }
    });
    let options = WatchOptions {
        prefix,
        from_revision: rev.unwrap_or(0),
        prev_kv,
        ..WatchOptions::default()
    };
    let mut w = client.watch(key.as_bytes(), options).await?;
    eprintln!(
        "watching {key}{} from revision {} on {} (Ctrl-C ends)",
        if prefix { "*" } else { "" },
        w.next_revision(),
        w.endpoint()
    );
    loop {
        tokio::select! {
            e = w.next() => println!("{}", event_line(&e?)),
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

pub async fn lease(client: &mut Client, op: LeaseOp) -> anyhow::Result<ExitCode> {
    match op {
        LeaseOp::Grant { ttl } => {
            let (id, ttl) = client.lease_grant(ttl).await?;
            println!("lease {id:016x} granted with TTL({ttl}s)");
        }
        LeaseOp::Revoke { id } => {
            let id = lease_id(&id)?;
            client.lease_revoke(id).await?;
            println!("lease {id:016x} revoked");
        }
        LeaseOp::KeepAlive { id, once: true } => {
            let id = lease_id(&id)?;
            let ttl = client.lease_keep_alive_once(id).await?;
            println!("lease {id:016x} keepalived with TTL({ttl})");
        }
        LeaseOp::KeepAlive { id, once: false } => {
            let id = lease_id(&id)?;
            let mut keeper = client.lease_keep_alive(id);
            loop {
                tokio::select! {
                    r = keeper.next() => match r {
                        Ok(ttl) => println!("lease {id:016x} keepalived with TTL({ttl})"),
                        Err(ferrite_client::ClientError::LeaseExpired(_)) => {
                            println!("lease {id:016x} expired or revoked.");
                            return Ok(ExitCode::FAILURE);
                        }
                        Err(e) => return Err(e.into()),
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        LeaseOp::Ttl { id, keys } => {
            let id = lease_id(&id)?;
            let info = client.lease_time_to_live(id, keys).await?;
            if !info.exists() {
                println!("lease {id:016x} already expired");
                return Ok(ExitCode::FAILURE);
            }
            let mut line = format!(
                "lease {id:016x} granted with TTL({}s), remaining({}s)",
                info.granted_ttl, info.ttl
            );
            if keys {
                let names: Vec<String> = info.keys.iter().map(|k| text(k)).collect();
                line.push_str(&format!(", attached keys([{}])", names.join(" ")));
            }
            println!("{line}");
        }
        LeaseOp::List => {
            let ids = client.lease_list().await?;
            println!("found {} leases", ids.len());
            for id in ids {
                println!("{id:016x}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A lease kept alive for the life of a `lock` or `elect`; revoked at the
/// end, which also deletes the lock's or candidate's key.
struct Session {
    lease: i64,
    keeper: ferrite_client::KeepAlive,
}

impl Session {
    async fn start(client: &mut Client, ttl: i64) -> anyhow::Result<Session> {
        let (lease, _) = client.lease_grant(ttl).await?;
        let keeper = client.lease_keep_alive(lease);
        Ok(Session { lease, keeper })
    }

    /// Best effort: if it fails, the lease expires within its TTL anyway.
    async fn end(self, client: &mut Client) {
        drop(self.keeper);
        if let Err(e) = client.lease_revoke(self.lease).await {
            eprintln!(
                "ferrite: could not revoke lease {:016x} ({e}); it expires on its own",
                self.lease
            );
        }
    }
}

/// The exit code that reports a child's exit status as a shell would.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn signal(child: &tokio::process::Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: sends a signal to our own child, which has not been
        // reaped (we still hold it).
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// `ferrite lock NAME [--ttl S] [-- CMD ARGS...]`.
pub async fn lock(
    client: &mut Client,
    name: &str,
    ttl: i64,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let mut session = Session::start(client, ttl).await?;
    let held = tokio::select! {
        r = client.lock(name.as_bytes(), session.lease) => Some(r),
        e = session.keeper.lost() => Some(Err(e)),
        _ = tokio::signal::ctrl_c() => None,
    };
    let held = match held {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            session.end(client).await;
            return Err(e.into());
        }
        None => {
            session.end(client).await;
            return Ok(ExitCode::from(130));
        }
    };
    let key = text(&held.key);
    let Some((program, args)) = command.split_first() else {
        // etcdctl's behaviour without a command: print the key, hold the
        // lock until Ctrl-C.
        println!("{key}");
        let lost = tokio::select! {
            e = session.keeper.lost() => Some(e),
            _ = tokio::signal::ctrl_c() => None,
        };
        let _ = client.unlock(&held.key).await;
        session.end(client).await;
        return match lost {
            Some(e) => Err(anyhow::anyhow!("lost the lock: {e}")),
            None => Ok(ExitCode::SUCCESS),
        };
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("FERRITE_LOCK_KEY", &key)
        .env("FERRITE_LOCK_REVISION", held.revision.to_string())
        .kill_on_drop(true)
        .spawn();
    let code = match &mut child {
        Err(e) => {
            eprintln!("ferrite: cannot run {program:?}: {e}");
            ExitCode::from(127)
        }
        Ok(child) => {
            let mut interrupted = false;
            loop {
                tokio::select! {
                    status = child.wait() => break exit_code(status?),
                    _ = tokio::signal::ctrl_c(), if !interrupted => {
                        // The child may not share our terminal: pass it on,
                        // and release the lock once it has exited.
                        interrupted = true;
                        signal(child, libc::SIGINT);
                    }
                    e = session.keeper.lost() => {
                        eprintln!("ferrite: lost the lock ({e}); stopping {program:?}");
                        signal(child, libc::SIGTERM);
                        let _ = child.wait().await;
                        break ExitCode::FAILURE;
                    }
                }
            }
        }
    };
    let _ = client.unlock(&held.key).await;
    session.end(client).await;
    Ok(code)
}

fn leader_line(kv: &KeyValue) -> String {
    format!(
        "leader {} = {} (revision {})",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision
    )
}

/// `ferrite elect NAME VALUE`: campaign, lead until Ctrl-C, resign.
pub async fn elect(
    client: &mut Client,
    name: &str,
    value: &str,
    ttl: i64,
) -> anyhow::Result<ExitCode> {
    let mut session = Session::start(client, ttl).await?;
    eprintln!("campaigning for {name} with lease {:016x}", session.lease);
    let won = tokio::select! {
        r = client.campaign(name.as_bytes(), session.lease, value.as_bytes()) => Some(r),
        e = session.keeper.lost() => Some(Err(e)),
        _ = tokio::signal::ctrl_c() => None,
    };
    let leader = match won {
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            session.end(client).await;
            return Err(e.into());
        }
        None => {
            session.end(client).await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "{}",
        leader_line(&KeyValue {
            key: leader.key.clone().into(),
            value: value.as_bytes().to_vec().into(),
            create_revision: leader.rev,
            ..KeyValue::default()
        })
    );
    let lost = tokio::select! {
        e = session.keeper.lost() => Some(e),
        _ = tokio::signal::ctrl_c() => None,
    };
    let resigned = client.resign(&leader).await;
    session.end(client).await;
    match (lost, resigned) {
        (Some(e), _) => Err(anyhow::anyhow!("lost the leadership: {e}")),
        (None, Err(e)) => Err(anyhow::anyhow!("resign failed ({e}); the lease is revoked")),
        (None, Ok(())) => {
            eprintln!("resigned");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ferrite elect NAME`: print the leader and every change, until Ctrl-C.
pub async fn observe(client: &mut Client, name: &str) -> anyhow::Result<ExitCode> {
    let mut last: Option<KeyValue> = None;
    loop {
        let mut observer = tokio::select! {
            o = client.observe(name.as_bytes()) => o?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        loop {
            let next = tokio::select! {
                n = observer.next() => n,
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            };
            match next {
                Ok(Some(kv)) => {
                    // A stream opened again starts with the leader now:
                    // print it only if it changed.
                    let same = last.as_ref().is_some_and(|l| {
                        (&l.key, &l.value, l.mod_revision) == (&kv.key, &kv.value, kv.mod_revision)
                    });
                    if !same {
                        println!("{}", leader_line(&kv));
                        last = Some(kv);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
