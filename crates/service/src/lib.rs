//! `ferrite-service`: the replicated service the front ends share. A front
//! end (etcd gRPC, Ferrite's gRPC services and the JSON API in
//! `ferrite-api`; NBD in `ferrite-nbd`) translates its protocol into calls
//! on [`Context`] and translates the answer, or the typed [`ServiceError`],
//! back; nothing here knows a protocol's error codes.
//!
//! - `context.rs`: `Context`, the one way to run a request (propose a
//!   write, or read after ReadIndex) with retries through elections.
//! - `error.rs`: `ServiceError`, what can fail, typed.
//! - `auth.rs`: who a request is from (tokens, certificate names), the
//!   mirrored auth store, Authenticate, password hashing.
//! - `machine.rs`: `Replicated`, the bridge between the node and
//!   `ferrite-state` (commands in, reply envelopes out; volume files).
//! - `copy.rs`: `PeerCopier`, copies of volume files from a peer.
//! - `volumes.rs`: block volume operations (shared by gRPC and NBD).
//! - `members.rs`: the member table; `ids.rs`: member ids.
//! - `snapshot.rs`: point-in-time captures of the state (backups).
//! - `maintenance.rs`: the space quota and db size, alarms, hashes,
//!   defragmentation, the periodic corruption check.
//! - `compaction.rs`: the leader's auto-compaction of the KV history.
//! - `concurrency.rs`: etcd's locks and elections, from leases,
//!   transactions and watches.
//! - `events.rs`: the one ordered stream of applied changes;
//!   `watch/`: etcd's Watch as views of it.

pub mod auth;
pub mod compaction;
pub mod concurrency;
pub mod context;
pub mod copy;
pub mod error;
pub mod events;
pub mod ids;
pub mod machine;
pub mod maintenance;
pub mod members;
pub mod snapshot;
pub mod volumes;
pub mod watch;

pub use context::Context;
pub use error::ServiceError;
