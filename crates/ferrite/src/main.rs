//! `ferrite`: run a member, a local cluster, or talk to one.

mod bench;
mod chaos;
mod config;
mod launch;
mod server;
mod shell;
mod status;
mod up;
mod volume;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrite_client::Client;

/// mimalloc instead of glibc's malloc: a put on the leader allocates a
/// dozen times across gRPC, the node and the state machine, on several
/// threads; under load glibc's malloc/free were ~12% of the leader's CPU
/// and its per-thread arenas held freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the pinned mimalloc (its v3 `mimalloc.h`; the sys
/// crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS at once instead of after mimalloc's
/// default 10 ms delay: under a put load the delay kept ~30 MB more resident
/// per member (83 → 55 MB at 256 clients) and returning it costs no
/// measurable CPU.
fn return_freed_memory_at_once() {
    // SAFETY: sets a process-wide allocator option; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// The default endpoints reach a `ferrite up` cluster.
const DEFAULT_ENDPOINTS: &str = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379";

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

#[derive(clap::Args, Clone)]
struct Endpoints {
    /// Client addresses of the cluster's members, comma-separated.
    #[arg(long, default_value = DEFAULT_ENDPOINTS, global = true)]
    endpoints: String,
}

impl Endpoints {
    fn client(&self) -> anyhow::Result<Client> {
        let list = self
            .endpoints
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty());
        Ok(Client::new(list.map(String::from).collect())?)
    }
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
    /// An interactive client.
    Shell(Endpoints),
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
                KvOp::Put { key, value } => {
                    let rev = c.put(key.as_bytes(), value.as_bytes()).await?;
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
        Command::Shell(e) => shell::run(e.client()?).await?,
        Command::Bench { op } => bench::run(op).await?,
        Command::Chaos(args) => {
            if !chaos::run(args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
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

fn main() -> ExitCode {
    return_freed_memory_at_once();
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
