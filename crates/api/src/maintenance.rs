//! etcd's Maintenance service: status, alarms, defragmentation, hashes,
//! leader moves (see `ferrite_service::maintenance` for what they do
//! here); and `PeerMaintenance`, what members ask of each other for the
//! corruption check, on the peer port.

use std::time::Duration;

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrite_raft::{NodeId, Role};
use ferrite_service::Context;
use tonic::{Code, Request, Response, Status};

use crate::auth::principal;
use crate::cluster::ETCD_VERSION;
use crate::errors::{node_status, service_status};
use crate::header::Header;
use ferrite_proto::ferrite::v1 as fv;
use ferrite_state::{AlarmAction, AlarmRequest, AlarmType, Principal};

pub struct MaintenanceService(pub Context);

/// etcd's `Status.errors`: "no leader" without one, and every raised alarm
/// as etcd prints it (this member's view).
async fn status_errors(ctx: &Context, no_leader: bool) -> Vec<String> {
    let mut errors = Vec::new();
    if no_leader {
        errors.push("etcdserver: no leader".to_string());
    }
    let get = ferrite_state::Op::Alarm(AlarmRequest {
        action: AlarmAction::Get,
        member_id: 0,
        alarm: AlarmType::None,
    });
    if let Ok(ferrite_state::Reply::Alarms(list)) = ctx.read(get, &Principal::System, true).await {
        errors.extend(
            list.iter()
                .map(|a| format!("memberID:{} alarm:{} ", a.member_id, a.alarm.name())),
        );
    }
    errors
}

/// etcd's alarm request from its wire form; an action or type etcd does
/// not have is refused.
fn alarm_request(req: &pb::AlarmRequest) -> Result<AlarmRequest, Status> {
    let action = AlarmAction::from_wire(req.action)
        .ok_or_else(|| Status::invalid_argument("etcdserver: unknown alarm action"))?;
    let alarm = AlarmType::from_wire(req.alarm)
        .ok_or_else(|| Status::invalid_argument("etcdserver: unknown alarm type"))?;
    Ok(AlarmRequest {
        action,
        member_id: req.member_id,
        alarm,
    })
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.0.node.status().await.map_err(node_status)?;
        let is_learner = s.membership.learners.contains(&s.id);
        let errors = status_errors(&self.0, s.leader.is_none()).await;
        Ok(Response::new(pb::StatusResponse {
            header: self.0.header_now(),
            version: ETCD_VERSION.to_string(),
            db_size: self.0.maintenance.db_size() as i64,
            leader: s.leader.map_or(0, |l| l.0),
            // etcd's raft_index is the commit index: an isolated old leader
            // appends to its log but commits nothing.
            raft_index: s.commit.0,
            raft_term: s.term.0,
            raft_applied_index: s.applied.0,
            errors,
            db_size_in_use: self.0.maintenance.in_use() as i64,
            is_learner,
            ..Default::default()
        }))
    }

    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let ask = alarm_request(req.get_ref())?;
        let alarms = self.0.alarm(ask, &who).await.map_err(service_status)?;
        Ok(Response::new(pb::AlarmResponse {
            header: self.0.header_now(),
            alarms: alarms
                .into_iter()
                .map(|a| pb::AlarmMember {
                    member_id: a.member_id,
                    alarm: a.alarm as i32,
                })
                .collect(),
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let who = principal(&self.0, &req)?;
        self.0.defragment(&who).await.map_err(service_status)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.0.header_now(),
        }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let (hash, revision) = self.0.hash(&who).await.map_err(service_status)?;
        Ok(Response::new(pb::HashResponse {
            header: self.0.header(revision),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let who = principal(&self.0, &req)?;
        let h = self
            .0
            .hash_kv(req.get_ref().revision, &who)
            .await
            .map_err(service_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.0.header(h.revision),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::SnapshotResponse>>, Status> {
        crate::snapshot_stream::snapshot(&self.0, req).await
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

/// The corruption check's question, asked by the leader on the peer port.
pub struct PeerMaintenanceService(pub Context);

#[tonic::async_trait]
impl fv::peer_maintenance_server::PeerMaintenance for PeerMaintenanceService {
    async fn kv_hash(
        &self,
        req: Request<fv::KvHashRequest>,
    ) -> Result<Response<fv::KvHashResponse>, Status> {
        let h = self
            .0
            .hash_kv(req.get_ref().revision, &Principal::System)
            .await
            .map_err(service_status)?;
        Ok(Response::new(fv::KvHashResponse {
            member_id: self.0.member_id,
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
            revision: h.revision,
        }))
    }
}
