//! Ferrite's front ends. They translate, never decide: every request becomes
//! a `ferrite-state` command proposed through the node, or a read served
//! after ReadIndex, and every answer is translated back.
//!
//! - `kv.rs`, `cluster.rs`: the etcd v3 API (KV, Cluster, Maintenance).
//! - `registers.rs`, `status.rs`: Ferrite's own gRPC services.
//! - `volumes.rs`, `copy.rs`: block volumes (gRPC, and copies between
//!   members); `nbd/`: the NBD server that exports them.
//! - `http.rs`: JSON API, `/healthz`, `/metrics`; `dashboard/`: the web
//!   page and its live stream.
//! - `server.rs`: one server with all of them on a node.

mod cluster;
mod compaction;
pub mod context;
mod convert;
mod copy;
pub mod dashboard;
pub mod http;
pub mod ids;
mod kv;
pub mod machine;
pub mod nbd;
mod registers;
pub mod server;
mod status;
pub mod volumes;

pub use cluster::{parse_url, ETCD_VERSION};
pub use context::Context;
pub use server::{ServeError, Server, ServerOptions};
pub use status::node_status_message;
