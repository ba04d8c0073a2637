//! The typed errors of the state machines. `StateError` is a deterministic
//! result of applying a well-formed request (etcd's messages where clients
//! match on them); it is replicated inside `Reply::Error` like any reply.
//! `DecodeError` is what the command and snapshot decoders say about bytes
//! they refuse. `ApplyError` is why an entry produced no reply at all.

/// A request was well formed but cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A read or compaction at a revision compaction has discarded.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction at a revision the store has not reached.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A transaction writes one key twice, or puts a key it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// Put, Range and DeleteRange need a key; the empty key also keeps
    /// `"\0"` the lowest key, which the range forms rely on.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put with `ignore_value` that also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put, grant's keys or revoke naming a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with an id that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A put with `ignore_lease` that also names a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A grant whose TTL is beyond `LEASE_TTL_MAX`.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A register add whose result does not fit in an i64.
    #[error("register add overflows: {value} + {delta}")]
    Overflow { value: i64, delta: i64 },
    #[error("volume {0:?} already exists")]
    VolumeExists(String),
    #[error("no volume named {0:?}")]
    NoSuchVolume(String),
    #[error("invalid volume name {0:?} (1 to 255 bytes, no control characters)")]
    VolumeName(String),
    #[error("volume size {size} exceeds the limit {max}")]
    VolumeSize { size: u64, max: u64 },
    #[error("at most {max} volumes")]
    TooManyVolumes { max: usize },
    /// A volume read proposed through the log: volume bytes are read from
    /// the block store after ReadIndex, never through the log.
    #[error("volume reads are served by the node, not through the log")]
    LocalReadOnly,
    #[error("range {offset}+{len} is outside the volume (size {size})")]
    VolumeRange { offset: u64, len: u64, size: u64 },
    // Auth, with etcd's messages (`rpctypes`): clients match on them.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// A NOSPACE alarm is raised (or the write would exceed the quota):
    /// what grows the state is refused.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised: KV requests through the log are refused.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
}

/// Bytes that are not a valid command, reply or snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input")]
    Truncated,
    #[error("unsupported version {found} (expected {expected})")]
    Version { found: u8, expected: u8 },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{what} length {len} exceeds the limit {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("transactions nested deeper than {max}")]
    TooDeep { max: usize },
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("not a ferrite-state snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    /// The snapshot decoded but describes a state that cannot exist.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(&'static str),
}

/// Why an applied entry has no reply. Both are deterministic: every replica
/// reaches the same verdict for the same entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The entry's bytes are not a command; the entry is skipped.
    #[error("undecodable command: {0}")]
    Decode(#[from] DecodeError),
    /// The client has already moved past this sequence number: the request
    /// is a delayed duplicate, and its reply is no longer kept.
    #[error("client {client}: sequence {seq} is below the last applied {applied}")]
    StaleSequence { client: u64, seq: u64, applied: u64 },
}
