//! etcd's codes and messages for what fails: the one translation of the
//! service's typed `ServiceError` (and of the node's and the state
//! machine's errors in it) into a gRPC `Status`. Clients match on these
//! (see etcd's `rpctypes`); the JSON API reports the same messages.

use ferrite_node::{NodeError, Unknown};
use ferrite_proto::Outcome;
use ferrite_service::ServiceError;
use ferrite_state::{Reply, StateError};
use tonic::{Code, Status};

/// etcd's code and message for anything the service failed to do.
pub fn service_status(e: ServiceError) -> Status {
    match e {
        ServiceError::Node(e) => node_status(e),
        ServiceError::Envelope(e) => Status::internal(format!("etcdserver: {e}")),
        ServiceError::State(e) => state_status(e),
        ServiceError::Unexpected(reply) => unexpected(*reply),
        e @ ServiceError::ReadTooLong { .. } => Status::out_of_range(e.to_string()),
        e @ ServiceError::ReadLength { .. } => Status::internal(e.to_string()),
        ServiceError::Internal(e) => Status::internal(format!("etcdserver: {e}")),
    }
}

/// etcd's codes and messages for node-level failures (clients match on
/// them: see etcd's `rpctypes`), marked with the typed outcome
/// (`ferrite-outcome`) that Ferrite's own client decides retries from.
pub fn node_status(e: NodeError) -> Status {
    let outcome = if matches!(
        e,
        NodeError::NoLeader | NodeError::NotLeader { leader: None }
    ) {
        Some(Outcome::NoLeader)
    } else if e.retryable() {
        Some(Outcome::NotApplied)
    } else if e.is_unknown() {
        Some(Outcome::Unknown)
    } else {
        None
    };
    let status = match e {
        NodeError::NoLeader | NodeError::NotLeader { leader: None } => {
            Status::new(Code::Unavailable, "etcdserver: no leader")
        }
        NodeError::NotLeader { .. } => Status::new(Code::Unavailable, "etcdserver: leader changed"),
        NodeError::Superseded => Status::new(Code::Unavailable, "etcdserver: leader changed"),
        NodeError::Timeout => Status::new(Code::Unavailable, "etcdserver: request timed out"),
        NodeError::Unknown(Unknown::LeaderChanged) => Status::new(
            Code::Unavailable,
            "etcdserver: request timed out, possibly due to previous leader failure",
        ),
        NodeError::Unknown(Unknown::CoveredBySnapshot) => {
            Status::new(Code::Unavailable, "etcdserver: request timed out")
        }
        NodeError::TooLarge => {
            Status::new(Code::InvalidArgument, "etcdserver: request is too large")
        }
        NodeError::Busy(why) => Status::new(
            Code::Unavailable,
            format!("etcdserver: too many requests ({why})"),
        ),
        NodeError::Stopped => Status::new(Code::Unavailable, "etcdserver: server stopped"),
        NodeError::Storage(why) => {
            Status::new(Code::Internal, format!("etcdserver: storage failed: {why}"))
        }
        NodeError::Invalid(why) => {
            Status::new(Code::FailedPrecondition, format!("etcdserver: {why}"))
        }
        NodeError::LeaseNotFound => {
            Status::new(Code::NotFound, "etcdserver: requested lease not found")
        }
    };
    match outcome {
        Some(outcome) => outcome.mark(status),
        None => status,
    }
}

/// etcd's codes and messages for request-level errors.
pub fn state_status(e: StateError) -> Status {
    let code = match e {
        StateError::Compacted | StateError::FutureRevision => Code::OutOfRange,
        StateError::Overflow { .. } => Code::OutOfRange,
        StateError::LeaseNotFound => Code::NotFound,
        StateError::LeaseExists => Code::FailedPrecondition,
        StateError::LeaseTtlTooLarge => Code::OutOfRange,
        // Auth: etcd's `rpctypes` codes.
        StateError::RootUserNotExist
        | StateError::RootRoleNotExist
        | StateError::UserAlreadyExist
        | StateError::UserNotFound
        | StateError::RoleAlreadyExist
        | StateError::RoleNotFound
        | StateError::RoleNotGranted
        | StateError::PermissionNotGranted
        | StateError::AuthNotEnabled => Code::FailedPrecondition,
        StateError::PermissionDenied => Code::PermissionDenied,
        StateError::InvalidAuthToken => Code::Unauthenticated,
        // etcd's ErrGRPCNoSpace and ErrGRPCCorrupt.
        StateError::NoSpace => Code::ResourceExhausted,
        StateError::Corrupt => Code::DataLoss,
        _ => Code::InvalidArgument,
    };
    let text = e.to_string();
    let text = if text.starts_with("etcdserver: ") {
        text
    } else {
        format!("etcdserver: {text}")
    };
    Status::new(code, text)
}

/// A reply of the wrong kind is a bug on one side of the wire.
pub fn unexpected(reply: Reply) -> Status {
    match reply {
        Reply::Error(e) => state_status(e),
        other => Status::internal(format!("etcdserver: unexpected reply {other:?}")),
    }
}
