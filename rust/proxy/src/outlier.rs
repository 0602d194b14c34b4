//! Passive outlier ejection: each attempt's outcome, reported by `retry::forward` for clusters
//! with `outlier_detection`, counts toward ejecting its endpoint (consecutive 5xx, consecutive
//! gateway errors, or a success rate far below the cluster's), as Envoy's outlier detection
//! does. An ejected endpoint leaves the balancer's choice for `base_ejection_time` × the
//! number of times it was ejected (at most `max_ejection_time`); ejections end at the next
//! interval sweep after that time. At most `max_ejection_percent` of the endpoints are ejected
//! at once, but always one may be.
//!
//! Gateway errors are failures to connect, resets, timeouts (an attempt given up before its
//! answer came, by the route's timeout or because the caller left) and 502, 503, 504 answers;
//! every gateway error is also a 5xx.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use meshproxy_telemetry::events;

use crate::cluster::Cluster;
use crate::endpoint::Endpoint;
use crate::health::host::HostHealth;
use crate::health::ClusterHealth;
use crate::pool::PoolError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure { gateway: bool },
}

/// One attempt on an endpoint of a cluster that ejects outliers, from its start until its
/// outcome is settled; dropped unsettled (the attempt was given up before its answer came: a
/// timeout, or the caller left), it counts as a gateway error.
pub struct Attempt<'a> {
    cluster: &'a Cluster,
    health: &'a ClusterHealth,
    host: &'a HostHealth,
    settled: bool,
}

// === impl Attempt ===

impl<'a> Attempt<'a> {
    /// The attempt to watch, when the cluster ejects outliers; `None` (nothing to do) otherwise.
    /// A guard rather than a wrapper future: the attempt's own future is awaited in place and
    /// never moved.
    pub fn begin(cluster: &'a Cluster, endpoint: &'a Endpoint) -> Option<Attempt<'a>> {
        let (Some(health), Some(host)) = (cluster.health.as_deref(), endpoint.health.as_deref()) else { return None };
        health.outlier.as_ref()?;
        Some(Attempt { cluster, health, host, settled: false })
    }

    /// Counts what the attempt came to.
    pub fn settle<L>(mut self, sent: &Result<(Response<Incoming>, L), PoolError>) {
        self.settled = true;
        let outcome = match sent {
            Ok((response, _)) => Some(Outcome::of(response.status())),
            // The client's request body broke: not the endpoint's doing.
            Err(PoolError::Exchange(error)) if error.is_user() => None,
            Err(PoolError::Connect { .. } | PoolError::Refused(_) | PoolError::Exchange(_) | PoolError::TimedOut(_)) => {
                Some(Outcome::Failure { gateway: true })
            }
            // The cluster's own limit, not the endpoint's doing.
            Err(PoolError::Overflow(_)) => None,
        };
        // An ejection takes effect before the next pick: built here, once per ejection.
        if outcome.is_some_and(|outcome| report(self.health, self.host, outcome)) {
            self.cluster.rebalance();
        }
    }
}

/// How an opaque TCP connection's connect went (`tcp`): a failure is a gateway error.
pub(crate) fn connection(cluster: &Cluster, endpoint: &Endpoint, connected: bool) {
    let (Some(health), Some(host)) = (cluster.health.as_deref(), endpoint.health.as_deref()) else { return };
    let outcome = if connected { Outcome::Success } else { Outcome::Failure { gateway: true } };
    if report(health, host, outcome) {
        cluster.rebalance();
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled && report(self.health, self.host, Outcome::Failure { gateway: true }) {
            self.cluster.rebalance();
        }
    }
}

impl Outcome {
    fn of(status: StatusCode) -> Outcome {
        match status.as_u16() {
            502..=504 => Outcome::Failure { gateway: true },
            500..=599 => Outcome::Failure { gateway: false },
            _ => Outcome::Success,
        }
    }
}

/// Counts one outcome; ejects the endpoint when it makes a run long enough (then true).
fn report(health: &ClusterHealth, host: &HostHealth, outcome: Outcome) -> bool {
    let Some(outlier) = &health.outlier else { return false };
    let counts = &host.outlier;
    counts.attempts.fetch_add(1, Relaxed);
    let Outcome::Failure { gateway } = outcome else {
        counts.successes.fetch_add(1, Relaxed);
        // Read first: most answers succeed, and a store would dirty the line for nothing.
        for run in [&counts.consecutive_5xx, &counts.consecutive_gateway_errors] {
            if run.load(Relaxed) != 0 {
                run.store(0, Relaxed);
            }
        }
        return false;
    };
    let fives = counts.consecutive_5xx.fetch_add(1, Relaxed) + 1;
    let gateways = if gateway {
        counts.consecutive_gateway_errors.fetch_add(1, Relaxed) + 1
    } else {
        counts.consecutive_gateway_errors.store(0, Relaxed);
        0
    };
    let why = if fives >= outlier.consecutive_5xx {
        format!("{fives} consecutive 5xx")
    } else if outlier.consecutive_gateway_errors.is_some_and(|limit| gateways >= limit) {
        format!("{gateways} consecutive gateway errors")
    } else {
        return false;
    };
    counts.consecutive_5xx.store(0, Relaxed);
    counts.consecutive_gateway_errors.store(0, Relaxed);
    eject(health, host, &why, Instant::now())
}

/// Ejects `host` unless it is ejected already or the cap is reached; true if it did.
fn eject(health: &ClusterHealth, host: &HostHealth, why: &str, now: Instant) -> bool {
    let Some(outlier) = &health.outlier else { return false };
    let hosts = health.hosts();
    if host.outlier.is_ejected() {
        return false;
    }
    let ejected = hosts.values().filter(|h| h.outlier.is_ejected()).count();
    let allowed = (hosts.len() * outlier.max_ejection_percent as usize / 100).max(1);
    if ejected >= allowed {
        return false;
    }
    let mut ejection = host.outlier.ejection();
    ejection.times = ejection.times.saturating_add(1);
    let time = outlier.base_ejection_time.saturating_mul(ejection.times).min(outlier.max_ejection_time);
    ejection.until = Some(now + time);
    host.outlier.ejected.store(true, Relaxed);
    let times = ejection.times;
    drop((ejection, hosts));
    health.stats.ejections_total.inc();
    events::log(format!("cluster {}: endpoint {} ejected for {}ms ({why}; ejection {times})", health.name, host.address, time.as_millis()));
    health.wake();
    true
}

/// Run every outlier interval by the cluster's supervisor: ends the ejections whose time is up,
/// ejects by success rate, and starts the next interval's counts.
pub(crate) fn sweep(health: &ClusterHealth, now: Instant) {
    let Some(outlier) = &health.outlier else { return };
    let hosts: Vec<Arc<HostHealth>> = health.hosts().values().cloned().collect();
    for host in &hosts {
        let mut ejection = host.outlier.ejection();
        if host.outlier.is_ejected() {
            if ejection.until.is_some_and(|until| until <= now) {
                ejection.until = None;
                host.outlier.ejected.store(false, Relaxed);
                events::log(format!("cluster {}: endpoint {} returns after its ejection", health.name, host.address));
            }
        } else {
            ejection.times = ejection.times.saturating_sub(1);
        }
    }
    // Rates of the endpoints not ejected that saw enough attempts this interval.
    let rates: Vec<(f64, &Arc<HostHealth>)> = hosts
        .iter()
        .filter_map(|host| {
            let attempts = host.outlier.attempts.swap(0, Relaxed);
            let successes = host.outlier.successes.swap(0, Relaxed);
            let enough = outlier.success_rate.as_ref().is_some_and(|s| attempts >= u64::from(s.request_volume).max(1));
            (enough && !host.outlier.is_ejected()).then(|| (successes as f64 * 100.0 / attempts as f64, host))
        })
        .collect();
    let Some(settings) = &outlier.success_rate else { return };
    if rates.is_empty() || rates.len() < settings.minimum_hosts as usize {
        return;
    }
    let mean = rates.iter().map(|(rate, _)| rate).sum::<f64>() / rates.len() as f64;
    let variance = rates.iter().map(|(rate, _)| (rate - mean).powi(2)).sum::<f64>() / rates.len() as f64;
    let threshold = mean - f64::from(settings.stdev_factor) / 1000.0 * variance.sqrt();
    for (rate, host) in rates.iter().filter(|(rate, _)| *rate < threshold) {
        eject(health, host, &format!("success rate {rate:.1}% below the cluster's threshold {threshold:.1}%"), now);
    }
}

#[cfg(test)]
mod tests;
