//! Transaction compares, with etcd's rules: a compare over a range holds
//! only if every key in it satisfies it; a compare that finds no key at all
//! compares the zero key-value (version, revisions and lease 0), except that
//! comparing the value of a missing key is always false, since the empty
//! value and no value would be indistinguishable.

use std::cmp::Ordering;

use bytes::Bytes;

use crate::kv::key_range::KeySpan;
use crate::kv::{KeyValue, KvStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What is compared, with the value to compare it to. `Greater` means the
/// key's field is greater than this value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Bytes),
    /// The lease the key is attached to (0: none).
    Lease(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Bytes,
    pub result: CompareResult,
    pub target: CompareTarget,
}

impl Compare {
    fn holds_for(&self, kv: &KeyValue) -> bool {
        let ord = match &self.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::Create(v) => kv.create_revision.cmp(v),
            CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value.cmp(v),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        };
        match self.result {
            CompareResult::Equal => ord == Ordering::Equal,
            CompareResult::NotEqual => ord != Ordering::Equal,
            CompareResult::Greater => ord == Ordering::Greater,
            CompareResult::Less => ord == Ordering::Less,
        }
    }
}

impl KvStore {
    /// Whether `compare` holds at the current revision.
    pub(crate) fn compare_holds(&self, compare: &Compare) -> bool {
        let span = KeySpan::new(&compare.key, &compare.range_end);
        let mut found = false;
        for kv in self.live(span, self.revision) {
            if !compare.holds_for(&kv) {
                return false;
            }
            found = true;
        }
        if found {
            return true;
        }
        if let CompareTarget::Value(_) = compare.target {
            return false;
        }
        let zero = KeyValue {
            key: compare.key.clone(),
            create_revision: 0,
            mod_revision: 0,
            version: 0,
            value: Bytes::new(),
            lease: 0,
        };
        compare.holds_for(&zero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::test_util::*;

    fn cmp(key: &str, end: &str, result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            key: b(key),
            range_end: b(end),
            result,
            target,
        }
    }

    #[test]
    fn single_key_targets() {
        let mut s = Store::default();
        s.put("a", "x"); // rev 2
        s.put("a", "y"); // rev 3
        let holds = |c| s.kv.compare_holds(&c);
        use CompareResult::*;
        use CompareTarget::*;
        assert!(holds(cmp("a", "", Equal, Version(2))));
        assert!(holds(cmp("a", "", Greater, Version(1))));
        assert!(holds(cmp("a", "", Less, Create(3))));
        assert!(holds(cmp("a", "", Equal, Mod(3))));
        assert!(holds(cmp("a", "", Equal, Value(b("y")))));
        assert!(holds(cmp("a", "", Greater, Value(b("x")))));
        assert!(holds(cmp("a", "", NotEqual, Value(b("x")))));
        assert!(holds(cmp("a", "", Equal, Lease(0))));
        assert!(!holds(cmp("a", "", Equal, Version(1))));
    }

    #[test]
    fn missing_keys_compare_as_zero_except_value() {
        let s = Store::default();
        let holds = |c| s.kv.compare_holds(&c);
        use CompareResult::*;
        use CompareTarget::*;
        assert!(holds(cmp("nope", "", Equal, Version(0))));
        assert!(holds(cmp("nope", "", Equal, Create(0))));
        assert!(holds(cmp("nope", "", Less, Mod(1))));
        assert!(!holds(cmp("nope", "", Equal, Value(b("")))));
        assert!(!holds(cmp("nope", "", NotEqual, Value(b("x")))));
    }

    #[test]
    fn range_compares_need_every_key() {
        let mut s = Store::default();
        s.put("a", "1");
        s.put("b", "1");
        s.put("b", "2");
        s.put("c", "1");
        let holds = |c| s.kv.compare_holds(&c);
        use CompareResult::*;
        use CompareTarget::*;
        assert!(holds(cmp("a", "c", Greater, Version(0))));
        assert!(!holds(cmp("a", "c", Equal, Version(1))), "b has version 2");
        assert!(holds(cmp("a", "\0", Equal, Lease(0))));
        assert!(holds(cmp("c", "\0", Equal, Value(b("1")))));
        assert!(
            holds(cmp("x", "z", Equal, Version(0))),
            "an empty range compares the zero kv"
        );
        assert!(!holds(cmp("x", "z", Equal, Value(b("")))));
    }
}
