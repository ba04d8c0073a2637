//! Alarms in the simulated workload, and their checker.
//!
//! With `Options::alarms`, the first KV client now and then raises etcd's
//! NOSPACE alarm through the log (`Op::Alarm` ACTIVATE, in its session
//! like its other commands, retried until answered) and, a few commands
//! later, clears it (DEACTIVATE). The other KV clients keep writing
//! meanwhile: while the alarm is raised, every member must refuse their
//! puts, transactions with puts and lease grants (`StateError::NoSpace`,
//! a definite "not applied").
//!
//! The rule checked here, per member and in its own apply order: between
//! the member's application of an ACTIVATE NOSPACE and of the DEACTIVATE
//! that clears it, no entry puts a key or grants a lease. Each member's
//! machine keeps the record (`AlarmCheck`): which NOSPACE alarms it has
//! applied as raised (from what its alarm entries changed, or the state
//! it restored), and every KV put or lease grant it applies is judged
//! against that. The machine's own refusal logic is not consulted.

use std::collections::BTreeMap;

use ferrite_state::{
    AlarmAction, AlarmRequest, AlarmType, Alarms, Command, Event, LeaseEvent, Op, Reply,
};

use crate::check::Violation;

/// The member id the workload's alarms are raised for.
pub const ALARM_MEMBER: u64 = 1;

/// ACTIVATE (or DEACTIVATE) NOSPACE for `ALARM_MEMBER`.
pub fn alarm_op(activate: bool) -> Op {
    Op::Alarm(AlarmRequest {
        action: if activate {
            AlarmAction::Activate
        } else {
            AlarmAction::Deactivate
        },
        member_id: ALARM_MEMBER,
        alarm: AlarmType::NoSpace,
    })
}

/// One member's record of the NOSPACE alarms it applied, and what it
/// applied under them that it must not have.
#[derive(Default)]
pub struct AlarmCheck {
    /// Raised NOSPACE alarms: member id to the index that raised it (or
    /// the index of the state it restored with it raised).
    raised: BTreeMap<u64, u64>,
    /// Found, for the world to take.
    pub violations: Vec<Violation>,
}

impl AlarmCheck {
    /// The state was restored (a snapshot, or a new life) at `index`.
    pub fn reset(&mut self, index: u64, alarms: &Alarms) {
        self.raised = alarms
            .list()
            .into_iter()
            .filter(|a| a.alarm == AlarmType::NoSpace)
            .map(|a| (a.member_id, index))
            .collect();
    }

    /// The entry at `index` (`command`) was applied, answered `reply`
    /// (`None`: a stale duplicate) and made `events`.
    pub fn applied(&mut self, index: u64, command: &[u8], reply: Option<&Reply>, events: &[Event]) {
        if let Some(Reply::Alarms(changed)) = reply {
            if changed.is_empty() {
                return;
            }
            let Ok(Op::Alarm(req)) = Command::decode(command).map(|c| c.op) else {
                return;
            };
            for a in changed.iter().filter(|a| a.alarm == AlarmType::NoSpace) {
                match req.action {
                    AlarmAction::Activate => {
                        self.raised.insert(a.member_id, index);
                    }
                    AlarmAction::Deactivate => {
                        self.raised.remove(&a.member_id);
                    }
                    AlarmAction::Get => {}
                }
            }
            return;
        }
        let Some((member, since)) = self.raised.iter().next() else {
            return;
        };
        for e in events {
            let what = match e {
                Event::Kv(kv) if kv.kv.is_some() => format!(
                    "put {:?} at revision {}",
                    String::from_utf8_lossy(&kv.key),
                    kv.revision
                ),
                Event::Lease(LeaseEvent::Granted { id, .. }) => format!("granted lease {id}"),
                _ => continue,
            };
            self.violations.push(Violation::new(
                "alarm",
                format!(
                    "entry {index} {what} while NOSPACE of member {member} was raised (since entry {since})"
                ),
            ));
            return;
        }
    }
}

impl crate::world::World {
    /// The alarm request KV client `c` proposes next, if any: the first
    /// client now and then raises NOSPACE, and clears it a few commands
    /// later.
    pub(crate) fn next_alarm_op(&mut self, c: usize) -> Option<Op> {
        if !self.opts.alarms || c != 0 {
            return None;
        }
        let odds = if self.alarm_raised { 4 } else { 15 };
        if self.prng.below(odds) != 0 {
            return None;
        }
        self.alarm_raised = !self.alarm_raised;
        Some(alarm_op(self.alarm_raised))
    }
}
