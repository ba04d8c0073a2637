//! The Rust client for Ferrite. It finds the leader and talks to it
//! directly, moves on when a node is unreachable or an election is under
//! way (with backoff, for a bounded time), and keeps a session (client id
//! and sequence number) so that a register write retried after a failure is
//! applied exactly once. Every decision it makes is reported as a `Notice`,
//! which `ferrite shell` prints.
//!
//! etcd's coordination services live in their own files: `watch` (a watch
//! that resumes on another member without gaps or duplicates), `lease`
//! (grant, revoke, keep-alive) and `coordination` (locks and elections).
//! Security has two: `tls` (how a member is reached: plaintext or rustls,
//! chosen by the endpoint's scheme) and `auth` (etcd's users and roles: the
//! token every request carries, refreshed when it goes stale, and the Auth
//! service's calls). `ClientOptions` gathers both.

mod auth;
mod coordination;
mod lease;
mod tls;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrite_proto::etcdserverpb::kv_client::KvClient;
use ferrite_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrite_proto::ferrite::v1 as fv;
use ferrite_proto::ferrite::v1::registers_client::RegistersClient;
use ferrite_proto::ferrite::v1::status_client::StatusClient;
use ferrite_proto::ferrite::v1::volumes_client::VolumesClient;
use ferrite_proto::{Outcome, Session, SESSION_METADATA};
use tonic::transport::Channel;
use tonic::Code;

use crate::auth::{Auth, AuthRetries, AuthRetry};
use crate::tls::{ChannelSettings, ConnectError, Connector};

pub use ferrite_proto::etcdserverpb::Member;
pub use ferrite_proto::ferrite::v1::{MemberStatus, NodeStatus};
pub use ferrite_proto::mvccpb::KeyValue;

pub use auth::{
    permission_range, AuthChannel, AuthError, AuthStatus, Credentials, KeyRange, Permission,
    PermissionType, TOKEN_METADATA,
};
pub use coordination::{LeaderKey, LockKey, Observer};
pub use lease::{KeepAlive, LeaseInfo};
pub use tls::{describe as describe_tls_error, endpoint_url, scheme_of, Scheme, TlsOptions};
pub use watch::{prefix_end, EventKind, WatchCursor, WatchEvent, WatchOptions, Watcher};

/// How long one operation keeps trying before it gives up.
const PATIENCE: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoint answered within {0:?}: {1}")]
    Unavailable(Duration, String),
    #[error("{0}")]
    Refused(String),
    /// The write may or may not have been applied, and was not sent again
    /// (it carries no session that would make a retry safe).
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    #[error("bad endpoint {0:?}")]
    BadEndpoint(String),
    #[error("the server's answer was empty")]
    EmptyAnswer,
    /// The server answered NOT_FOUND (e.g. "requested lease not found").
    #[error("{0}")]
    NotFound(String),
    /// The lease is gone: it expired or was revoked.
    #[error("lease {0:016x} expired or revoked")]
    LeaseExpired(i64),
    /// A watch asked for history the cluster has compacted away.
    #[error(
        "watch canceled: revision {requested} is compacted (the oldest kept is {compact_revision})"
    )]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    /// The server canceled a watch for another reason.
    #[error("watch canceled: {0}")]
    WatchCanceled(String),
    /// The election has no leader now.
    #[error("election {0:?} has no leader")]
    NoElectionLeader(String),
    /// Refused for an auth reason (wrong password, permission denied, ...).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// TLS failed ("TLS handshake failed: unknown CA ..."): another try or
    /// another member will not help.
    #[error("{0}")]
    Tls(String),
    /// A certificate or key file could not be used.
    #[error("{flag} {path}: {why}")]
    TlsFile {
        flag: String,
        path: String,
        why: String,
    },
    /// The server does not serve this call (e.g. AuthStatus on etcd 3.4).
    #[error("the server does not implement this call: {0}")]
    Unimplemented(String),
    /// An argument the client could not make a request of.
    #[error("{0}")]
    BadArgument(String),
}

/// How the client connects and who it is: TLS settings and etcd
/// credentials. Everything is optional: the default is plaintext and no
/// user.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// TLS for `https://` endpoints (and for bare `host:port` ones, which
    /// mean TLS when this is set, as with etcdctl).
    pub tls: Option<TlsOptions>,
    /// A user to authenticate as; every request then carries its token.
    pub credentials: Option<Credentials>,
}

/// The most bytes one volume read or write call carries.
pub const VOLUME_IO_BYTES_MAX: usize = 1 << 20;

/// What the client did on the way to an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Redirected {
        name: String,
        url: String,
    },
    NoLeader,
    Unreachable {
        url: String,
        next: String,
    },
    Retrying(String),
    /// A watch lost its member and goes on at `url` from `revision`.
    WatchResumed {
        url: String,
        revision: i64,
    },
    /// The token went stale (`why`: the server's word); the client
    /// authenticated again and sends the request once more.
    Reauthenticated {
        why: String,
    },
}

type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

pub struct Client {
    endpoints: Vec<String>,
    current: usize,
    channel: Option<Channel>,
    client_id: u64,
    sequence: u64,
    notify: Notify,
    found_leader: bool,
    /// A channel with no request timeout, for calls that wait (lock,
    /// campaign) and for streams.
    waiting_channel: Option<Channel>,
    /// Plaintext or TLS, per endpoint.
    connector: Connector,
    /// Credentials and the token, shared with siblings.
    auth: Auth,
}

/// The settings of the channel ordinary requests use.
const REQUEST_CHANNEL: ChannelSettings = ChannelSettings {
    connect_timeout: Duration::from_secs(1),
    request_timeout: Some(Duration::from_secs(10)),
    keep_alive: false,
};

/// The settings of the channel for calls that wait and for streams.
const WAITING_CHANNEL: ChannelSettings = ChannelSettings {
    connect_timeout: Duration::from_secs(1),
    request_timeout: None,
    keep_alive: true,
};

/// One attempt's failure.
enum Failure {
    /// The server's or the connection's answer: maybe worth a retry.
    Status(tonic::Status),
    /// Ends the call (TLS failed, the password is wrong, ...).
    Fatal(ClientError),
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Failure {
        match e {
            ConnectError::Unreachable(why) => Failure::Status(tonic::Status::unavailable(why)),
            ConnectError::Tls(e) => Failure::Fatal(e),
        }
    }
}

/// A client id that is unlikely to collide: time and process id mixed.
fn new_client_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// Whether a request may be sent again when its outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Reads, writes in a session, idempotent writes: always.
    Always,
    /// Writes without a session: only when definitely not applied.
    IfNotApplied,
}

/// Whether a failure without the server's word is the connection's (the
/// request may or may not have reached the server).
fn transport_failure(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

fn with_session<T>(
    message: T,
    session: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(SESSION_METADATA, session.clone());
    r
}

/// The final error of a status no retry will fix.
fn status_error(status: &tonic::Status) -> ClientError {
    if let Some(why) = tls::tls_failure(status) {
        return ClientError::Tls(why);
    }
    if let Some(e) = AuthError::from_status(status) {
        return ClientError::Auth(e);
    }
    let message = status.message().to_string();
    match status.code() {
        Code::NotFound => ClientError::NotFound(message),
        Code::Unimplemented => ClientError::Unimplemented(message),
        _ => ClientError::Refused(message),
    }
}

impl Client {
    /// A plaintext client with no user.
    pub fn new(endpoints: Vec<String>) -> Result<Client, ClientError> {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client with TLS and/or credentials. TLS files are read now: a
    /// missing or bad file is an error here, not at the first request.
    pub fn with_options(
        endpoints: Vec<String>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint(String::new()));
        }
        let tls_by_default = options.tls.is_some();
        let endpoints = endpoints
            .iter()
            .map(|e| endpoint_url(e, tls_by_default))
            .collect::<Result<Vec<String>, ClientError>>()?;
        let any_https = endpoints.iter().any(|e| scheme_of(e) == Scheme::Tls);
        let connector = Connector::new(options.tls.as_ref(), any_https)?;
        Ok(Client {
            endpoints,
            current: 0,
            channel: None,
            client_id: new_client_id(),
            sequence: 0,
            notify: Arc::new(|_| {}),
            found_leader: false,
            waiting_channel: None,
            connector,
            auth: Auth::new(options.credentials),
        })
    }

    /// The URL of `endpoint` as this client reaches it (a bare address is
    /// TLS when the client has TLS options).
    fn url(&self, endpoint: &str) -> String {
        endpoint_url(endpoint, self.connector.has_tls())
            .unwrap_or_else(|_| format!("http://{endpoint}"))
    }

    /// Reports every redirect, retry and unreachable node to `f`.
    pub fn on_notice(&mut self, f: impl Fn(Notice) + Send + Sync + 'static) {
        self.notify = Arc::new(f);
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Uses `endpoint` from now on (and adds it if new).
    pub fn use_endpoint(&mut self, endpoint: &str) {
        let u = self.url(endpoint);
        self.current = match self.endpoints.iter().position(|e| *e == u) {
            Some(i) => i,
            None => {
                self.endpoints.push(u);
                self.endpoints.len() - 1
            }
        };
        self.channel = None;
        self.waiting_channel = None;
    }

    /// Every endpoint, in the client's order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A new client on the same endpoints, starting at the current one,
    /// with its own session (for a task that runs beside this client).
    pub fn sibling(&self) -> Client {
        Client {
            endpoints: self.endpoints.clone(),
            current: self.current,
            channel: None,
            client_id: new_client_id(),
            sequence: 0,
            notify: self.notify.clone(),
            found_leader: self.found_leader,
            waiting_channel: None,
            connector: self.connector.clone(),
            auth: self.auth.clone(),
        }
    }

    async fn channel(&mut self) -> Result<Channel, ConnectError> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let channel = self
            .connector
            .connect(&self.endpoints[self.current], REQUEST_CHANNEL)
            .await?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// Like `channel`, without a request timeout: for calls that may wait
    /// as long as they need to (a lock held by another).
    async fn waiting_channel(&mut self) -> Result<Channel, ConnectError> {
        if let Some(c) = &self.waiting_channel {
            return Ok(c.clone());
        }
        let channel = self
            .connector
            .connect(&self.endpoints[self.current], WAITING_CHANNEL)
            .await?;
        self.waiting_channel = Some(channel.clone());
        Ok(channel)
    }

    /// Authenticates on `channel` if the client has credentials and no
    /// token yet. A wrong password ends the call; a connection failure is
    /// an attempt's failure like any other.
    async fn ensure_token(&self, channel: &Channel) -> Result<(), Failure> {
        if !self.auth.needs_token() {
            return Ok(());
        }
        match self.auth.authenticate(channel.clone()).await {
            Ok(()) => Ok(()),
            Err(s) if transport_failure(&s) && tls::tls_failure(&s).is_none() => {
                Err(Failure::Status(s))
            }
            Err(s) => Err(Failure::Fatal(status_error(&s))),
        }
    }

    /// One attempt: a channel, a token, then the call itself.
    async fn attempt<T, F, Fut>(
        &mut self,
        waiting: bool,
        call: &mut F,
    ) -> (Result<T, Failure>, bool)
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let channel = if waiting {
            self.waiting_channel().await
        } else {
            self.channel().await
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => return (Err(e.into()), false),
        };
        if let Err(f) = self.ensure_token(&channel).await {
            return (Err(f), false);
        }
        let result = call(self.auth.wrap(channel)).await;
        (result.map_err(Failure::Status), true)
    }

    fn next_endpoint(&mut self) {
        let from = self.endpoints[self.current].clone();
        self.current = (self.current + 1) % self.endpoints.len();
        self.channel = None;
        self.waiting_channel = None;
        (self.notify)(Notice::Unreachable {
            url: from,
            next: self.endpoints[self.current].clone(),
        });
    }

    /// Runs `call` against the current endpoint, moving on and backing off
    /// on retryable errors, until it answers or patience runs out. What is
    /// retryable comes from the outcome the server attached to its error
    /// (`ferrite-outcome`), never from the message: "not applied" is sent
    /// again, "no leader" to the next member, "unknown" only if `retry`
    /// allows it.
    async fn call<T, F, Fut>(&mut self, call: F) -> Result<T, ClientError>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_with(Retry::Always, call).await
    }

    async fn call_with<T, F, Fut>(&mut self, retry: Retry, call: F) -> Result<T, ClientError>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_inner(retry, false, call).await
    }

    /// `call` for requests that wait server-side for as long as they must
    /// (lock, campaign): no request timeout, and patience counts from the
    /// last attempt's failure rather than from the first attempt. Only for
    /// requests that are safe to send again (etcd's lock and campaign are:
    /// the contender's key is NAME/LEASE, so a retry finds its own key).
    async fn call_waiting<T, F, Fut>(&mut self, call: F) -> Result<T, ClientError>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_inner(Retry::Always, true, call).await
    }

    async fn call_inner<T, F, Fut>(
        &mut self,
        retry: Retry,
        waiting: bool,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        if !self.found_leader {
            self.found_leader = true;
            let _ = self.go_to_leader().await;
        }
        let mut deadline = tokio::time::Instant::now() + PATIENCE;
        let mut backoff = BACKOFF_MIN;
        let mut last = String::new();
        let mut auth_retries = AuthRetries::default();
        while tokio::time::Instant::now() < deadline {
            let (result, sent) = self.attempt(waiting, &mut call).await;
            if waiting {
                deadline = deadline.max(tokio::time::Instant::now() + PATIENCE);
            }
            let status = match result {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Status(status)) => status,
            };
            if let Some(why) = tls::tls_failure(&status) {
                return Err(ClientError::Tls(why));
            }
            let auth_error = AuthError::from_status(&status);
            match auth_retries.on_refusal(auth_error.as_ref(), self.auth.has_credentials()) {
                AuthRetry::Reauthenticate => {
                    // The request was refused, not applied: sending it
                    // again with a fresh token is safe.
                    (self.notify)(Notice::Reauthenticated {
                        why: status.message().to_string(),
                    });
                    self.auth.forget();
                    continue;
                }
                AuthRetry::Resend => continue,
                AuthRetry::No => {}
            }
            if let Some(e) = auth_error {
                return Err(ClientError::Auth(e));
            }
            last = status.message().to_string();
            match Outcome::of(&status) {
                Some(Outcome::NoLeader) => {
                    // This member may be the one cut off: the others may
                    // well have a leader. Ask the next.
                    (self.notify)(Notice::NoLeader);
                    self.next_endpoint();
                }
                Some(Outcome::NotApplied) => (self.notify)(Notice::Retrying(last.clone())),
                Some(Outcome::Unknown) if retry == Retry::Always => {
                    (self.notify)(Notice::Retrying(last.clone()))
                }
                Some(Outcome::Unknown) => return Err(ClientError::Unknown(last)),
                None if transport_failure(&status) => {
                    if sent && retry == Retry::IfNotApplied {
                        return Err(ClientError::Unknown(last));
                    }
                    self.next_endpoint();
                }
                None => return Err(status_error(&status)),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        Err(ClientError::Unavailable(PATIENCE, self.hint(last)))
    }

    /// A TLS server hangs up on a plaintext client without a word: say
    /// so when a plaintext connection kept failing that way.
    fn hint(&self, last: String) -> String {
        let plaintext = self.endpoints.iter().all(|e| scheme_of(e) == Scheme::Plain);
        if plaintext && matches!(last.as_str(), "transport error" | "operation was canceled") {
            format!("{last} (the connection was plaintext: if the server uses TLS, give https:// endpoints and --cacert)")
        } else {
            last
        }
    }

    /// Asks the current endpoint who leads and switches to the leader's
    /// client address.
    pub async fn go_to_leader(&mut self) -> Result<(), ClientError> {
        for _ in 0..self.endpoints.len() {
            let channel = match self.channel().await {
                Ok(c) => c,
                Err(ConnectError::Tls(e)) => return Err(e),
                Err(ConnectError::Unreachable(_)) => {
                    self.next_endpoint();
                    continue;
                }
            };
            match self.ensure_token(&channel).await {
                Ok(()) => {}
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Status(_)) => {
                    self.next_endpoint();
                    continue;
                }
            }
            let channel = self.auth.wrap(channel);
            let status = StatusClient::new(channel.clone())
                .node(fv::NodeStatusRequest {})
                .await;
            let status = match status {
                Ok(s) => s,
                Err(s) if transport_failure(&s) => {
                    self.next_endpoint();
                    continue;
                }
                // Refused, or not served (a plain etcd has no Status
                // service): stay, and let the request itself find out.
                Err(_) => return Ok(()),
            };
            let Some(node) = status.into_inner().node else {
                return Ok(());
            };
            if node.leader_id == 0 || node.leader_id == node.id {
                return Ok(());
            }
            let members = ClusterClient::new(channel)
                .member_list(pb::MemberListRequest::default())
                .await
                .map(|r| r.into_inner().members)
                .unwrap_or_default();
            if let Some(leader) = members.iter().find(|m| m.id == node.leader_id) {
                if let Some(u) = leader.client_ur_ls.first() {
                    (self.notify)(Notice::Redirected {
                        name: leader.name.clone(),
                        url: u.clone(),
                    });
                    self.use_endpoint(u);
                }
            }
            return Ok(());
        }
        Ok(())
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// A fresh `(client, sequence)` for one KV write, as gRPC metadata
    /// (the server's `ferrite-session`): every retry of the write carries the
    /// same, so it applies exactly once.
    fn kv_session(&mut self) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        let session = Session {
            client: self.client_id,
            seq: self.next_sequence(),
        };
        tonic::metadata::MetadataValue::try_from(session.to_string())
            .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("0/0"))
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<i64, ClientError> {
        self.put_with_lease(key, value, 0).await
    }

    /// A put bound to `lease` (0: none); the key goes when the lease does.
    pub async fn put_with_lease(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<i64, ClientError> {
        let req = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let session = self.kv_session();
        let r = self
            .call(|ch| {
                let req = with_session(req.clone(), &session);
                async move { KvClient::new(ch).put(req).await }
            })
            .await?;
        Ok(r.into_inner().header.map_or(0, |h| h.revision))
    }

    /// Puts `new` only if the key's value is `expected` (an etcd
    /// transaction comparing the value); whether it did. Exactly once, even
    /// when retried after a leader failure.
    pub async fn compare_and_put(
        &mut self,
        key: &[u8],
        expected: &[u8],
        new: &[u8],
    ) -> Result<bool, ClientError> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let req = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: key.to_vec(),
                target_union: Some(TargetUnion::Value(expected.to_vec())),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.to_vec(),
                    value: new.to_vec(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let session = self.kv_session();
        let r = self
            .call(|ch| {
                let req = with_session(req.clone(), &session);
                async move { KvClient::new(ch).txn(req).await }
            })
            .await?;
        Ok(r.into_inner().succeeded)
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        let req = pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { KvClient::new(ch).range(req).await }
            })
            .await?;
        Ok(r.into_inner().kvs.into_iter().next())
    }

    pub async fn get_prefix(&mut self, prefix: &[u8]) -> Result<Vec<KeyValue>, ClientError> {
        let mut end = prefix.to_vec();
        let range_end = loop {
            match end.pop() {
                Some(b) if b < 0xff => {
                    end.push(b + 1);
                    break end;
                }
                Some(_) => continue,
                None => break vec![0],
            }
        };
        let key = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.to_vec()
        };
        let req = pb::RangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { KvClient::new(ch).range(req).await }
            })
            .await?;
        Ok(r.into_inner().kvs)
    }

    pub async fn delete(&mut self, key: &[u8]) -> Result<i64, ClientError> {
        let req = pb::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let session = self.kv_session();
        let r = self
            .call(|ch| {
                let req = with_session(req.clone(), &session);
                async move { KvClient::new(ch).delete_range(req).await }
            })
            .await?;
        Ok(r.into_inner().deleted)
    }

    pub async fn register_get(&mut self, name: &str) -> Result<i64, ClientError> {
        let req = fv::GetRequest {
            name: name.to_string(),
            serializable: false,
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { RegistersClient::new(ch).get(req).await }
            })
            .await?;
        Ok(r.into_inner().value)
    }

    /// Sets a register; returns the previous value. Exactly once.
    pub async fn register_set(&mut self, name: &str, value: i64) -> Result<i64, ClientError> {
        let req = fv::SetRequest {
            name: name.to_string(),
            value,
            client_id: self.client_id,
            sequence: self.next_sequence(),
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { RegistersClient::new(ch).set(req).await }
            })
            .await?;
        Ok(r.into_inner().previous)
    }

    /// Adds to a register; returns the new value. Exactly once, even when
    /// the request is retried after a leader failure.
    pub async fn register_add(&mut self, name: &str, delta: i64) -> Result<i64, ClientError> {
        let req = fv::AddRequest {
            name: name.to_string(),
            delta,
            client_id: self.client_id,
            sequence: self.next_sequence(),
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { RegistersClient::new(ch).add(req).await }
            })
            .await?;
        Ok(r.into_inner().value)
    }

    /// Compare-and-set; returns whether it swapped and the value now.
    pub async fn register_cas(
        &mut self,
        name: &str,
        expected: i64,
        new: i64,
    ) -> Result<(bool, i64), ClientError> {
        let req = fv::CompareAndSetRequest {
            name: name.to_string(),
            expected,
            new_value: new,
            client_id: self.client_id,
            sequence: self.next_sequence(),
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { RegistersClient::new(ch).compare_and_set(req).await }
            })
            .await?;
        let r = r.into_inner();
        Ok((r.succeeded, r.current))
    }

    pub async fn volume_create(
        &mut self,
        name: &str,
        size: u64,
    ) -> Result<fv::Volume, ClientError> {
        let req = fv::VolumeCreateRequest {
            name: name.to_string(),
            size,
        };
        let r = self
            .call_with(Retry::IfNotApplied, |ch| {
                let req = req.clone();
                async move { VolumesClient::new(ch).create(req).await }
            })
            .await?;
        r.into_inner().volume.ok_or(ClientError::EmptyAnswer)
    }

    pub async fn volume_resize(
        &mut self,
        name: &str,
        size: u64,
    ) -> Result<fv::Volume, ClientError> {
        let req = fv::VolumeResizeRequest {
            name: name.to_string(),
            size,
        };
        let r = self
            .call_with(Retry::IfNotApplied, |ch| {
                let req = req.clone();
                async move { VolumesClient::new(ch).resize(req).await }
            })
            .await?;
        r.into_inner().volume.ok_or(ClientError::EmptyAnswer)
    }

    pub async fn volume_delete(&mut self, name: &str) -> Result<fv::Volume, ClientError> {
        let req = fv::VolumeDeleteRequest {
            name: name.to_string(),
        };
        let r = self
            .call_with(Retry::IfNotApplied, |ch| {
                let req = req.clone();
                async move { VolumesClient::new(ch).delete(req).await }
            })
            .await?;
        r.into_inner().volume.ok_or(ClientError::EmptyAnswer)
    }

    pub async fn volume_list(&mut self) -> Result<Vec<fv::Volume>, ClientError> {
        let r = self
            .call(|ch| async move { VolumesClient::new(ch).list(fv::VolumeListRequest {}).await })
            .await?;
        Ok(r.into_inner().volumes)
    }

    /// Writes at most `VOLUME_IO_BYTES_MAX` bytes at `offset`; the reply
    /// means the bytes are on a majority.
    pub async fn volume_write(
        &mut self,
        name: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        let req = fv::VolumeWriteRequest {
            name: name.to_string(),
            offset,
            data,
        };
        self.call(|ch| {
            let req = req.clone();
            async move { VolumesClient::new(ch).write(req).await }
        })
        .await?;
        Ok(())
    }

    /// Reads at most `VOLUME_IO_BYTES_MAX` bytes at `offset`.
    pub async fn volume_read(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let req = fv::VolumeReadRequest {
            name: name.to_string(),
            offset,
            length,
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { VolumesClient::new(ch).read(req).await }
            })
            .await?;
        Ok(r.into_inner().data)
    }

    pub async fn members(&mut self) -> Result<Vec<Member>, ClientError> {
        let r = self
            .call(|ch| async move {
                ClusterClient::new(ch)
                    .member_list(pb::MemberListRequest::default())
                    .await
            })
            .await?;
        Ok(r.into_inner().members)
    }

    pub async fn member_add(
        &mut self,
        peer_url: &str,
        learner: bool,
    ) -> Result<Member, ClientError> {
        let req = pb::MemberAddRequest {
            peer_ur_ls: vec![peer_url.to_string()],
            is_learner: learner,
        };
        let r = self
            .call_with(Retry::IfNotApplied, |ch| {
                let req = req.clone();
                async move { ClusterClient::new(ch).member_add(req).await }
            })
            .await?;
        r.into_inner()
            .member
            .ok_or_else(|| ClientError::Refused("no member in the answer".into()))
    }

    pub async fn member_remove(&mut self, id: u64) -> Result<(), ClientError> {
        self.call_with(Retry::IfNotApplied, |ch| async move {
            ClusterClient::new(ch)
                .member_remove(pb::MemberRemoveRequest { id })
                .await
        })
        .await
        .map(|_| ())
    }

    pub async fn member_promote(&mut self, id: u64) -> Result<(), ClientError> {
        self.call_with(Retry::IfNotApplied, |ch| async move {
            ClusterClient::new(ch)
                .member_promote(pb::MemberPromoteRequest { id })
                .await
        })
        .await
        .map(|_| ())
    }

    /// A backup of the state of the member the client is on (etcd's
    /// `Maintenance.Snapshot`): the pieces of a Ferrite backup file, in
    /// order. Opening the stream is retried like any read; a failure in the
    /// middle of it ends the stream with an error.
    pub async fn snapshot(
        &mut self,
    ) -> Result<tonic::Streaming<pb::SnapshotResponse>, ClientError> {
        let r = self
            .call_waiting(|ch| async move {
                MaintenanceClient::new(ch)
                    .snapshot(pb::SnapshotRequest {})
                    .await
            })
            .await?;
        Ok(r.into_inner())
    }

    /// Every member's status, as the cluster reports it (unreachable
    /// members carry an error).
    pub async fn cluster_status(&mut self) -> Result<Vec<MemberStatus>, ClientError> {
        let r = self
            .call(|ch| async move {
                StatusClient::new(ch)
                    .cluster(fv::ClusterStatusRequest {})
                    .await
            })
            .await?;
        Ok(r.into_inner().members)
    }
}

/// One node's status, asked directly (no retries): for polling.
pub async fn node_status(endpoint: &str) -> Result<NodeStatus, String> {
    node_status_with(endpoint, &ClientOptions::default()).await
}

/// `node_status` with TLS and credentials (authenticating first when
/// credentials are given).
pub async fn node_status_with(
    endpoint: &str,
    options: &ClientOptions,
) -> Result<NodeStatus, String> {
    let url = endpoint_url(endpoint, options.tls.is_some()).map_err(|e| e.to_string())?;
    let connector = Connector::new(options.tls.as_ref(), scheme_of(&url) == Scheme::Tls)
        .map_err(|e| e.to_string())?;
    let settings = ChannelSettings {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Some(Duration::from_secs(2)),
        keep_alive: false,
    };
    let channel = connector
        .connect(&url, settings)
        .await
        .map_err(|e| match e {
            ConnectError::Unreachable(why) => why,
            ConnectError::Tls(e) => e.to_string(),
        })?;
    let auth = Auth::new(options.credentials.clone());
    auth.authenticate(channel.clone())
        .await
        .map_err(|s| status_error(&s).to_string())?;
    let r = StatusClient::new(auth.wrap(channel))
        .node(fv::NodeStatusRequest {})
        .await
        .map_err(|s| status_error(&s).to_string())?;
    r.into_inner()
        .node
        .ok_or_else(|| "empty answer".to_string())
}
