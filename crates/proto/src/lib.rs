//! Ferrite's gRPC API: Rust types, clients and servers generated from the
//! .proto files under `proto/`.
//!
//! - [`etcdserverpb`], [`mvccpb`] and [`authpb`]: the etcd v3 client API
//!   (KV, Watch, Lease, Cluster, Maintenance, Auth), wire-compatible with etcd 3.4/3.5 clients;
//!   [`v3lockpb`] and [`v3electionpb`]: etcd's lock and election services.
//! - [`ferrite::v1`]: Ferrite's own services (`Registers`, `Status`).
//!
//! Every generated server trait has default method bodies that answer
//! `UNIMPLEMENTED`, so a server overrides only the methods it serves.

mod session;

pub use session::{BadSession, Outcome, Session, OUTCOME_METADATA, SESSION_METADATA};

/// etcd's multi-version key-value records (`KeyValue`, `Event`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's auth records (users, roles, permissions).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// The etcd v3 services and their messages.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's server-side lock service.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's server-side election service.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Ferrite's own services.
pub mod ferrite {
    /// Version 1 of package `ferrite.v1`.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ferrite.v1.rs"));
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every .proto file in this
/// crate (with source info), e.g. for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferrite_descriptor.bin"));
