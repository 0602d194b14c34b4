//! The health of a cluster's endpoints: active checks (`check`, one task per endpoint) and
//! passive outlier ejection (`crate::outlier`), both per cluster, as Envoy keeps them.
//!
//! An endpoint that fails its checks or is ejected leaves the balancer's choice: the cluster's
//! members are built again with weight 0 for it when its health changes (`Cluster::rebalance`,
//! called by the check task, or by the request whose outcome ejected it: once per change, never
//! per pick). A pick reads no health at all. Should fewer than half the endpoints be available,
//! the balancer picks among all of them (Envoy's panic threshold, 50 % by default): a cluster
//! whose checks all fail still gets traffic.
//!
//! An endpoint starts as not yet checked, which counts as unhealthy, and its first check runs at
//! once; one pass makes it healthy (Envoy does the same). Its health is kept for as long as its
//! cluster lists it: discovery's new lists and reloads that leave the cluster's settings as they
//! were keep it; a reload that changes them starts the cluster's health over.

mod check;
mod grpc;
pub mod host;
mod supervise;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meshproxy_config as config;
use meshproxy_telemetry::stats::ClusterStats;
use tokio::sync::Notify;

use crate::health::host::HostHealth;

pub use host::Status;
pub use supervise::start;

/// Below this share of available endpoints (percent), health is ignored: Envoy's default panic
/// threshold.
pub const PANIC_THRESHOLD_PERCENT: usize = 50;

/// One cluster's health settings and the health of each address it lists.
#[derive(Debug)]
pub struct ClusterHealth {
    pub name: Arc<str>,
    pub check: Option<config::HealthCheck>,
    pub outlier: Option<Outlier>,
    pub stats: Arc<ClusterStats>,
    /// By address. Its lock also orders member changes and ejection decisions.
    hosts: Mutex<HashMap<Arc<str>, Arc<HostHealth>>>,
    /// Wakes the supervisor: members changed, an ejection, or the cluster is gone.
    changed: Notify,
    /// Whether the supervisor has been started (once per cluster).
    started: AtomicBool,
}

/// A cluster's outlier settings, as durations.
#[derive(Debug)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: Option<u32>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub success_rate: Option<config::SuccessRate>,
}

// === impl ClusterHealth ===

impl ClusterHealth {
    /// The health of a cluster with these settings; none when it has neither.
    pub fn new(
        name: &Arc<str>,
        check: Option<&config::HealthCheck>,
        outlier: Option<&config::OutlierDetection>,
        stats: &Arc<ClusterStats>,
    ) -> Option<Arc<ClusterHealth>> {
        if check.is_none() && outlier.is_none() {
            return None;
        }
        Some(Arc::new(ClusterHealth {
            name: name.clone(),
            check: check.cloned(),
            outlier: outlier.map(Outlier::new),
            stats: stats.clone(),
            hosts: Mutex::default(),
            changed: Notify::new(),
            started: AtomicBool::new(false),
        }))
    }

    /// The health of `address` in this cluster, made (unchecked) if it has none yet. Called with
    /// the hosts locked (`hosts`).
    pub fn host(&self, hosts: &mut HashMap<Arc<str>, Arc<HostHealth>>, address: &Arc<str>) -> Arc<HostHealth> {
        hosts.entry(address.clone()).or_insert_with(|| Arc::new(HostHealth::new(address, self.check.is_some()))).clone()
    }

    /// Forgets the health of addresses `listed` (read under the lock) does not give.
    fn prune(&self, listed: impl FnOnce() -> HashSet<Arc<str>>) {
        let mut hosts = self.hosts();
        let listed = listed();
        hosts.retain(|address, _| listed.contains(address));
    }

    /// The health of each address, locked: member changes and ejection decisions hold it.
    pub fn hosts(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<HostHealth>>> {
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the supervisor.
    pub fn wake(&self) {
        self.changed.notify_one();
    }
}

// === impl Outlier ===

impl Outlier {
    pub fn new(settings: &config::OutlierDetection) -> Outlier {
        Outlier {
            consecutive_5xx: settings.consecutive_5xx.max(1),
            consecutive_gateway_errors: settings.consecutive_gateway_errors.map(|n| n.max(1)),
            interval: settings.interval.duration(),
            base_ejection_time: settings.base_ejection_time.duration(),
            max_ejection_time: settings.max_ejection_time.duration().max(settings.base_ejection_time.duration()),
            max_ejection_percent: settings.max_ejection_percent.min(100),
            success_rate: settings.success_rate.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
