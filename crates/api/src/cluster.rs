//! etcd's Cluster service, backed by real membership changes. Membership changes must be made by
//! the leader; a follower forwards them to the leader's client address.

use std::time::Duration;

use ferrite_node::{NodeError, PeerAddr};
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrite_proto::etcdserverpb::cluster_server::Cluster;
use ferrite_raft::{MembershipChange, NodeId};
use ferrite_service::ids::node_id;
use ferrite_service::Context;
use ferrite_state::{MemberInfo, Op, Principal};
use tonic::{Code, Request, Response, Status};

use crate::auth::{principal, TOKEN_METADATA};
use crate::errors::{node_status, service_status, state_status};
use crate::header::Header;

/// The etcd server version we claim (`Status.version`, `etcdctl endpoint
/// status`, the gateway's `/version`). Clients gate features on it, so it
/// names the oldest etcd whose API we serve whole:
/// - etcd 3.5's API is the target, and with issue 15 it is served: what
///   3.4 added (learners and `MemberPromote`, watch progress requests,
///   `Status.raft_applied_index`/`is_learner`/`db_size_in_use`/`errors`,
///   `hasleader` handling) and what 3.5 added (`MemberList{linearizable}`,
///   `Auth.AuthStatus`), with the Maintenance surface (snapshot, defrag,
///   hash/hashkv, alarms and the quota) and `MemberUpdate`. The one 3.5
///   call left out is `Maintenance.Downgrade` (Unimplemented): it changes
///   an etcd cluster's storage version, which has no meaning here, and no
///   client gates anything on it.
/// - Patch level 0: clients also gate on etcd bug fixes by patch number
///   (kube-apiserver turns on consistent reads from its watch cache only
///   for etcd >= 3.5.13, after a fix to progress notifications). We do not
///   claim a patch level we have not checked against those clients, so they
///   take their conservative path.
pub const ETCD_VERSION: &str = "3.5.0";

pub struct ClusterService(pub Context);

/// Parses a peer URL, `http://host:port` or `host:port`; the host is an IP
/// address or a host name.
pub fn parse_url(url: &str) -> Result<PeerAddr, Status> {
    PeerAddr::parse(url).map_err(|e| Status::invalid_argument(format!("etcdserver: bad URL {e}")))
}

/// Every member of the configuration, named and addressed from the member
/// table as this member has applied it.
pub async fn members(ctx: &Context) -> Result<Vec<pb::Member>, Status> {
    members_read(ctx, false).await
}

/// Every member; `linearizable`: the table read after a ReadIndex round
/// (etcd's `MemberList{linearizable: true}`).
async fn members_read(ctx: &Context, linearizable: bool) -> Result<Vec<pb::Member>, Status> {
    let table = ctx
        .member_table_read(linearizable)
        .await
        .map_err(service_status)?;
    let status = ctx.node.status().await.map_err(node_status)?;
    let m = &status.membership;
    let ids = m
        .voters
        .iter()
        .map(|id| (id, false))
        .chain(m.learners.iter().map(|id| (id, true)));
    Ok(ids
        .map(|(id, is_learner)| {
            let info = table
                .iter()
                .find(|i| i.id == id.0)
                .cloned()
                .unwrap_or_default();
            pb::Member {
                id: id.0,
                name: info.name,
                peer_ur_ls: info.peer_urls,
                client_ur_ls: info.client_urls,
                is_learner,
            }
        })
        .collect())
}

/// The leader's peer address, for forwarding leader-only requests (on the
/// peer port, as every call between members).
async fn leader_url(ctx: &Context) -> Result<String, Status> {
    let leader = ferrite_node::Metrics::get(&ctx.metrics().leader);
    if leader == 0 {
        return Err(node_status(NodeError::NoLeader));
    }
    let table = ctx.member_table().await.map_err(service_status)?;
    table
        .into_iter()
        .find(|m| m.id == leader)
        .and_then(|m| m.peer_urls.into_iter().next())
        .ok_or_else(|| {
            Status::unavailable("etcdserver: the leader's peer address is not known yet")
        })
}

async fn leader_cluster_client(
    ctx: &Context,
) -> Result<ClusterClient<tonic::transport::Channel>, Status> {
    let url = leader_url(ctx).await?;
    let channel = ctx
        .peers
        .channel(&url, Duration::from_secs(5), Duration::from_secs(10))
        .await
        .map_err(|e| Status::unavailable(format!("etcdserver: cannot reach the leader: {e}")))?;
    Ok(ClusterClient::new(channel))
}

/// etcd's `checkMembershipOperationPermission`: member changes are for
/// admins (checked here, before the change; the member table's writes are
/// checked again when they apply).
fn admin<T>(ctx: &Context, req: &Request<T>) -> Result<Principal, Status> {
    let who = principal(ctx, req)?;
    ctx.auth.current().check_admin(&who).map_err(state_status)?;
    Ok(who)
}

/// `req` as sent on to the leader, with the caller's token.
fn forwarded<T>(req: Request<T>) -> Request<T> {
    let token = req.metadata().get(TOKEN_METADATA).cloned();
    let mut fwd = Request::new(req.into_inner());
    if let Some(token) = token {
        fwd.metadata_mut().insert(TOKEN_METADATA, token);
    }
    fwd
}

/// The addresses of `urls`, all of them valid, at least one.
fn peer_addrs(urls: &[String]) -> Result<Vec<PeerAddr>, Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument(
            "etcdserver: a member needs at least one peer URL",
        ));
    }
    urls.iter().map(|u| parse_url(u)).collect()
}

/// etcd's `ErrPeerURLexists`: no two members share a peer URL (compared
/// by address, so `http://h:p` and `h:p` are the same).
fn check_peer_urls_free(table: &[MemberInfo], id: u64, addrs: &[PeerAddr]) -> Result<(), Status> {
    let taken = table
        .iter()
        .filter(|m| m.id != id)
        .flat_map(|m| m.peer_urls.iter())
        .filter_map(|u| parse_url(u).ok())
        .any(|a| addrs.contains(&a));
    match taken {
        true => Err(Status::new(
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        )),
        false => Ok(()),
    }
}

fn is_leader(ctx: &Context) -> bool {
    ferrite_node::Metrics::get(&ctx.metrics().is_leader) == 1
}

fn membership_status(e: NodeError) -> Status {
    match e {
        NodeError::Busy(why) if why.contains("behind") => Status::new(
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        NodeError::Invalid(why) if why.contains("not a learner") => Status::new(
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        ),
        NodeError::Invalid(why) if why.contains("not a member") => {
            Status::new(Code::NotFound, "etcdserver: member not found")
        }
        NodeError::Invalid(why) if why.contains("already") => Status::new(
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        other => node_status(other),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let who = admin(&self.0, &req)?;
        if !is_leader(&self.0) {
            return leader_cluster_client(&self.0)
                .await?
                .member_add(forwarded(req))
                .await;
        }
        let req = req.into_inner();
        let addrs = peer_addrs(&req.peer_ur_ls)?;
        let addr = addrs[0].clone();
        let id = node_id(&addr);
        let table = self
            .0
            .member_table_read(true)
            .await
            .map_err(service_status)?;
        check_peer_urls_free(&table, id.0, &addrs)?;
        // Every peer URL, and no name nor client URL until the member
        // starts and publishes them (etcdctl shows it "unstarted").
        let info = MemberInfo {
            id: id.0,
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
        };
        // The address first, so the new member can be named before it joins.
        self.0
            .write(Op::MemberPublish(info), None, &who)
            .await
            .map_err(service_status)?;
        self.0
            .node
            .add_member(id, addr, !req.is_learner)
            .await
            .map_err(membership_status)?;
        let members = members(&self.0).await?;
        let member = members.iter().find(|m| m.id == id.0).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header: self.0.header_now(),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let who = admin(&self.0, &req)?;
        if !is_leader(&self.0) {
            return leader_cluster_client(&self.0)
                .await?
                .member_remove(forwarded(req))
                .await;
        }
        let id = req.into_inner().id;
        // Forget the name first: a leader that removes itself steps down
        // once the change commits, and could not write afterwards.
        let table = self.0.member_table().await.map_err(service_status)?;
        let entry = table.into_iter().find(|m| m.id == id);
        self.0
            .write(Op::MemberForget { id }, None, &who)
            .await
            .map_err(service_status)?;
        if let Err(e) = self
            .0
            .node
            .change_membership(MembershipChange::Remove(NodeId(id)))
            .await
        {
            if let Some(entry) = entry {
                let _ = self.0.write(Op::MemberPublish(entry), None, &who).await;
            }
            return Err(membership_status(e));
        }
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.0.header_now(),
            members: members(&self.0).await?,
        }))
    }

    /// etcd's MemberUpdate: new peer URLs for a member (its name and
    /// client URLs stay). Every member's transport dials the first one
    /// from then on (the leader's at once, the others' once they apply the
    /// table, `server::learn_addresses`).
    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let who = admin(&self.0, &req)?;
        if !is_leader(&self.0) {
            return leader_cluster_client(&self.0)
                .await?
                .member_update(forwarded(req))
                .await;
        }
        let req = req.into_inner();
        let addrs = peer_addrs(&req.peer_ur_ls)?;
        let id = NodeId(req.id);
        let status = self.0.node.status().await.map_err(node_status)?;
        let m = &status.membership;
        if !m.voters.contains(&id) && !m.learners.contains(&id) {
            return Err(Status::new(Code::NotFound, "etcdserver: member not found"));
        }
        let table = self
            .0
            .member_table_read(true)
            .await
            .map_err(service_status)?;
        check_peer_urls_free(&table, id.0, &addrs)?;
        let mut info = table
            .into_iter()
            .find(|i| i.id == id.0)
            .unwrap_or_else(|| MemberInfo {
                id: id.0,
                ..MemberInfo::default()
            });
        info.peer_urls = req.peer_ur_ls;
        self.0
            .write(Op::MemberPublish(info), None, &who)
            .await
            .map_err(service_status)?;
        if id != self.0.node.id() {
            self.0.node.set_peer_address(id, addrs[0].clone());
        }
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.0.header_now(),
            members: members(&self.0).await?,
        }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let linearizable = req.into_inner().linearizable;
        Ok(Response::new(pb::MemberListResponse {
            header: self.0.header_now(),
            members: members_read(&self.0, linearizable).await?,
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        admin(&self.0, &req)?;
        if !is_leader(&self.0) {
            return leader_cluster_client(&self.0)
                .await?
                .member_promote(forwarded(req))
                .await;
        }
        let id = req.into_inner().id;
        self.0
            .node
            .change_membership(MembershipChange::Promote(NodeId(id)))
            .await
            .map_err(membership_status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.0.header_now(),
            members: members(&self.0).await?,
        }))
    }
}
