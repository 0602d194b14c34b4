//! One pick per policy over endpoint sets of 10, 1,000 and 100,000 with mixed weights and
//! mixed load, drawing from `rand::rng()` as the engine does. The large sets are far bigger
//! than a cluster usually is; they show whether a pick stays O(1) once the tables leave the
//! caches.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use meshproxy_balance::{Balancer, InFlight, Load, PeakEwma, Policy};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// An endpoint's load as the engine keeps it: the crate's own counters, behind a pointer.
struct Backend {
    state: Box<(InFlight, PeakEwma)>,
}

impl Load for Backend {
    fn in_flight(&self) -> u64 {
        self.state.0.get()
    }

    fn latency_ns(&self) -> f64 {
        self.state.1.estimate_ns()
    }
}

/// Weights 1 to 10 spread through the set, so the weighted draw builds a real alias table.
fn weights(n: usize) -> Vec<u32> {
    (0..n).map(|i| 1 + (i * 7_919 % 10) as u32).collect()
}

/// Some endpoints busy, some slow: the two candidates of a pick are sometimes a tie and
/// sometimes not, as in a live cluster.
fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let state = Box::new((InFlight::default(), PeakEwma::new()));
            for _ in 0..i % 4 {
                state.0.begin();
            }
            state.1.observe(Duration::from_micros(1_000 + (i as u64 * 31 % 7) * 400));
            Backend { state }
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    for size in SIZES {
        let weights = weights(size);
        let endpoints = backends(size);
        let mut group = c.benchmark_group(format!("pick/{size}"));
        for name in Policy::NAMES {
            let Ok(policy) = name.parse::<Policy>() else { continue };
            let balancer = Balancer::new(policy, &weights);
            let mut rng = rand::rng();
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| balancer.pick(black_box(&endpoints), &mut rng))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
