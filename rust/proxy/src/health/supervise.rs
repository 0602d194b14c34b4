//! One supervisor task per cluster with health settings, on the engine's runtime: it starts and
//! stops the endpoints' check tasks as the members change, ends ejections and compares success
//! rates every outlier interval, and builds the balancer again when health changed. It holds
//! the cluster weakly and ends, with its checks, once the cluster is gone (replaced by a reload
//! that changed it, or removed).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::check::{self, Target};
use super::ClusterHealth;
use crate::cluster::Cluster;
use crate::outlier;

/// How long a supervisor with nothing to do sleeps before it looks whether its cluster is gone
/// (a dropped cluster wakes it at once; this is a backstop).
const IDLE_WAKE: Duration = Duration::from_secs(30);

/// Starts the supervisor of each of `clusters` that has health settings and none yet.
pub fn start(clusters: &[Arc<Cluster>], runtime: &Handle) {
    for cluster in clusters {
        if let Some(health) = &cluster.health {
            if !health.started.swap(true, Relaxed) {
                drop(runtime.spawn(supervise(Arc::downgrade(cluster), health.clone())));
            }
        }
    }
}

async fn supervise(cluster: Weak<Cluster>, health: Arc<ClusterHealth>) {
    let mut checks: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    let sweep_every = health.outlier.as_ref().map(|o| o.interval);
    let mut next_sweep = sweep_every.map(|every| Instant::now() + every);
    loop {
        {
            let Some(cluster) = cluster.upgrade() else { break };
            health.prune(|| cluster.members().endpoints.iter().map(|e| e.address.clone()).collect());
            if health.check.is_some() {
                reconcile(&cluster, &health, &mut checks);
            }
            if let (Some(at), Some(every)) = (next_sweep, sweep_every) {
                if at <= Instant::now() {
                    outlier::sweep(&health, std::time::Instant::now());
                    next_sweep = Some(Instant::now() + every);
                }
            }
            cluster.rebalance();
        }
        let wake_at = next_sweep.unwrap_or_else(|| Instant::now() + IDLE_WAKE);
        tokio::select! {
            () = health.changed.notified() => {}
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
    for (_, task) in checks {
        task.abort();
    }
}

/// A check task for each listed address that has none; the tasks of addresses no longer listed
/// end.
fn reconcile(cluster: &Arc<Cluster>, health: &Arc<ClusterHealth>, checks: &mut HashMap<Arc<str>, JoinHandle<()>>) {
    let members = cluster.members();
    let listed: HashMap<&str, _> = members.endpoints.iter().map(|e| (&*e.address, e)).collect();
    checks.retain(|address, task| {
        let keep = listed.contains_key(&**address) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for (address, endpoint) in listed {
        if checks.contains_key(address) {
            continue;
        }
        let Some(host) = endpoint.health.clone() else { continue };
        let target = Target {
            address: endpoint.address.clone(),
            protocol: cluster.protocol,
            connect_timeout: cluster.connect_timeout,
            tls: cluster.tls.clone(),
        };
        checks.insert(endpoint.address.clone(), tokio::spawn(check::run(target, host, health.clone(), Arc::downgrade(cluster))));
    }
}
