//! A key's value as clients see it, with etcd's per-key metadata.

use bytes::Bytes;

/// One key at one revision, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    /// The revision of the put that created this generation of the key
    /// (a delete ends a generation; the next put starts one).
    pub create_revision: i64,
    /// The revision of the latest change to the key.
    pub mod_revision: i64,
    /// Puts in this generation, counting from 1; 0 means "no such key" in
    /// compares.
    pub version: i64,
    pub value: Bytes,
    /// The lease the key is attached to; 0: none.
    pub lease: i64,
}
