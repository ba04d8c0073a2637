//! Ferrite's Status service: this node's Raft view, and every member's,
//! gathered by asking each member on its peer port (`PeerDialer`: with peer
//! TLS, mutual TLS with the member certificates).

use std::time::Duration;

use ferrite_node::Status as NodeStatus;
use ferrite_proto::ferrite::v1 as fv;
use ferrite_proto::ferrite::v1::status_client::StatusClient;
use ferrite_raft::Role;
use ferrite_service::Context;
use tonic::{Request, Response, Status};

use crate::cluster;
use crate::errors::node_status;
use crate::header::Header;

pub struct StatusService(pub Context);

pub fn node_status_message(s: &NodeStatus, name: &str, isolated: bool) -> fv::NodeStatus {
    let role = match s.role {
        Role::Follower => fv::node_status::Role::Follower,
        Role::PreCandidate => fv::node_status::Role::PreCandidate,
        Role::Candidate => fv::node_status::Role::Candidate,
        Role::Leader => fv::node_status::Role::Leader,
    };
    fv::NodeStatus {
        id: s.id.0,
        name: name.to_string(),
        role: role as i32,
        term: s.term.0,
        leader_id: s.leader.map_or(0, |l| l.0),
        commit_index: s.commit.0,
        applied_index: s.applied.0,
        last_index: s.last_index.0,
        snapshot_index: s.snapshot_index.0,
        voters: s.membership.voters.iter().map(|v| v.0).collect(),
        learners: s.membership.learners.iter().map(|v| v.0).collect(),
        tail_terms: s.tail_terms.iter().map(|t| t.0).collect(),
        isolated,
    }
}

/// Every member's status, asked of all members at once, each within
/// `within`; a member that does not answer has an error instead.
pub async fn cluster_statuses(
    ctx: &Context,
    within: Duration,
) -> Result<Vec<fv::MemberStatus>, Status> {
    let members = cluster::members(ctx).await?;
    let asks = members.into_iter().map(|m| async move {
        let (status, error) = match m.peer_ur_ls.first() {
            Some(url) => match ask(ctx, url, within).await {
                Ok(s) => (Some(s), String::new()),
                Err(e) => (None, e),
            },
            None => (None, "no peer address known yet".to_string()),
        };
        fv::MemberStatus {
            id: m.id,
            name: m.name,
            client_urls: m.client_ur_ls,
            status,
            error,
        }
    });
    Ok(futures_util::future::join_all(asks).await)
}

async fn ask(ctx: &Context, url: &str, within: Duration) -> Result<fv::NodeStatus, String> {
    let channel = ctx
        .peers
        .channel(url, within.min(Duration::from_secs(1)), within)
        .await?;
    let mut client = StatusClient::new(channel);
    let reply = client
        .node(fv::NodeStatusRequest {})
        .await
        .map_err(|e| e.message().to_string())?;
    reply
        .into_inner()
        .node
        .ok_or_else(|| "empty answer".to_string())
}

#[tonic::async_trait]
impl fv::status_server::Status for StatusService {
    async fn node(
        &self,
        _req: Request<fv::NodeStatusRequest>,
    ) -> Result<Response<fv::NodeStatusResponse>, Status> {
        let s = self.0.node.status().await.map_err(node_status)?;
        Ok(Response::new(fv::NodeStatusResponse {
            header: self.0.header_now(),
            node: Some(node_status_message(
                &s,
                &self.0.name,
                self.0.node.is_isolated(),
            )),
        }))
    }

    async fn cluster(
        &self,
        _req: Request<fv::ClusterStatusRequest>,
    ) -> Result<Response<fv::ClusterStatusResponse>, Status> {
        let out = cluster_statuses(&self.0, Duration::from_secs(2)).await?;
        Ok(Response::new(fv::ClusterStatusResponse {
            header: self.0.header_now(),
            members: out,
        }))
    }
}
