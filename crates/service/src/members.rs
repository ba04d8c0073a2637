//! The member table (names and addresses of the members, kept in the state
//! machine so every member sees the same), and how to dial a member.

use ferrite_state::{MemberInfo, Op, Principal, Reply};

use crate::context::Context;
use crate::error::ServiceError;

impl Context {
    /// The member table as this member has applied it (anyone may read it,
    /// as in etcd).
    pub async fn member_table(&self) -> Result<Vec<MemberInfo>, ServiceError> {
        self.member_table_read(false).await
    }

    /// The member table; `linearizable`: after a ReadIndex round with the
    /// leader (etcd's `MemberList{linearizable: true}`), so that it includes
    /// every change committed before the call.
    pub async fn member_table_read(
        &self,
        linearizable: bool,
    ) -> Result<Vec<MemberInfo>, ServiceError> {
        match self
            .read(Op::MemberList, &Principal::System, !linearizable)
            .await?
        {
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

/// How members call each other's gRPC services (volume-file copies, status,
/// forwarded membership changes): on the peer port, through the same
/// connection setup as Raft traffic (`ferrite_node::peer_io`), so with peer
/// TLS these calls are mutual TLS with the member certificates too.
#[derive(Clone, Debug, Default)]
pub struct PeerDialer {
    pub tls: Option<ferrite_tls::PeerTls>,
    /// Where the calls leave from: this member's peer IP address when it
    /// listens on a specific one (None: the kernel chooses).
    pub local: Option<std::net::IpAddr>,
}

impl PeerDialer {
    /// A channel to the member whose peer URL is `url` (`http://host:port`,
    /// `https://host:port` or `host:port`); connecting times out after
    /// `connect_timeout`, calls after `timeout`.
    pub async fn channel(
        &self,
        url: &str,
        connect_timeout: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<tonic::transport::Channel, String> {
        let addr = peer_addr(url)?;
        let tls = self.tls.clone();
        let local = self.local.filter(|ip| !ip.is_unspecified());
        let endpoint = format!("http://{addr}");
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let tls = tls.clone();
            let addr = addr.clone();
            async move {
                ferrite_node::peer_io::dial_from(&addr, local, tls.as_ref())
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        });
        tonic::transport::Endpoint::from_shared(endpoint)
            .map_err(|e| e.to_string())?
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .connect_with_connector(connector)
            .await
            .map_err(|e| error_chain(&e))
    }
}

/// A peer URL's address (an IP address or a host name, and a port).
pub fn peer_addr(url: &str) -> Result<ferrite_node::PeerAddr, String> {
    ferrite_node::PeerAddr::parse(url).map_err(|e| format!("bad peer URL: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
