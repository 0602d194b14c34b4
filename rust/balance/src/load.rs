use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a load-aware policy reads from an endpoint when it picks.
pub trait Load {
    /// Requests sent to the endpoint and not yet finished.
    fn in_flight(&self) -> u64;
    /// Peak-EWMA estimate of the endpoint's response latency, in nanoseconds.
    fn latency_ns(&self) -> f64;
}

/// Counts requests in flight; [`InFlight::start`] returns a guard that ends the request on drop,
/// so a request cancelled anywhere is still counted out.
#[derive(Debug, Default)]
pub struct InFlight(AtomicU64);

/// One request in flight on an [`InFlight`] counter.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

/// Peak-EWMA latency: jumps up to a slower observation at once, decays towards faster ones with
/// time constant [`PeakEwma::DECAY`], so a slowing endpoint is avoided quickly and trusted again
/// slowly. Lock-free; two racing observations may lose one, which an estimate can afford.
#[derive(Debug)]
pub struct PeakEwma {
    estimate_ns: AtomicU64,
    observed_at_ns: AtomicU64,
}

// === impl InFlight ===

impl InFlight {
    pub fn start(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Relaxed);
        InFlightGuard(self)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Starts a request whose end is signalled later through [`InFlight::finish`]; for owners
    /// that cannot hold a borrow across the request (the guard's `'static` form).
    pub fn begin(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn finish(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

// === impl PeakEwma ===

impl PeakEwma {
    /// How long an observation keeps most of its weight (Linkerd's default).
    pub const DECAY: Duration = Duration::from_secs(10);
    /// The estimate before any observation: optimistic enough that a new endpoint is tried,
    /// pessimistic enough that it is not flooded before its first answer.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

    pub fn new() -> Self {
        PeakEwma {
            estimate_ns: AtomicU64::new((Self::DEFAULT_RTT.as_nanos() as f64).to_bits()),
            observed_at_ns: AtomicU64::new(now_ns()),
        }
    }

    pub fn estimate_ns(&self) -> f64 {
        f64::from_bits(self.estimate_ns.load(Relaxed))
    }

    pub fn observe(&self, rtt: Duration) {
        let now = now_ns();
        let rtt_ns = rtt.as_nanos() as f64;
        let previous = self.estimate_ns();
        let next = if rtt_ns > previous {
            rtt_ns
        } else {
            let elapsed = now.saturating_sub(self.observed_at_ns.load(Relaxed)) as f64;
            let decay = (-elapsed / Self::DECAY.as_nanos() as f64).exp();
            previous * decay + rtt_ns * (1.0 - decay)
        };
        self.estimate_ns.store(next.to_bits(), Relaxed);
        self.observed_at_ns.store(now, Relaxed);
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new()
    }
}

/// Nanoseconds on a process-wide monotonic clock, small enough for an atomic.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_guards_until_dropped() {
        let in_flight = InFlight::default();
        let a = in_flight.start();
        let b = in_flight.start();
        assert_eq!(in_flight.get(), 2);
        drop(a);
        assert_eq!(in_flight.get(), 1);
        drop(b);
        assert_eq!(in_flight.get(), 0);
    }

    #[test]
    fn a_slower_observation_is_taken_at_once() {
        let ewma = PeakEwma::new();
        ewma.observe(Duration::from_millis(50));
        assert_eq!(ewma.estimate_ns(), 50e6);
    }

    #[test]
    fn a_faster_observation_moves_the_estimate_only_part_way() {
        let ewma = PeakEwma::new();
        ewma.observe(Duration::from_millis(50));
        ewma.observe(Duration::from_millis(1));
        let estimate = ewma.estimate_ns();
        assert!(estimate < 50e6 && estimate > 1e6, "{estimate}");
    }
}
