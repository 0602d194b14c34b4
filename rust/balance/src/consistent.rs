//! Consistent hashing: a request's key (a header, a cookie, the client's IP) picks the same
//! endpoint on every sidecar, and when one of N endpoints leaves only its own keys (about 1/N)
//! move. Two tables, as Envoy has them: a ring (`ring_hash`) and Maglev's lookup table
//! (`maglev`: picks in O(1), slightly more keys move on a change).
//!
//! Both are built from the endpoints' names (their addresses) and weights, never from their
//! positions, so a reordered or extended list keeps every key that can stay where it was. The
//! hash is xxHash64 with seed 0, Envoy's, so that a key lands alike on every sidecar.

use xxhash_rust::xxh64::xxh64;

/// Ring entries per unit of weight. A fixed number, not a share of a fixed ring size: when an
/// endpoint leaves, only its own entries go, and no other endpoint's entries move.
pub const ENTRIES_PER_WEIGHT: u64 = 160;
/// The most entries a ring has (Envoy's `maximum_ring_size`); heavier sets are scaled down.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Maglev's table size: a prime, Envoy's default. Each endpoint's share is within about 1 %.
pub const MAGLEV_TABLE_SIZE: u64 = 65_537;

/// Further slots a Maglev pick probes past skipped endpoints: with one endpoint skipped out of
/// two, all sixteen land on it once in 65,536 picks.
const MAGLEV_PROBES: u64 = 16;

/// A request key's hash, for [`Ring::pick`] and [`Maglev::pick`].
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// A sorted ring of hashes, each owned by an endpoint; a key goes to the first entry at or
/// after its hash (wrapping around). An endpoint has `ENTRIES_PER_WEIGHT` entries per unit of
/// its weight.
#[derive(Debug)]
pub struct Ring {
    hashes: Vec<u64>,
    owners: Vec<u32>,
}

/// Maglev's lookup table: each slot names an endpoint, filled by each endpoint's own
/// permutation of the slots in turns proportional to its weight.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

// === impl Ring ===

impl Ring {
    /// The ring of `names` (the endpoints, in any order) with their `weights`; endpoints of
    /// weight 0 get no entries.
    pub fn new(names: &[&str], weights: &[u32]) -> Ring {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let per_weight = (ENTRIES_PER_WEIGHT as f64).min(MAX_RING_SIZE as f64 / total.max(1) as f64);
        let mut entries: Vec<(u64, u32)> = Vec::new();
        for (index, (name, &weight)) in names.iter().zip(weights).enumerate().filter(|(_, (_, &w))| w > 0) {
            let replicas = ((per_weight * f64::from(weight)).round() as usize).max(1);
            entries.extend((0..replicas).map(|replica| (xxh64(format!("{name}_{replica}").as_bytes(), 0), index as u32)));
        }
        // Equal hashes (vanishingly rare) are ordered by owner, so every sidecar reads the same ring.
        entries.sort_unstable();
        let (hashes, owners) = entries.into_iter().unzip();
        Ring { hashes, owners }
    }

    /// The endpoint (an index into the names the ring was built from) for a key's hash; `None`
    /// when no endpoint has a positive weight.
    pub fn pick(&self, hash: u64) -> Option<usize> {
        self.pick_skipping(hash, |_| false)
    }

    /// As `pick`, walking on along the ring past the owners `skip` names; the owner at the
    /// key's place if every owner is skipped.
    pub fn pick_skipping(&self, hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.owners.len();
        let start = self.hashes.partition_point(|&h| h < hash) % len.max(1);
        let first = *self.owners.get(start)? as usize;
        let others = (1..len).map(|step| self.owners[(start + step) % len] as usize);
        Some(std::iter::once(first).chain(others).find(|&owner| !skip(owner)).unwrap_or(first))
    }
}

// === impl Maglev ===

impl Maglev {
    /// The table of `names` with their `weights`; endpoints of weight 0 get no slots.
    pub fn new(names: &[&str], weights: &[u32]) -> Maglev {
        Maglev::with_size(names, weights, MAGLEV_TABLE_SIZE)
    }

    fn with_size(names: &[&str], weights: &[u32], size: u64) -> Maglev {
        let max_weight = weights.iter().copied().max().unwrap_or(0);
        let members: Vec<Member> = names
            .iter()
            .zip(weights)
            .enumerate()
            .filter(|(_, (_, &w))| w > 0)
            .map(|(index, (name, &weight))| Member::new(index as u32, name, f64::from(weight) / f64::from(max_weight), size))
            .collect();
        if members.is_empty() {
            return Maglev { table: Vec::new() };
        }
        let mut table = vec![u32::MAX; size as usize];
        let (mut members, mut filled) = (members, 0u64);
        // Round by round, each endpoint takes its next free slot when its weight has earned
        // one more: the heaviest every round, one of half its weight every other round.
        let mut round = 1.0f64;
        while filled < size {
            for member in members.iter_mut() {
                if round * member.share < member.taken {
                    continue;
                }
                member.taken += 1.0;
                loop {
                    let slot = member.next_slot(size);
                    if table[slot] == u32::MAX {
                        table[slot] = member.index;
                        filled += 1;
                        break;
                    }
                }
                if filled == size {
                    break;
                }
            }
            round += 1.0;
        }
        Maglev { table }
    }

    /// The endpoint for a key's hash; `None` when no endpoint has a positive weight.
    pub fn pick(&self, hash: u64) -> Option<usize> {
        self.pick_skipping(hash, |_| false)
    }

    /// As `pick`, probing further slots (the hash rehashed) while `skip` names their endpoint;
    /// the first slot's endpoint if every probe is skipped.
    pub fn pick_skipping(&self, hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.table.len() as u64;
        let slot = |hash: u64| self.table[(hash % len) as usize] as usize;
        let first = (len > 0).then(|| slot(hash))?;
        let probes = (1..=MAGLEV_PROBES).map(|probe| slot(xxh64(&hash.to_le_bytes(), probe)));
        Some(std::iter::once(first).chain(probes).find(|&owner| !skip(owner)).unwrap_or(first))
    }
}

/// An endpoint while a Maglev table is filled: its permutation of the slots and its progress.
struct Member {
    index: u32,
    offset: u64,
    skip: u64,
    /// Which entry of its permutation comes next.
    next: u64,
    /// Its weight over the heaviest's.
    share: f64,
    /// Slots taken so far.
    taken: f64,
}

impl Member {
    fn new(index: u32, name: &str, share: f64, size: u64) -> Member {
        let offset = xxh64(name.as_bytes(), 0) % size;
        let skip = xxh64(name.as_bytes(), 1) % (size - 1) + 1;
        Member { index, offset, skip, next: 0, share, taken: 0.0 }
    }

    /// Its next slot: `offset + next * skip`, which visits every slot once as `size` is prime.
    fn next_slot(&mut self, size: u64) -> usize {
        let slot = (self.offset + self.next % size * self.skip) % size;
        self.next += 1;
        slot as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)).collect()
    }

    fn refs(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    /// The share of `keys` whose endpoint (by name) differs between two pickers.
    fn moved(keys: u64, before: impl Fn(u64) -> Option<usize>, after: impl Fn(u64) -> Option<usize>, old: &[&str], new: &[&str]) -> f64 {
        let changed = (0..keys)
            .map(|k| key_hash(&k.to_le_bytes()))
            .filter(|&h| before(h).map(|i| old[i]) != after(h).map(|i| new[i]))
            .count();
        changed as f64 / keys as f64
    }

    /// How many of `keys` each endpoint gets.
    fn shares(keys: u64, pick: impl Fn(u64) -> Option<usize>, n: usize) -> Vec<f64> {
        let mut counts = vec![0u64; n];
        for k in 0..keys {
            if let Some(i) = pick(key_hash(&k.to_le_bytes())) {
                counts[i] += 1;
            }
        }
        counts.into_iter().map(|c| c as f64 / keys as f64).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// When one of N endpoints leaves, the keys that move are about its own 1/N.
        #[test]
        fn one_leaving_moves_about_one_nth_of_keys(n in 3usize..24, leaving in 0usize..24) {
            let all = names(n);
            let leaving = leaving % n;
            let kept: Vec<String> = all.iter().enumerate().filter(|(i, _)| *i != leaving).map(|(_, s)| s.clone()).collect();
            let (old, new) = (refs(&all), refs(&kept));
            let (w_old, w_new) = (vec![1; old.len()], vec![1; new.len()]);
            let expected = 1.0 / n as f64;

            let (ring_a, ring_b) = (Ring::new(&old, &w_old), Ring::new(&new, &w_new));
            let ring_moved = moved(20_000, |h| ring_a.pick(h), |h| ring_b.pick(h), &old, &new);
            prop_assert!(ring_moved <= expected * 1.6 + 0.01, "ring: {ring_moved} of keys moved, 1/N is {expected}");

            let (maglev_a, maglev_b) = (Maglev::new(&old, &w_old), Maglev::new(&new, &w_new));
            let maglev_moved = moved(20_000, |h| maglev_a.pick(h), |h| maglev_b.pick(h), &old, &new);
            prop_assert!(maglev_moved <= expected * 1.6 + 0.02, "maglev: {maglev_moved} of keys moved, 1/N is {expected}");
        }
    }

    #[test]
    fn keys_spread_by_weight() {
        let all = names(3);
        let names = refs(&all);
        let weights = [1, 1, 2];
        let ring = Ring::new(&names, &weights);
        let maglev = Maglev::new(&names, &weights);
        for (policy, got) in [("ring", shares(40_000, |h| ring.pick(h), 3)), ("maglev", shares(40_000, |h| maglev.pick(h), 3))] {
            for (share, want) in got.iter().zip([0.25, 0.25, 0.5]) {
                assert!((share - want).abs() < 0.06, "{policy}: {got:?}");
            }
        }
    }

    #[test]
    fn the_order_of_the_list_does_not_move_keys() {
        let all = names(5);
        let mut reversed = all.clone();
        reversed.reverse();
        let (a, b) = (refs(&all), refs(&reversed));
        let ones = [1; 5];
        let (ring_a, ring_b) = (Ring::new(&a, &ones), Ring::new(&b, &ones));
        assert_eq!(moved(5_000, |h| ring_a.pick(h), |h| ring_b.pick(h), &a, &b), 0.0);
        let (maglev_a, maglev_b) = (Maglev::with_size(&a, &ones, 251), Maglev::with_size(&b, &ones, 251));
        // Maglev fills slots in list order: a reorder may trade a few contested slots.
        assert!(moved(5_000, |h| maglev_a.pick(h), |h| maglev_b.pick(h), &a, &b) < 0.1);
    }

    #[test]
    fn a_skipped_endpoint_sends_its_keys_elsewhere_and_only_those() {
        let all = names(4);
        let names = refs(&all);
        let ones = [1; 4];
        let (ring, maglev) = (Ring::new(&names, &ones), Maglev::new(&names, &ones));
        for k in 0..2_000u64 {
            let hash = key_hash(&k.to_le_bytes());
            for (policy, plain, skipping) in [
                ("ring", ring.pick(hash), ring.pick_skipping(hash, |i| i == 2)),
                ("maglev", maglev.pick(hash), maglev.pick_skipping(hash, |i| i == 2)),
            ] {
                assert_ne!(skipping, Some(2), "{policy}");
                if plain != Some(2) {
                    assert_eq!(skipping, plain, "{policy}: a key not on the skipped endpoint moved");
                }
            }
        }
        assert_eq!(ring.pick_skipping(7, |_| true), ring.pick(7));
    }

    #[test]
    fn no_positive_weight_picks_nothing() {
        let all = names(2);
        let names = refs(&all);
        assert_eq!(Ring::new(&names, &[0, 0]).pick(7), None);
        assert_eq!(Maglev::new(&names, &[0, 0]).pick(7), None);
        assert_eq!(Ring::new(&[], &[]).pick(7), None);
        assert_eq!(Ring::new(&names, &[0, 3]).pick(7), Some(1));
        assert_eq!(Maglev::with_size(&names, &[0, 3], 7).pick(7), Some(1));
    }
}
