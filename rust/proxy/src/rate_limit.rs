//! Local rate limiting: a token bucket shared by every worker, held as one atomic (the
//! "generic cell rate algorithm": the time at which the bucket would be full again stands for
//! the tokens it holds). Admitting a request is a load and a compare-and-swap; nothing locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshproxy_config as config;
use meshproxy_telemetry::rules::RuleStats;

use crate::error::ProxyError;

#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds for one token to come back.
    interval: u64,
    /// Nanoseconds of tokens the bucket holds when full (`burst` intervals).
    capacity: u64,
    /// When the tokens taken so far will all have come back, in nanoseconds after `origin`: the
    /// bucket is full when this is not after now.
    refilled_at: AtomicU64,
    origin: Instant,
    /// What it was compiled from: a reload giving the same keeps it, tokens and all.
    pub compiled_from: config::RateLimit,
    stats: Arc<RuleStats>,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// `None` for a rate of 0 or a burst of 0, which the schema refuses.
    pub fn new(limit: &config::RateLimit, stats: Arc<RuleStats>) -> Option<RateLimiter> {
        let burst = u64::from(limit.burst.unwrap_or(limit.requests_per_second));
        if limit.requests_per_second == 0 || burst == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(limit.requests_per_second);
        Some(RateLimiter {
            interval,
            capacity: interval.saturating_mul(burst),
            refilled_at: AtomicU64::new(0),
            origin: Instant::now(),
            compiled_from: limit.clone(),
            stats,
        })
    }

    /// Takes a token, or answers 429 with the whole seconds until one comes back (at least 1).
    pub fn admit(&self) -> Result<(), ProxyError> {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.admit_at(now).map_err(|wait| {
            self.stats.rate_limited_total.inc();
            let seconds = wait.as_nanos().div_ceil(1_000_000_000).max(1);
            ProxyError::RateLimited { retry_after: u64::try_from(seconds).unwrap_or(u64::MAX) }
        })
    }

    /// At `now` nanoseconds after `origin`: admitted, or how long until a token comes back.
    fn admit_at(&self, now: u64) -> Result<(), Duration> {
        let mut refilled_at = self.refilled_at.load(Ordering::Relaxed);
        loop {
            let after = refilled_at.max(now).saturating_add(self.interval);
            if after - now > self.capacity {
                return Err(Duration::from_nanos(after - now - self.capacity));
            }
            match self.refilled_at.compare_exchange_weak(refilled_at, after, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(current) => refilled_at = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests_per_second: u32, burst: Option<u32>) -> RateLimiter {
        RateLimiter::new(&config::RateLimit { requests_per_second, burst }, Arc::default()).unwrap_or_else(|| panic!("valid"))
    }

    #[test]
    fn a_full_bucket_admits_the_burst_then_one_per_interval() {
        let limit = limiter(10, Some(3));
        let start = 5_000_000_000;
        assert!((0..3).all(|_| limit.admit_at(start).is_ok()));
        assert_eq!(limit.admit_at(start), Err(Duration::from_millis(100)));
        assert_eq!(limit.admit_at(start + 40_000_000), Err(Duration::from_millis(60)));
        assert!(limit.admit_at(start + 100_000_000).is_ok());
        assert!(limit.admit_at(start + 100_000_000).is_err());
        // Idle for long: the bucket is full again, never fuller.
        assert!((0..3).all(|_| limit.admit_at(start + 60_000_000_000).is_ok()));
        assert!(limit.admit_at(start + 60_000_000_000).is_err());
    }

    #[test]
    fn the_burst_defaults_to_one_seconds_worth() {
        let limit = limiter(5, None);
        assert!((0..5).all(|_| limit.admit_at(1_000_000_000).is_ok()));
        assert!(limit.admit_at(1_000_000_000).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        let limit = limiter(1, Some(1));
        assert!(limit.admit().is_ok());
        match limit.admit() {
            Err(ProxyError::RateLimited { retry_after }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(limit.stats.rate_limited_total.get(), 1);
    }

    #[test]
    fn workers_sharing_a_bucket_take_each_token_once() {
        let limit = Arc::new(limiter(1, Some(1000)));
        let admitted: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let limit = limit.clone();
                    scope.spawn(move || (0..500).filter(|_| limit.admit_at(1_000_000_000).is_ok()).count())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
        });
        assert_eq!(admitted, 1000);
    }
}
