//! A small seeded pseudo-random generator of our own (SplitMix64). Kept in the
//! crate, as TigerBeetle keeps its own, so that a seed replays the same run
//! across dependency upgrades.

/// Deterministic PRNG: the same seed gives the same sequence, on every platform.
#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`; `bound` 0 gives 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for simulation, and branch-free.
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi, "lo={lo} hi={hi}");
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Prng::new(7);
        let mut b = Prng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Prng::new(1).next_u64(), Prng::new(2).next_u64());
    }

    #[test]
    fn bounds_hold() {
        let mut p = Prng::new(3);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = p.range(10, 14);
            assert!((10..=14).contains(&v), "v={v}");
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value drawn: {seen:?}");
        assert_eq!(p.below(0), 0);
        assert!(p.pick::<u8>(&[]).is_none());
    }
}
