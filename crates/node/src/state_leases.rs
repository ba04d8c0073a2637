//! The lessor's side of `ferrite-state`'s leases: how the lease events an
//! applied entry makes become the lessor's `LeaseChange`s, the table a
//! restored machine starts it from, and how its revokes and checkpoints
//! become commands. Shared by the service's machine and the simulator's, so
//! that both run the same mapping.

use bytes::Bytes;
use ferrite_state::{Command, Event, LeaseEvent, Op, StateMachine};

use crate::lessor::{LeaseChange, LeaseProposals, LeaseRecord};

/// The lessor's view of an entry's lease events.
pub fn lease_changes(events: &[Event]) -> impl Iterator<Item = LeaseChange> + '_ {
    events.iter().filter_map(|e| match e {
        Event::Lease(LeaseEvent::Granted { id, ttl }) => Some(LeaseChange::Granted {
            id: *id,
            ttl_s: *ttl,
        }),
        Event::Lease(LeaseEvent::Revoked { id }) => Some(LeaseChange::Revoked { id: *id }),
        Event::Lease(LeaseEvent::Checkpointed { id, remaining }) => {
            Some(LeaseChange::Checkpointed {
                id: *id,
                remaining_s: *remaining,
            })
        }
        _ => None,
    })
}

/// The whole lease table, for a lessor after a restore.
pub fn lease_reset(sm: &StateMachine) -> LeaseChange {
    LeaseChange::Reset(
        sm.lease_records()
            .into_iter()
            .map(|(id, ttl_s, remaining_s)| LeaseRecord {
                id,
                ttl_s,
                remaining_s,
            })
            .collect(),
    )
}

/// How the lessor's revokes and checkpoints become commands.
pub fn lease_proposals() -> LeaseProposals {
    fn revoke(id: i64) -> Bytes {
        Command::new(Op::LeaseRevoke { id }).encode()
    }
    fn checkpoint(list: &[(i64, i64)]) -> Bytes {
        Command::new(Op::LeaseCheckpoint {
            checkpoints: list.to_vec(),
        })
        .encode()
    }
    LeaseProposals { revoke, checkpoint }
}
