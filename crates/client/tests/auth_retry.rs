//! The client's token handling against a scripted in-process server on
//! loopback: the token rides in the `token` metadata, a stale token is
//! refreshed once and the request sent again, a second refusal is final,
//! a wrong password is a typed error, and a server that enables auth after
//! the client connected ("user name is empty") gets a token then.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_client::{AuthError, Client, ClientError, ClientOptions, Credentials, Notice};
use ferrite_proto::etcdserverpb as pb;
use ferrite_proto::etcdserverpb::auth_server::{Auth, AuthServer};
use ferrite_proto::etcdserverpb::kv_server::{Kv, KvServer};
use tonic::{Request, Response, Status};

/// The script: which tokens are good, and what happened.
#[derive(Default)]
struct Fake {
    /// Tokens handed out: "t1", "t2", ...
    issued: AtomicU64,
    /// Tokens numbered below this are stale.
    valid_from: AtomicU64,
    /// Every token is refused as invalid.
    refuse_all: AtomicBool,
    /// Authenticate answers "authentication is not enabled".
    auth_disabled: AtomicBool,
    ranges: AtomicU64,
    /// The `token` of each Range, in order.
    seen: Mutex<Vec<Option<String>>>,
}

#[derive(Clone, Default)]
struct Server(Arc<Fake>);

#[tonic::async_trait]
impl Auth for Server {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        if self.0.auth_disabled.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition(
                "etcdserver: authentication is not enabled",
            ));
        }
        let r = request.into_inner();
        if (r.name.as_str(), r.password.as_str()) != ("alice", "pw") {
            return Err(Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ));
        }
        let n = self.0.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(pb::AuthenticateResponse {
            header: None,
            token: format!("t{n}"),
        }))
    }
}

#[tonic::async_trait]
impl Kv for Server {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.0.ranges.fetch_add(1, Ordering::SeqCst);
        let token = request
            .metadata()
            .get("token")
            .and_then(|t| t.to_str().ok())
            .map(String::from);
        self.0
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token.clone());
        if self.0.auth_disabled.load(Ordering::SeqCst) {
            return Ok(Response::new(pb::RangeResponse::default()));
        }
        let Some(token) = token else {
            return Err(Status::invalid_argument("etcdserver: user name is empty"));
        };
        let number: u64 = token.trim_start_matches('t').parse().unwrap_or(0);
        if self.0.refuse_all.load(Ordering::SeqCst)
            || number < self.0.valid_from.load(Ordering::SeqCst)
        {
            return Err(Status::unauthenticated("etcdserver: invalid auth token"));
        }
        Ok(Response::new(pb::RangeResponse::default()))
    }
}

/// Serves the fake on a free loopback port; returns its address.
async fn serve(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthServer::new(server.clone()))
            .add_service(KvServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

fn client(addr: &str, password: &str) -> (Client, Arc<Mutex<Vec<Notice>>>) {
    let mut c = Client::with_options(
        vec![addr.to_string()],
        ClientOptions {
            tls: None,
            credentials: Some(Credentials {
                user: "alice".into(),
                password: password.into(),
            }),
        },
    )
    .expect("client");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = notices.clone();
    c.on_notice(move |n| seen.lock().unwrap_or_else(|e| e.into_inner()).push(n));
    (c, notices)
}

fn reauthentications(notices: &Mutex<Vec<Notice>>) -> usize {
    notices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|n| matches!(n, Notice::Reauthenticated { .. }))
        .count()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("done within 20 s")
}

#[tokio::test]
async fn a_stale_token_is_refreshed_and_the_request_sent_again() {
    let server = Server::default();
    let addr = serve(server.clone()).await;
    let (mut c, notices) = client(&addr, "pw");
    bounded(c.get(b"k")).await.expect("first read");
    assert_eq!(server.0.issued.load(Ordering::SeqCst), 1);

    // The server forgets every token it gave (a restart, an expiry).
    server.0.valid_from.store(2, Ordering::SeqCst);
    bounded(c.get(b"k"))
        .await
        .expect("read after the token went stale");
    assert_eq!(server.0.issued.load(Ordering::SeqCst), 2);
    assert_eq!(reauthentications(&notices), 1);
    let seen = server
        .0
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        seen,
        vec![Some("t1".into()), Some("t1".into()), Some("t2".into())],
        "the token rides in the `token` metadata"
    );
}

#[tokio::test]
async fn a_refusal_right_after_a_fresh_token_is_final() {
    let server = Server::default();
    server.0.refuse_all.store(true, Ordering::SeqCst);
    let addr = serve(server.clone()).await;
    let (mut c, notices) = client(&addr, "pw");
    match bounded(c.get(b"k")).await {
        Err(ClientError::Auth(AuthError::InvalidToken)) => {}
        other => panic!("expected an invalid token error, got {other:?}"),
    }
    assert_eq!(
        server.0.issued.load(Ordering::SeqCst),
        2,
        "one refresh only"
    );
    assert_eq!(server.0.ranges.load(Ordering::SeqCst), 2);
    assert_eq!(reauthentications(&notices), 1);
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_error_and_nothing_is_sent() {
    let server = Server::default();
    let addr = serve(server.clone()).await;
    let (mut c, _) = client(&addr, "wrong");
    match bounded(c.get(b"k")).await {
        Err(ClientError::Auth(AuthError::AuthFailed)) => {}
        other => panic!("expected authentication failed, got {other:?}"),
    }
    assert_eq!(server.0.ranges.load(Ordering::SeqCst), 0);
}

/// Credentials given while auth is off are kept; when auth comes on, the
/// server's "user name is empty" makes the client authenticate.
#[tokio::test]
async fn a_client_gets_a_token_when_auth_comes_on() {
    let server = Server::default();
    server.0.auth_disabled.store(true, Ordering::SeqCst);
    let addr = serve(server.clone()).await;
    let (mut c, notices) = client(&addr, "pw");
    bounded(c.get(b"k")).await.expect("read with auth off");
    assert_eq!(server.0.issued.load(Ordering::SeqCst), 0);

    server.0.auth_disabled.store(false, Ordering::SeqCst);
    bounded(c.get(b"k")).await.expect("read with auth on");
    assert_eq!(server.0.issued.load(Ordering::SeqCst), 1);
    assert_eq!(reauthentications(&notices), 1);
    let seen = server
        .0
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(seen, vec![None, None, Some("t1".into())]);
}

/// Without credentials, "user name is empty" is the answer, typed.
#[tokio::test]
async fn without_credentials_an_empty_user_is_final() {
    let server = Server::default();
    let addr = serve(server.clone()).await;
    let mut c = Client::new(vec![addr]).expect("client");
    match bounded(c.get(b"k")).await {
        Err(ClientError::Auth(AuthError::UserEmpty)) => {}
        other => panic!("expected user name is empty, got {other:?}"),
    }
    assert_eq!(server.0.ranges.load(Ordering::SeqCst), 1);
}
