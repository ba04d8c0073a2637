//! The member table (names and addresses of the members, kept in the state
//! machine so every member sees the same), and how to dial a member.

use ferrite_state::{MemberInfo, Op, Principal, Reply};

use crate::context::Context;
use crate::error::ServiceError;

impl Context {
    /// The member table, linearizably (anyone may read it, as in etcd).
    pub async fn member_table(&self) -> Result<Vec<MemberInfo>, ServiceError> {
        match self.read(Op::MemberList, &Principal::System, true).await? {
            Reply::Members(m) => Ok(m),
            other => Err(ServiceError::unexpected(other)),
        }
    }
}

/// `host:port` (a client URL as members publish it) as a URL tonic can dial.
pub fn dial_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}
