//! Key-range permissions, as etcd encodes them (`authpb.Permission`): a
//! single key (`range_end` empty), a range `[key, range_end)`, or every key
//! from `key` on (`range_end` is `"\0"`; with key `"\0"` too: every key).
//!
//! A request is allowed when the union of the user's permissions of the
//! needed kind covers every key it names: two roles granting `[a, c)` and
//! `[c, e)` together allow a range over `[a, e)`, as etcd's interval trees
//! do.

use bytes::Bytes;

/// What a permission allows (etcd's `Permission.Type`: READ 0, WRITE 1,
/// READWRITE 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    /// etcd's wire number.
    pub fn number(self) -> u8 {
        match self {
            PermKind::Read => 0,
            PermKind::Write => 1,
            PermKind::ReadWrite => 2,
        }
    }

    pub fn from_number(n: u8) -> Option<PermKind> {
        match n {
            0 => Some(PermKind::Read),
            1 => Some(PermKind::Write),
            2 => Some(PermKind::ReadWrite),
            _ => None,
        }
    }

    /// Whether a permission of this kind grants `need` (read or write).
    pub fn grants(self, need: Access) -> bool {
        matches!(
            (self, need),
            (PermKind::ReadWrite, _)
                | (PermKind::Read, Access::Read)
                | (PermKind::Write, Access::Write)
        )
    }
}

/// What a request needs on a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One permission of a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Bytes,
    /// Empty: only `key`; `"\0"`: every key `>= key`; else `[key, range_end)`.
    pub range_end: Bytes,
}

/// etcd's `isValidPermissionRange`: a non-empty key, and an end that is
/// empty, `"\0"`, or above the key.
pub fn valid_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

/// The exclusive end of a key interval; `None` is unbounded. A single key
/// `k` is the interval `[k, k + "\0")`: no key lies between the two.
type End = Option<Vec<u8>>;

/// The keys `(key, range_end)` names, as `[start, end)`. An empty key reads
/// as `"\0"`, the lowest key (etcd's watch does the same); an end at or
/// below the key names just the key.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    let start = if key.is_empty() {
        vec![0]
    } else {
        key.to_vec()
    };
    let point = || {
        let mut e = start.clone();
        e.push(0);
        Some(e)
    };
    let end = match range_end {
        [] => point(),
        [0] => None,
        e if e <= &start[..] => point(),
        e => Some(e.to_vec()),
    };
    (start, end)
}

/// `a >= b` for exclusive ends.
fn reaches(a: &End, b: &End) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

/// Whether the union of `perms` (those granting `need`) covers every key
/// `(key, range_end)` names.
pub fn covers<'a>(
    perms: impl IntoIterator<Item = &'a Permission>,
    need: Access,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let (want_start, want_end) = interval(key, range_end);
    let mut have: Vec<(Vec<u8>, End)> = perms
        .into_iter()
        .filter(|p| p.kind.grants(need))
        .map(|p| interval(&p.key, &p.range_end))
        .collect();
    have.sort();
    // The first key not yet known to be covered.
    let mut reach: End = Some(want_start);
    for (start, end) in have {
        let Some(first_uncovered) = &reach else {
            return true;
        };
        if &start > first_uncovered {
            return false; // A gap at `first_uncovered`.
        }
        if !reaches(&reach, &end) {
            reach = end;
        }
        if reaches(&reach, &want_end) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: PermKind, key: &str, end: &str) -> Permission {
        Permission {
            kind,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        }
    }

    fn ok(perms: &[Permission], need: Access, key: &str, end: &str) -> bool {
        covers(perms, need, key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn a_single_key_permission_covers_that_key_only() {
        let perms = [p(PermKind::Read, "a", "")];
        assert!(ok(&perms, Access::Read, "a", ""));
        assert!(!ok(&perms, Access::Read, "a\0", ""));
        assert!(!ok(&perms, Access::Read, "b", ""));
        assert!(!ok(&perms, Access::Write, "a", ""));
        // A range over just "a" (up to "a\0") is covered; one wider is not.
        assert!(ok(&perms, Access::Read, "a", "a\0"));
        assert!(!ok(&perms, Access::Read, "a", "b"));
    }

    #[test]
    fn ranges_and_prefixes() {
        // etcdctl's --prefix foo/ is [foo/, foo0).
        let perms = [p(PermKind::ReadWrite, "foo/", "foo0")];
        for need in [Access::Read, Access::Write] {
            assert!(ok(&perms, need, "foo/x", ""));
            assert!(ok(&perms, need, "foo/", "foo0"));
            assert!(ok(&perms, need, "foo/a", "foo/b"));
            assert!(!ok(&perms, need, "foo", ""));
            assert!(!ok(&perms, need, "foo/", "foo1"));
            assert!(!ok(&perms, need, "foo/", "\0"));
            assert!(!ok(&perms, need, "foo0", ""));
        }
    }

    #[test]
    fn from_key_and_everything() {
        let from_m = [p(PermKind::Write, "m", "\0")];
        assert!(ok(&from_m, Access::Write, "m", "\0"));
        assert!(ok(&from_m, Access::Write, "zzz", ""));
        assert!(ok(&from_m, Access::Write, "n", "\0"));
        assert!(!ok(&from_m, Access::Write, "l", "\0"));
        assert!(!ok(&from_m, Access::Read, "n", ""));
        let all = [p(PermKind::Read, "\0", "\0")];
        assert!(ok(&all, Access::Read, "\0", "\0"));
        assert!(ok(&all, Access::Read, "", "\0"));
        assert!(ok(&all, Access::Read, "anything", ""));
    }

    #[test]
    fn the_union_of_several_permissions_covers_a_range() {
        let perms = [
            p(PermKind::Read, "c", "e"),
            p(PermKind::ReadWrite, "a", "c"),
            p(PermKind::Write, "e", "g"),
        ];
        assert!(ok(&perms, Access::Read, "a", "e"));
        assert!(ok(&perms, Access::Read, "b", "d"));
        // The write part ends at "c", then resumes at "e": a gap.
        assert!(!ok(&perms, Access::Write, "a", "g"));
        assert!(ok(&perms, Access::Write, "e", "g"));
        assert!(!ok(&perms, Access::Read, "a", "f"));
        // A single key joins a range that starts right after it.
        let joined = [p(PermKind::Read, "k", ""), p(PermKind::Read, "k\0", "m")];
        assert!(ok(&joined, Access::Read, "k", "m"));
        // Overlapping and nested ranges.
        let nested = [
            p(PermKind::Read, "a", "z"),
            p(PermKind::Read, "b", "c"),
            p(PermKind::Read, "y", "\0"),
        ];
        assert!(ok(&nested, Access::Read, "a", "\0"));
    }

    #[test]
    fn no_permission_covers_nothing() {
        assert!(!ok(&[], Access::Read, "a", ""));
    }

    #[test]
    fn valid_ranges() {
        assert!(valid_range(b"a", b""));
        assert!(valid_range(b"a", b"\0"));
        assert!(valid_range(b"a", b"b"));
        assert!(!valid_range(b"", b""));
        assert!(!valid_range(b"b", b"a"));
        assert!(!valid_range(b"a", b"a"));
    }
}
