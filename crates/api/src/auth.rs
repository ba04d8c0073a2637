//! etcd's Auth service (enable, disable, status, authenticate, users and
//! roles), and who a request is from: [`principal`] reads etcd's `token`
//! metadata (what etcd's clients send after Authenticate), or else the
//! common name of a verified client certificate (`ClientCommonName`, put in
//! the request's extensions by the TLS layer), or else nobody. Every etcd
//! service and Ferrite's Registers and Volumes services pass it to the
//! service layer, and the state machine checks it (see
//! `ferrite_state::auth`).

use ferrite_proto::authpb;
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::auth_server::Auth;
use ferrite_service::{Context, ServiceError};
use ferrite_state::auth::{PermKind, Permission};
use ferrite_state::{AuthReply, AuthRequest, Op, Principal, Reply, StateError};
use tonic::{Request, Response, Status};

use crate::errors::{service_status, state_status, unexpected};
use crate::header::Header;
use crate::identity::ClientCommonName;

/// etcd's metadata key for the auth token (`rpctypes.TokenFieldNameGRPC`).
pub const TOKEN_METADATA: &str = "token";
/// The key etcd's gRPC gateway uses (`TokenFieldNameSwagger`).
pub const TOKEN_METADATA_GATEWAY: &str = "authorization";

/// Who `req` is from (see the module notes); a bad, forged or expired
/// token is etcd's "invalid auth token" (UNAUTHENTICATED), on which etcd's
/// clients authenticate again.
pub fn principal<T>(ctx: &Context, req: &Request<T>) -> Result<Principal, Status> {
    let token = [TOKEN_METADATA, TOKEN_METADATA_GATEWAY]
        .iter()
        .find_map(|k| req.metadata().get(*k))
        .map(|v| {
            v.to_str()
                .map_err(|_| state_status(StateError::InvalidAuthToken))
        })
        .transpose()?;
    let common_name = req
        .extensions()
        .get::<ClientCommonName>()
        .map(|c| c.0.as_str());
    ctx.principal(token, common_name).map_err(service_status)
}

pub struct AuthService(pub Context);

fn perm_to_proto(p: Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: i32::from(p.kind.number()),
        key: p.key.to_vec(),
        range_end: p.range_end.to_vec(),
    }
}

impl AuthService {
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.0.header(self.0.events.revision())
    }

    /// Proposes an auth change as the caller.
    async fn change<T>(&self, req: &Request<T>, change: AuthRequest) -> Result<AuthReply, Status> {
        let who = principal(&self.0, req)?;
        auth_reply(self.0.write(Op::Auth(change), None, &who).await)
    }

    /// Answers an auth read as the caller, linearizably.
    async fn query<T>(&self, req: &Request<T>, query: AuthRequest) -> Result<AuthReply, Status> {
        let who = principal(&self.0, req)?;
        auth_reply(self.0.read(Op::Auth(query), &who, false).await)
    }

    /// The bcrypt hash of what a user-add or password change carries: the
    /// password, hashed here; or (etcd 3.5) a hash the client made, sent
    /// base64-encoded.
    async fn hash(&self, password: &str, hashed: &str) -> Result<String, Status> {
        if hashed.is_empty() {
            return self.0.hash_password(password).await.map_err(service_status);
        }
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(hashed)
            .map_err(|_| Status::invalid_argument("etcdserver: hashedPassword is not base64"))?;
        String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("etcdserver: hashedPassword is not a hash"))
    }
}

fn auth_reply(r: Result<Reply, ServiceError>) -> Result<AuthReply, Status> {
    match r.map_err(service_status)? {
        Reply::Auth(a) => Ok(a),
        other => Err(unexpected(other)),
    }
}

fn names(reply: AuthReply) -> Result<Vec<String>, Status> {
    match reply {
        AuthReply::Names(n) | AuthReply::UserRoles(n) => Ok(n),
        other => Err(Status::internal(format!(
            "etcdserver: unexpected reply {other:?}"
        ))),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let secret = Context::new_token_secret().map_err(service_status)?;
        self.change(&req, AuthRequest::Enable { secret }).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: self.header(),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.change(&req, AuthRequest::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.header(),
        }))
    }

    async fn auth_status(
        &self,
        req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        // Open to anyone: asked as the member, so that a stale token does
        // not stand in the way.
        let _ = req;
        let reply = auth_reply(
            self.0
                .read(Op::Auth(AuthRequest::Status), &Principal::System, false)
                .await,
        )?;
        match reply {
            AuthReply::Status { enabled, revision } => Ok(Response::new(pb::AuthStatusResponse {
                header: self.header(),
                enabled,
                auth_revision: revision,
            })),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected reply {other:?}"
            ))),
        }
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = req.into_inner();
        let token = self
            .0
            .authenticate(&req.name, &req.password)
            .await
            .map_err(|e| {
                tracing::info!(user = %req.name, "authentication refused: {e}");
                service_status(e)
            })?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = req.get_ref();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        if r.name.is_empty() {
            return Err(state_status(StateError::UserEmpty));
        }
        let password = if no_password {
            None
        } else {
            Some(self.hash(&r.password, &r.hashed_password).await?)
        };
        let change = AuthRequest::UserAdd {
            name: r.name.clone(),
            password,
            no_password,
        };
        self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: self.header(),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let name = req.get_ref().name.clone();
        let roles = names(self.query(&req, AuthRequest::UserGet { name }).await?)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let users = names(self.query(&req, AuthRequest::UserList).await?)?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        self.change(&req, AuthRequest::UserDelete { name }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: self.header(),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = req.get_ref();
        let name = r.name.clone();
        let password = self.hash(&r.password, &r.hashed_password).await?;
        self.change(&req, AuthRequest::UserChangePassword { name, password })
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: self.header(),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref();
        let change = AuthRequest::UserGrantRole {
            user: r.user.clone(),
            role: r.role.clone(),
        };
        self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: self.header(),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref();
        let change = AuthRequest::UserRevokeRole {
            user: r.name.clone(),
            role: r.role.clone(),
        };
        self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: self.header(),
        }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        self.change(&req, AuthRequest::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: self.header(),
        }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let name = req.get_ref().role.clone();
        let perm = match self.query(&req, AuthRequest::RoleGet { name }).await? {
            AuthReply::Permissions(p) => p.into_iter().map(perm_to_proto).collect(),
            other => {
                return Err(Status::internal(format!(
                    "etcdserver: unexpected reply {other:?}"
                )))
            }
        };
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let roles = names(self.query(&req, AuthRequest::RoleList).await?)?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = req.get_ref().role.clone();
        self.change(&req, AuthRequest::RoleDelete { name }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: self.header(),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = req.get_ref();
        let perm = r
            .perm
            .as_ref()
            .ok_or_else(|| state_status(StateError::PermissionNotGiven))?;
        let kind = u8::try_from(perm.perm_type)
            .ok()
            .and_then(PermKind::from_number)
            .ok_or_else(|| Status::invalid_argument("etcdserver: unknown permission type"))?;
        let change = AuthRequest::RoleGrantPermission {
            name: r.name.clone(),
            perm: Permission {
                kind,
                key: perm.key.clone().into(),
                range_end: perm.range_end.clone().into(),
            },
        };
        self.change(&req, change).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: self.header(),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref();
        let change = AuthRequest::RoleRevokePermission {
            name: r.role.clone(),
            key: r.key.clone().into(),
            range_end: r.range_end.clone().into(),
        };
        self.change(&req, change).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: self.header(),
        }))
    }
}
