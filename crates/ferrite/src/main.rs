//! `ferrite`: run a member, a local cluster, or talk to one.

mod auth;
mod bench;
mod certs;
mod chaos;
mod client_args;
mod config;
mod coordination;
mod launch;
mod server;
mod shell;
mod snapshot;
mod status;
mod up;
mod volume;
mod volume_backup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use client_args::Endpoints;

/// mimalloc instead of glibc's malloc: a put on the leader allocates a
/// dozen times across gRPC, the node and the state machine, on several
/// threads; under load glibc's malloc/free were ~12% of the leader's CPU
/// and its per-thread arenas held freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the pinned mimalloc (its v3 `mimalloc.h`; the sys
/// crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after `PURGE_DELAY_MS`, not at once.
/// At once (0) kept a member's RSS under 256 put clients at 56 MB instead
/// of 70 MB, but every page freed and taken again was faulted back in and
/// zeroed: fanning events out to 1,000 watchers spent a third of its CPU
/// in page faults and madvise before the fan-out stopped allocating per
/// watcher, and with 3 ms the puts of `bench etcd` cost ~15% less CPU
/// (95 -> 80 µs per put over the members) for 68 MB.
/// mimalloc's own variable, `MIMALLOC_PURGE_DELAY` (milliseconds), wins
/// when set.
fn set_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a process-wide allocator option; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// How long freed memory stays with the process (mimalloc's default: 10).
const PURGE_DELAY_MS: std::ffi::c_long = 3;

#[derive(Parser)]
#[command(
    name = "ferrite",
    version,
    about = "A replicated key-value store, registers and volumes on Raft"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member.
    Server(Box<config::ServerArgs>),
    /// Run a local cluster of 3 or 5 members, supervised, until Ctrl-C.
    Up(up::UpArgs),
    /// Every member's role, term and indexes; fails when there is no leader.
    Status(Endpoints),
    /// Keys and values (etcd's KV).
    Kv {
        #[command(subcommand)]
        op: KvOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Integer registers.
    Register {
        #[command(subcommand)]
        op: RegisterOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Cluster membership.
    Member {
        #[command(subcommand)]
        op: MemberOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Block volumes (also served over NBD).
    Volume {
        #[command(subcommand)]
        op: volume::VolumeOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Attack a real 5-member cluster with faults while clients run, then
    /// check the history for linearizability and lost writes.
    Chaos(chaos::ChaosArgs),
    /// Measure Ferrite against etcd on this machine.
    Bench {
        #[command(subcommand)]
        op: bench::BenchOp,
    },
    /// Leases (etcd's): grant, revoke, keep-alive, ttl, list. Ids are hex.
    Lease {
        #[command(subcommand)]
        op: coordination::LeaseOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Run CMD while holding lock NAME (or, without CMD, print the lock's
    /// key and hold it until Ctrl-C).
    ///
    /// A lease of --ttl seconds is granted and kept alive while CMD runs;
    /// the lock is released and the lease revoked when CMD exits, and
    /// `ferrite lock` exits with CMD's status. If the lease is lost (this
    /// process was cut off for longer than the TTL), CMD gets SIGTERM and
    /// the exit status is 1.
    ///
    /// CMD sees FERRITE_LOCK_KEY (the lock's key) and FERRITE_LOCK_REVISION,
    /// the key's create revision. FERRITE_LOCK_REVISION is a fencing token:
    /// every later holder of the lock gets a higher one, so a resource that
    /// remembers the highest token it has seen can refuse a holder whose
    /// lock has already passed to another.
    Lock {
        name: String,
        /// TTL of the lock's lease, in seconds.
        #[arg(long, default_value_t = coordination::SESSION_TTL_S)]
        ttl: i64,
        /// The command to run, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Campaign in election NAME with VALUE: print the leader line once
    /// elected, lead until Ctrl-C, then resign. Without VALUE, observe:
    /// print the leader and every change, until Ctrl-C.
    Elect {
        name: String,
        value: Option<String>,
        /// TTL of the candidate's lease, in seconds.
        #[arg(long, default_value_t = coordination::SESSION_TTL_S)]
        ttl: i64,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// An interactive client.
    Shell(Endpoints),
    /// Enable or disable authentication (etcd's).
    Auth {
        #[command(subcommand)]
        op: auth::AuthOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Users: add, get, list, delete, passwd, grant-role, revoke-role.
    User {
        #[command(subcommand)]
        op: auth::UserOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Roles and their key permissions: add, get, list, delete,
    /// grant-permission, revoke-permission.
    Role {
        #[command(subcommand)]
        op: auth::RoleOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Backups: save (from the cluster), status and restore (into the data
    /// directory of a member of a new cluster), as etcdctl's.
    Snapshot {
        #[command(subcommand)]
        op: snapshot::SnapshotOp,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Look inside a data directory.
    Wal {
        #[command(subcommand)]
        op: WalOp,
    },
}

#[derive(Subcommand)]
enum KvOp {
    Put {
        key: String,
        value: String,
        /// Bind the key to this lease (hex id): it goes when the lease does.
        #[arg(long)]
        lease: Option<String>,
    },
    Get {
        key: String,
    },
    Del {
        key: String,
    },
    /// Every key with a prefix.
    List {
        prefix: Option<String>,
    },
    /// Print changes to KEY as they happen, one line each, until Ctrl-C:
    /// `PUT key = value (revision N)`, `DELETE key (revision N)`. Survives
    /// the loss of a member: the watch goes on on another from the next
    /// revision, with no event lost or repeated.
    Watch {
        key: String,
        /// Every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start at this past revision (replays history first).
        #[arg(long)]
        rev: Option<i64>,
        /// Also print the value each event replaced.
        #[arg(long)]
        prev_kv: bool,
    },
}

#[derive(Subcommand)]
enum RegisterOp {
    Get {
        name: String,
    },
    Set {
        name: String,
        value: i64,
    },
    Add {
        name: String,
        delta: i64,
    },
    Cas {
        name: String,
        expected: i64,
        new: i64,
    },
}

#[derive(Subcommand)]
enum MemberOp {
    List,
    /// Add a member by its peer URL (as a learner with --learner).
    Add {
        peer_url: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by its hex id.
    Remove {
        id: String,
    },
    /// Promote a caught-up learner by its hex id.
    Promote {
        id: String,
    },
}

#[derive(Subcommand)]
enum WalOp {
    Inspect { dir: String },
    Verify { dir: String },
}

fn hex_id(text: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|_| {
        anyhow::anyhow!("{text:?} is not a member id (hex, as `ferrite member list` prints)")
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => server::run(args.resolve()?).await?,
        Command::Up(args) => up::run(args).await?,
        Command::Status(e) => {
            if !status::run(&mut e.client()?).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Kv { op, endpoints } => {
            let mut c = endpoints.client()?;
            match op {
                KvOp::Put { key, value, lease } => {
                    let lease = lease.as_deref().map_or(Ok(0), coordination::lease_id)?;
                    let rev = c
                        .put_with_lease(key.as_bytes(), value.as_bytes(), lease)
                        .await?;
                    println!("OK (revision {rev})");
                }
                KvOp::Get { key } => match c.get(key.as_bytes()).await? {
                    Some(kv) => println!("{}", String::from_utf8_lossy(&kv.value)),
                    None => {
                        eprintln!("{key}: not found");
                        return Ok(ExitCode::FAILURE);
                    }
                },
                KvOp::Del { key } => println!("deleted {}", c.delete(key.as_bytes()).await?),
                KvOp::Watch {
                    key,
                    prefix,
                    rev,
                    prev_kv,
                } => return coordination::watch(&mut c, &key, prefix, rev, prev_kv).await,
                KvOp::List { prefix } => {
                    for kv in c.get_prefix(prefix.unwrap_or_default().as_bytes()).await? {
                        println!(
                            "{}\t{}",
                            String::from_utf8_lossy(&kv.key),
                            String::from_utf8_lossy(&kv.value)
                        );
                    }
                }
            }
        }
        Command::Register { op, endpoints } => {
            let mut c = endpoints.client()?;
            match op {
                RegisterOp::Get { name } => println!("{}", c.register_get(&name).await?),
                RegisterOp::Set { name, value } => {
                    c.register_set(&name, value).await?;
                    println!("{value}");
                }
                RegisterOp::Add { name, delta } => {
                    println!("{}", c.register_add(&name, delta).await?)
                }
                RegisterOp::Cas {
                    name,
                    expected,
                    new,
                } => {
                    let (ok, now) = c.register_cas(&name, expected, new).await?;
                    println!("{} {now}", if ok { "swapped" } else { "not-swapped" });
                    if !ok {
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
        Command::Member { op, endpoints } => {
            let mut c = endpoints.client()?;
            match op {
                MemberOp::List => {
                    for m in c.members().await? {
                        println!(
                            "{:x}, {}, {}, {}, {}",
                            m.id,
                            if m.name.is_empty() {
                                "unstarted"
                            } else {
                                "started"
                            },
                            m.name,
                            m.peer_ur_ls.join(","),
                            if m.is_learner { "learner" } else { "voter" }
                        );
                    }
                }
                MemberOp::Add { peer_url, learner } => {
                    let m = c.member_add(&peer_url, learner).await?;
                    println!("added member {:x} at {peer_url}", m.id);
                }
                MemberOp::Remove { id } => {
                    c.member_remove(hex_id(&id)?).await?;
                    println!("removed member {id}");
                }
                MemberOp::Promote { id } => {
                    c.member_promote(hex_id(&id)?).await?;
                    println!("promoted member {id}");
                }
            }
        }
        Command::Volume { op, endpoints } => volume::run(&mut endpoints.client()?, op).await?,
        Command::Lease { op, endpoints } => {
            return coordination::lease(&mut endpoints.client()?, op).await
        }
        Command::Lock {
            name,
            ttl,
            command,
            endpoints,
        } => return coordination::lock(&mut endpoints.client()?, &name, ttl, command).await,
        Command::Elect {
            name,
            value,
            ttl,
            endpoints,
        } => {
            let mut c = endpoints.client()?;
            return match value {
                Some(value) => coordination::elect(&mut c, &name, &value, ttl).await,
                None => coordination::observe(&mut c, &name).await,
            };
        }
        Command::Shell(e) => shell::run(e.client()?).await?,
        Command::Auth { op, endpoints } => {
            println!("{}", auth::auth(&mut endpoints.client()?, op).await?)
        }
        Command::User { op, endpoints } => {
            print_lines(&auth::user(&mut endpoints.client()?, op).await?)
        }
        Command::Role { op, endpoints } => {
            print_lines(&auth::role(&mut endpoints.client()?, op).await?)
        }
        Command::Bench { op } => bench::run(op).await?,
        Command::Chaos(args) => {
            if !chaos::run(args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Snapshot { op, endpoints } => snapshot::run(op, endpoints).await?,
        Command::Wal { op } => match op {
            WalOp::Inspect { dir } => print!(
                "{}",
                ferrite_wal::inspect::inspect(&ferrite_wal::FileDisk::new(), &dir)?
            ),
            WalOp::Verify { dir } => {
                let report = ferrite_wal::inspect::verify(&mut ferrite_wal::FileDisk::new(), &dir)?;
                println!("{report:?}");
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `text` and a newline, unless it is empty (an empty list).
fn print_lines(text: &str) {
    if !text.is_empty() {
        println!("{text}");
    }
}

fn main() -> ExitCode {
    set_purge_delay();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRITE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrite: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrite: {e:#}");
            ExitCode::FAILURE
        }
    }
}
