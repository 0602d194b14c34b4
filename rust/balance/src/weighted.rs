use rand::Rng;

/// Draws an index with probability proportional to its weight in O(1) (Vose's alias method).
///
/// Zero-weight entries are left out of the table entirely, so no rounding can ever pick one.
/// A draw also says the drawn entry's weight, so a caller that scales by weight (the
/// power-of-two-choices policies) reads one table slot and nothing else.
#[derive(Clone, Debug)]
pub struct WeightedSampler {
    table: Table,
}

#[derive(Clone, Debug)]
enum Table {
    /// No entry has a positive weight.
    Empty,
    /// Every entry has the same positive weight: a uniform draw over all of them.
    Uniform { len: usize, weight: u32 },
    /// `slots[i]` keeps its `index` with probability `keep / 2^64`, otherwise yields `alias`.
    Alias(Vec<Slot>),
}

/// One column of the alias table, with both candidates' weights so that a draw touches one
/// cache line: at 100,000 endpoints the table is megabytes and each extra lookup is a miss.
/// Aligned so that no slot straddles two lines.
#[derive(Clone, Copy, Debug)]
#[repr(align(32))]
struct Slot {
    /// The probability of keeping `index`, as a fraction of 2^64 (saturating at 1).
    keep: u64,
    index: usize,
    alias: usize,
    index_weight: u32,
    alias_weight: u32,
}

// === impl WeightedSampler ===

impl WeightedSampler {
    pub fn new(weights: &[u32]) -> Self {
        let live: Vec<(usize, u32)> =
            weights.iter().copied().enumerate().filter(|&(_, w)| w > 0).collect();
        let table = match live.first() {
            None => Table::Empty,
            Some(&(_, first)) if live.len() == weights.len() && live.iter().all(|&(_, w)| w == first) => {
                Table::Uniform { len: weights.len(), weight: first }
            }
            Some(_) => Table::Alias(alias_table(&live)),
        };
        WeightedSampler { table }
    }

    /// Whether any entry can be drawn.
    pub fn is_empty(&self) -> bool {
        matches!(self.table, Table::Empty)
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        self.sample_weighted(rng).map(|(index, _)| index)
    }

    /// Draws an index and returns it with its weight.
    pub fn sample_weighted<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<(usize, u32)> {
        match &self.table {
            Table::Empty => None,
            Table::Uniform { len, weight } => Some((rng.random_range(0..*len), *weight)),
            Table::Alias(slots) => {
                // One 64-bit draw does both steps: the high half of `draw * len` is a uniform
                // slot, the low half a uniform fraction within it (to within len / 2^64, finer
                // than an f64 draw), which decides between the slot's two entries.
                let wide = u128::from(rng.next_u64()) * slots.len() as u128;
                let slot = slots.get((wide >> 64) as usize)?;
                Some(if (wide as u64) < slot.keep {
                    (slot.index, slot.index_weight)
                } else {
                    (slot.alias, slot.alias_weight)
                })
            }
        }
    }
}

/// Builds the alias table over the positive-weight entries `(index, weight)`.
fn alias_table(live: &[(usize, u32)]) -> Vec<Slot> {
    let n = live.len();
    let total: f64 = live.iter().map(|&(_, w)| f64::from(w)).sum();
    // Each slot holds probability mass 1; scaled weights say how many slots' worth an entry has.
    let mut scaled: Vec<f64> = live.iter().map(|&(_, w)| f64::from(w) * n as f64 / total).collect();
    let mut slots: Vec<Slot> = live
        .iter()
        .map(|&(index, weight)| Slot { keep: u64::MAX, index, alias: index, index_weight: weight, alias_weight: weight })
        .collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        slots[s].keep = fraction_of_u64(scaled[s]);
        slots[s].alias = live[l].0;
        slots[s].alias_weight = live[l].1;
        scaled[l] -= 1.0 - scaled[s];
        if scaled[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    // Whatever is left holds a full slot up to floating-point error.
    slots
}

/// A probability in [0, 1] as a threshold for a uniform u64 (the cast saturates at 1).
fn fraction_of_u64(probability: f64) -> u64 {
    (probability * 18_446_744_073_709_551_616.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn shares(weights: &[u32], draws: usize) -> Vec<f64> {
        let sampler = WeightedSampler::new(weights);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..draws {
            if let Some(i) = sampler.sample(&mut rng) {
                counts[i] += 1;
            }
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn all_zero_weights_draw_nothing() {
        let sampler = WeightedSampler::new(&[0, 0]);
        assert!(sampler.is_empty());
        assert_eq!(sampler.sample(&mut SmallRng::seed_from_u64(1)), None);
    }

    #[test]
    fn draws_follow_weights() {
        let got = shares(&[1, 2, 7], 200_000);
        for (g, want) in got.iter().zip([0.1, 0.2, 0.7]) {
            assert!((g - want).abs() < 0.01, "{got:?}");
        }
    }

    proptest! {
        #[test]
        fn zero_weight_entries_are_never_drawn(weights in prop::collection::vec(0u32..5, 1..40), seed: u64) {
            let sampler = WeightedSampler::new(&weights);
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..500 {
                match sampler.sample(&mut rng) {
                    Some(i) => prop_assert!(weights[i] > 0),
                    None => prop_assert!(weights.iter().all(|&w| w == 0)),
                }
            }
        }

        #[test]
        fn a_draw_carries_the_weight_of_the_drawn_entry(weights in prop::collection::vec(0u32..5, 1..40), seed: u64) {
            let sampler = WeightedSampler::new(&weights);
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..500 {
                if let Some((i, weight)) = sampler.sample_weighted(&mut rng) {
                    prop_assert_eq!(weight, weights[i]);
                }
            }
        }

        #[test]
        fn shares_converge_to_weights(weights in prop::collection::vec(1u32..10, 2..8)) {
            let got = shares(&weights, 100_000);
            let total: u32 = weights.iter().sum();
            for (g, &w) in got.iter().zip(&weights) {
                prop_assert!((g - f64::from(w) / f64::from(total)).abs() < 0.015, "{:?} vs {:?}", got, weights);
            }
        }
    }
}
