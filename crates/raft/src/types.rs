//! The three numbers Raft is made of. Newtypes, so that an index can never be
//! passed where a term is expected.

use std::fmt;
use std::ops::{Add, Sub};

/// A Raft term: a logical clock that only moves forward (Raft §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty prefix: it always
/// exists and has term 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Index(pub u64);

/// A cluster member's identity. Never reused for a different member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl Term {
    pub const ZERO: Term = Term(0);
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl Index {
    pub const ZERO: Index = Index(0);
    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }
    /// The index before this one; index 0 has none, so it saturates.
    pub fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }
    /// How many indices lie between `earlier` (exclusive) and `self` (inclusive).
    pub fn distance_from(self, earlier: Index) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Index {
    type Output = Index;
    fn add(self, rhs: u64) -> Index {
        Index(self.0 + rhs)
    }
}

impl Sub<u64> for Index {
    type Output = Index;
    fn sub(self, rhs: u64) -> Index {
        Index(self.0.saturating_sub(rhs))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
