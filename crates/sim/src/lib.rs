//! Deterministic simulation of whole Ferrite clusters on virtual time.
//!
//! A seed picks the cluster (3 or 5 voters), the fault rates, and every
//! choice of the run: message drops, delays, duplicates and reorders,
//! partitions, crashes that lose unsynced writes, leader transfers,
//! membership changes, snapshots, and the clients' operations. After every
//! step the safety invariants are checked; at the end, after faults heal,
//! liveness is required within a bounded time and every client history must
//! be linearizable. A failing seed replays exactly.

pub mod bench;
pub mod check;
pub mod disk;
pub mod nemesis;
pub mod node;
pub mod options;
pub mod runner;
pub mod workload;
pub mod world;

pub use options::Options;
pub use runner::{run_seed, run_seeds, Failure, Summary};
pub use world::{Stats, World};
