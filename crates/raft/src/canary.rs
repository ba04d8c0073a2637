//! Deliberately broken variants of the core. They exist only so that the
//! simulator can prove its checkers bite: each must be caught within a bounded
//! number of seeds. Selecting one requires the `canary` feature; without it
//! the switch cannot be set to anything but `None`.

/// Which rule of Raft to break.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Canary {
    #[default]
    None,
    /// Commit an entry of an earlier term by counting replicas (Figure 8).
    #[cfg(feature = "canary")]
    CommitEarlierTerm,
    /// Grant votes without checking that the candidate's log is up to date.
    #[cfg(feature = "canary")]
    VoteWithoutLogCheck,
    /// Acknowledge appends and votes before they are durable, and let the
    /// leader count its own unsynced entries toward a quorum.
    #[cfg(feature = "canary")]
    AckBeforePersist,
    /// Forget the apply budget: hand out everything committed, however much
    /// is still waiting to be applied.
    #[cfg(feature = "canary")]
    IgnoreApplyBudget,
    /// The replica (ferrite-node) re-proposes a write whose outcome is
    /// unknown, as if it had definitely not been applied.
    #[cfg(feature = "canary")]
    ReproposeUnknown,
    /// The replica answers a linearizable read before its state machine has
    /// applied up to the read index.
    #[cfg(feature = "canary")]
    ReadBeforeApplied,
    /// The replica's lessor does not extend leases when its member becomes
    /// leader: each keeps the expiry it would have had if granted when its
    /// grant was applied there, so a failover can expire a lease that was
    /// renewed in time.
    #[cfg(feature = "canary")]
    NoLeaseExtendOnPromote,
}

impl Canary {
    /// Every broken variant that this build can switch on.
    pub fn all() -> &'static [Canary] {
        #[cfg(feature = "canary")]
        {
            &[
                Canary::CommitEarlierTerm,
                Canary::VoteWithoutLogCheck,
                Canary::AckBeforePersist,
                Canary::IgnoreApplyBudget,
                Canary::ReproposeUnknown,
                Canary::ReadBeforeApplied,
                Canary::NoLeaseExtendOnPromote,
            ]
        }
        #[cfg(not(feature = "canary"))]
        {
            &[]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Canary::None => "none",
            #[cfg(feature = "canary")]
            Canary::CommitEarlierTerm => "commit-earlier-term",
            #[cfg(feature = "canary")]
            Canary::VoteWithoutLogCheck => "vote-without-log-check",
            #[cfg(feature = "canary")]
            Canary::AckBeforePersist => "ack-before-persist",
            #[cfg(feature = "canary")]
            Canary::IgnoreApplyBudget => "ignore-apply-budget",
            #[cfg(feature = "canary")]
            Canary::ReproposeUnknown => "repropose-unknown",
            #[cfg(feature = "canary")]
            Canary::ReadBeforeApplied => "read-before-applied",
            #[cfg(feature = "canary")]
            Canary::NoLeaseExtendOnPromote => "no-lease-extend-on-promote",
        }
    }

    pub fn commits_earlier_term(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::CommitEarlierTerm
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    pub fn skips_log_check(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::VoteWithoutLogCheck
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    pub fn acks_before_persist(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::AckBeforePersist
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    pub fn ignores_apply_budget(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::IgnoreApplyBudget
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    pub fn reproposes_unknown(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::ReproposeUnknown
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    pub fn reads_before_applied(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::ReadBeforeApplied
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    pub fn no_lease_extend_on_promote(self) -> bool {
        #[cfg(feature = "canary")]
        {
            self == Canary::NoLeaseExtendOnPromote
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }
}
