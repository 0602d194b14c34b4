//! One address's health in one cluster: its active checks' verdict and its outlier counts.
//! Held by the cluster's `Endpoint` for the address, where the request path finds it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use meshproxy_config as config;

/// What the admin API shows of an endpoint's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The cluster has neither checks nor outlier ejection.
    Unchecked,
    Healthy,
    /// Failing its active checks, or not yet checked.
    Unhealthy,
    /// Ejected by outlier detection, for now.
    Ejected,
}

#[derive(Debug)]
pub struct HostHealth {
    pub address: Arc<str>,
    /// Failing active checks, or not checked yet.
    pub(crate) check_failed: AtomicBool,
    /// Check results in a row that went against `check_failed` (passes while failed, failures
    /// while healthy); a threshold of them flips it.
    streak: AtomicU32,
    pub(crate) outlier: HostOutlier,
}

/// One endpoint's outcomes in one cluster (see `outlier`).
#[derive(Debug, Default)]
pub struct HostOutlier {
    pub(crate) consecutive_5xx: AtomicU32,
    pub(crate) consecutive_gateway_errors: AtomicU32,
    /// Attempts and successes since the last sweep, for the success rate.
    pub(crate) attempts: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) ejected: AtomicBool,
    ejection: Mutex<Ejection>,
}

#[derive(Debug, Default)]
pub(crate) struct Ejection {
    pub until: Option<Instant>,
    /// Times ejected, less one per sweep it spent not ejected: what the ejection time grows by.
    pub times: u32,
}

// === impl Status ===

impl Status {
    /// The status of an endpoint with this health (none: its cluster has no health settings).
    pub fn of(host: Option<&HostHealth>) -> Status {
        match host {
            None => Status::Unchecked,
            Some(host) if host.outlier.is_ejected() => Status::Ejected,
            Some(host) if host.check_failed.load(Relaxed) => Status::Unhealthy,
            Some(_) => Status::Healthy,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Unchecked => "unchecked",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::Ejected => "ejected",
        }
    }
}

// === impl HostHealth ===

impl HostHealth {
    /// A new address's health: with active checks, failed until its first check passes.
    pub(crate) fn new(address: &Arc<str>, checked: bool) -> HostHealth {
        HostHealth {
            address: address.clone(),
            check_failed: AtomicBool::new(checked),
            streak: AtomicU32::new(0),
            outlier: HostOutlier::default(),
        }
    }

    /// Whether the balancer may pick it.
    pub fn available(&self) -> bool {
        !self.check_failed.load(Relaxed) && !self.outlier.is_ejected()
    }

    /// Records one check's result; true when it changed the endpoint's health. A failed endpoint
    /// that was never healthy passes at its first pass (`first`), as in Envoy.
    pub(crate) fn record_check(&self, passed: bool, first: bool, check: &config::HealthCheck) -> bool {
        let failed = self.check_failed.load(Relaxed);
        if passed != failed {
            // The result agrees with the state: the streak against it ends.
            self.streak.store(0, Relaxed);
            return false;
        }
        let streak = self.streak.fetch_add(1, Relaxed) + 1;
        let threshold = if failed { check.healthy_threshold } else { check.unhealthy_threshold };
        if streak >= threshold.max(1) || (failed && first) {
            self.check_failed.store(!failed, Relaxed);
            self.streak.store(0, Relaxed);
            return true;
        }
        false
    }
}

// === impl HostOutlier ===

impl HostOutlier {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    pub(crate) fn ejection(&self) -> MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
