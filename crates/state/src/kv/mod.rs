//! The etcd v3 key-value store: a multi-version map with one global
//! revision, per-key create/mod revisions and versions, ranges, deletes,
//! transactions with compares, and compaction.
//!
//! Each request type lives with the code that carries it out (`put.rs`,
//! `range.rs`, ...). All writes go through one [`write::Write`] batch, which is
//! where the rule "one request, at most one new revision" is kept.

mod changes;
mod compact;
mod compare;
mod delete;
mod hash;
mod history;
mod key_range;
mod key_value;
mod lease;
mod put;
mod range;
mod store;
mod txn;
mod txn_check;
mod write;

pub use changes::{ChangesRequest, ChangesResponse};
pub use compact::{CompactRequest, CompactResponse};
pub use compare::{Compare, CompareResult, CompareTarget};
pub use delete::{DeleteRangeRequest, DeleteRangeResponse};
pub use key_value::KeyValue;
pub use put::{PutRequest, PutResponse};
pub use range::{RangeRequest, RangeResponse, SortOrder, SortTarget};
pub use store::KvStore;
pub use txn::{RequestOp, ResponseOp, TxnRequest, TxnResponse};

pub(crate) use history::{History, Stored, Version};

#[cfg(test)]
mod test_util;
