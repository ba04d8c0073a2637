//! `ferrite-checker`: the checkers that judge a Ferrite cluster from the
//! outside, shared by the simulator (`ferrite-sim`) and `ferrite chaos` on
//! real processes, so neither has to link the other.
//!
//! - `linearizable.rs`: linearizability of client histories (Wing–Gong with
//!   Lowe's memoization, P-compositional per key).
//! - `leases.rs`: lease expiry: no revoke while an acknowledged keepalive
//!   covers the lease, and a bounded lifetime once faults stop.
//! - [`Violation`]: a broken promise as the simulator reports it.

pub mod leases;
pub mod linearizable;

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
