//! etcd's Maintenance service: status, alarms, leader moves.

use std::time::Duration;

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrite_raft::{NodeId, Role};
use ferrite_service::Context;
use tonic::{Code, Request, Response, Status};

use crate::cluster::ETCD_VERSION;
use crate::errors::node_status;
use crate::header::Header;

pub struct MaintenanceService(pub Context);

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.0.node.status().await.map_err(node_status)?;
        let is_learner = s.membership.learners.contains(&s.id);
        Ok(Response::new(pb::StatusResponse {
            header: self.0.header_now(),
            version: ETCD_VERSION.to_string(),
            db_size: 0,
            leader: s.leader.map_or(0, |l| l.0),
            // etcd's raft_index is the commit index: an isolated old leader
            // appends to its log but commits nothing.
            raft_index: s.commit.0,
            raft_term: s.term.0,
            raft_applied_index: s.applied.0,
            errors: Vec::new(),
            db_size_in_use: 0,
            is_learner,
            ..Default::default()
        }))
    }

    async fn alarm(
        &self,
        _req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(pb::AlarmResponse {
            header: self.0.header_now(),
            alarms: Vec::new(),
        }))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = NodeId(req.into_inner().target_id);
        let status = self.0.node.status().await.map_err(node_status)?;
        if status.role != Role::Leader {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ));
        }
        if !status.membership.voters.contains(&target) {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ));
        }
        self.0
            .node
            .transfer_leader(target)
            .await
            .map_err(node_status)?;
        // Answer once the target leads (or give up after an election timeout).
        for _ in 0..100 {
            let s = self.0.node.status().await.map_err(node_status)?;
            if s.leader == Some(target) {
                return Ok(Response::new(pb::MoveLeaderResponse {
                    header: self.0.header_now(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        Err(Status::new(
            Code::Unavailable,
            "etcdserver: request timed out, leader transfer took too long",
        ))
    }
}
