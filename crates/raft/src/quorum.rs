//! Majority arithmetic.

/// The largest value that a majority of `values` has reached: sort
/// descending and take the `quorum`-th. `None` for fewer values than a quorum.
pub fn quorum_value<T: Ord + Copy>(values: &mut [T], quorum: usize) -> Option<T> {
    if quorum == 0 || values.len() < quorum {
        return None;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.get(quorum - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_matches() {
        assert_eq!(quorum_value(&mut [5, 1, 3], 2), Some(3));
        assert_eq!(quorum_value(&mut [5, 1, 3, 4, 2], 3), Some(3));
        assert_eq!(quorum_value(&mut [7], 1), Some(7));
        assert_eq!(quorum_value::<u64>(&mut [], 1), None);
        assert_eq!(quorum_value(&mut [1, 2], 3), None);
    }
}
