//! The change stream: every change an applied entry makes, in apply order.
//! The dashboard's live view and a future etcd Watch are both views of this
//! one stream, so it carries enough to render either: the revision, the key
//! and both the previous and new values. The machine returns events per
//! entry; bounding how many are kept is the node's job.

use bytes::Bytes;

use crate::kv::KeyValue;

/// One change made by an applied entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Kv(KvEvent),
    Register(RegisterEvent),
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
