//! Deterministic simulation of whole Ferrite clusters on virtual time.
//!
//! A seed picks the cluster (3 or 5 voters), the fault rates, and every
//! choice of the run: message drops, delays, duplicates and reorders,
//! partitions, crashes that lose unsynced writes, leader transfers,
//! membership changes, snapshots, and the clients' operations. After every
//! step the safety invariants are checked; at the end, after faults heal,
//! liveness is required within a bounded time and every client history must
//! be linearizable. KV clients also hold leases (grant, attach keys, keep
//! alive, lapse, revoke) and watchers run the real watch stream against
//! each member's event stream; at the end the lease checker (no revoke
//! under an acknowledged keepalive, bounded lifetime after healing) and the
//! watch checker (every watcher's stream is the applied history, filtered)
//! judge them. In some seeds a KV client raises and clears etcd's NOSPACE
//! alarm through the log, and the alarm checker requires that no member
//! applies a put between the two (`alarm.rs`). A failing seed replays
//! exactly.

pub mod alarm;
pub mod auth;
pub mod bench;
pub mod check;
pub mod disk;
pub mod lease;
pub mod nemesis;
pub mod node;
pub mod options;
pub mod runner;
pub mod watch;
pub mod workload;
pub mod world;

pub use options::Options;
pub use runner::{run_seed, run_seeds, Failure, Summary};
pub use world::{Stats, World};
