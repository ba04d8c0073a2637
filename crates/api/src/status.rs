//! Ferrite's Status service: this node's Raft view, and every member's,
//! gathered by asking each member at its client address.

use std::time::Duration;

use ferrite_node::Status as NodeStatus;
use ferrite_proto::ferrite::v1 as fv;
use ferrite_proto::ferrite::v1::status_client::StatusClient;
use ferrite_raft::Role;
use tonic::{Request, Response, Status};

use crate::context::{node_status, Context};

pub struct StatusService(pub Context);

pub fn node_status_message(s: &NodeStatus, name: &str) -> fv::NodeStatus {
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
    }
}

async fn ask(url: &str) -> Result<fv::NodeStatus, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(crate::cluster::dial_url(url))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let mut client = StatusClient::connect(endpoint)
        .await
        .map_err(|e| e.to_string())?;
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
            header: self.0.header(0),
            node: Some(node_status_message(&s, &self.0.name)),
        }))
    }

    async fn cluster(
        &self,
        _req: Request<fv::ClusterStatusRequest>,
    ) -> Result<Response<fv::ClusterStatusResponse>, Status> {
        let members = self.0.members().await?;
        let mut out = Vec::new();
        for m in members {
            let (status, error) = match m.client_ur_ls.first() {
                Some(url) => match ask(url).await {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e),
                },
                None => (None, "no client address published yet".to_string()),
            };
            out.push(fv::MemberStatus {
                id: m.id,
                name: m.name,
                client_urls: m.client_ur_ls,
                status,
                error,
            });
        }
        Ok(Response::new(fv::ClusterStatusResponse {
            header: self.0.header(0),
            members: out,
        }))
    }
}
