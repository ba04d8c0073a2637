//! Checkers: the safety invariants of Raft, checked after every step, and
//! linearizability of client histories, checked at the end of a run.

pub mod linearizable;
pub mod safety;

use std::fmt;

/// A broken promise, with enough detail to start debugging from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(kind: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}
