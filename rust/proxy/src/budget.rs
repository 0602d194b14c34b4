//! Linkerd's retry budget: over a sliding window of ten seconds, retries may be at most a share
//! of the requests plus a floor per second, so that retries never multiply an outage: when every
//! try fails, the load on the upstream grows by that share, not by the number of attempts.
//!
//! The window is ten one-second slots, each a relaxed atomic holding its second and its count
//! (one word: a slot is reset by the first request of a new second with one compare-and-swap).
//! A request costs one load and one add; only a retry reads the whole window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use meshproxy_config::RetryBudget;

/// The window retries are counted over.
pub const WINDOW_SECONDS: u64 = 10;
const SLOTS: usize = WINDOW_SECONDS as usize;

#[derive(Debug)]
pub struct Budget {
    /// Retries allowed per request, in millionths (20 %: 200,000).
    ppm: u64,
    /// Retries allowed over the window whatever the traffic.
    floor: u64,
    requests: Window,
    retries: Window,
    /// Seconds are counted from here (1 and up: 0 marks a slot never used).
    epoch: Instant,
}

/// Counts per second over the last `WINDOW_SECONDS` seconds.
#[derive(Debug, Default)]
struct Window([AtomicU64; SLOTS]);

// === impl Budget ===

impl Budget {
    pub fn new(budget: &RetryBudget) -> Budget {
        Budget {
            // Percent is 0 to 100 (the schema's rule): the product fits.
            ppm: (budget.percent.clamp(0.0, 100.0) * 10_000.0).round() as u64,
            floor: u64::from(budget.min_per_second) * WINDOW_SECONDS,
            requests: Window::default(),
            retries: Window::default(),
            epoch: Instant::now(),
        }
    }

    /// Counts a request the budget's retries are a share of.
    pub fn deposit(&self) {
        self.requests.add(self.second());
    }

    /// Takes one retry from the budget, if it has one left.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(self.second())
    }

    fn withdraw_at(&self, now: u64) -> bool {
        let allowed = self.floor + self.requests.sum(now) * self.ppm / 1_000_000;
        if self.retries.sum(now) >= allowed {
            return false;
        }
        self.retries.add(now);
        true
    }

    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs() + 1
    }
}

// === impl Window ===

/// A slot holds its second in the high 32 bits and its count in the low 32 (a count of four
/// billion a second is out of reach; seconds wrap after 136 years).
impl Window {
    fn add(&self, now: u64) {
        let slot = &self.0[(now % WINDOW_SECONDS) as usize];
        let mut current = slot.load(Relaxed);
        loop {
            if current >> 32 == now & 0xffff_ffff {
                slot.fetch_add(1, Relaxed);
                return;
            }
            // The slot holds a second gone by: the first request of this second resets it.
            match slot.compare_exchange_weak(current, (now << 32) | 1, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The counts of the seconds within the window ending at `now`.
    fn sum(&self, now: u64) -> u64 {
        let oldest = now.saturating_sub(WINDOW_SECONDS - 1);
        self.0
            .iter()
            .map(|slot| slot.load(Relaxed))
            .filter(|value| (oldest..=now).contains(&(value >> 32)) && value >> 32 != 0)
            .map(|value| value & 0xffff_ffff)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: f64, min_per_second: u32) -> Budget {
        Budget::new(&RetryBudget { percent, min_per_second })
    }

    #[test]
    fn retries_are_bounded_by_the_share_of_requests_plus_the_floor() {
        let budget = budget(20.0, 1);
        for _ in 0..100 {
            budget.requests.add(5);
        }
        // 20 % of 100 requests, plus 1 a second over ten seconds.
        let granted = (0..1000).filter(|_| budget.withdraw_at(5)).count();
        assert_eq!(granted, 20 + 10);
    }

    #[test]
    fn without_a_floor_no_requests_allow_no_retries() {
        let budget = budget(50.0, 0);
        assert!(!budget.withdraw_at(1));
        budget.requests.add(1);
        budget.requests.add(1);
        assert!(budget.withdraw_at(1));
        assert!(!budget.withdraw_at(1), "50 % of 2 requests is one retry");
    }

    #[test]
    fn requests_and_retries_leave_the_window_after_ten_seconds() {
        let budget = budget(100.0, 0);
        for _ in 0..10 {
            budget.requests.add(1);
        }
        assert_eq!((0..20).filter(|_| budget.withdraw_at(1)).count(), 10);
        // At second 10, second 1 is still in the window; at second 11 it has left.
        assert!(!budget.withdraw_at(10));
        assert!(!budget.withdraw_at(11), "no requests in the window");
        budget.requests.add(11);
        assert!(budget.withdraw_at(11), "the old retries left with their second");
        assert_eq!(budget.requests.sum(11), 1, "second 11 reused second 1's slot");
    }
}
