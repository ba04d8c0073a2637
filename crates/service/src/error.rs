//! What can go wrong when the service runs a request, typed. Each front end
//! translates this one error to its protocol: etcd's gRPC codes and
//! messages in `ferrite-api` (which its JSON API reuses), NBD error values
//! in `ferrite-nbd`.

use ferrite_node::NodeError;
use ferrite_state::{Reply, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The node could not run the request, after whatever retries the call
    /// allows (no leader, leader changed, timed out, busy, stopping, ...).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The reply envelope held no reply: the entry or query did not apply
    /// (an undecodable command, a stale duplicate, volume files
    /// unavailable), or the reply did not decode (see `machine.rs`).
    #[error("{0}")]
    Envelope(String),
    /// The state machine refused the request.
    #[error(transparent)]
    State(StateError),
    /// A reply of the wrong kind: a bug on one side of the wire.
    #[error("unexpected reply {0:?}")]
    Unexpected(Box<Reply>),
    /// A volume read longer than one command may return.
    #[error("a read is at most {max} bytes")]
    ReadTooLong { max: u64 },
    /// A volume read answered with another number of bytes than asked.
    #[error("read returned {got} bytes instead of {wanted}")]
    ReadLength { got: usize, wanted: u64 },
    /// This member failed at something of its own (hashing a password,
    /// drawing a secret).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// A reply other than the one the caller expected: the state machine's
    /// refusal (`State`), or a bug (`Unexpected`).
    pub fn unexpected(reply: Reply) -> ServiceError {
        match reply {
            Reply::Error(e) => ServiceError::State(e),
            other => ServiceError::Unexpected(Box::new(other)),
        }
    }
}
