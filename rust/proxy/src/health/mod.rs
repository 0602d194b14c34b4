//! The health of a cluster's endpoints: active checks (`check`, one task per endpoint) and
//! passive outlier ejection (`crate::outlier`), both per cluster, as Envoy keeps them.
//!
//! An endpoint that fails its checks or is ejected leaves the balancer's choice: the cluster's
//! members are built again with weight 0 for it when its health changes (by the check task, or
//! by the request whose outcome ejected it: once per change, never per pick). A pick reads no
//! health at all. Should fewer
//! than half the endpoints be available, the balancer picks among all of them (Envoy's panic
//! threshold, 50 % by default): a cluster whose checks all fail still gets traffic.
//!
//! An endpoint starts as not yet checked, which counts as unhealthy, and its first check runs at
//! once; one pass makes it healthy (Envoy does the same). Its health is kept for as long as its
//! cluster lists it: discovery's new lists and reloads that leave the cluster's settings as they
//! were keep it; a reload that changes them starts the cluster's health over.

mod check;
mod grpc;
mod supervise;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use meshproxy_balance::Policy;
use meshproxy_config as config;
use meshproxy_telemetry::stats::ClusterStats;
use tokio::sync::Notify;

use crate::cluster::Members;
use crate::endpoint::Endpoint;
use crate::outlier::{HostOutlier, Outlier};

pub use supervise::start;

/// Below this share of available endpoints (percent), health is ignored: Envoy's default panic
/// threshold.
const PANIC_THRESHOLD_PERCENT: usize = 50;

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

/// One cluster's health settings and the health of each address it lists.
#[derive(Debug)]
pub struct ClusterHealth {
    pub name: Arc<str>,
    pub check: Option<config::HealthCheck>,
    pub outlier: Option<Outlier>,
    pub stats: Arc<ClusterStats>,
    /// By address. Its lock also orders member changes and ejection decisions.
    hosts: Mutex<HashMap<Arc<str>, Arc<HostHealth>>>,
    /// Wakes the supervisor: health or members changed, or the cluster is gone.
    changed: Notify,
    /// Whether the supervisor has been started (once per cluster).
    started: AtomicBool,
}

/// One address's health in one cluster.
#[derive(Debug)]
pub struct HostHealth {
    pub address: Arc<str>,
    /// Failing active checks, or not checked yet.
    check_failed: AtomicBool,
    /// Check results in a row that went against `check_failed` (passes while failed, failures
    /// while healthy); a threshold of them flips it.
    streak: AtomicU32,
    pub(crate) outlier: HostOutlier,
}

// === impl Status ===

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Unchecked => "unchecked",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::Ejected => "ejected",
        }
    }
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

    /// Members for `endpoints`, each carrying its address's health (new addresses start
    /// unchecked), balanced by health.
    pub fn attach(&self, endpoints: Vec<Endpoint>, policy: Policy) -> Members {
        let mut hosts = self.hosts();
        self.attach_locked(&mut hosts, endpoints, policy)
    }

    fn attach_locked(&self, hosts: &mut HashMap<Arc<str>, Arc<HostHealth>>, endpoints: Vec<Endpoint>, policy: Policy) -> Members {
        let endpoints = endpoints
            .into_iter()
            .map(|endpoint| {
                let host = hosts.entry(endpoint.address.clone()).or_insert_with(|| Arc::new(HostHealth::new(&endpoint.address, self.check.is_some())));
                Endpoint { health: Some(host.clone()), ..endpoint }
            })
            .collect();
        weigh(policy, endpoints)
    }

    /// Stores `members` (from discovery) into `cell`, with health attached, and wakes the
    /// supervisor to start checking new addresses.
    pub fn replace_members(&self, cell: &ArcSwap<Members>, members: Members) {
        let mut hosts = self.hosts();
        let policy = members.balancer.policy();
        cell.store(Arc::new(self.attach_locked(&mut hosts, members.endpoints, policy)));
        drop(hosts);
        self.wake();
    }

    /// Builds the balancer of the members in `cell` again for their health now.
    pub fn rebalance(&self, cell: &ArcSwap<Members>) {
        let _ordered = self.hosts();
        let members = cell.load_full();
        cell.store(Arc::new(weigh(members.balancer.policy(), members.endpoints.clone())));
    }

    /// Forgets the health of addresses the cluster no longer lists.
    fn prune(&self, cluster: &crate::cluster::Cluster) {
        let mut hosts = self.hosts();
        let members = cluster.members();
        let listed: std::collections::HashSet<&str> = members.endpoints.iter().map(|e| &*e.address).collect();
        hosts.retain(|address, _| listed.contains(&**address));
    }

    /// The endpoints of `members` by health: (available, failing checks, ejected).
    pub fn counts(members: &Members) -> (usize, usize, usize) {
        members.endpoints.iter().fold((0, 0, 0), |(up, failed, ejected), e| match status(e) {
            Status::Unchecked | Status::Healthy => (up + 1, failed, ejected),
            Status::Unhealthy => (up, failed + 1, ejected),
            Status::Ejected => (up, failed, ejected + 1),
        })
    }

    pub(crate) fn hosts(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<HostHealth>>> {
        self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the supervisor.
    pub fn wake(&self) {
        self.changed.notify_one();
    }
}

/// The members of `endpoints` with the balancer leaving out unavailable ones, unless too few
/// are available (the panic threshold).
fn weigh(policy: Policy, endpoints: Vec<Endpoint>) -> Members {
    let available: Vec<bool> = endpoints.iter().map(|e| e.health.as_ref().is_none_or(|h| h.available())).collect();
    let count = available.iter().filter(|a| **a).count();
    if count * 100 < endpoints.len() * PANIC_THRESHOLD_PERCENT || count == endpoints.len() {
        return Members::new(policy, endpoints);
    }
    let weights: Vec<u32> = endpoints.iter().zip(&available).map(|(e, up)| if *up { e.weight } else { 0 }).collect();
    Members::weighted(policy, endpoints, &weights)
}

/// An endpoint's health as the admin API shows it.
pub fn status(endpoint: &Endpoint) -> Status {
    match &endpoint.health {
        None => Status::Unchecked,
        Some(host) if host.outlier.is_ejected() => Status::Ejected,
        Some(host) if host.check_failed.load(Relaxed) => Status::Unhealthy,
        Some(_) => Status::Healthy,
    }
}

// === impl HostHealth ===

impl HostHealth {
    fn new(address: &Arc<str>, checked: bool) -> HostHealth {
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
    fn record_check(&self, passed: bool, first: bool, check: &config::HealthCheck) -> bool {
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

#[cfg(test)]
pub(crate) mod tests;
