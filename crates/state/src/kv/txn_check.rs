//! etcd's duplicate-key check for transactions (`checkIntervals` in its
//! v3rpc layer): within one branch, no key may be put twice, and no key may
//! be both put and deleted. Puts in the success and failure branches of one
//! nested transaction may overlap, since only one of them runs.
//!
//! It follows etcd's algorithm, including what it misses: a put in an
//! earlier nested transaction and a delete of the same key in a later one
//! pass (the history then holds two versions at one revision, see
//! `history.rs`). One deliberate difference: a delete with range end `"\0"`
//! covers every key from its start here, whereas etcd's interval tree reads
//! it as an empty interval and lets such puts through.

use std::collections::BTreeSet;

use crate::error::StateError;
use crate::kv::key_range::KeySpan;
use crate::kv::RequestOp;

/// The keys a branch puts and the spans it deletes.
type Intervals<'a> = (BTreeSet<&'a [u8]>, Vec<KeySpan<'a>>);

/// Checks one branch (and everything nested in it).
pub(crate) fn check_intervals(ops: &[RequestOp]) -> Result<Intervals<'_>, StateError> {
    let mut dels: Vec<KeySpan<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(d.span()),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    let deleted = |dels: &[KeySpan<'_>], k: &[u8]| dels.iter().any(|d| d.contains(k));
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(StateError::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(StateError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        let k: &[u8] = &p.key;
        if puts.contains(k) || deleted(&dels, k) {
            return Err(StateError::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}
