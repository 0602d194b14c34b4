//! What the running config counts under: its listeners, clusters, and the (direction,
//! listener, route, cluster) of each route target. The stats of anything else belong to a
//! config that was swapped out, and are dropped once no request counts into them any more
//! (`Stats::prune`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::listener::ListenerSnapshot;
use crate::traffic::TrafficKey;

#[derive(Debug, Default)]
pub struct Live {
    pub listeners: BTreeSet<Arc<str>>,
    pub clusters: BTreeSet<Arc<str>>,
    /// Every key a request on the running config can count under, whether or not one has:
    /// a route that carried nothing since the swap keeps the counts it had before. Hashed: a
    /// mesh has ten thousand of them, made again at each swap, and only asked about the few
    /// that carried traffic.
    pub traffic: HashSet<TrafficKey>,
}

// === impl Live ===

impl Live {
    pub fn of<'a>(listeners: impl IntoIterator<Item = &'a ListenerSnapshot>, clusters: &[Arc<Cluster>]) -> Live {
        let mut live = Live { clusters: clusters.iter().map(|c| c.name.clone()).collect(), ..Live::default() };
        let listeners: Vec<_> = listeners.into_iter().collect();
        live.traffic.reserve(listeners.iter().map(|l| l.routes.routes.len() + 1).sum());
        for listener in listeners {
            live.listeners.insert(listener.name.clone());
            live.traffic.insert(listener.unrouted.key.clone());
            for route in &listener.routes.routes {
                for target in route.targets() {
                    live.traffic.insert(TrafficKey {
                        direction: listener.direction,
                        listener: listener.name.clone(),
                        route: route.name.clone(),
                        cluster: target.cluster.name.clone(),
                    });
                }
            }
        }
        live
    }
}
