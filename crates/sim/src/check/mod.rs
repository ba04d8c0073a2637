//! Checkers: the safety invariants of Raft, checked after every step;
//! linearizability of client histories and lease expiry, checked at the end
//! of a run; watch streams against the applied KV history (`watch.rs`). The
//! history and lease checkers and `Violation` live in `ferrite-checker`
//! (shared with `ferrite chaos`) and are re-exported here.

pub mod safety;
pub mod watch;

pub use ferrite_checker::{leases, linearizable, Violation};
