//! The change stream: every change an applied entry makes, in apply order.
//! The dashboard's live view and etcd's Watch are both views of this one
//! stream (and the lessor learns of grants and revokes from it), so it carries enough to render either: the revision, the key
//! and both the previous and new values. The machine returns events per
//! entry; bounding how many are kept is the node's job.

use bytes::Bytes;

use crate::kv::KeyValue;

/// One change made by an applied entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Kv(KvEvent),
    Register(RegisterEvent),
    Volume(VolumeEvent),
    Lease(LeaseEvent),
    /// The auth store after a change (users, roles, enabled): watches are
    /// re-checked against it, in apply order.
    Auth(std::sync::Arc<crate::auth::AuthStore>),
}

/// A change to the lease table. The keys a revoke deletes come as `Kv`
/// events before it, at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    Granted {
        id: i64,
        ttl: i64,
    },
    Revoked {
        id: i64,
    },
    /// `remaining` 0: no checkpoint, a new leader uses the full TTL.
    Checkpointed {
        id: i64,
        remaining: i64,
    },
}

/// A key was put or deleted. All changes of one transaction share its
/// revision, in the order the transaction made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEvent {
    pub revision: i64,
    pub key: Bytes,
    /// The key's value before the change; `None` if it did not exist.
    pub prev: Option<KeyValue>,
    /// The key's value after the change; `None` for a delete.
    pub kv: Option<KeyValue>,
}

/// A register was written (set, add, or a compare-and-set that swapped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterEvent {
    pub name: String,
    pub old: i64,
    pub new: i64,
}

/// A change to a block volume: what the apply loop does to the volume's
/// sparse file. Replaying these in order from a volume file that holds, byte
/// for byte, any state at or after an index `i` gives exactly the state
/// after the last event replayed: every event sets the bytes it covers to
/// values that do not depend on what was there. That is what lets snapshots
/// copy volume files while they change (see `block_store.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeEvent {
    /// A new volume of `size` zero bytes.
    Created {
        id: u64,
        size: u64,
    },
    /// Shrunk (bytes past `new` dropped) or grown (new bytes zero).
    Resized {
        id: u64,
        old: u64,
        new: u64,
    },
    Deleted {
        id: u64,
    },
    Written {
        id: u64,
        offset: u64,
        data: Bytes,
    },
    /// Trim and write-zeroes: the range reads as zeros afterwards.
    Zeroed {
        id: u64,
        offset: u64,
        len: u64,
    },
}

/// The changes of one applied entry, as the event stream carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The log index of the entry.
    pub index: u64,
    /// The KV store's revision after it (unchanged if it changed no key).
    pub revision: i64,
    /// In the order the entry made them; KV events all carry `revision`.
    pub events: Vec<Event>,
    /// The state was replaced by a snapshot at `index`: the changes up to
    /// `revision` were never published, so readers must catch up from
    /// history, as if they had lagged.
    pub restored: bool,
}
