//! etcd's alarms: a member raises one (NOSPACE when a write would take its
//! database over the space quota, CORRUPT when the corruption check finds
//! a member whose key space disagrees with the others) and it stays raised,
//! on every member, until an operator deactivates it (`etcdctl alarm
//! disarm`). Alarms are replicated state: raised and cleared through the
//! log, kept in snapshots, and they change what applies:
//!
//! - NOSPACE refuses what would grow the state (etcd's capped applier):
//!   puts, transactions that put, lease grants, new registers, volume
//!   creation and growing resizes; deletes, ranges, compaction, revokes,
//!   updates of existing registers, volume writes (into space the volume
//!   already has) and alarm changes still apply.
//! - CORRUPT refuses the KV and lease requests that go through the log
//!   (etcd's corrupt applier: put, delete, txn, compaction, range, lease
//!   grant and revoke), and register and volume writes.

use std::collections::BTreeSet;

/// etcd's `AlarmType` (the numbers are etcd's wire values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmType {
    /// Every alarm, in a GET.
    None = 0,
    NoSpace = 1,
    Corrupt = 2,
}

impl AlarmType {
    pub fn from_wire(v: i32) -> Option<AlarmType> {
        match v {
            0 => Some(AlarmType::None),
            1 => Some(AlarmType::NoSpace),
            2 => Some(AlarmType::Corrupt),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AlarmType::None => "NONE",
            AlarmType::NoSpace => "NOSPACE",
            AlarmType::Corrupt => "CORRUPT",
        }
    }
}

/// etcd's `AlarmRequest.AlarmAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    Get = 0,
    Activate = 1,
    Deactivate = 2,
}

impl AlarmAction {
    pub fn from_wire(v: i32) -> Option<AlarmAction> {
        match v {
            0 => Some(AlarmAction::Get),
            1 => Some(AlarmAction::Activate),
            2 => Some(AlarmAction::Deactivate),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmRequest {
    pub action: AlarmAction,
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// One raised alarm: which member raised it, and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// A deliberately broken state machine, for the simulator's canaries
/// (only with the `canary` feature; otherwise just `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlarmCanary {
    #[default]
    None,
    /// KV puts (and transactions with puts) are applied while NOSPACE is
    /// raised. The simulator's alarm checker must catch it.
    #[cfg(feature = "canary")]
    IgnoreNoSpace,
}

impl AlarmCanary {
    pub fn all() -> &'static [AlarmCanary] {
        #[cfg(feature = "canary")]
        {
            &[AlarmCanary::None, AlarmCanary::IgnoreNoSpace]
        }
        #[cfg(not(feature = "canary"))]
        {
            &[AlarmCanary::None]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AlarmCanary::None => "none",
            #[cfg(feature = "canary")]
            AlarmCanary::IgnoreNoSpace => "alarm-ignore-nospace",
        }
    }

    /// Whether `op` goes through although NOSPACE refuses it.
    pub(crate) fn lets_through(self, op: &crate::Op) -> bool {
        #[cfg(feature = "canary")]
        {
            self == AlarmCanary::IgnoreNoSpace
                && matches!(op, crate::Op::Put(_) | crate::Op::Txn(_))
        }
        #[cfg(not(feature = "canary"))]
        {
            let _ = op;
            false
        }
    }
}

/// The raised alarms, ordered by member then type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    raised: BTreeSet<AlarmMember>,
}

impl Alarms {
    pub(crate) fn from_list(list: Vec<AlarmMember>) -> Alarms {
        Alarms {
            raised: list.into_iter().collect(),
        }
    }

    pub fn list(&self) -> Vec<AlarmMember> {
        self.raised.iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.raised.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raised.is_empty()
    }

    /// Whether any member has raised `alarm`.
    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.iter().any(|a| a.alarm == alarm)
    }

    /// etcd's semantics: GET of NONE lists every alarm, of a type those of
    /// that type; ACTIVATE and DEACTIVATE answer the alarm they added or
    /// removed, or nothing if there was nothing to do (NONE is no alarm).
    pub(crate) fn execute(&mut self, req: &AlarmRequest) -> Vec<AlarmMember> {
        let member = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        match req.action {
            AlarmAction::Get => self
                .raised
                .iter()
                .filter(|a| req.alarm == AlarmType::None || a.alarm == req.alarm)
                .copied()
                .collect(),
            _ if req.alarm == AlarmType::None => Vec::new(),
            AlarmAction::Activate if self.raised.insert(member) => vec![member],
            AlarmAction::Deactivate if self.raised.remove(&member) => vec![member],
            AlarmAction::Activate | AlarmAction::Deactivate => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action,
            member_id,
            alarm,
        }
    }

    #[test]
    fn activate_get_deactivate() {
        let mut a = Alarms::default();
        let nospace = AlarmMember {
            member_id: 7,
            alarm: AlarmType::NoSpace,
        };
        assert_eq!(
            a.execute(&req(AlarmAction::Activate, 7, AlarmType::NoSpace)),
            vec![nospace]
        );
        assert!(
            a.execute(&req(AlarmAction::Activate, 7, AlarmType::NoSpace))
                .is_empty(),
            "raising twice answers nothing new"
        );
        a.execute(&req(AlarmAction::Activate, 3, AlarmType::Corrupt));
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.execute(&req(AlarmAction::Get, 0, AlarmType::NoSpace)),
            vec![nospace]
        );
        assert_eq!(
            a.execute(&req(AlarmAction::Get, 0, AlarmType::None)).len(),
            2
        );
        assert!(a
            .execute(&req(AlarmAction::Activate, 1, AlarmType::None))
            .is_empty());
        assert!(a
            .execute(&req(AlarmAction::Deactivate, 9, AlarmType::NoSpace))
            .is_empty());
        assert_eq!(
            a.execute(&req(AlarmAction::Deactivate, 7, AlarmType::NoSpace)),
            vec![nospace]
        );
        assert!(!a.is_raised(AlarmType::NoSpace));
        assert!(a.is_raised(AlarmType::Corrupt));
    }
}
