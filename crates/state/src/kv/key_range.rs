//! etcd's `(key, range_end)` pair turned into the set of keys it names, so
//! that every request (range, delete, compare, the duplicate-key check)
//! reads the encoding the same way.

use std::ops::Bound;

/// Bounds of a key span, in the form `BTreeMap::range` takes.
pub(crate) type SpanBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeySpan<'a> {
    /// `range_end` empty: the single key.
    Single(&'a [u8]),
    /// `range_end` is `"\0"`: every key `>= key`. With key `"\0"` this is
    /// every key, because the empty key is never stored.
    From(&'a [u8]),
    /// `[key, range_end)`; names nothing when `range_end <= key`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeySpan<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> KeySpan<'a> {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::From(key),
            end => KeySpan::Between(key, end),
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeySpan::Single(key) => k == key,
            KeySpan::From(key) => k >= key,
            KeySpan::Between(key, end) => key <= k && k < end,
        }
    }

    /// Bounds for `BTreeMap::range`, or `None` for a span that names
    /// nothing: `BTreeMap::range` panics on an inverted range, and both ends
    /// come from clients.
    pub(crate) fn bounds(&self) -> Option<SpanBounds<'a>> {
        match *self {
            KeySpan::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeySpan::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
            KeySpan::Between(key, end) if key < end => {
                Some((Bound::Included(key), Bound::Excluded(end)))
            }
            KeySpan::Between(..) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeySpan;

    #[test]
    fn the_three_forms() {
        assert_eq!(KeySpan::new(b"a", b""), KeySpan::Single(b"a"));
        assert_eq!(KeySpan::new(b"a", b"\0"), KeySpan::From(b"a"));
        assert_eq!(KeySpan::new(b"a", b"c"), KeySpan::Between(b"a", b"c"));
        assert!(KeySpan::new(b"\0", b"\0").contains(b"\0"));
        assert!(KeySpan::new(b"\0", b"\0").contains(b"\xff\xff"));
        assert!(KeySpan::new(b"a", b"c").contains(b"b"));
        assert!(!KeySpan::new(b"a", b"c").contains(b"c"));
    }

    #[test]
    fn inverted_and_empty_ranges_name_nothing() {
        assert_eq!(KeySpan::new(b"c", b"a").bounds(), None);
        assert_eq!(KeySpan::new(b"c", b"c").bounds(), None);
        assert!(!KeySpan::new(b"c", b"a").contains(b"b"));
    }
}
