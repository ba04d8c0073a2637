//! Checkers: the safety invariants of Raft, checked after every step, and
//! linearizability of client histories, checked at the end of a run. The
//! history checker and `Violation` live in `ferrite-checker` (shared with
//! `ferrite chaos`) and are re-exported here under their old paths.

pub mod safety;

pub use ferrite_checker::{linearizable, Violation};
