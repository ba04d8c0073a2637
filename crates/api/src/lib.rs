//! Ferrite's front ends. They translate, never decide: every request becomes
//! a call on `ferrite-service`'s `Context` (a `ferrite-state` command
//! proposed through the node, or a read served after ReadIndex), and every
//! answer, or `ServiceError`, is translated back.
//!
//! - `kv.rs`, `watch.rs`, `lease.rs`, `cluster.rs`: the etcd v3 API (KV,
//!   Watch, Lease, Cluster, Maintenance); `concurrency.rs`: etcd's Lock
//!   and Election services; `auth.rs`: etcd's Auth service, and who a
//!   request is from (its token or client certificate);
//!   `errors.rs`: etcd's codes and messages for what fails; `header.rs`:
//!   the response header.
//! - `registers.rs`, `status.rs`: Ferrite's own gRPC services.
//! - `volumes.rs`: Ferrite's `Volumes` gRPC service (and the `Copy` stream
//!   a member serves to a peer).
//! - `client_port.rs`: the client port (gRPC and HTTP on one port, gRPC
//!   health and reflection); `gateway.rs`: etcd's JSON gateway on it.
//! - `http.rs`: JSON API, `/healthz`, `/metrics`; `dashboard/`: the web
//!   page and its live stream.
//! - `authority.rs`: HTTP/2 `:authority` written as a URL (etcdctl 3.4),
//!   made acceptable to the HTTP/2 server.
//! - `require_leader.rs`: etcd's `hasleader` metadata (fail fast, end
//!   streams, when this member has no leader).
//! - `server.rs`: one server with all of them on a node, and the NBD server
//!   (`ferrite-nbd`).

pub mod auth;
pub mod authority;
pub mod client_port;
mod cluster;
mod concurrency;
mod convert;
pub mod dashboard;
pub mod errors;
pub mod gateway;
mod grpc_metrics;
pub mod header;
pub mod http;
mod http_auth;
pub mod identity;
mod kv;
mod lease;
mod maintenance;
mod registers;
pub mod require_leader;
pub mod server;
mod snapshot_stream;
mod status;
pub mod tls;
pub mod volumes;
pub mod watch;
mod watch_wire;

pub use cluster::{parse_url, ETCD_VERSION};
pub use server::{ServeError, Server, ServerOptions};
pub use status::node_status_message;
