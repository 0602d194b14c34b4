//! The names the running config counts under (`Live`), read off its compiled listeners and
//! clusters at each swap.

use std::sync::Arc;

use meshproxy_proxy::cluster::Cluster;
use meshproxy_proxy::listener::ListenerSnapshot;
use meshproxy_proxy::route::Action;
use meshproxy_telemetry::live::Live;
use meshproxy_telemetry::traffic::TrafficKey;

/// What `listeners` and `clusters` count under.
pub fn live_of<'a>(listeners: impl IntoIterator<Item = &'a ListenerSnapshot>, clusters: &[Arc<Cluster>]) -> Live {
    let mut live = Live { clusters: clusters.iter().map(|c| c.name.clone()).collect(), ..Live::default() };
    let listeners: Vec<_> = listeners.into_iter().collect();
    live.traffic.reserve(listeners.iter().map(|l| l.routes.routes.len() + 1).sum());
    for listener in listeners {
        live.listeners.insert(listener.name.clone());
        live.traffic.insert(listener.unrouted.key.clone());
        for route in &listener.routes.routes {
            // A route the proxy answers counts without a cluster.
            if let Action::Answer(_) = route.action {
                live.traffic.insert(TrafficKey {
                    direction: listener.direction,
                    listener: listener.name.clone(),
                    route: route.name.clone(),
                    cluster: "".into(),
                });
            }
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
