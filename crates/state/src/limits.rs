//! Named bounds on everything a command or snapshot may carry. The decoders
//! enforce them, so a corrupt length prefix is refused instead of becoming a
//! huge allocation, and nested transactions cannot exhaust the stack.

/// The longest key accepted. etcd has no separate key limit (only its
/// request size limit); 64 KiB is far beyond any real key.
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// The largest value accepted: etcd's default `--max-request-bytes`.
pub const VALUE_BYTES_MAX: usize = 1536 * 1024;

/// Compares, success ops and failure ops per transaction, each: etcd's
/// default `--max-txn-ops`.
pub const TXN_OPS_MAX: usize = 128;

/// How deep transactions may nest. etcd 3.5 allows nesting without a depth
/// limit of its own; the decoder recurses, so it needs one.
pub const TXN_DEPTH_MAX: usize = 16;

/// The longest register name accepted.
pub const REGISTER_NAME_BYTES_MAX: usize = 1024;

/// A client session unused for this many applied entries is dropped. Within
/// this window a retry is answered exactly once; see `session.rs`.
pub const SESSION_IDLE_ENTRIES_MAX: u64 = 1_000_000;

/// At most this many client sessions are kept; the least recently used (by
/// applied index) is evicted to make room for a new one.
pub const SESSIONS_MAX: usize = 65_536;

const _: () = assert!(SESSION_IDLE_ENTRIES_MAX > 0);
const _: () = assert!(SESSIONS_MAX > 0);
const _: () = assert!(TXN_DEPTH_MAX > 0);

/// The longest volume name: NBD export names are strings, and 255 bytes is
/// what most file systems allow for one name.
pub const VOLUME_NAME_BYTES_MAX: usize = 255;

/// The largest volume: 64 TiB, far below what a sparse file on ext4 or XFS
/// can hold, and a bound that keeps every offset + length inside a u64.
pub const VOLUME_BYTES_MAX: u64 = 64 << 40;

/// At most this many volumes.
pub const VOLUMES_MAX: usize = 4096;

/// The most data one volume write command carries. Larger client writes are
/// split by the front end; a Raft entry holds at most 1 MiB.
pub const VOLUME_WRITE_BYTES_MAX: usize = 512 * 1024;

/// The most data one volume read returns.
pub const VOLUME_READ_BYTES_MAX: u64 = 32 << 20;

/// The longest user or role name accepted (etcd has no limit of its own
/// beyond its request size).
pub const AUTH_NAME_BYTES_MAX: usize = 1024;
