use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rand::Rng;

use crate::consistent::{Maglev, Ring};
use crate::{Load, Policy, WeightedSampler};

/// A policy compiled for one endpoint set's weights. Built off the hot path; a pick is O(1)
/// (O(log n) for weighted round robin) and takes no lock.
///
/// Weights mean capacity: with equal latency and load, an endpoint of weight 2 gets twice the
/// share of one of weight 1 under every policy. The power-of-two-choices policies draw both
/// candidates by weight and compare load *per unit of weight*, so at equal load the draw alone
/// decides (ties are broken at random) and under load in-flight requests settle in proportion to
/// weight.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    /// How many endpoints the balancer was built for (checked in debug builds).
    len: usize,
    sampler: WeightedSampler,
    round_robin: RoundRobin,
    /// The table of a hashing policy; `None` for the others.
    hashed: Option<Hashed>,
}

#[derive(Debug)]
enum Hashed {
    Ring(Ring),
    Maglev(Maglev),
}

/// Weighted round robin without a lock: a shared counter walks the cycle of `total` turns in
/// steps of `stride` (coprime with `total`), so each endpoint gets exactly `weight` turns per
/// cycle, interleaved rather than back to back.
#[derive(Debug)]
struct RoundRobin {
    next: AtomicU64,
    /// `ends[i]` is the first turn after endpoint i's turns (running sum of positive weights).
    ends: Vec<u64>,
    owners: Vec<usize>,
    stride: u64,
}

// === impl Balancer ===

impl Balancer {
    pub fn new(policy: Policy, weights: &[u32]) -> Self {
        let names: Vec<String> = if policy.is_hashing() { (0..weights.len()).map(|i| i.to_string()).collect() } else { Vec::new() };
        Balancer::with_names(policy, weights, &names.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A balancer for endpoints with these `names` (their addresses): the hashing policies
    /// place endpoints by name, so a key stays on its endpoint however the list is ordered.
    pub fn with_names(policy: Policy, weights: &[u32], names: &[&str]) -> Self {
        let hashed = match policy {
            Policy::RingHash => Some(Hashed::Ring(Ring::new(names, weights))),
            Policy::Maglev => Some(Hashed::Maglev(Maglev::new(names, weights))),
            _ => None,
        };
        Balancer {
            policy,
            len: weights.len(),
            sampler: WeightedSampler::new(weights),
            round_robin: RoundRobin::new(weights),
            hashed,
        }
    }

    /// The policy this balancer picks by (what the admin API reports as the cluster's `lb`).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Picks an index into `endpoints` (which must be the set this balancer was built for), or
    /// `None` when no endpoint has a positive weight.
    pub fn pick<L: Load, R: Rng + ?Sized>(&self, endpoints: &[L], rng: &mut R) -> Option<usize> {
        debug_assert_eq!(endpoints.len(), self.len);
        match self.policy {
            Policy::RoundRobin => self.round_robin.next(),
            Policy::Random => self.sampler.sample(rng),
            Policy::LeastRequest => self.two_choices(rng, 1.0, |i, weight| {
                endpoints[i].in_flight() as f64 / f64::from(weight)
            }),
            Policy::P2cEwma => self.two_choices(rng, EWMA_TIE_RATIO, |i, weight| {
                let per_weight = endpoints[i].in_flight() as f64 / f64::from(weight);
                endpoints[i].latency_ns() * (1.0 + per_weight)
            }),
            // A request without a hash key lands anywhere, as under Envoy.
            Policy::RingHash | Policy::Maglev => self.pick_hashed(rng.random(), |_| false),
        }
    }

    /// The endpoint a hashing policy gives a request's `hash`, skipping the endpoints `skip`
    /// names (a retry's failed one): the ring's next owner, or Maglev's next probe. `None` when
    /// no endpoint has a positive weight, or the policy does not hash.
    pub fn pick_hashed(&self, hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        match self.hashed.as_ref()? {
            Hashed::Ring(ring) => ring.pick_skipping(hash, skip),
            Hashed::Maglev(maglev) => maglev.pick_skipping(hash, skip),
        }
    }

    /// `cost` gets a candidate and its weight, which the draw already holds: reading it from
    /// a separate array would cost a cache miss per candidate on a large set.
    fn two_choices<R: Rng + ?Sized>(&self, rng: &mut R, tie_ratio: f64, cost: impl Fn(usize, u32) -> f64) -> Option<usize> {
        let (a, weight_a) = self.sampler.sample_weighted(rng)?;
        let (b, weight_b) = self.sampler.sample_weighted(rng)?;
        Some(if a == b { a } else { less_costly(a, cost(a, weight_a), b, cost(b, weight_b), tie_ratio, rng) })
    }
}

/// Peak-EWMA estimates of endpoints with the same real latency differ by noise, and a peak
/// lingers for the decay time: compared strictly, whichever had the lower recent peak would
/// take every request. Costs within this ratio of each other are a tie.
pub const EWMA_TIE_RATIO: f64 = 1.5;

/// The candidate whose cost is lower by more than `tie_ratio`; a tie is broken at random so
/// that equal load leaves the weighted draw alone to decide.
fn less_costly<R: Rng + ?Sized>(a: usize, cost_a: f64, b: usize, cost_b: f64, tie_ratio: f64, rng: &mut R) -> usize {
    if cost_a * tie_ratio < cost_b {
        a
    } else if cost_b * tie_ratio < cost_a {
        b
    } else if cost_a == cost_b || tie_ratio > 1.0 {
        if rng.random::<bool>() { a } else { b }
    } else if cost_a < cost_b {
        a
    } else {
        b
    }
}

// === impl RoundRobin ===

impl RoundRobin {
    fn new(weights: &[u32]) -> Self {
        let mut ends = Vec::new();
        let mut owners = Vec::new();
        let mut total = 0u64;
        for (i, &w) in weights.iter().enumerate().filter(|&(_, &w)| w > 0) {
            total += u64::from(w);
            ends.push(total);
            owners.push(i);
        }
        RoundRobin { next: AtomicU64::new(0), ends, owners, stride: coprime_stride(total) }
    }

    fn next(&self) -> Option<usize> {
        let total = *self.ends.last()?;
        let turn = self.next.fetch_add(1, Relaxed) % total;
        let position = turn.wrapping_mul(self.stride) % total;
        let slot = self.ends.partition_point(|&end| end <= position);
        self.owners.get(slot).copied()
    }
}

/// A step near the golden ratio of `total` that visits every turn once per cycle.
fn coprime_stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let mut stride = ((total as f64) * 0.618_033_988_75) as u64;
    while gcd(stride, total) != 1 {
        stride += 1;
    }
    stride
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[derive(Clone, Copy, Debug)]
    struct Fixed {
        in_flight: u64,
        latency_ns: f64,
    }

    impl Load for Fixed {
        fn in_flight(&self) -> u64 {
            self.in_flight
        }
        fn latency_ns(&self) -> f64 {
            self.latency_ns
        }
    }

    const IDLE: Fixed = Fixed { in_flight: 0, latency_ns: 1e6 };

    fn shares(policy: Policy, weights: &[u32], picks: usize) -> Vec<f64> {
        let balancer = Balancer::new(policy, weights);
        let endpoints = vec![IDLE; weights.len()];
        let mut rng = SmallRng::seed_from_u64(11);
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..picks {
            if let Some(i) = balancer.pick(&endpoints, &mut rng) {
                counts[i] += 1;
            }
        }
        counts.iter().map(|&c| c as f64 / picks as f64).collect()
    }

    #[test]
    fn every_policy_gives_weight_two_twice_the_share_at_equal_load() {
        // The hashing policies' shares are their tables' (within a few percent; see
        // `consistent`), not a draw's.
        for name in Policy::NAMES {
            let policy: Policy = name.parse().unwrap_or_default();
            if policy.is_hashing() {
                continue;
            }
            let got = shares(policy, &[1, 2], 90_000);
            assert!((got[1] - 2.0 / 3.0).abs() < 0.01, "{name}: {got:?}");
        }
    }

    #[test]
    fn round_robin_is_exact_per_cycle_and_interleaved() {
        let balancer = Balancer::new(Policy::RoundRobin, &[1, 3, 0, 1]);
        let endpoints = [IDLE; 4];
        let mut rng = SmallRng::seed_from_u64(0);
        let cycle: Vec<usize> =
            (0..5).filter_map(|_| balancer.pick(&endpoints, &mut rng)).collect();
        let mut sorted = cycle.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 1, 1, 3]);
        assert!(cycle.windows(3).all(|w| !(w[0] == 1 && w[1] == 1 && w[2] == 1)), "{cycle:?}");
    }

    #[test]
    fn no_positive_weight_means_no_pick() {
        for name in Policy::NAMES {
            let policy: Policy = name.parse().unwrap_or_default();
            let balancer = Balancer::new(policy, &[0, 0]);
            assert_eq!(balancer.pick(&[IDLE; 2], &mut SmallRng::seed_from_u64(3)), None, "{name}");
        }
    }

    #[test]
    fn under_load_in_flight_settles_in_proportion_to_weight() {
        // Simulate a closed loop: 300 requests stay in flight; each pick goes to an endpoint and
        // the oldest request finishes, as with equal latency.
        for policy in [Policy::LeastRequest, Policy::P2cEwma] {
            let balancer = Balancer::new(policy, &[1, 2]);
            let mut endpoints = [IDLE; 2];
            let mut queue = std::collections::VecDeque::new();
            let mut rng = SmallRng::seed_from_u64(5);
            let mut counts = [0usize; 2];
            for step in 0..60_000 {
                let Some(i) = balancer.pick(&endpoints, &mut rng) else { continue };
                endpoints[i].in_flight += 1;
                queue.push_back(i);
                if queue.len() > 300 {
                    if let Some(done) = queue.pop_front() {
                        endpoints[done].in_flight -= 1;
                    }
                }
                if step >= 10_000 {
                    counts[i] += 1;
                }
            }
            let share = counts[1] as f64 / 50_000.0;
            assert!((share - 2.0 / 3.0).abs() < 0.02, "{policy}: {share}");
        }
    }

    proptest! {
        #[test]
        fn weights_are_respected_in_the_limit(
            weights in prop::collection::vec(0u32..6, 1..6),
            policy in prop::sample::select(Policy::NAMES.to_vec()),
        ) {
            let total: u32 = weights.iter().sum();
            prop_assume!(total > 0);
            prop_assume!(!policy.parse::<Policy>().is_ok_and(Policy::is_hashing));
            let policy: Policy = policy.parse().unwrap_or_default();
            let got = shares(policy, &weights, 60_000);
            for (g, &w) in got.iter().zip(&weights) {
                prop_assert!((g - f64::from(w) / f64::from(total)).abs() < 0.02, "{:?}: {:?} vs {:?}", policy, got, weights);
            }
        }

        #[test]
        fn a_zero_weight_endpoint_is_never_picked(
            weights in prop::collection::vec(0u32..4, 1..12),
            policy in prop::sample::select(Policy::NAMES.to_vec()),
            seed: u64,
        ) {
            let policy: Policy = policy.parse().unwrap_or_default();
            let balancer = Balancer::new(policy, &weights);
            let endpoints = vec![IDLE; weights.len()];
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..300 {
                if let Some(i) = balancer.pick(&endpoints, &mut rng) {
                    prop_assert!(weights[i] > 0);
                }
            }
        }

        #[test]
        fn two_choices_never_pick_the_more_loaded_of_two(
            in_flight in (0u64..50, 0u64..50),
            latency_ms in (1u32..20, 1u32..20),
            policy in prop::sample::select(vec![Policy::LeastRequest, Policy::P2cEwma]),
            seed: u64,
        ) {
            let endpoints = [
                Fixed { in_flight: in_flight.0, latency_ns: f64::from(latency_ms.0) * 1e6 },
                Fixed { in_flight: in_flight.1, latency_ns: f64::from(latency_ms.1) * 1e6 },
            ];
            let cost = |e: &Fixed| match policy {
                Policy::LeastRequest => e.in_flight as f64,
                _ => e.latency_ns * (1.0 + e.in_flight as f64),
            };
            let tie_ratio = if policy == Policy::LeastRequest { 1.0 } else { EWMA_TIE_RATIO };
            let (cost_a, cost_b) = (cost(&endpoints[0]), cost(&endpoints[1]));
            // Least-request compares strictly; peak-EWMA once costs differ beyond noise.
            prop_assume!(cost_a * tie_ratio < cost_b || cost_b * tie_ratio < cost_a);
            let mut rng = SmallRng::seed_from_u64(seed);
            let chosen = less_costly(0, cost_a, 1, cost_b, tie_ratio, &mut rng);
            prop_assert_eq!(chosen, if cost_a < cost_b { 0 } else { 1 });
        }
    }
}
